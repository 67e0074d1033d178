"""Every QMCU_* op of a converted graph run by the C library (cmixnn_bridge, host build) on the
inputs the numpy reference executor gave it, against the executor's own output bytes.

Used by tests/test_seed_policies.py and bench/policies.py. ``kernels`` is a loaded
``test_cmixnn_host.Kernels``; builtin ops are not run here (their oracle is TFLite Micro /
LiteRT). Each op type's optimized entry point is the one compared (``qmcu_conv_2d`` etc.);
``test_cmixnn_host.py`` checks the reference entry points against it.
"""
from __future__ import annotations

import ctypes
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from test_cmixnn_host import (AddBuffers, AddParams, PoolParams, RequantParams, UnaryBuffers,
                              _dims, _geometry, _run_conv)
from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.reference import qmcu_golden as gold
from tflite_quantmcu.reference.executor import run_graph


@dataclass
class Comparison:
    """Per op type: ops run, ops whose C output equals the executor's; convs with cut filters."""

    checked: Counter = field(default_factory=Counter)
    equal: Counter = field(default_factory=Counter)
    cut_filters: int = 0
    mismatches: list = field(default_factory=list)

    @property
    def all_equal(self) -> bool:
        return not self.mismatches and sum(self.checked.values()) > 0

    def summary(self) -> str:
        ops = ", ".join(f"{t} {self.equal[t]}/{self.checked[t]}" for t in sorted(self.checked))
        return f"{ops}; {self.cut_filters} with sub-byte filters"


def _bytes(value) -> bytes:
    return np.ascontiguousarray(value).tobytes()


def _run_add(*, kernels, options, a, b, size: int) -> bytes:
    o = options
    params = AddParams(_dims(o.shape), o.in1_bits, o.in2_bits, o.out_bits, o.in1_zero_point,
                       o.in2_zero_point, o.out_zero_point, o.left_shift, o.in1_multiplier,
                       o.in1_shift, o.in2_multiplier, o.in2_shift, o.out_multiplier, o.out_shift,
                       o.act_min, o.act_max)
    bufs = AddBuffers(kernels.buffer(data=a), kernels.buffer(data=b), kernels.buffer(size=size))
    assert kernels.lib.qmcu_add(ctypes.byref(params), ctypes.byref(bufs)) == 0
    return kernels.read(ptr=bufs.output, size=size)


def _run_unary(*, kernels, fn: str, params, x, size: int) -> bytes:
    bufs = UnaryBuffers(kernels.buffer(data=x), kernels.buffer(size=size))
    assert getattr(kernels.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0
    return kernels.read(ptr=bufs.output, size=size)


def _pool_params(o) -> PoolParams:
    return PoolParams(_dims(o.in_shape), _dims(o.out_shape), o.filter_h, o.filter_w, o.in_bits,
                      o.out_bits, o.in_zero_point, o.out_zero_point, o.act_min, o.act_max,
                      int(o.rescale), o.multiplier, o.shift, _geometry(o.geometry))


def _requant_params(o) -> RequantParams:
    return RequantParams(_dims(o.shape), o.in_bits, o.out_bits, o.in_zero_point,
                         o.out_zero_point, o.multiplier, o.shift)


def _c_output(*, kernels, sub, op, options, values) -> bytes:
    expected = values[op.outputs[0]]
    size = np.asarray(expected).nbytes
    x = values[op.inputs[0]]
    if op.type in ("QMCU_CONV_2D", "QMCU_DEPTHWISE_CONV_2D"):
        case = gold.ConvCase(options=options, input=x,
                             filter=np.frombuffer(sub.tensors[op.inputs[1]].buffer.data,
                                                  dtype=np.int8),
                             bias=sub.tensors[op.inputs[2]].array(),
                             requant=sub.tensors[op.inputs[3]].array(), expected=expected)
        fn = "qmcu_depthwise_conv_2d" if case.depthwise else "qmcu_conv_2d"
        return _run_conv(k=kernels, case=case, fn=fn, scratch_fn=f"{fn}_scratch_size")
    if op.type == "QMCU_ADD":
        return _run_add(kernels=kernels, options=options, a=x, b=values[op.inputs[1]], size=size)
    if op.type == "QMCU_AVERAGE_POOL_2D":
        return _run_unary(kernels=kernels, fn="qmcu_average_pool_2d",
                          params=_pool_params(options), x=x, size=size)
    fn = "qmcu_pack" if op.type == "QMCU_PACK" else "qmcu_unpack"
    return _run_unary(kernels=kernels, fn=fn, params=_requant_params(options), x=x, size=size)


def compare_qmcu_ops(*, graph, x: np.ndarray, kernels) -> Comparison:
    """Run ``graph`` on ``x`` (one or more samples) in the reference executor, then every
    QMCU_* op of it in C on the values the executor fed that op (constants: the file's
    bytes), sample by sample; the C output must equal the executor's byte for byte."""
    sub = graph.main
    found = Comparison()
    for i in range(x.shape[0]):
        seen: dict = {}
        run_graph(graph=graph, inputs=[x[i:i + 1]], observer=lambda j, op, out: seen.update(out))
        values = {**dict(zip(sub.inputs, [x[i:i + 1]])), **seen}
        for index, op in enumerate(sub.operators):
            if not op.type.startswith("QMCU_") or op.type == "QMCU_PATCH_STAGE":
                continue   # the stage op has its own host harness (test_stage_op_host.py)
            options = decode_options(op=op.type, data=op.custom_options)
            got = _c_output(kernels=kernels, sub=sub, op=op, options=options, values=values)
            found.checked[op.type] += 1
            if got == _bytes(values[op.outputs[0]]):
                found.equal[op.type] += 1
            else:
                found.mismatches.append((i, index, op.type, op.outputs[0]))
            found.cut_filters += i == 0 and getattr(options, "w_bits", 8) < 8
        kernels.free_all()
    return found
