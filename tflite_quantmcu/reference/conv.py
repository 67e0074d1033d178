"""CONV_2D, int8 activations with int8 or INT4 per-channel weights (TFLite's ConvPerChannel).

acc[c] = sum (x - x_zp) * w[c] + bias[c], then per-channel requantization.
Implemented as im2col + an exact float matmul, block by block of outputs; the
input offset is folded into a per-channel constant: sum (x - zp) w = sum x w -
zp sum w, with padding filled with zp so that padded taps contribute nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.integer_matmul import exact_matmul
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.output_stage import (OutputRequant, bias_values,
                                                    per_channel_multipliers)
from tflite_quantmcu.reference.quant_params import fused_activation_range, zero_point_of
from tflite_quantmcu.reference.windows import (AxisWindow, axis_window, output_blocks, pad_spatial,
                                               window_view)

INT8 = schema.TensorType.INT8
INT4 = schema.TensorType.INT4


def im2col(*, padded: np.ndarray, rows: AxisWindow, cols: AxisWindow) -> np.ndarray:
    """Padded float32 (N, H, W, C) -> (N*OH*OW, KH*KW*C) in the filter's (KH, KW, C) order."""
    n, _, _, c = padded.shape
    if rows.kernel == cols.kernel == 1 and rows.stride == cols.stride == 1:
        return padded[:, :rows.out, :cols.out].reshape(-1, c)
    windows = window_view(padded=padded, rows=rows, cols=cols)
    patches = windows.transpose(0, 1, 2, 4, 5, 3)
    return patches.reshape(n * rows.out * cols.out, rows.kernel * cols.kernel * c)


@dataclass(frozen=True)
class ConvGroup:
    """One group's weights as a (K, OC) matmul operand and its per-channel constant."""

    rhs: np.ndarray
    offset: np.ndarray


def conv_groups(*, weights: np.ndarray, groups: int, input_zero_point: int,
                bias: np.ndarray) -> list[ConvGroup]:
    """Splits weights per group; offset = bias - zp * sum(w) per output channel."""
    per_group = weights.shape[0] // groups
    result = []
    for g in range(groups):
        rhs = weights[g * per_group:(g + 1) * per_group].reshape(per_group, -1).T
        offset = (bias[g * per_group:(g + 1) * per_group]
                  - input_zero_point * rhs.astype(np.int64).sum(axis=0))
        result.append(ConvGroup(rhs=rhs.astype(np.float32), offset=offset))
    return result


def conv_block_accumulators(*, padded: np.ndarray, groups: list[ConvGroup], rows: AxisWindow,
                            cols: AxisWindow) -> np.ndarray:
    """int64 (N*OH*OW, OC) = bias + sum (x - zp) * w for one block of outputs."""
    group_in = padded.shape[-1] // len(groups)
    parts = []
    for g, group in enumerate(groups):
        lhs = im2col(padded=padded[..., g * group_in:(g + 1) * group_in], rows=rows, cols=cols)
        acc = exact_matmul(lhs=lhs, rhs=group.rhs, lhs_abs_max=128)
        acc += group.offset
        parts.append(acc)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def conv_values(*, x: np.ndarray, weights: np.ndarray, bias: np.ndarray, rows: AxisWindow,
                cols: AxisWindow, input_zero_point: int, requant: OutputRequant) -> np.ndarray:
    """Grouped convolution of integer x (N, H, W, C), |x| <= 128, to int8 (N, OH, OW, OC)."""
    out_channels, _, _, group_in = weights.shape
    groups = conv_groups(weights=weights, groups=x.shape[-1] // group_in,
                         input_zero_point=input_zero_point, bias=bias)
    padded = pad_spatial(x=x.astype(np.float32), rows=rows, cols=cols, fill=input_zero_point)
    out = np.empty((x.shape[0], rows.out, cols.out, out_channels), dtype=np.int8)
    for block in output_blocks(images=x.shape[0], rows=rows, row_elements=cols.out * out_channels):
        acc = conv_block_accumulators(padded=padded[block.images, block.input_rows()],
                                      groups=groups, rows=block.rows, cols=cols)
        target = out[block.images, block.out_rows]
        target[...] = requant.apply(acc).reshape(target.shape)
    return out


def conv_2d(*, ctx: OpContext) -> list[np.ndarray]:
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    for tensor, allowed in ((x_t, (INT8,)), (w_t, (INT8, INT4)), (out_t, (INT8,))):
        ctx.require_dtype(tensor, *allowed)
    opts = ctx.options
    x = ctx.input(0)
    x = x.reshape((-1,) + x.shape[-3:])
    weights = ctx.parameter(1)
    out_channels, kh, kw, group_in = weights.shape
    if x.shape[-1] % group_in or out_channels % (x.shape[-1] // group_in):
        raise ctx.error(f"input has {x.shape[-1]} channels, filter {weights.shape}: "
                        "not a whole number of groups")
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
    out = conv_values(x=x, weights=weights, bias=bias_values(ctx=ctx, index=2,
                                                             channels=out_channels),
                      rows=rows, cols=cols, input_zero_point=zero_point_of(tensor=x_t),
                      requant=requant)
    return [out.reshape(ctx.output_shape())]


KERNELS = {"CONV_2D": conv_2d}
