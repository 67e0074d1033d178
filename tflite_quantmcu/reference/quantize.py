"""QUANTIZE (float -> int, int -> int requantization) and DEQUANTIZE (int -> float).

QUANTIZE from float: zp + round(x / float(scale)) in float32, rounding half away
from zero, then clamped (reference_ops::AffineQuantize). Between integer types:
MultiplyByQuantizedMultiplier(x - zp_in, QuantizeMultiplier(s_in / s_out)) + zp_out.
DEQUANTIZE: float(double(scale) * (x - zp)).
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import (numpy_dtype, round_half_away, scale_of,
                                                    type_range, zero_point_of)
from tflite_quantmcu.reference.requantize import quantize_multiplier
from tflite_quantmcu.reference.requantize_fast import (
    multiply_by_quantized_multiplier_fast as multiply_by_quantized_multiplier)

T = schema.TensorType
INTEGER_TYPES = (T.INT8, T.UINT8, T.INT16, T.INT32)


def affine_quantize(*, values: np.ndarray, scale: float, zero_point: int, lo: int,
                    hi: int) -> np.ndarray:
    """reference_ops::AffineQuantize: clamp(zp + round(x / float(scale))), int64 result."""
    ratio = np.asarray(values, dtype=np.float32) / np.float32(scale)
    ratio = np.clip(ratio, np.float32(-2.0 ** 31), np.float32(2.0 ** 31 - 256))
    return np.clip(round_half_away(ratio).astype(np.int64) + zero_point, lo, hi)


def quantize(*, ctx: OpContext) -> list[np.ndarray]:
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    ctx.require_dtype(out_t, T.INT8, T.UINT8, T.INT16)
    ctx.require_dtype(x_t, T.FLOAT32, *INTEGER_TYPES)
    lo, hi = type_range(ctx=ctx, tensor=out_t)
    out_scale = scale_of(ctx=ctx, tensor=out_t)
    out_zp = zero_point_of(tensor=out_t)
    x = ctx.input(0)
    if x_t.dtype == T.FLOAT32:
        values = affine_quantize(values=x, scale=out_scale, zero_point=out_zp, lo=lo, hi=hi)
    else:
        multiplier, shift = quantize_multiplier(scale_of(ctx=ctx, tensor=x_t) / out_scale)
        shifted = x.astype(np.int64) - zero_point_of(tensor=x_t)
        values = multiply_by_quantized_multiplier(shifted, multiplier, shift) + out_zp
    out = np.clip(values, lo, hi).astype(numpy_dtype(ctx=ctx, tensor=out_t))
    return [out.reshape(ctx.output_shape())]


def dequantize(*, ctx: OpContext) -> list[np.ndarray]:
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    ctx.require_dtype(x_t, T.INT8, T.UINT8, T.INT16)
    ctx.require_dtype(out_t, T.FLOAT32)
    shifted = ctx.input(0).astype(np.int64) - zero_point_of(tensor=x_t)
    out = (scale_of(ctx=ctx, tensor=x_t) * shifted.astype(np.float64)).astype(np.float32)
    return [out.reshape(ctx.output_shape())]


KERNELS = {"QUANTIZE": quantize, "DEQUANTIZE": dequantize}
