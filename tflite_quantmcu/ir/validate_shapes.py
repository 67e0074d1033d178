"""Shape rules of the builtin ops this tool computes with (part of the validation pass).

Analysis, patch planning and the reference executor read filter sizes, strides and
channel counts from these ops; a model whose shapes contradict the op (a filter of
the wrong rank, an output size that its padding cannot give) is rejected here with
the op and the numbers, so those passes never index past a shape.
Called by validate.py for ops that passed the input/output count checks.
"""
from __future__ import annotations

import math

import numpy as np

from tflite_quantmcu.errors import InvalidModelError, UnsupportedModelError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Operator, Subgraph

_PADDINGS = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}
_ACTIVATIONS = frozenset(v for k, v in vars(schema.ActivationFunctionType).items()
                         if not k.startswith("_") and isinstance(v, int))
_SAME_SHAPE_OPS = frozenset({"SOFTMAX", "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "LOGISTIC",
                             "TANH", "HARD_SWISH", "LEAKY_RELU", "L2_NORMALIZATION"})
_BROADCAST_OPS = frozenset({"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"})


def check_op_shapes(*, sub: Subgraph, op: Operator, label: str) -> None:
    """Raises `InvalidModelError` naming the op if its shapes contradict its type."""
    rule = _RULES.get(op.type)
    if rule is not None:
        rule(_Shapes(sub=sub, op=op, label=label))


class _Shapes:
    def __init__(self, *, sub: Subgraph, op: Operator, label: str) -> None:
        self.sub, self.op, self.label = sub, op, label

    def input(self, i: int) -> tuple[int, ...] | None:
        key = self.op.inputs[i] if i < len(self.op.inputs) else None
        return None if key is None else self.sub.tensors[key].shape

    def output(self, i: int = 0) -> tuple[int, ...]:
        return self.sub.tensors[self.op.outputs[i]].shape

    def const(self, i: int) -> np.ndarray | None:
        key = self.op.inputs[i] if i < len(self.op.inputs) else None
        tensor = None if key is None else self.sub.tensors[key]
        if tensor is None or not tensor.is_constant or tensor.dtype not in (
                schema.TensorType.INT32, schema.TensorType.INT64):
            return None
        return tensor.array()

    def fail(self, what: str) -> None:
        raise InvalidModelError(f"{self.label}: {what}")

    def rank(self, shape: tuple[int, ...] | None, rank: int, name: str) -> tuple[int, ...]:
        if shape is None or len(shape) != rank:
            self.fail(f"{name} shape {list(shape or ())}; expected rank {rank}")
        return shape

    def activation(self) -> None:
        value = getattr(self.op.options, "fusedActivationFunction", 0)
        if value not in _ACTIVATIONS:
            self.fail(f"fused activation {value}; expected one of {sorted(_ACTIVATIONS)}")


def _window(s: _Shapes, *, size: int, out: int, kernel: int, stride: int, dilation: int,
            axis: str) -> None:
    if stride < 1 or dilation < 1 or kernel < 1:
        s.fail(f"{axis}: kernel {kernel}, stride {stride}, dilation {dilation}; expected >= 1")
    padding = _PADDINGS.get(s.op.options.padding)
    if padding is None:
        s.fail(f"padding {s.op.options.padding}; expected SAME or VALID")
    if padding == "SAME":
        expected = (size + stride - 1) // stride
    else:
        expected = (size - (kernel - 1) * dilation - 1) // stride + 1
    if out != expected or out < 0:
        s.fail(f"{axis}: output size {out}; {padding} padding of {size} with kernel {kernel}, "
               f"stride {stride}, dilation {dilation} gives {expected}")


def _conv_like(s: _Shapes, *, depthwise: bool) -> None:
    inp = s.rank(s.input(0), 4, "input")
    filt = s.rank(s.input(1), 4, "filter")
    out = s.rank(s.output(), 4, "output")
    o = s.op.options
    s.activation()
    if inp[0] != out[0]:
        s.fail(f"batch {inp[0]} in, {out[0]} out")
    if depthwise:
        if filt[0] != 1 or filt[3] != out[3] or inp[3] == 0 or out[3] % inp[3]:
            s.fail(f"depthwise filter {list(filt)} for input {list(inp)}, output {list(out)}; "
                   f"expected [1, kh, kw, out channels], out channels a multiple of in")
    else:
        if filt[0] != out[3]:
            s.fail(f"filter {list(filt)} for output {list(out)}; expected filter dim 0 "
                   f"= {out[3]} output channels")
        if filt[3] != inp[3]:
            raise UnsupportedModelError(f"{s.label}: filter {list(filt)} for input "
                                        f"{list(inp)}: grouped convolution is not supported")
    for axis, (size, o_size, k, stride, dil) in {
            "height": (inp[1], out[1], filt[1], o.strideH, o.dilationHFactor),
            "width": (inp[2], out[2], filt[2], o.strideW, o.dilationWFactor)}.items():
        _window(s, size=size, out=o_size, kernel=k, stride=stride, dilation=dil, axis=axis)
    _bias(s, index=2, channels=out[3])


def _bias(s: _Shapes, *, index: int, channels: int) -> None:
    bias = s.input(index)
    if bias is not None and math.prod(bias) != channels:
        s.fail(f"bias shape {list(bias)}; expected {channels} values")


def _pool(s: _Shapes) -> None:
    inp = s.rank(s.input(0), 4, "input")
    out = s.rank(s.output(), 4, "output")
    o = s.op.options
    s.activation()
    if inp[0] != out[0] or inp[3] != out[3]:
        s.fail(f"input {list(inp)}, output {list(out)}; pooling keeps batch and channels")
    for axis, (size, o_size, k, stride) in {
            "height": (inp[1], out[1], o.filterHeight, o.strideH),
            "width": (inp[2], out[2], o.filterWidth, o.strideW)}.items():
        _window(s, size=size, out=o_size, kernel=k, stride=stride, dilation=1, axis=axis)


def _fully_connected(s: _Shapes) -> None:
    filt = s.rank(s.input(1), 2, "filter")
    inp, out = s.input(0), s.output()
    s.activation()
    if filt[1] == 0 or math.prod(inp) % filt[1] or not out or out[-1] != filt[0]:
        s.fail(f"input {list(inp)}, filter {list(filt)}, output {list(out)}; expected input "
               f"elements a multiple of {filt[1]} and output last dim {filt[0]}")
    _bias(s, index=2, channels=filt[0])


def _broadcast(s: _Shapes) -> None:
    a, b, out = s.input(0), s.input(1), s.output()
    s.activation()
    try:
        expected = tuple(np.broadcast_shapes(a, b))
    except ValueError:
        s.fail(f"input shapes {list(a)} and {list(b)} do not broadcast")
    if expected != tuple(out):
        s.fail(f"output shape {list(out)}; inputs {list(a)} and {list(b)} give "
               f"{list(expected)}")


def _same_shape(s: _Shapes) -> None:
    if tuple(s.input(0)) != tuple(s.output()):
        s.fail(f"input shape {list(s.input(0))}, output {list(s.output())}; expected equal")


def _reshape(s: _Shapes) -> None:
    if math.prod(s.input(0)) != math.prod(s.output()):
        s.fail(f"reshapes {list(s.input(0))} ({math.prod(s.input(0))} elements) to "
               f"{list(s.output())} ({math.prod(s.output())})")


def _concatenation(s: _Shapes) -> None:
    out = s.output()
    axis = s.op.options.axis
    if not -len(out) <= axis < len(out):
        s.fail(f"axis {axis} of a rank-{len(out)} output")
    axis %= len(out)
    total = 0
    for i in range(len(s.op.inputs)):
        shape = s.rank(s.input(i), len(out), f"input {i}")
        if shape[:axis] + shape[axis + 1:] != out[:axis] + out[axis + 1:]:
            s.fail(f"input {i} shape {list(shape)} does not match output {list(out)} "
                   f"off axis {axis}")
        total += shape[axis]
    if total != out[axis]:
        s.fail(f"inputs add up to {total} along axis {axis}, output has {out[axis]}")


def _pad(s: _Shapes) -> None:
    inp, out = s.input(0), s.output()
    pads = s.const(1)
    if pads is None:
        raise UnsupportedModelError(f"{s.label}: paddings are not a constant int32 tensor")
    if pads.shape != (len(inp), 2) or (pads < 0).any():
        s.fail(f"paddings {pads.tolist()}; expected {len(inp)}x2 values >= 0")
    expected = [int(d + p.sum()) for d, p in zip(inp, pads)]
    if expected != list(out):
        s.fail(f"output shape {list(out)}; input {list(inp)} padded by {pads.tolist()} "
               f"gives {expected}")


def _reduce(s: _Shapes) -> None:
    inp = s.input(0)
    axes = s.const(1)
    if axes is None:
        raise UnsupportedModelError(f"{s.label}: axes are not a constant int32 tensor")
    if axes.size and not ((axes >= -len(inp)) & (axes < len(inp))).all():
        s.fail(f"axes {axes.tolist()} of a rank-{len(inp)} input")


_RULES = {
    "CONV_2D": lambda s: _conv_like(s, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda s: _conv_like(s, depthwise=True),
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "FULLY_CONNECTED": _fully_connected,
    "RESHAPE": _reshape,
    "CONCATENATION": _concatenation,
    "PAD": _pad,
    "PADV2": _pad,
    "MEAN": _reduce,
    "SUM": _reduce,
    "REDUCE_MAX": _reduce,
    "REDUCE_MIN": _reduce,
    **{name: _broadcast for name in _BROADCAST_OPS},
    **{name: _same_shape for name in _SAME_SHAPE_OPS},
}
