"""Receptive fields: which input rows/cols an op needs for a region of its output.

Every op the patch stage supports maps rows and columns independently, so an
op is described per input and per axis by an `AxisWindow` (kernel, stride,
dilation, padding before the first input pixel). For an output interval
[o0, o1) the window needs the input interval

    [o0 * stride - pad_before,  (o1 - 1) * stride + (kernel - 1) * dilation + 1 - pad_before)

in image coordinates; the part outside [0, size) is border padding. TFLite's
SAME padding puts floor(total / 2) before, total = max((out - 1) * stride +
effective_kernel - in, 0) (TFLite's ComputePaddingHeightWidth).

Supported ops and how their border padding is reproduced per patch:
- CONV_2D, DEPTHWISE_CONV_2D (any kernel, stride, dilation, SAME/VALID): the
  int8 kernels skip padded pixels, which equals padding with the input zero
  point, i.e. a PAD op (it pads with its output's zero point = the input's);
- MAX_POOL_2D: padding with the lowest value of the type (PADV2) leaves every
  max unchanged, since a SAME window always holds at least one real pixel;
- AVERAGE_POOL_2D: SAME divides border windows by the count of real pixels,
  so explicit padding is not equivalent. A patch that touches the border runs
  the pool with SAME on its own input, fitted per axis by `same_axis_fit`:
  dummy rows/cols (never read by a kept output) are appended where the patch
  does not touch the border, so that SAME pads exactly where the image ends and
  the windows line up; surplus outputs are sliced off. Patches that touch no
  border run it VALID;
- PAD / PADV2 (spatial paddings only): each patch pads only where its region
  touches the image border;
- element-wise ops (ADD, SUB, MUL, MAXIMUM, MINIMUM, activations, QUANTIZE,
  DEQUANTIZE) and CONCATENATION along channels: output region = input region;
  constant operands must not vary over rows/cols (broadcast over H and W).
Every feature map in the stage is 4-D NHWC with batch 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Operator, Subgraph

WINDOW_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"})
PAD_OPS = frozenset({"PAD", "PADV2"})
ELEMENTWISE_OPS = frozenset({
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "RELU_N1_TO_1",
    "RELU_0_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "QUANTIZE", "DEQUANTIZE",
    "CONCATENATION",
})

# How a patch reproduces the border padding an op applies (see module doc).
BORDER_ZERO_POINT = "zero_point"   # explicit PAD with the input zero point
BORDER_LOWEST = "lowest"           # explicit PADV2 with the type's lowest value
BORDER_NONE = "none"               # the op never reads outside the image
BORDER_PAD_OP = "pad_op"           # the op is itself a PAD: pad per patch
BORDER_SAME_FIT = "same_fit"       # SAME average pool: keep SAME, fitted per patch


@dataclass(frozen=True, order=True)
class Interval:
    """Half-open index range [start, stop) along one axis."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(self.stop - self.start, 0)

    def clip(self, *, size: int) -> Interval:
        return Interval(max(self.start, 0), min(self.stop, size))

    def union(self, other: Interval | None) -> Interval:
        if other is None:
            return self
        return Interval(min(self.start, other.start), max(self.stop, other.stop))

    def contains(self, other: Interval) -> bool:
        return self.start <= other.start and other.stop <= self.stop


@dataclass(frozen=True)
class Region:
    """Rows x cols of a NHWC feature map (half-open intervals)."""

    rows: Interval
    cols: Interval

    @property
    def area(self) -> int:
        return self.rows.size * self.cols.size

    def to_json(self) -> list[int]:
        return [self.rows.start, self.rows.stop, self.cols.start, self.cols.stop]


@dataclass(frozen=True)
class AxisWindow:
    """How one output axis reads one input axis."""

    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0

    @property
    def extent(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def needed(self, out: Interval) -> Interval:
        """Input interval (image coordinates, unclipped) read for output `out`."""
        start = out.start * self.stride - self.pad_before
        stop = (out.stop - 1) * self.stride + self.extent - self.pad_before
        return Interval(start, stop)

    def halo(self, out: Interval) -> tuple[int, int]:
        """Input pixels read beyond the stride-aligned part [o0*s, o1*s): (before, after)."""
        need = self.needed(out)
        return out.start * self.stride - need.start, need.stop - out.stop * self.stride


IDENTITY = AxisWindow()


@dataclass(frozen=True)
class InputMap:
    """A feature-map input of an op: its position in op.inputs and its windows."""

    position: int
    rows: AxisWindow
    cols: AxisWindow

    def needed(self, out: Region) -> Region:
        return Region(self.rows.needed(out.rows), self.cols.needed(out.cols))


@dataclass(frozen=True)
class OpSpatialMap:
    """Output region -> input regions of one op, and how it pads at the border."""

    op_index: int
    border: str
    inputs: tuple[InputMap, ...]

    def input_regions(self, out: Region) -> dict[int, Region]:
        """Input position -> needed region (image coordinates, unclipped)."""
        return {m.position: m.needed(out) for m in self.inputs}


def same_pad_before(*, in_size: int, out_size: int, stride: int, extent: int) -> int:
    total = max((out_size - 1) * stride + extent - in_size, 0)
    return total // 2


def spatial_map(*, subgraph: Subgraph, index: int) -> OpSpatialMap:
    """The op's spatial map; `UnsupportedOpError` naming the op if it has none."""
    reason = unsupported_reason(subgraph=subgraph, index=index)
    if reason is not None:
        raise UnsupportedOpError(
            f"patch stage cannot contain {subgraph.op_label(index)}: {reason}")
    op = subgraph.operators[index]
    if op.type in WINDOW_OPS:
        return _window_map(subgraph=subgraph, index=index)
    if op.type in PAD_OPS:
        pads = _spatial_paddings(subgraph=subgraph, op=op)
        windows = (AxisWindow(pad_before=pads[0]), AxisWindow(pad_before=pads[1]))
        return OpSpatialMap(index, BORDER_PAD_OP, (InputMap(0, *windows),))
    maps = tuple(InputMap(pos, IDENTITY, IDENTITY) for pos in _feature_positions(subgraph, op))
    return OpSpatialMap(index, BORDER_NONE, maps)


def unsupported_reason(*, subgraph: Subgraph, index: int) -> str | None:
    """Why the op cannot be computed patch by patch, or None if it can."""
    op = subgraph.operators[index]
    if op.type not in WINDOW_OPS | PAD_OPS | ELEMENTWISE_OPS:
        return f"{op.type} is not a spatially local op the patch rewrite handles"
    outputs = [subgraph.tensors[k] for k in op.outputs]
    if len(outputs) != 1 or not _is_feature_map(outputs[0].shape):
        return f"output must be one NHWC feature map with batch 1, got {[t.shape for t in outputs]}"
    if op.type in WINDOW_OPS:
        return _window_reason(subgraph=subgraph, op=op)
    if op.type in PAD_OPS:
        return _pad_reason(subgraph=subgraph, op=op)
    return _elementwise_reason(subgraph=subgraph, op=op)


def _is_feature_map(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[0] == 1 and min(shape) > 0


def _window_reason(*, subgraph: Subgraph, op: Operator) -> str | None:
    src = subgraph.tensors[op.inputs[0]]
    if src.is_constant or not _is_feature_map(src.shape):
        return f"input must be a NHWC feature map with batch 1, got {src.shape}"
    return None


def _pad_reason(*, subgraph: Subgraph, op: Operator) -> str | None:
    src = subgraph.tensors[op.inputs[0]]
    if not _is_feature_map(src.shape):
        return f"input must be a NHWC feature map with batch 1, got {src.shape}"
    pads = subgraph.tensors[op.inputs[1]]
    if not pads.is_constant or pads.shape != (4, 2):
        return f"paddings must be a constant [4, 2] tensor, got {pads.shape}"
    values = pads.array()
    if values[0].any() or values[3].any() or (values < 0).any():
        return f"only non-negative H/W paddings are supported, got {values.tolist()}"
    return None


def _elementwise_reason(*, subgraph: Subgraph, op: Operator) -> str | None:
    out_shape = subgraph.tensors[op.outputs[0]].shape
    if op.type == "CONCATENATION":
        return _channel_concat_reason(subgraph=subgraph, op=op, out_shape=out_shape)
    for key in op.inputs:
        if key is None:
            continue
        tensor = subgraph.tensors[key]
        if tensor.is_constant:
            if _varies_spatially(tensor.shape):
                return f"constant operand {tensor.name!r} of shape {tensor.shape} varies over H/W"
        elif tensor.shape != out_shape:
            return (f"operand {tensor.name!r} has shape {tensor.shape}, expected the output "
                    f"shape {out_shape} (no spatial broadcasting)")
    return None


def _channel_concat_reason(*, subgraph: Subgraph, op: Operator,
                           out_shape: tuple[int, ...]) -> str | None:
    if op.options.axis not in (3, -1):
        return f"CONCATENATION along axis {op.options.axis}, only the channel axis (3) is local"
    for key in op.inputs:
        tensor = subgraph.tensors[key]
        if tensor.is_constant or tensor.shape[:3] != out_shape[:3]:
            return (f"operand {tensor.name!r} of shape {tensor.shape} must be a feature map "
                    f"with the output's batch, height and width {out_shape[:3]}")
    return None


def _varies_spatially(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 3 and (shape[-2] > 1 or shape[-3] > 1)


def _feature_positions(subgraph: Subgraph, op: Operator) -> list[int]:
    return [pos for pos, key in enumerate(op.inputs)
            if key is not None and not subgraph.tensors[key].is_constant]


def _window_geometry(*, subgraph: Subgraph, op: Operator) -> tuple[AxisWindow, AxisWindow]:
    options = op.options
    if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        filt = subgraph.tensors[op.inputs[1]].shape
        kernels = (filt[1], filt[2])
        dilations = (options.dilationHFactor or 1, options.dilationWFactor or 1)
    else:
        kernels = (options.filterHeight, options.filterWidth)
        dilations = (1, 1)
    strides = (options.strideH or 1, options.strideW or 1)
    src = subgraph.tensors[op.inputs[0]].shape
    out = subgraph.tensors[op.outputs[0]].shape
    windows = []
    for axis, (k, s, d) in enumerate(zip(kernels, strides, dilations), start=1):
        window = AxisWindow(kernel=k, stride=s, dilation=d)
        if options.padding == schema.Padding.SAME:
            pad = same_pad_before(in_size=src[axis], out_size=out[axis], stride=s,
                                  extent=window.extent)
            window = AxisWindow(kernel=k, stride=s, dilation=d, pad_before=pad)
        windows.append(window)
    return windows[0], windows[1]


def _window_map(*, subgraph: Subgraph, index: int) -> OpSpatialMap:
    op = subgraph.operators[index]
    rows, cols = _window_geometry(subgraph=subgraph, op=op)
    same = op.options.padding == schema.Padding.SAME
    border = {"MAX_POOL_2D": BORDER_LOWEST,
              "AVERAGE_POOL_2D": BORDER_SAME_FIT if same else BORDER_NONE}.get(
        op.type, BORDER_ZERO_POINT)
    return OpSpatialMap(index, border, (InputMap(0, rows, cols),))


def _spatial_paddings(*, subgraph: Subgraph, op: Operator) -> tuple[int, int]:
    values = np.asarray(subgraph.tensors[op.inputs[1]].array())
    return int(values[1][0]), int(values[2][0])


@dataclass(frozen=True)
class SameFit:
    """How one axis of a patch runs a SAME window op on its own input.

    The input is `before` dummy pixels, the real pixels the outputs need, `after`
    dummies; SAME on it gives `outputs` values, of which `skip`.. are the wanted ones.
    """

    before: int
    after: int
    skip: int
    outputs: int


def same_axis_fit(*, window: AxisWindow, out: Interval, size: int) -> SameFit:
    """The smallest dummy padding that makes SAME on a patch equal SAME on the image.

    Original output o reads [o*s - pad_before, +extent) clipped to [0, size). On a
    patch input of L pixels starting at image pixel c0 - before, SAME pads
    floor(total/2) first; output q reads patch pixels [q*s - pad', +extent) clipped
    to [0, L). Dummies go only on sides where the patch is inside the image (the
    wanted windows never reach them there), so clipping matches the image's.
    """
    need = window.needed(out)
    real = need.clip(size=size)
    limit = 2 * (window.extent + window.stride)
    befores = [0] if need.start < 0 else range(limit)
    afters = [0] if need.stop > size else range(limit)
    for before, after in sorted(((b, a) for b in befores for a in afters), key=sum):
        length = before + real.size + after
        outputs = -(-length // window.stride)
        pad = max((outputs - 1) * window.stride + window.extent - length, 0) // 2
        shift = need.start - real.start + before + pad
        if shift >= 0 and shift % window.stride == 0:
            skip = shift // window.stride
            if skip + out.size <= outputs:
                return SameFit(before, after, skip, outputs)
    raise UnsupportedOpError(f"no SAME geometry reproduces outputs {out} of a {size}-pixel axis "
                             f"for window {window}")


def pad_amounts(*, needed: Interval, size: int) -> tuple[int, int]:
    """Padding (before, after) a needed interval asks for beyond an axis of `size`."""
    return max(-needed.start, 0), max(needed.stop - size, 0)


def receptive_field(*, subgraph: Subgraph, op_indices: list[int], output_key: str,
                    out_region: Region) -> dict[str, Region]:
    """Clipped region of every feature map the ops read to produce `out_region`.

    Walks `op_indices` (in execution order) backwards from `output_key`; a
    tensor read by several ops gets the bounding box of what they need.
    """
    regions: dict[str, Region] = {output_key: out_region}
    for index in reversed(op_indices):
        op = subgraph.operators[index]
        out = regions.get(op.outputs[0])
        if out is None:
            continue
        smap = spatial_map(subgraph=subgraph, index=index)
        for pos, need in smap.input_regions(out).items():
            key = op.inputs[pos]
            shape = subgraph.tensors[key].shape
            clipped = Region(need.rows.clip(size=shape[1]), need.cols.clip(size=shape[2]))
            old = regions.get(key)
            regions[key] = clipped if old is None else Region(
                clipped.rows.union(old.rows), clipped.cols.union(old.cols))
    return regions
