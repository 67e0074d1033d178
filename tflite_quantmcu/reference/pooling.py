"""AVERAGE_POOL_2D and MAX_POOL_2D on int8 (TFLite's reference_integer_ops pooling).

Both work on the stored values (input and output share scale and zero point);
padded taps are left out, also from the average's divisor. The average rounds
half away from zero: (sum + count/2) / count for positive sums,
(sum - count/2) / count otherwise, with C's truncating division.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import fused_activation_range
from tflite_quantmcu.reference.windows import axis_window, pad_spatial, tap, valid_counts

INT8 = schema.TensorType.INT8


def rounded_average(*, total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """TFLite's integer average: half away from zero, truncating division."""
    half = count // 2
    return np.where(total > 0, (total + half) // count, -((half - total) // count))


def _pool_setup(ctx: OpContext):
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    ctx.require_dtype(x_t, INT8)
    ctx.require_dtype(out_t, INT8)
    opts = ctx.options
    x = ctx.input(0)
    x = x.reshape((-1,) + x.shape[-3:])
    rows = axis_window(padding=opts.padding, size=x.shape[1], kernel=opts.filterHeight,
                       stride=opts.strideH)
    cols = axis_window(padding=opts.padding, size=x.shape[2], kernel=opts.filterWidth,
                       stride=opts.strideW)
    lo, hi = fused_activation_range(ctx=ctx, activation=opts.fusedActivationFunction,
                                    tensor=out_t)
    return x, rows, cols, lo, hi


def average_pool_2d(*, ctx: OpContext) -> list[np.ndarray]:
    x, rows, cols, lo, hi = _pool_setup(ctx)
    padded = pad_spatial(x=x.astype(np.int32), rows=rows, cols=cols, fill=0)
    total = np.zeros((x.shape[0], rows.out, cols.out, x.shape[3]), dtype=np.int32)
    for i in range(rows.kernel):
        for j in range(cols.kernel):
            total += tap(padded=padded, rows=rows, cols=cols, i=i, j=j)
    count = valid_counts(height=x.shape[1], width=x.shape[2], rows=rows, cols=cols)
    if np.any(count == 0):
        raise ctx.error("a pooling window lies entirely in the padding")
    out = rounded_average(total=total, count=count[None, :, :, None].astype(np.int32))
    return [np.clip(out, lo, hi).astype(np.int8).reshape(ctx.output_shape())]


def max_pool_2d(*, ctx: OpContext) -> list[np.ndarray]:
    x, rows, cols, lo, hi = _pool_setup(ctx)
    padded = pad_spatial(x=x, rows=rows, cols=cols, fill=np.iinfo(np.int8).min)
    out = np.full((x.shape[0], rows.out, cols.out, x.shape[3]), np.iinfo(np.int8).min,
                  dtype=np.int8)
    for i in range(rows.kernel):
        for j in range(cols.kernel):
            np.maximum(out, tap(padded=padded, rows=rows, cols=cols, i=i, j=j), out=out)
    return [np.clip(out, lo, hi).astype(np.int8).reshape(ctx.output_shape())]


KERNELS = {"AVERAGE_POOL_2D": average_pool_2d, "MAX_POOL_2D": max_pool_2d}
