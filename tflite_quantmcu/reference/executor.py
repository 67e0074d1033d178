"""The numpy reference executor: runs a `Graph` bit-exactly like TFLite Micro.

    outputs = run_graph(graph=graph, inputs=[images])

Batching: every array carries a leading *sample* axis. Input i is an array of
shape (N, *shape) or, when the model input's own batch dimension is 1,
(N, *shape[1:]); N samples run together, vectorized. Each output j comes back as
(N, *output_shape_j) -- the layout `run_litert` and `run_tflm` return. Samples
run in chunks of `batch_size` (default 64; None = all at once); the observer is
called once per op and chunk. Results do not depend on the chunking.

The observer, if given, is called after every op as
`observer(op_index, op, {output_key: array})`, arrays with the sample axis; it
must not modify them. Calibration collects per-tensor statistics this way.

Ops of the main subgraph run in order; a tensor's value is dropped after its
last reader. Builtin kernels are listed in `registry.BUILTIN_KERNELS`; custom
ops run through `custom_kernels` (custom code -> kernel), by default the QMCU_*
ops of docs/qmcu_ops.md.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tflite_quantmcu.errors import CalibrationDataError, UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph, Operator, Subgraph, Tensor
from tflite_quantmcu.reference.blas_threads import limited_blas_threads
from tflite_quantmcu.reference.op_context import OpContext, constant_value
from tflite_quantmcu.reference.registry import DEFAULT_CUSTOM_KERNELS, Kernel, kernel_for

Observer = Callable[[int, Operator, dict[str, np.ndarray]], None]

# Samples run together by default: bounds memory (the 96x96 Fashion MobileNetV2 peaks at
# about 150 MB of numpy arrays at 64) while keeping per-op overhead small.
DEFAULT_BATCH_SIZE = 64


def run_graph(*, graph: Graph, inputs: Sequence[np.ndarray], observer: Observer | None = None,
              batch_size: int | None = DEFAULT_BATCH_SIZE,
              custom_kernels: Mapping[str, Kernel] = DEFAULT_CUSTOM_KERNELS,
              blas_threads: int | None = 1) -> list[np.ndarray]:
    """Runs the main subgraph on a batch of samples; returns one array per model output.

    `blas_threads` limits BLAS threads during the run (needs threadpoolctl; None
    leaves BLAS as configured); one thread is fastest for these small products.
    """
    subgraph = graph.main
    kernels = [kernel_for(subgraph=subgraph, index=i, custom_kernels=custom_kernels)
               for i in range(len(subgraph.operators))]
    arrays = batched_inputs(subgraph=subgraph, inputs=inputs)
    total = arrays[0].shape[0]
    step = total if batch_size is None else batch_size
    if step < 1:
        raise CalibrationDataError(f"batch_size must be at least 1, got {batch_size}")
    with limited_blas_threads(threads=blas_threads):
        chunks = [run_samples(subgraph=subgraph, kernels=kernels,
                              arrays=[a[start:start + step] for a in arrays], observer=observer)
                  for start in range(0, total, step)]
    if len(chunks) == 1:
        return chunks[0]
    return [np.concatenate(parts, axis=0) for parts in zip(*chunks)]


def batched_inputs(*, subgraph: Subgraph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Checks the caller's arrays and reshapes each to (N, *tensor.shape)."""
    if len(inputs) != len(subgraph.inputs):
        raise CalibrationDataError(
            f"the model has {len(subgraph.inputs)} inputs, got {len(inputs)} arrays")
    arrays = [batched_input(tensor=subgraph.tensors[key], value=np.asarray(value))
              for key, value in zip(subgraph.inputs, inputs)]
    counts = {a.shape[0] for a in arrays}
    if len(counts) != 1 or 0 in counts:
        raise CalibrationDataError(f"inputs must hold the same, non-zero number of samples; "
                                   f"got {sorted(counts)}")
    return arrays


def batched_input(*, tensor: Tensor, value: np.ndarray) -> np.ndarray:
    """One input array checked against its tensor: dtype and per-sample shape."""
    expected = np.dtype(schema.TENSOR_TYPE_NUMPY.get(tensor.dtype, "void"))
    if value.dtype != expected:
        raise CalibrationDataError(
            f"input {tensor.name!r}: dtype {value.dtype}, expected {expected}")
    shape = tuple(tensor.shape)
    allowed = {shape} | ({shape[1:]} if shape and shape[0] == 1 else set())
    if value.ndim == 0 or value.shape[1:] not in allowed:
        raise CalibrationDataError(
            f"input {tensor.name!r}: shape {value.shape}, expected (N, *{shape})"
            + (f" or (N, *{shape[1:]})" if len(allowed) > 1 else ""))
    return value.reshape((value.shape[0],) + shape)


def last_readers(*, subgraph: Subgraph) -> dict[str, int]:
    """Tensor key -> index of the last op reading it."""
    return {key: readers[-1] for key, readers in subgraph.consumers().items()}


def run_samples(*, subgraph: Subgraph, kernels: Sequence[Kernel], arrays: Sequence[np.ndarray],
                observer: Observer | None) -> list[np.ndarray]:
    """Runs every op on one chunk of samples; returns the model outputs."""
    values: dict[str, np.ndarray] = dict(zip(subgraph.inputs, arrays))
    return resume_samples(subgraph=subgraph, kernels=kernels, values=values, start=0,
                          observer=observer)


def resume_samples(*, subgraph: Subgraph, kernels: Sequence[Kernel],
                   values: dict[str, np.ndarray], start: int,
                   observer: Observer | None = None) -> list[np.ndarray]:
    """Runs ops ``start``.. on one chunk of samples, ``values`` holding every tensor those ops
    read that an earlier op (or the input) made; returns the model outputs. ``values`` is
    consumed (entries are added and dropped)."""
    num_samples = next(iter(values.values())).shape[0]
    last_use = last_readers(subgraph=subgraph)
    keep = set(subgraph.outputs)
    for index in range(start, len(kernels)):
        kernel = kernels[index]
        ctx = OpContext(subgraph=subgraph, index=index, values=values, num_samples=num_samples)
        produced = checked_outputs(ctx=ctx, results=kernel(ctx=ctx))
        values.update(produced)
        if observer is not None:
            observer(index, ctx.op, produced)
        for key in ctx.op.inputs:
            if key is not None and last_use.get(key) == index and key not in keep:
                values.pop(key, None)
    return [model_output(subgraph=subgraph, key=key, values=values, num_samples=num_samples)
            for key in subgraph.outputs]


def checked_outputs(*, ctx: OpContext, results: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Pairs a kernel's results with the op's output keys, checking shape and dtype."""
    if len(results) != len(ctx.op.outputs):
        raise ctx.error(f"kernel returned {len(results)} outputs, the op has "
                        f"{len(ctx.op.outputs)}")
    produced = {}
    for j, (key, value) in enumerate(zip(ctx.op.outputs, results)):
        tensor = ctx.subgraph.tensors[key]
        dtype = np.dtype(schema.TENSOR_TYPE_NUMPY.get(tensor.dtype, "void"))
        if value.shape != ctx.output_shape(j) or value.dtype != dtype:
            raise ctx.error(f"output {tensor.name!r}: kernel produced {value.dtype}"
                            f"{value.shape}, expected {dtype}{ctx.output_shape(j)}")
        produced[key] = value
    return produced


def model_output(*, subgraph: Subgraph, key: str, values: Mapping[str, np.ndarray],
                 num_samples: int) -> np.ndarray:
    """A model output's value (constants broadcast over the samples)."""
    if key in values:
        return values[key]
    tensor = subgraph.tensors[key]
    if not tensor.is_constant:
        raise UnsupportedOpError(f"reference executor: model output {tensor.name!r} is "
                                 "produced by no op")
    value = constant_value(tensor=tensor)
    return np.broadcast_to(value, (num_samples,) + value.shape).copy()
