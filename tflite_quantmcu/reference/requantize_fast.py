"""A faster, bit-identical MultiplyByQuantizedMultiplier for large int64 arrays.

Same result as `requantize.multiply_by_quantized_multiplier` (TFLM's double
rounding) for multipliers in [0, 2**31) and int32 inputs, in fewer passes:

- SaturatingRoundingDoublingHighMul(a, m) with m >= 0 never saturates and equals
  (a * m + 2**30) >> 31 for both signs of a * m: the negative nudge 1 - 2**30
  followed by truncation toward zero is the same floor division.
- RoundingDivideByPowerOfTwo(h, e) equals (h + 2**(e-1) - [h < 0]) >> e for e >= 1.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.reference.requantize import wrap_int32


def multiply_by_quantized_multiplier_fast(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLM MultiplyByQuantizedMultiplier over int64 values of int32 range (broadcasting)."""
    x = np.asarray(x, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    if np.any(left):
        x = wrap_int32(x << left)
    high = x * multiplier
    high += 1 << 30
    high >>= 31
    half = (np.int64(1) << right) >> 1
    if np.all(right > 0):
        high += half - (high < 0)
    else:
        high += half - ((high < 0) & (right > 0))
    high >>= right
    return high
