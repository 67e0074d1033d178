"""CONV_2D, int8 activations with int8 or INT4 per-channel weights (TFLite's ConvPerChannel).

acc[c] = sum (x - x_zp) * w[c] + bias[c], then per-channel requantization.
Implemented as im2col + an exact float matmul; the input offset is folded into
a per-channel constant: sum (x - zp) w = sum x w - zp sum w, with padding
filled with zp so that padded taps contribute nothing.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.integer_matmul import exact_matmul
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.output_stage import (bias_values, per_channel_multipliers,
                                                    requantize_to_output)
from tflite_quantmcu.reference.quant_params import fused_activation_range, zero_point_of
from tflite_quantmcu.reference.windows import AxisWindow, axis_window, pad_spatial, window_view

INT8 = schema.TensorType.INT8
INT4 = schema.TensorType.INT4


def im2col(*, x: np.ndarray, rows: AxisWindow, cols: AxisWindow, fill: int) -> np.ndarray:
    """(N, H, W, C) -> float32 (N*OH*OW, KH*KW*C) in the filter's (KH, KW, C) order."""
    n, _, _, c = x.shape
    if rows.kernel == cols.kernel == 1 and rows.stride == cols.stride == 1 and \
            not (rows.pad_before or rows.pad_after or cols.pad_before or cols.pad_after):
        return x.reshape(-1, c).astype(np.float32)
    padded = pad_spatial(x=x.astype(np.float32), rows=rows, cols=cols, fill=fill)
    windows = window_view(padded=padded, rows=rows, cols=cols)
    patches = windows.transpose(0, 1, 2, 4, 5, 3)
    return patches.reshape(n * rows.out * cols.out, rows.kernel * cols.kernel * c)


def conv_accumulators(*, x: np.ndarray, weights: np.ndarray, rows: AxisWindow,
                      cols: AxisWindow, input_zero_point: int) -> np.ndarray:
    """int64 (N, OH, OW, OC) sums of (x - zp) * w for one group."""
    out_channels = weights.shape[0]
    lhs = im2col(x=x, rows=rows, cols=cols, fill=input_zero_point)
    rhs = weights.reshape(out_channels, -1).T
    acc = exact_matmul(lhs=lhs, rhs=rhs, lhs_abs_max=128)
    acc -= input_zero_point * rhs.astype(np.int64).sum(axis=0)
    return acc.reshape(x.shape[0], rows.out, cols.out, out_channels)


def conv_2d(*, ctx: OpContext) -> list[np.ndarray]:
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    for tensor, allowed in ((x_t, (INT8,)), (w_t, (INT8, INT4)), (out_t, (INT8,))):
        ctx.require_dtype(tensor, *allowed)
    opts = ctx.options
    x = ctx.input(0)
    x = x.reshape((-1,) + x.shape[-3:])
    weights = ctx.parameter(1)
    out_channels, kh, kw, group_in = weights.shape
    if x.shape[-1] % group_in:
        raise ctx.error(f"input has {x.shape[-1]} channels, not a multiple of the filter's "
                        f"{group_in}")
    groups = x.shape[-1] // group_in
    rows = axis_window(padding=opts.padding, size=x.shape[1], kernel=kh, stride=opts.strideH,
                       dilation=opts.dilationHFactor)
    cols = axis_window(padding=opts.padding, size=x.shape[2], kernel=kw, stride=opts.strideW,
                       dilation=opts.dilationWFactor)
    zp = zero_point_of(tensor=x_t)
    per_group = out_channels // groups
    parts = [conv_accumulators(x=x[..., g * group_in:(g + 1) * group_in],
                               weights=weights[g * per_group:(g + 1) * per_group],
                               rows=rows, cols=cols, input_zero_point=zp)
             for g in range(groups)]
    acc = parts[0] if groups == 1 else np.concatenate(parts, axis=-1)
    acc += bias_values(ctx=ctx, index=2, channels=out_channels)
    multiplier, shift = per_channel_multipliers(ctx=ctx, input_t=x_t, filter_t=w_t,
                                                output_t=out_t, channels=out_channels)
    lo, hi = fused_activation_range(ctx=ctx, activation=opts.fusedActivationFunction,
                                    tensor=out_t)
    out = requantize_to_output(acc=acc, multiplier=multiplier, shift=shift,
                               zero_point=zero_point_of(tensor=out_t), lo=lo, hi=hi)
    return [out.reshape(ctx.output_shape())]


KERNELS = {"CONV_2D": conv_2d}
