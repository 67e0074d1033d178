"""Sub-byte ranges: the (scale, zero point) of a feature map planned below 8 bits.

A b-bit map (L = 2^b - 1 levels above 0) covers a real interval that holds 0. Every rule
here picks that interval as a pair of int8 codes ``[low_code, high_code]`` of the map's
int8 tensor (``low_code <= zp8 <= high_code``), from the 256-bin code histogram that
``statistics`` collects, and turns it into

* ``scale_b = float32(scale8 * (high_code - low_code) / L)``,
* ``zp_b = round_half_up((zp8 - low_code) * L / (high_code - low_code))`` in exact integers,
  clamped to ``[0, L]``.

Rules (``RANGE_RULES``):

* ``full``: the whole int8 range ``[-128, 127]``; this is ``subbyte_quant_params``
  (docs/qmcu_ops.md §1.5) and what plans without ranges mean;
* ``mse``: the interval that minimises the mean squared error of the map's values after
  quantization to b bits (clipping + rounding), searched over intervals between the zero
  point and the occupied extremes (a one-sided search when no value is below 0, as after
  ReLU/ReLU6; else a grid of at most ``MSE_GRID`` x ``MSE_GRID`` (low, high) pairs);
* ``percentile``: the central ``mass`` of the values (default 99.9 %; one-sided, upper
  tail only, when no value is below 0).

The quantizer is the one the converted graph runs: an int8 code c becomes the b-bit level
``clamp(MultiplyByQuantizedMultiplier(c - zp8, QuantizeMultiplier(scale8 / scale_b)) + zp_b,
0, L)`` (``QMCU_PACK`` semantics; the producers' direct requantization to b bits differs from
it only by the int8 rounding). VDQS's entropy, the errors below and the accuracy guard's
simulation all use :func:`levels`.

Choosing among rules (:func:`choose_range`): the rule whose interval, fitted on the
calibration samples that built ``fit_histogram``, gives the smallest quantization MSE on
**held-out** calibration samples (``check_histogram``); ties go to the earlier rule of
``RANGE_RULES`` (the wider one). This is the fallback of
:mod:`range_selection`, which judges rules by the model output; docs/quantmcu_accuracy.md
says why.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.quant.statistics import CODE_OFFSET, NUM_CODES
from tflite_quantmcu.reference.requantize import (multiply_by_quantized_multiplier,
                                                  quantize_multiplier)

RANGE_RULES = ("full", "mse", "percentile")
DEFAULT_PERCENTILE_MASS = 0.999
MSE_GRID = 48
INT8_LOW, INT8_HIGH = -CODE_OFFSET, NUM_CODES - CODE_OFFSET - 1
_CODES = np.arange(INT8_LOW, INT8_HIGH + 1, dtype=np.int64)


@dataclass(frozen=True)
class SubbyteRange:
    """The quantization of one sub-byte feature map and the rule that chose it.

    ``low_code``/``high_code``: the int8 codes the interval spans (-128/127 for ``full``).
    """

    bits: int
    scale: float
    zero_point: int
    rule: str
    low_code: int = INT8_LOW
    high_code: int = INT8_HIGH

    def __post_init__(self) -> None:
        if self.bits not in (4, 2):
            raise ConfigError(f"sub-byte range: bits must be 4 or 2, got {self.bits!r}")
        if not (isinstance(self.scale, float) and np.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"sub-byte range: scale must be a finite float > 0, "
                              f"got {self.scale!r}")
        if not 0 <= int(self.zero_point) <= (1 << self.bits) - 1:
            raise ConfigError(f"sub-byte range: zero point must be in [0, {(1 << self.bits) - 1}]"
                              f" at {self.bits} bits, got {self.zero_point!r}")
        if not INT8_LOW <= self.low_code < self.high_code <= INT8_HIGH:
            raise ConfigError(f"sub-byte range: codes must satisfy -128 <= low < high <= 127, "
                              f"got [{self.low_code}, {self.high_code}]")

    def to_dict(self) -> dict:
        return {"bits": self.bits, "scale": self.scale, "zero_point": self.zero_point,
                "rule": self.rule, "low_code": self.low_code, "high_code": self.high_code}

    @classmethod
    def from_dict(cls, data: Mapping) -> SubbyteRange:
        return cls(bits=int(data["bits"]), scale=float(data["scale"]),
                   zero_point=int(data["zero_point"]), rule=str(data["rule"]),
                   low_code=int(data.get("low_code", INT8_LOW)),
                   high_code=int(data.get("high_code", INT8_HIGH)))


@dataclass(frozen=True)
class RangeOptions:
    """rules: the rules to choose among (``("full",)`` = the whole int8 range, as before
    ranges were plan data); percentile_mass: the ``percentile`` rule's central mass."""

    rules: tuple[str, ...] = RANGE_RULES
    percentile_mass: float = DEFAULT_PERCENTILE_MASS

    def __post_init__(self) -> None:
        if not self.rules or len(set(self.rules)) != len(self.rules) or \
                any(r not in RANGE_RULES for r in self.rules):
            raise ConfigError(f"range rules must be distinct values of {RANGE_RULES}, "
                              f"got {tuple(self.rules)}")
        if not 0.5 < float(self.percentile_mass) < 1.0:
            raise ConfigError(f"percentile mass must be in (0.5, 1), got {self.percentile_mass}")

    def to_dict(self) -> dict:
        return {"rules": list(self.rules), "percentile_mass": self.percentile_mass}


# -- the quantizer ------------------------------------------------------------------------------
def range_from_codes(*, scale8: float, zero_point8: int, bits: int, low_code: int,
                     high_code: int, rule: str) -> SubbyteRange:
    """The b-bit (scale, zero point) spanning int8 codes ``[low_code, high_code]`` (module doc)."""
    zp8 = int(zero_point8)
    low, high = int(low_code), int(high_code)
    if not low <= zp8 <= high or low == high:
        raise ConfigError(f"range [{low}, {high}] must hold the zero point {zp8} and be "
                          "non-empty")
    levels = (1 << bits) - 1
    span = high - low
    scale_b = float(np.float32(float(np.float32(scale8)) * span / levels))
    zp_b = ((zp8 - low) * levels * 2 + span) // (2 * span)
    return SubbyteRange(bits=bits, scale=scale_b, zero_point=min(max(zp_b, 0), levels),
                        rule=rule, low_code=low, high_code=high)


def full_range(*, scale8: float, zero_point8: int, bits: int) -> SubbyteRange:
    """The whole int8 range (equals ``qmcu_options.subbyte_quant_params``)."""
    return range_from_codes(scale8=scale8, zero_point8=zero_point8, bits=bits,
                            low_code=INT8_LOW, high_code=INT8_HIGH, rule="full")


def levels(*, scale8: float, zero_point8: int, bits: int,
           subbyte: SubbyteRange | None = None) -> np.ndarray:
    """The b-bit level of every int8 code (index c + 128), as QMCU_PACK computes it; 8 bits:
    the code shifted to 0..255. ``subbyte`` None: the full range."""
    if bits == 8:
        return _CODES + CODE_OFFSET
    scale8 = float(np.float32(scale8))
    if subbyte is None:
        subbyte = full_range(scale8=scale8, zero_point8=zero_point8, bits=bits)
    if subbyte.bits != bits:
        raise ConfigError(f"range for {subbyte.bits} bits used at {bits} bits")
    multiplier, shift = quantize_multiplier(scale8 / subbyte.scale)
    out = multiply_by_quantized_multiplier(_CODES - int(zero_point8), multiplier, shift)
    return np.clip(out + subbyte.zero_point, 0, (1 << bits) - 1)


def dequantized(*, scale8: float, zero_point8: int, subbyte: SubbyteRange) -> np.ndarray:
    """Real value every int8 code (index c + 128) has after the b-bit round trip."""
    level = levels(scale8=scale8, zero_point8=zero_point8, bits=subbyte.bits, subbyte=subbyte)
    return subbyte.scale * (level - subbyte.zero_point).astype(np.float64)


def int8_lookup(*, scale8: float, zero_point8: int, subbyte: SubbyteRange) -> np.ndarray:
    """int8 code -> int8 code nearest to its b-bit round trip (index c + 128): a fake-quant
    table for simulating a sub-byte map inside an int8 graph."""
    real = dequantized(scale8=scale8, zero_point8=zero_point8, subbyte=subbyte)
    codes = np.floor(real / float(np.float32(scale8)) + 0.5) + int(zero_point8)
    return np.clip(codes, INT8_LOW, INT8_HIGH).astype(np.int8)


def quantization_mse(*, histogram: Sequence[int], scale8: float, zero_point8: int,
                     subbyte: SubbyteRange) -> float:
    """Mean squared error (real units) of the histogram's values after the b-bit round trip."""
    counts = np.asarray(histogram, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ConfigError("quantization error of an empty histogram")
    real = float(np.float32(scale8)) * (_CODES - int(zero_point8)).astype(np.float64)
    error = real - dequantized(scale8=scale8, zero_point8=zero_point8, subbyte=subbyte)
    return float(counts @ (error * error) / total)


# -- the rules ----------------------------------------------------------------------------------
def _occupied(histogram: np.ndarray) -> tuple[int, int]:
    nonzero = np.flatnonzero(histogram)
    return int(nonzero[0]) + INT8_LOW, int(nonzero[-1]) + INT8_LOW


def mse_codes(*, histogram: Sequence[int], zero_point8: int, bits: int) -> tuple[int, int]:
    """``[low_code, high_code]`` of the ``mse`` rule (module doc). One-sided maps: every high
    code is tried; two-sided: a ``MSE_GRID`` x ``MSE_GRID`` grid, then every pair within one
    grid step of its best;
    the errors are those of the exact quantizer."""
    counts = np.asarray(histogram, dtype=np.float64)
    zp8 = int(zero_point8)
    lowest, highest = _occupied(counts)
    highest = max(highest, min(zp8 + 1, INT8_HIGH))
    if highest == zp8:
        return INT8_LOW, INT8_HIGH
    if lowest >= zp8:
        lows, highs = np.array([zp8]), np.arange(zp8 + 1, highest + 1)
        return _best_pair(counts=counts, zp8=zp8, bits=bits, lows=lows, highs=highs)
    lows = _grid(start=lowest, stop=zp8)
    highs = _grid(start=highest, stop=zp8 + 1)
    low, high = _best_pair(counts=counts, zp8=zp8, bits=bits, lows=lows, highs=highs)
    step_low = max(1, int(np.ceil((zp8 - lowest) / (MSE_GRID - 1))))
    step_high = max(1, int(np.ceil((highest - zp8 - 1) / (MSE_GRID - 1))))
    lows = np.arange(max(lowest, low - step_low), min(zp8, low + step_low) + 1)
    highs = np.arange(max(zp8 + 1, high - step_high), min(highest, high + step_high) + 1)
    return _best_pair(counts=counts, zp8=zp8, bits=bits, lows=lows, highs=highs)


def _grid(*, start: int, stop: int) -> np.ndarray:
    """At most ``MSE_GRID`` integer codes from ``start`` to ``stop``, both included."""
    return np.unique(np.round(np.linspace(start, stop, MSE_GRID)).astype(np.int64))


def _best_pair(*, counts: np.ndarray, zp8: int, bits: int, lows: np.ndarray,
               highs: np.ndarray) -> tuple[int, int]:
    """The (low, high) pair whose exact quantizer (:func:`levels`) gives the smallest squared
    error over ``counts`` (code units; ties: the first pair, lows ascending)."""
    low, high = np.meshgrid(lows, highs, indexing="ij")
    low, high = low.reshape(-1), high.reshape(-1)
    level_count = (1 << bits) - 1
    span = high - low
    zp_b = np.clip(((zp8 - low) * level_count * 2 + span) // (2 * span), 0, level_count)
    # scale8 cancels in the ratio scale8 / scale_b; use scale8 = 1 in float32 arithmetic
    scale_b = (span / level_count).astype(np.float32).astype(np.float64)
    pairs = [quantize_multiplier(1.0 / float(s)) for s in scale_b]
    multiplier = np.array([m for m, _ in pairs], dtype=np.int64).reshape(-1, 1)
    shift = np.array([h for _, h in pairs], dtype=np.int64).reshape(-1, 1)
    used = np.flatnonzero(counts)
    x = (_CODES[used] - zp8).reshape(1, -1)
    level = np.clip(multiply_by_quantized_multiplier(x, multiplier, shift) + zp_b[:, None],
                    0, level_count)
    error = x - (level - zp_b[:, None]) * scale_b[:, None]
    best = int(np.argmin((error * error) @ counts[used]))
    return int(low[best]), int(high[best])


def percentile_codes(*, histogram: Sequence[int], zero_point8: int,
                     mass: float) -> tuple[int, int]:
    """``[low_code, high_code]`` holding the central ``mass`` of the values (one-sided when
    no value is below the zero point), widened to hold the zero point."""
    counts = np.asarray(histogram, dtype=np.float64)
    zp8 = int(zero_point8)
    lowest, _ = _occupied(counts)
    cdf = np.cumsum(counts) / counts.sum()
    tail = 1.0 - float(mass)
    if lowest >= zp8:
        low, upper_q = zp8, 1.0 - tail
    else:
        low = int(np.searchsorted(cdf, tail / 2, side="right")) + INT8_LOW
        upper_q = 1.0 - tail / 2
    high = int(np.searchsorted(cdf, upper_q - 1e-12, side="left")) + INT8_LOW
    low, high = min(low, zp8), max(high, zp8)
    if high == low:
        high = min(low + 1, INT8_HIGH)
        if high == low:
            return INT8_LOW, INT8_HIGH
    return low, high


def rule_range(*, rule: str, histogram: Sequence[int], scale8: float, zero_point8: int,
               bits: int, options: RangeOptions = RangeOptions()) -> SubbyteRange:
    """The interval one rule picks for ``histogram`` (the fit samples)."""
    if rule == "full":
        return full_range(scale8=scale8, zero_point8=zero_point8, bits=bits)
    if rule == "mse":
        low, high = mse_codes(histogram=histogram, zero_point8=zero_point8, bits=bits)
    elif rule == "percentile":
        low, high = percentile_codes(histogram=histogram, zero_point8=zero_point8,
                                     mass=options.percentile_mass)
    else:
        raise ConfigError(f"unknown range rule {rule!r}; expected one of {RANGE_RULES}")
    return range_from_codes(scale8=scale8, zero_point8=zero_point8, bits=bits, low_code=low,
                            high_code=high, rule=rule)


@dataclass(frozen=True)
class RangeChoice:
    """The chosen range and every rule's held-out error (real units squared)."""

    chosen: SubbyteRange
    errors: Mapping[str, float]


def choose_range(*, fit_histogram: Sequence[int], check_histogram: Sequence[int] | None,
                 scale8: float, zero_point8: int, bits: int,
                 options: RangeOptions = RangeOptions()) -> RangeChoice:
    """Per-map choice (module doc): fit every rule on ``fit_histogram``, keep the one with
    the smallest quantization MSE on ``check_histogram`` (held-out samples; None: on the fit
    samples themselves)."""
    check = fit_histogram if check_histogram is None or sum(check_histogram) == 0 \
        else check_histogram
    candidates = [rule_range(rule=r, histogram=fit_histogram, scale8=scale8,
                             zero_point8=zero_point8, bits=bits, options=options)
                  for r in options.rules]
    errors = {c.rule: quantization_mse(histogram=check, scale8=scale8, zero_point8=zero_point8,
                                       subbyte=c) for c in candidates}
    best = min(range(len(candidates)), key=lambda i: (errors[candidates[i].rule], i))
    return RangeChoice(chosen=candidates[best], errors=errors)
