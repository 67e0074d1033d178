"""gemmlowp's fixed-point exp and reciprocal, as TFLite's int8 SOFTMAX uses them.

Values are int32 raw fixed-point numbers held in int64 numpy arrays. A
FixedPoint<I> has I integer bits and 31 - I fractional bits. Products are
SaturatingRoundingDoublingHighMul (FixedPoint<A> * FixedPoint<B> = FixedPoint<A+B>);
sums are plain int32 additions.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.reference.requantize import (INT32_MAX, INT32_MIN,
                                                  rounding_divide_by_power_of_two,
                                                  saturating_rounding_doubling_high_mul)

srdhm = saturating_rounding_doubling_high_mul

# exp(-2**k) as FixedPoint<0> raws, k = -2 .. 4 (gemmlowp's barrel shifter constants).
EXP_OF_MINUS_POWERS_OF_TWO = ((-2, 1672461947), (-1, 1302514674), (0, 790015084),
                              (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def saturating_multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT: saturating left shift, or rounding right shift."""
    x = np.asarray(x, dtype=np.int64)
    if exponent < 0:
        return rounding_divide_by_power_of_two(x, -exponent)
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def rescale(x: np.ndarray, *, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp Rescale between integer-bit counts."""
    return saturating_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for FixedPoint<0> a in [-1/4, 0): Taylor expansion around -1/8."""
    constant_term = 1895147668          # exp(-1/8)
    one_third = 715827883
    x = a + (1 << 28)                   # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_power_of_two(x4, 2)
    poly = rounding_divide_by_power_of_two(srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + srdhm(constant_term, x + poly)


def exp_on_negative_values(a: np.ndarray, *, integer_bits: int = 5) -> np.ndarray:
    """exp(a) for FixedPoint<integer_bits> a <= 0, as a FixedPoint<0> raw."""
    a = np.asarray(a, dtype=np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (one_quarter - 1)) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_quarter, src_integer_bits=integer_bits, dst_integer_bits=0))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in EXP_OF_MINUS_POWERS_OF_TWO:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(remainder & bit, srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def rounding_half_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) / 2 rounded half away from zero (C truncating division after +-1)."""
    total = np.asarray(a, dtype=np.int64) + b
    nudged = total + np.where(total >= 0, 1, -1)
    return np.where(nudged >= 0, nudged // 2, -((-nudged) // 2))


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """1 / (1 + a) for FixedPoint<0> a in [0, 1): Newton-Raphson, FixedPoint<0> raw."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = 1515870810 + srdhm(half_denominator, -1010580540)     # 48/17 - 32/17 * d, in F2
    for _ in range(3):
        one_minus_dx = (1 << 29) - srdhm(half_denominator, x)
        x = x + rescale(srdhm(x, one_minus_dx), src_integer_bits=4, dst_integer_bits=2)
    return rescale(x, src_integer_bits=1, dst_integer_bits=0)


def bit_length(x: np.ndarray) -> np.ndarray:
    """Number of significant bits of non-negative int64 values (0 for 0)."""
    x = np.asarray(x, dtype=np.int64)
    length = np.zeros(x.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = (x >> step) > 0
        length += np.where(big, step, 0)
        x = np.where(big, x >> step, x)
    return length + (x > 0)


def reciprocal(x: np.ndarray, *, integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetReciprocal: (FixedPoint<0> scale, num_bits_over_unit) for positive x."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = 32 - bit_length(x)
    shifted_minus_one = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), integer_digits - headroom_plus_one
