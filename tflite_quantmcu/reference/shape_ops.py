"""Data-movement ops: RESHAPE, SQUEEZE, EXPAND_DIMS, PAD, PADV2, CONCATENATION,
STRIDED_SLICE, SLICE, SHAPE, PACK. They copy stored values and work on any dtype.

Output shapes come from the graph (TFLM also runs on the converter's static
shapes); the shape inputs of RESHAPE and friends are not needed.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import numpy_dtype, zero_point_of


def with_samples(*, ctx: OpContext, value: np.ndarray) -> np.ndarray:
    """Broadcasts a constant's sample axis of 1 to the number of samples."""
    return np.broadcast_to(value, (ctx.num_samples,) + value.shape[1:])


def reshape(*, ctx: OpContext) -> list[np.ndarray]:
    x = with_samples(ctx=ctx, value=ctx.input(0))
    target = ctx.output_shape()
    if x[0].size != int(np.prod(target[1:], dtype=np.int64)):
        raise ctx.error(f"cannot reshape {x.shape[1:]} into {target[1:]}")
    return [x.reshape(target).copy()]


def pad_value(*, ctx: OpContext) -> int | float:
    """PADV2's constant, else the output zero point (int8) or 0."""
    if ctx.input_tensor(2) is not None:
        return ctx.parameter(2).reshape(-1)[0]
    if ctx.output_tensor().dtype == schema.TensorType.INT8:
        return zero_point_of(tensor=ctx.output_tensor())
    return 0


def pad(*, ctx: OpContext) -> list[np.ndarray]:
    x = with_samples(ctx=ctx, value=ctx.input(0))
    paddings = ctx.parameter(1).astype(np.int64).reshape(-1, 2)
    if paddings.shape[0] != x.ndim - 1 or np.any(paddings < 0):
        raise ctx.error(f"paddings {paddings.tolist()} do not fit an input of rank {x.ndim - 1}")
    widths = [(0, 0)] + [tuple(p) for p in paddings.tolist()]
    return [np.pad(x, widths, constant_values=pad_value(ctx=ctx)).reshape(ctx.output_shape())]


def _scale_and_zero_point(tensor) -> tuple:
    q = tensor.quantization
    return ((), ()) if q is None else (tuple(q.scale), tuple(q.zero_point))


def concatenation(*, ctx: OpContext) -> list[np.ndarray]:
    out_t = ctx.output_tensor()
    for i in range(ctx.num_inputs):
        tensor = ctx.input_tensor(i)
        if (out_t.dtype == schema.TensorType.INT8
                and _scale_and_zero_point(tensor) != _scale_and_zero_point(out_t)):
            raise ctx.error(f"input {tensor.name!r} is quantized differently from the output "
                            "(TFLM requires equal scale and zero point)")
    rank = len(out_t.shape)
    axis = ctx.options.axis + rank if ctx.options.axis < 0 else ctx.options.axis
    parts = [with_samples(ctx=ctx, value=ctx.input(i)) for i in range(ctx.num_inputs)]
    return [np.concatenate(parts, axis=axis + 1).reshape(ctx.output_shape())]


def _bit(mask: int, axis: int) -> bool:
    return bool((mask >> axis) & 1)


def strided_indices(*, dim: int, begin: int, end: int, stride: int, begin_masked: bool,
                    end_masked: bool, shrink: bool) -> np.ndarray:
    """Indices one axis of TFLite's StridedSlice selects (StartForAxis / StopForAxis)."""
    if begin_masked:
        start = 0 if stride > 0 else dim - 1
    else:
        start = begin + dim if begin < 0 else begin
        start = min(max(start, 0), dim) if stride > 0 else min(max(start, -1), dim - 1)
    if shrink:
        return np.array([start])
    if end_masked:
        stop = dim if stride > 0 else -1
    else:
        stop = end + dim if end < 0 else end
        stop = min(max(stop, 0), dim) if stride > 0 else min(max(stop, -1), dim - 1)
    return np.arange(start, stop, stride)


def strided_slice(*, ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    if opts.ellipsisMask or opts.newAxisMask:
        raise ctx.error("ellipsis_mask and new_axis_mask are not supported")
    x = with_samples(ctx=ctx, value=ctx.input(0))
    begin, end, strides = (ctx.parameter(i).astype(np.int64).reshape(-1).tolist()
                           for i in (1, 2, 3))
    for axis, dim in enumerate(x.shape[1:]):
        if axis >= len(begin):
            break
        if strides[axis] == 0:
            raise ctx.error(f"stride 0 on axis {axis}")
        stop = begin[axis] + end[axis] if opts.offset else end[axis]
        picked = strided_indices(dim=dim, begin=begin[axis], end=stop, stride=strides[axis],
                                 begin_masked=_bit(opts.beginMask, axis),
                                 end_masked=_bit(opts.endMask, axis),
                                 shrink=_bit(opts.shrinkAxisMask, axis))
        x = np.take(x, picked, axis=axis + 1)
    return [x.reshape(ctx.output_shape())]


def slice_(*, ctx: OpContext) -> list[np.ndarray]:
    x = with_samples(ctx=ctx, value=ctx.input(0))
    begin = ctx.parameter(1).astype(np.int64).reshape(-1).tolist()
    size = ctx.parameter(2).astype(np.int64).reshape(-1).tolist()
    index = [slice(None)]
    for axis, dim in enumerate(x.shape[1:]):
        stop = dim if size[axis] == -1 else begin[axis] + size[axis]
        if not 0 <= begin[axis] <= stop <= dim:
            raise ctx.error(f"slice begin {begin[axis]} size {size[axis]} outside axis {axis} "
                            f"of length {dim}")
        index.append(slice(begin[axis], stop))
    return [x[tuple(index)].reshape(ctx.output_shape()).copy()]


def shape(*, ctx: OpContext) -> list[np.ndarray]:
    dims = np.asarray(ctx.input_tensor(0).shape,
                      dtype=numpy_dtype(ctx=ctx, tensor=ctx.output_tensor()))
    return [np.broadcast_to(dims, ctx.output_shape()).copy()]


def pack(*, ctx: OpContext) -> list[np.ndarray]:
    rank = len(ctx.output_tensor().shape)
    axis = ctx.options.axis + rank if ctx.options.axis < 0 else ctx.options.axis
    parts = [with_samples(ctx=ctx, value=ctx.input(i)) for i in range(ctx.num_inputs)]
    return [np.stack(parts, axis=axis + 1).reshape(ctx.output_shape())]


KERNELS = {
    "RESHAPE": reshape, "SQUEEZE": reshape, "EXPAND_DIMS": reshape,
    "PAD": pad, "PADV2": pad, "CONCATENATION": concatenation,
    "STRIDED_SLICE": strided_slice, "SLICE": slice_, "SHAPE": shape, "PACK": pack,
}
