"""MEAN and SUM on int8 as TFLite Micro computes them (reference_ops::QuantizedMeanOrSum).

sum = sum of the stored values over the axes; the multiplier is
QuantizeMultiplier(s_in / s_out). MEAN folds 1/n into it: with
k = min(floor(log2 n), 32, 31 + shift), multiplier' = (multiplier << k) // n and
shift' = shift - k. Output = MultiplyByQuantizedMultiplier(sum - zp_in * n) + zp_out.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import scale_of, zero_point_of
from tflite_quantmcu.reference.requantize import quantize_multiplier
from tflite_quantmcu.reference.requantize_fast import (
    multiply_by_quantized_multiplier_fast as multiply_by_quantized_multiplier)

INT8 = schema.TensorType.INT8


def resolved_axes(*, ctx: OpContext, rank: int) -> tuple[int, ...]:
    """The axis input made non-negative and unique (TFLite's ResolveAxis)."""
    axes = []
    for axis in np.asarray(ctx.parameter(1)).reshape(-1).tolist():
        if not -rank <= axis < rank:
            raise ctx.error(f"axis {axis} is out of range for rank {rank}")
        axis = axis + rank if axis < 0 else axis
        if axis not in axes:
            axes.append(axis)
    return tuple(axes)


def mean_multiplier(*, multiplier: int, shift: int, count: int) -> tuple[int, int]:
    """Folds 1/count into (multiplier, shift) the way QuantizedMeanOrSum does."""
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << k) // count, shift - k


def quantized_mean_or_sum(*, ctx: OpContext, mean: bool) -> list[np.ndarray]:
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    ctx.require_dtype(x_t, INT8)
    ctx.require_dtype(out_t, INT8)
    x = ctx.input(0)
    axes = resolved_axes(ctx=ctx, rank=len(x_t.shape))
    count = int(np.prod([x_t.shape[a] for a in axes], dtype=np.int64))
    total = x.astype(np.int64).sum(axis=tuple(a + 1 for a in axes))
    if count == 0:
        return [np.zeros(ctx.output_shape(), dtype=np.int8)]
    multiplier, shift = quantize_multiplier(scale_of(ctx=ctx, tensor=x_t)
                                            / scale_of(ctx=ctx, tensor=out_t))
    if mean:
        multiplier, shift = mean_multiplier(multiplier=multiplier, shift=shift, count=count)
    shifted = total - zero_point_of(tensor=x_t) * count
    out = multiply_by_quantized_multiplier(shifted, multiplier, shift) + zero_point_of(tensor=out_t)
    return [np.clip(out, -128, 127).astype(np.int8).reshape(ctx.output_shape())]


def mean(*, ctx: OpContext) -> list[np.ndarray]:
    return quantized_mean_or_sum(ctx=ctx, mean=True)


def sum_(*, ctx: OpContext) -> list[np.ndarray]:
    return quantized_mean_or_sum(ctx=ctx, mean=False)


KERNELS = {"MEAN": mean, "SUM": sum_}
