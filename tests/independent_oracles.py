"""Exact, arbitrary-precision oracles of the QMCU_* arithmetic (docs/qmcu_ops.md §1, §4-§6).

Written from docs/qmcu_ops.md and the published TFLite / TFLite Micro / gemmlowp semantics,
not from tflite_quantmcu/reference/* nor cmixnn_bridge/*: every value is a Python int (or an
exact ``fractions.Fraction``), so there is no int64 wrap, no float rounding and no numpy in
the arithmetic. Roundings are stated as what they *are* mathematically (floor of an exact
rational plus one half, round half away from zero) rather than as the shift / mask / nudge
tricks the C and numpy code use; ``tests/test_independent_oracles.py`` also checks that these
statements agree with the doc's literal step formulas, so the two readings cannot drift apart.

Tensors are flat Python lists of logical integer values in NHWC order (innermost axis =
channels); the stored form is ``bytes`` (8-bit: one two's-complement byte per value; 4/2-bit:
packed low bits first along the channel axis, docs §1.1).

Where an int32 intermediate that the doc does *not* define to wrap would leave the int32
range (the sum ``a' + b'`` of QMCU_ADD, ``MBQM(...) + zero_point``), the C kernels would hit
signed overflow (undefined behaviour) and the doc is silent, so the oracle raises
:class:`OutsideSpec` and the tests discard that draw.
"""
from __future__ import annotations

import math
import struct
from fractions import Fraction

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
ACT_BITS = (8, 4, 2)


class OutsideSpec(ArithmeticError):
    """An int32 step the doc does not define overflowed: no defined result to compare."""


# ------------------------------------------------------------------------------ helpers
def is_int32(v: int) -> bool:
    return INT32_MIN <= v <= INT32_MAX


def wrap_int32(v: int) -> int:
    """Two's-complement reduction modulo 2^32 (docs §1.3 step 2: `x * 2^left` wraps)."""
    return (v - INT32_MIN) % (1 << 32) + INT32_MIN


def checked_int32(v: int, *, what: str) -> int:
    if not is_int32(v):
        raise OutsideSpec(f"{what} = {v} leaves int32 (C signed overflow; doc undefined)")
    return v


def pow2(k: int) -> Fraction:
    """2^k exactly, for any integer k."""
    return Fraction(1 << k) if k >= 0 else Fraction(1, 1 << -k)


def round_half_up(v: Fraction) -> int:
    """Nearest integer, ties toward +infinity: floor(v + 1/2)."""
    return math.floor(v + Fraction(1, 2))


def round_half_away(v: Fraction) -> int:
    """Nearest integer, ties away from zero (C's round(), TfLiteRound)."""
    r = math.floor(abs(v) + Fraction(1, 2))
    return r if v >= 0 else -r


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def act_range(bits: int) -> tuple[int, int]:
    """docs §1.1: int8 [-128, 127] for 8 bits, unsigned [0, 2^bits - 1] for 4 and 2 bits."""
    if bits not in ACT_BITS:
        raise ValueError(f"bits={bits}")
    return (-128, 127) if bits == 8 else (0, (1 << bits) - 1)


# ------------------------------------------------------------------------------ (1) requant
def srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 a, b (docs §1.3 step 3).

    The high 32 bits of 2*a*b, i.e. a*b / 2^31, rounded to nearest with ties toward +inf
    (gemmlowp's nudge 2^30 / 1-2^30 followed by C truncation is exactly that); the single
    overflowing case a == b == INT32_MIN saturates to INT32_MAX.
    """
    assert is_int32(a) and is_int32(b), (a, b)
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    return round_half_up(Fraction(a * b, 1 << 31))


def rdbpot(y: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: y / 2^exponent rounded half away from zero (§1.3 step 4)."""
    assert is_int32(y) and 0 <= exponent <= 31, (y, exponent)
    return round_half_away(Fraction(y, 1 << exponent))


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """TFLM reference MultiplyByQuantizedMultiplier (double rounding), docs §1.3.

    RDBPOT(SRDHM(wrap32(x * 2^max(shift, 0)), multiplier), max(-shift, 0)). For shift <= 0
    this is TFLite's MultiplyByQuantizedMultiplierSmallerThanOneExp.
    """
    assert is_int32(x) and is_int32(multiplier), (x, multiplier)
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(wrap_int32(x * (1 << left)), multiplier), right)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (docs §1.3), exactly on the rational value of the double.

    real = q * 2^shift with q in [1/2, 1); multiplier = round_half_away(q * 2^31); 2^31 becomes
    (2^30, shift + 1); shift < -31 flushes to (0, 0); 0 gives (0, 0). (TFLite's
    single-rounding build also saturates shift > 30; the doc, like the default double-rounding
    build, does not, so neither does this oracle.)
    """
    if real == 0:
        return 0, 0
    if not (math.isfinite(real) and real > 0):
        raise ValueError(f"multiplier {real!r} must be finite and > 0")
    r = Fraction(real)
    shift = r.numerator.bit_length() - r.denominator.bit_length()
    while pow2(shift) <= r:
        shift += 1
    while pow2(shift - 1) > r:
        shift -= 1
    q = r / pow2(shift)
    assert Fraction(1, 2) <= q < 1
    multiplier = round_half_away(q * (1 << 31))
    if multiplier == 1 << 31:
        multiplier, shift = 1 << 30, shift + 1
    if shift < -31:
        return 0, 0
    return multiplier, shift


def float32(v: float) -> float:
    """The nearest IEEE binary32 value of the double v (C's (float) cast)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def subbyte_quant_params(*, scale8: float, zero_point8: int, bits: int) -> tuple[float, int]:
    """docs §1.5: same real range as the int8 tensor; zp = round_half_up(-rmin / scale_b).

    scale_b = float32(double(scale8) * 255 / (2^b - 1)). The zero point is stated on exact
    rationals with the *ideal* scale ratio 255 / (2^b - 1), as the doc's integer formula is.
    """
    if bits == 8:
        return float32(scale8), zero_point8
    levels = (1 << bits) - 1
    scale_b = float32(float(scale8) * 255.0 / levels)
    zp_b = round_half_up(Fraction((zero_point8 + 128) * levels, 255))
    return scale_b, clamp(zp_b, 0, levels)


# ------------------------------------------------------------------------------ (5) packing
def per_byte(bits: int) -> int:
    return 8 // bits


def stored_channels(channels: int, bits: int) -> int:
    """Innermost stored size: C for int8, C * bits / 8 bytes for packed (§1.1)."""
    if bits != 8 and channels % per_byte(bits):
        raise ValueError(f"{channels} channels at {bits} bits break the channel-count rule")
    return channels * bits // 8


def pack(values: list[int], *, bits: int, channels: int, signed: bool = False) -> bytes:
    """Logical NHWC values -> stored bytes (docs §1.1 / §1.2).

    8 bits: one byte per value, two's complement (int8). 4 / 2 bits: per pixel, element
    k*(8/bits) + j of the channel axis sits in bits j*bits .. j*bits+bits-1 of byte k of that
    pixel; bytes of consecutive pixels follow each other. Activations are unsigned, weights
    (``signed``) two's complement fields.
    """
    assert len(values) % channels == 0
    lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed or bits == 8
              else (0, (1 << bits) - 1))
    for v in values:
        if not lo <= v <= hi:
            raise ValueError(f"{v} outside [{lo}, {hi}] for {bits} bits")
    if bits == 8:
        return bytes(v % 256 for v in values)
    pb, mask = per_byte(bits), (1 << bits) - 1
    stored_channels(channels, bits)
    out = bytearray()
    for p in range(len(values) // channels):
        pixel = values[p * channels:(p + 1) * channels]
        for k in range(channels // pb):
            byte = 0
            for j in range(pb):
                byte |= (pixel[k * pb + j] & mask) << (j * bits)
            out.append(byte)
    return bytes(out)


def unpack(data: bytes, *, bits: int, channels: int, signed: bool = False) -> list[int]:
    """Stored bytes -> logical NHWC values: the inverse of :func:`pack`."""
    if bits == 8:
        return [b - 256 if b >= 128 else b for b in data]
    pb, mask = per_byte(bits), (1 << bits) - 1
    nbytes = stored_channels(channels, bits)
    assert len(data) % nbytes == 0
    out = []
    for byte in data:
        for j in range(pb):
            field = (byte >> (j * bits)) & mask
            if signed and field >= 1 << (bits - 1):
                field -= 1 << bits
            out.append(field)
    return out


# ------------------------------------------------------------------------------ (2) ADD
def add(x1: list[int], x2: list[int], *, in1_zero_point: int, in2_zero_point: int,
        out_zero_point: int, left_shift: int, in1_multiplier: int, in1_shift: int,
        in2_multiplier: int, in2_shift: int, out_multiplier: int, out_shift: int,
        act_min: int, act_max: int) -> list[int]:
    """QMCU_ADD per element (docs §4), which is TFLite / TFLM int8 ADD (AddElementwise):

    a = (x1 - zp1) * 2^left_shift, b likewise; a' = MBQM(a, m1, s1), b' = MBQM(b, m2, s2);
    y = MBQM(a' + b', m_out, s_out) + zp_out; clamp to [act_min, act_max]. All int32 in TFLM;
    here exact, with :class:`OutsideSpec` where an undefined int32 overflow would occur.
    """
    assert len(x1) == len(x2)
    out = []
    for v1, v2 in zip(x1, x2):
        a = checked_int32((v1 - in1_zero_point) * (1 << left_shift), what="shifted input1")
        b = checked_int32((v2 - in2_zero_point) * (1 << left_shift), what="shifted input2")
        raw_sum = checked_int32(mbqm(a, in1_multiplier, in1_shift)
                                + mbqm(b, in2_multiplier, in2_shift), what="a' + b'")
        y = checked_int32(mbqm(raw_sum, out_multiplier, out_shift) + out_zero_point,
                          what="MBQM(sum) + out_zero_point")
        out.append(clamp(y, act_min, act_max))
    return out


# ------------------------------------------------------------------------------ (3) AVG POOL
def tflite_round_div(v: int, n: int) -> int:
    """TFLite average-pool division (docs §5): v / n rounded half away from zero."""
    assert n > 0
    return round_half_away(Fraction(v, n))


def average_pool_2d(x: list[int], *, in_shape: tuple[int, int, int, int], filter_h: int,
                    filter_w: int, stride_h: int, stride_w: int, pad_top: int, pad_bottom: int,
                    pad_left: int, pad_right: int, in_zero_point: int, out_zero_point: int,
                    act_min: int, act_max: int, rescale: bool, multiplier: int = 0,
                    shift: int = 0) -> tuple[tuple[int, int, int, int], list[int]]:
    """QMCU_AVERAGE_POOL_2D (docs §5, TFLite/TFLM reference AveragePool int8).

    Output size as docs §1.7 (dilation 1). The window of output (oy, ox) is the set of input
    pixels (iy, ix) with oy*stride_h - pad_top <= iy < that + filter_h and 0 <= iy < H (same
    for x): padding is excluded from both the sum and the count (TFLite's filter_y_start /
    filter_y_end). rescale=False: y = round_div(sum of raw q, count).
    rescale=True: y = round_div(MBQM(sum of (q - zp_in), multiplier, shift), count) + zp_out.
    Then clamp. Returns (out_shape, values).
    """
    n_, h, w, c = in_shape
    assert len(x) == n_ * h * w * c
    oh = (h + pad_top + pad_bottom - filter_h) // stride_h + 1
    ow = (w + pad_left + pad_right - filter_w) // stride_w + 1
    assert oh >= 1 and ow >= 1
    out = []
    for n in range(n_):
        for oy in range(oh):
            y0 = oy * stride_h - pad_top
            rows = [iy for iy in range(y0, y0 + filter_h) if 0 <= iy < h]
            for ox in range(ow):
                x0 = ox * stride_w - pad_left
                cols = [ix for ix in range(x0, x0 + filter_w) if 0 <= ix < w]
                count = len(rows) * len(cols)
                assert count > 0, "docs §5: the count is never 0"
                for ch in range(c):
                    window = [x[((n * h + iy) * w + ix) * c + ch] for iy in rows for ix in cols]
                    if rescale:
                        total = checked_int32(sum(q - in_zero_point for q in window), what="sum")
                        v = tflite_round_div(mbqm(total, multiplier, shift), count)
                        y = checked_int32(v + out_zero_point, what="avg + out_zero_point")
                    else:
                        y = tflite_round_div(checked_int32(sum(window), what="sum"), count)
                    out.append(clamp(y, act_min, act_max))
    return (n_, oh, ow, c), out


# ------------------------------------------------------------------------------ (4) PACK/UNPACK
def requantize(x: list[int], *, in_zero_point: int, out_zero_point: int, multiplier: int,
               shift: int, out_bits: int) -> list[int]:
    """QMCU_PACK / QMCU_UNPACK per element (docs §6).

    y = MBQM(x - zp_in, multiplier, shift) + zp_out, clamped to the full range of the output
    (int8 [-128, 127] or [0, 2^b - 1]); the packing itself is :func:`pack`.
    """
    lo, hi = act_range(out_bits)
    return [clamp(checked_int32(mbqm(v - in_zero_point, multiplier, shift) + out_zero_point,
                                what="MBQM + out_zero_point"), lo, hi) for v in x]
