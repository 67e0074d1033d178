"""Kernel scratch that TFLite Micro's reference kernels request in the arena.

Read from the kernels' Prepare functions (tflite-micro, 2026): each request is
its own arena buffer living for that op only. `scratch_bytes` returns None for
ops whose scratch we do not model (the analyzer then says so).
"""
from __future__ import annotations

from tflite_quantmcu.analysis.qmcu_scratch import qmcu_scratch_requests
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Operator, Subgraph

INT32_BYTES = 4
_INT4_FILTER_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
_UNMODELLED = frozenset({"ADD_N", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "CUSTOM"})


def scratch_requests(*, subgraph: Subgraph, op: Operator) -> list[int] | None:
    """Byte sizes of the scratch buffers TFLM requests for `op`, None if unknown."""
    kind = op.type
    if op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
        return qmcu_scratch_requests(op_type=kind, custom_options=op.custom_options or b"")
    if kind in _UNMODELLED:
        return None
    if kind in _INT4_FILTER_OPS:
        filt = subgraph.tensors[op.inputs[1]]
        return [filt.num_elements] if filt.dtype == schema.TensorType.INT4 else []
    if kind in ("MEAN", "SUM"):
        return _mean_or_sum(subgraph=subgraph, op=op)
    if kind in ("REDUCE_MAX", "REDUCE_MIN"):
        src = subgraph.tensors[op.inputs[0]]
        axis = subgraph.tensors[op.inputs[1]]
        return [INT32_BYTES * len(src.shape), INT32_BYTES * axis.num_elements]
    if kind == "TRANSPOSE_CONV":
        src = subgraph.tensors[op.inputs[2]]
        out = subgraph.tensors[op.outputs[0]]
        width = {schema.TensorType.INT8: 4, schema.TensorType.INT16: 8}.get(src.dtype, 0)
        return [out.num_elements * width] if width else []
    if kind == "MIRROR_PAD":
        rank = len(subgraph.tensors[op.inputs[0]].shape)
        return [INT32_BYTES * rank, INT32_BYTES * rank]
    return []


def _mean_or_sum(*, subgraph: Subgraph, op: Operator) -> list[int]:
    src = subgraph.tensors[op.inputs[0]]
    axis = subgraph.tensors[op.inputs[1]]
    out = subgraph.tensors[op.outputs[0]]
    sizes = []
    if src.dtype in (schema.TensorType.INT8, schema.TensorType.INT16):
        sizes.append(INT32_BYTES * out.num_elements)
    sizes += [INT32_BYTES * len(src.shape), INT32_BYTES * axis.num_elements]
    return sizes
