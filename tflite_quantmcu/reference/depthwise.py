"""DEPTHWISE_CONV_2D, int8 activations with int8 or INT4 per-channel weights.

Output channel c*M + m reads input channel c (M = depth multiplier). Each kernel
tap is one vectorized multiply-add over a block of outputs, in int32
(|tap product| <= 255 * 128, so sums of up to 65,000 taps cannot overflow).
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.output_stage import (OutputRequant, bias_values,
                                                    per_channel_multipliers)
from tflite_quantmcu.reference.quant_params import fused_activation_range, zero_point_of
from tflite_quantmcu.reference.windows import (AxisWindow, axis_window, output_blocks,
                                               pad_spatial, tap)

INT8 = schema.TensorType.INT8
INT4 = schema.TensorType.INT4


def depthwise_accumulators(*, padded: np.ndarray, weights: np.ndarray, rows: AxisWindow,
                           cols: AxisWindow) -> np.ndarray:
    """int32 (N, OH, OW, C*M) sums of (x - zp) * w over a padded, channel-repeated input."""
    acc = np.zeros(padded.shape[:1] + (rows.out, cols.out, weights.shape[-1]), dtype=np.int32)
    for i in range(rows.kernel):
        for j in range(cols.kernel):
            acc += tap(padded=padded, rows=rows, cols=cols, i=i, j=j) * weights[i, j]
    return acc


def depthwise_values(*, x: np.ndarray, weights: np.ndarray, bias: np.ndarray,
                     rows: AxisWindow, cols: AxisWindow, input_zero_point: int,
                     requant: OutputRequant) -> np.ndarray:
    """Depthwise convolution of integer x (N, H, W, C); weights (KH, KW, C*M); int8 out."""
    out_channels = weights.shape[-1]
    shifted = x.astype(np.int32) - np.int32(input_zero_point)
    if out_channels > x.shape[-1]:
        shifted = np.repeat(shifted, out_channels // x.shape[-1], axis=-1)
    padded = pad_spatial(x=shifted, rows=rows, cols=cols, fill=0)
    taps = weights.astype(np.int32)
    out = np.empty((x.shape[0], rows.out, cols.out, out_channels), dtype=np.int8)
    for block in output_blocks(images=x.shape[0], rows=rows, row_elements=cols.out * out_channels):
        acc = depthwise_accumulators(padded=padded[block.images, block.input_rows()],
                                     weights=taps, rows=block.rows, cols=cols).astype(np.int64)
        acc += bias
        out[block.images, block.out_rows] = requant.apply(acc)
    return out


def depthwise_conv_2d(*, ctx: OpContext) -> list[np.ndarray]:
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    for tensor, allowed in ((x_t, (INT8,)), (w_t, (INT8, INT4)), (out_t, (INT8,))):
        ctx.require_dtype(tensor, *allowed)
    opts = ctx.options
    x = ctx.input(0)
    x = x.reshape((-1,) + x.shape[-3:])
    weights = ctx.parameter(1)
    _, kh, kw, out_channels = weights.shape
    if out_channels % x.shape[-1]:
        raise ctx.error(f"filter has {out_channels} channels, not a multiple of the input's "
                        f"{x.shape[-1]}")
    rows = axis_window(padding=opts.padding, size=x.shape[1], kernel=kh, stride=opts.strideH,
                       dilation=opts.dilationHFactor)
    cols = axis_window(padding=opts.padding, size=x.shape[2], kernel=kw, stride=opts.strideW,
                       dilation=opts.dilationWFactor)
    multiplier, shift = per_channel_multipliers(ctx=ctx, input_t=x_t, filter_t=w_t,
                                                output_t=out_t, channels=out_channels)
    lo, hi = fused_activation_range(ctx=ctx, activation=opts.fusedActivationFunction,
                                    tensor=out_t)
    requant = OutputRequant(multiplier=multiplier, shift=shift,
                            zero_point=zero_point_of(tensor=out_t), lo=lo, hi=hi)
    out = depthwise_values(x=x, weights=weights[0],
                           bias=bias_values(ctx=ctx, index=2, channels=out_channels),
                           rows=rows, cols=cols, input_zero_point=zero_point_of(tensor=x_t),
                           requant=requant)
    return [out.reshape(ctx.output_shape())]


KERNELS = {"DEPTHWISE_CONV_2D": depthwise_conv_2d}
