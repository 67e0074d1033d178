"""SOFTMAX int8 -> int8 as TFLite Micro computes it (reference_ops::Softmax, gemmlowp math).

Per row: d = x - max(x); rows with d < diff_min contribute nothing and output -128.
Otherwise d is scaled into FixedPoint<5> by (beta * s_in * 2**26) as a multiplier
(PreprocessSoftmaxScaling), exponentiated, summed in FixedPoint<12>, and each
exp is multiplied by the reciprocal of the sum and shifted to 8 bits.
The output must have scale 1/256 and zero point -128 (TFLM rejects others).
LiteRT's int8 softmax uses a lookup table and differs from this in the last bit.
"""
from __future__ import annotations

import math

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.gemmlowp_math import (exp_on_negative_values, reciprocal,
                                                     rounding_divide_by_power_of_two, srdhm)
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import scale_of, zero_point_of
from tflite_quantmcu.reference.requantize import quantize_multiplier

INT8 = schema.TensorType.INT8
SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def softmax_scaling(*, beta: float, input_scale: float) -> tuple[int, int, int]:
    """(multiplier, left shift, diff_min) of PreprocessSoftmaxScaling / CalculateInputRadius."""
    real = min(beta * input_scale * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    multiplier, left_shift = quantize_multiplier(real)
    radius = math.floor(((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                        * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << left_shift))
    return multiplier, left_shift, -radius


def _check(ctx: OpContext) -> None:
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    ctx.require_dtype(x_t, INT8)
    ctx.require_dtype(out_t, INT8)
    if zero_point_of(tensor=out_t) != -128 or np.float32(scale_of(ctx=ctx, tensor=out_t)) \
            != np.float32(1.0 / 256):
        raise ctx.error("int8 softmax output must have scale 1/256 and zero point -128, got "
                        f"{scale_of(ctx=ctx, tensor=out_t)} and {zero_point_of(tensor=out_t)}")


def softmax(*, ctx: OpContext) -> list[np.ndarray]:
    _check(ctx)
    beta = float(np.float32(ctx.options.beta))
    multiplier, left_shift, diff_min = softmax_scaling(
        beta=beta, input_scale=scale_of(ctx=ctx, tensor=ctx.input_tensor(0)))
    x = ctx.input(0).astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    included = diff >= diff_min
    scaled = srdhm(np.where(included, diff, 0) << left_shift, multiplier)
    exps = exp_on_negative_values(scaled, integer_bits=SCALED_DIFF_INTEGER_BITS)
    terms = rounding_divide_by_power_of_two(exps, ACCUMULATION_INTEGER_BITS)  # Rescale<12>
    total = np.where(included, terms, 0).sum(axis=-1, keepdims=True)
    scale, bits_over_unit = reciprocal(total, integer_digits=ACCUMULATION_INTEGER_BITS)
    exponent = bits_over_unit + 31 - 8
    out = rounding_divide_by_power_of_two(srdhm(scale, exps), exponent) - 128
    out = np.where(included, np.clip(out, -128, 127), -128)
    return [out.astype(np.int8).reshape(ctx.output_shape())]


KERNELS = {"SOFTMAX": softmax}
