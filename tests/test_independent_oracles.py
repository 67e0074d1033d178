"""The numpy reference AND the C kernels against independent big-int oracles, bit for bit.

tests/test_cmixnn_host.py checks the C kernels against the numpy reference, so a mistake shared
by both would pass there. Here both are compared with ``independent_oracles`` (exact Python-int
statements of docs/qmcu_ops.md / TFLite semantics, written without the reference code) over
hypothesis draws of shapes, bit widths, zero points, scales / multipliers and data.

Checked: requantize.{multiply_by_quantized_multiplier, saturating_rounding_doubling_high_mul,
rounding_divide_by_power_of_two, quantize_multiplier}, qmcu_options.{pack_bits, unpack_bits,
subbyte_quant_params}, qmcu_kernels.{load_activation, store_activation, load_weights, add,
average_pool_2d, pack, unpack}; in C (cmixnn_bridge, built here with gcc like
test_cmixnn_host.py, plus a small shim exporting the static inline helpers of qmcu_types.h):
qmcu_mbqm, qmcu_load_act, qmcu_load_weight, qmcu_store_act, qmcu_add(_ref),
qmcu_average_pool_2d(_ref), qmcu_pack(_ref), qmcu_unpack(_ref).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import independent_oracles as orc
from test_cmixnn_host import (BRIDGE, VARIANT_ENV, VARIANT_FLAGS, AddBuffers, AddParams, Dims,
                              Geometry, Kernels, PoolParams, RequantParams, UnaryBuffers)
from tflite_quantmcu import qmcu_options as qo
from tflite_quantmcu.reference import qmcu_kernels as qk
from tflite_quantmcu.reference import requantize as rq

BITS = (8, 4, 2)
EXAMPLES = settings(max_examples=200, deadline=None)

SHIM = r"""
/* Exports the static inline helpers of qmcu_types.h so that they can be called by ctypes. */
#include "qmcu/qmcu_types.h"

void qmcu_oracle_shim_mbqm(const int32_t *x, const int32_t *m, const int32_t *s, int32_t *out,
                           int32_t n) {
  int32_t i;
  for (i = 0; i < n; ++i) out[i] = qmcu_mbqm(x[i], m[i], s[i]);
}

void qmcu_oracle_shim_load(const uint8_t *base, int32_t n, int32_t bits, int32_t weight,
                           int32_t *out) {
  int32_t i;
  for (i = 0; i < n; ++i) {
    out[i] = weight ? qmcu_load_weight(base, i, bits) : qmcu_load_act(base, i, bits);
  }
}

void qmcu_oracle_shim_store(uint8_t *base, const int32_t *order, const int32_t *values,
                            int32_t n, int32_t bits) {
  int32_t i;
  for (i = 0; i < n; ++i) qmcu_store_act(base, order[i], bits, values[order[i]]);
}
"""


# ------------------------------------------------------------------------------ the C library
@pytest.fixture(scope="session")
def clib(tmp_path_factory):
    """The kernels plus the shim, built into a private folder (not the shared build dir)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no host C compiler (gcc or cc) on PATH: the C kernels cannot be checked")
    variant = os.environ.get(VARIANT_ENV, "plain")
    out_dir = tmp_path_factory.mktemp(f"oracle-host-{variant}")
    shim = out_dir / "oracle_shim.c"
    shim.write_text(SHIM)
    lib = out_dir / "libqmcu_oracle.so"
    sources = sorted(str(p) for p in (BRIDGE / "src").rglob("*.c")) + [str(shim)]
    cmd = [compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
           "-DQMCU_USE_OPT", f"-I{BRIDGE / 'include'}", *VARIANT_FLAGS[variant], *sources,
           "-o", str(lib)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{result.stderr}"
    k = Kernels(lib=ctypes.CDLL(str(lib)))
    yield k
    k.free_all()


def _int32s(values) -> ctypes.Array:
    return (ctypes.c_int32 * max(len(values), 1))(*values)


def _cbuf(k: Kernels, data: bytes = b"", size: int = 0) -> int:
    """A malloc'ed buffer (0xA5 filled) holding ``data``."""
    return k.buffer(data=np.frombuffer(data, dtype=np.uint8) if data else None,
                    size=max(size, len(data)))


def _stored_array(data: bytes, *, bits: int, shape) -> np.ndarray:
    """Oracle bytes -> the array the numpy reference takes (int8 logical / packed uint8)."""
    stored = tuple(shape[:-1]) + (orc.stored_channels(shape[-1], bits),)
    return np.frombuffer(data, dtype=np.int8 if bits == 8 else np.uint8).reshape(stored).copy()


def _assert_same(*, got: bytes, want: bytes, bits: int, channels: int, what: str,
                 context) -> None:
    if got == want:
        return
    g = orc.unpack(got, bits=bits, channels=channels)
    w = orc.unpack(want, bits=bits, channels=channels)
    diffs = [i for i in range(min(len(g), len(w))) if g[i] != w[i]]
    raise AssertionError(f"{what} differs from the oracle at {len(diffs)} element(s) "
                         f"{diffs[:8]}; first: got {g[diffs[0]] if diffs else g} want "
                         f"{w[diffs[0]] if diffs else w}; sizes {len(got)} / {len(want)}; "
                         f"case {context}")


# ------------------------------------------------------------------------------ strategies
MULTIPLIERS = st.one_of(st.integers(1 << 30, (1 << 31) - 1),
                        st.sampled_from([1 << 30, (1 << 31) - 1, (1 << 30) + 1, 3 << 29]))
INT32 = st.one_of(st.integers(orc.INT32_MIN, orc.INT32_MAX),
                  st.integers(-4096, 4096),
                  st.sampled_from([0, 1, -1, orc.INT32_MIN, orc.INT32_MAX, 1 << 30, -(1 << 30),
                                   (1 << 30) + 1, -(1 << 30) - 1, 3 << 29, -(3 << 29)]))


def _scales(lo: float = 2.0**-12, hi: float = 8.0):
    return st.floats(min_value=lo, max_value=hi, width=32, allow_subnormal=False)


def _values(bits: int, n: int):
    lo, hi = orc.act_range(bits)
    return st.lists(st.integers(lo, hi), min_size=n, max_size=n)


def _act_bounds(draw, bits: int) -> tuple[int, int]:
    lo, hi = orc.act_range(bits)
    if draw(st.booleans()):
        return lo, hi
    a, b = sorted(draw(st.lists(st.integers(lo, hi), min_size=2, max_size=2)))
    return a, b


def _channels(draw, *bits: int) -> int:
    unit = max(orc.per_byte(b) if b != 8 else 1 for b in bits)
    return unit * draw(st.integers(1, 8 // unit if unit > 1 else 3))


# ------------------------------------------------------------------------------ oracle self-checks
def test_oracle_hand_values():
    """Anchors computed by hand from TFLite / gemmlowp semantics, not by any code."""
    assert orc.srdhm(1 << 30, 1 << 30) == 1 << 29
    assert orc.srdhm(orc.INT32_MIN, orc.INT32_MIN) == orc.INT32_MAX
    assert [orc.srdhm(x, 1 << 30) for x in (1, -1, 3, -3)] == [1, 0, 2, -1]  # ties toward +inf
    assert [orc.rdbpot(x, 1) for x in (1, -1, 3, -3, 2, -2)] == [1, -1, 2, -2, 1, -1]
    assert [orc.rdbpot(x, 2) for x in (6, -6, 5, -5, 2, -2)] == [2, -2, 1, -1, 1, -1]
    assert orc.rdbpot(orc.INT32_MIN, 31) == -1 and orc.rdbpot(orc.INT32_MAX, 31) == 1
    assert orc.mbqm(100, 1 << 30, 1) == 100            # M = 1.0
    assert orc.mbqm(5, 1 << 30, -1) == 2                # 5 -> 3 (SRDHM) -> 1.5 -> 2
    assert orc.mbqm(-5, 1 << 30, -1) == -1              # -5 -> -2 -> -1 (double rounding)
    assert orc.mbqm(1 << 29, 1 << 30, 2) == -(1 << 30)  # 2^29 * 4 wraps to -2^31; * 1/2
    assert orc.quantize_multiplier(0.5) == (1 << 30, 0)
    assert orc.quantize_multiplier(1.0) == (1 << 30, 1)
    assert orc.quantize_multiplier(0.75) == (3 << 29, 0)
    assert orc.quantize_multiplier(1 - 2.0**-33) == (1 << 30, 1)  # rounds to 2^31
    assert orc.quantize_multiplier(2.0**-40) == (0, 0) and orc.quantize_multiplier(0.0) == (0, 0)
    assert orc.quantize_multiplier(2.0**-32) == (1 << 30, -31)
    assert [orc.tflite_round_div(v, 2) for v in (3, -3, 1, -1, 0)] == [2, -2, 1, -1, 0]
    assert [orc.tflite_round_div(v, 4) for v in (6, -6, 5, -5)] == [2, -2, 1, -1]
    assert orc.pack([1, 2, 3, 4], bits=4, channels=4) == bytes([0x21, 0x43])
    assert orc.pack([1, 2, 3, 0, 3, 3, 0, 1], bits=2, channels=8) == bytes([0x39, 0x4F])
    assert orc.pack([-1, 7, -8, 0], bits=4, channels=2, signed=True) == bytes([0x7F, 0x08])
    assert orc.pack([-128, -1, 5], bits=8, channels=3) == bytes([0x80, 0xFF, 0x05])
    assert orc.unpack(bytes([0x7F, 0x08]), bits=4, channels=2, signed=True) == [-1, 7, -8, 0]
    assert orc.subbyte_quant_params(scale8=0.5, zero_point8=-128, bits=4)[1] == 0
    assert orc.subbyte_quant_params(scale8=0.5, zero_point8=0, bits=4)[1] == 8  # 128*15/255=7.53
    assert orc.subbyte_quant_params(scale8=0.5, zero_point8=0, bits=2)[1] == 2  # 128*3/255=1.506


@settings(max_examples=300, deadline=None)
@given(a=INT32, b=INT32, e=st.integers(0, 31), n=st.integers(1, 64))
def test_oracle_roundings_equal_the_docs_literal_formulas(a, b, e, n):
    """The oracle's 'mathematical' roundings equal the step formulas of docs §1.3 / §5."""
    def c_div(p, q):  # C integer division: truncation toward zero
        r = abs(p) // abs(q)
        return r if (p >= 0) == (q > 0) else -r

    if a == b == orc.INT32_MIN:
        literal_srdhm = orc.INT32_MAX
    else:
        p = a * b
        literal_srdhm = c_div(p + ((1 << 30) if p >= 0 else 1 - (1 << 30)), 1 << 31)
        assert literal_srdhm == (p + (1 << 30)) >> 31  # the doc's "equals (p + 2^30) >> 31"
    assert orc.srdhm(a, b) == literal_srdhm
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if a < 0 else 0)
    assert orc.rdbpot(a, e) == (a >> e) + (1 if (a & mask) > threshold else 0)
    v = a // 1024  # pool sums are small; any int works
    literal_div = (v + n // 2) // n if v > 0 else c_div(v - n // 2, n)
    assert orc.tflite_round_div(v, n) == literal_div


# ------------------------------------------------------------------------------ (1) requantization
@settings(max_examples=300, deadline=None)
@given(triples=st.lists(st.tuples(INT32, st.one_of(MULTIPLIERS, INT32), st.integers(-31, 30)),
                        min_size=1, max_size=40))
def test_mbqm_numpy_and_c_equal_oracle(clib, triples):
    xs, ms, ss = (list(t) for t in zip(*triples))
    want = [orc.mbqm(x, m, s) for x, m, s in triples]
    got_np = rq.multiply_by_quantized_multiplier(np.array(xs, np.int64), np.array(ms, np.int64),
                                                 np.array(ss, np.int64)).tolist()
    assert got_np == want, [(t, g, w) for t, g, w in zip(triples, got_np, want) if g != w][:4]
    out = _int32s([0] * len(xs))
    clib.lib.qmcu_oracle_shim_mbqm(_int32s(xs), _int32s(ms), _int32s(ss), out, len(xs))
    got_c = list(out)[:len(xs)]
    assert got_c == want, [(t, g, w) for t, g, w in zip(triples, got_c, want) if g != w][:4]
    # the two gemmlowp steps on their own, over the whole int32 domain
    srdhm = rq.saturating_rounding_doubling_high_mul(np.array(xs, np.int64),
                                                    np.array(ms, np.int64)).tolist()
    assert srdhm == [orc.srdhm(x, m) for x, m in zip(xs, ms)]
    exps = [min(abs(s), 31) for s in ss]
    rdbpot = rq.rounding_divide_by_power_of_two(np.array(xs, np.int64),
                                                np.array(exps, np.int64)).tolist()
    assert rdbpot == [orc.rdbpot(x, e) for x, e in zip(xs, exps)]


@settings(max_examples=300, deadline=None)
@given(real=st.one_of(st.floats(min_value=0.0, max_value=2.0**30, allow_nan=False),
                      st.floats(min_value=2.0**-40, max_value=4.0),
                      st.integers(-45, 29).map(lambda e: (1 - 2.0**-33) * 2.0**e),
                      st.integers(-45, 29).map(lambda e: (1 - 2.0**-32) * 2.0**e),
                      st.integers(-45, 29).map(lambda e: 2.0**e)))
def test_quantize_multiplier_equals_oracle(real):
    assert rq.quantize_multiplier(real) == orc.quantize_multiplier(real), real


@settings(max_examples=200, deadline=None)
@given(scale8=_scales(2.0**-10, 4.0), zp8=st.integers(-128, 127), bits=st.sampled_from(BITS))
def test_subbyte_quant_params_equal_oracle(scale8, zp8, bits):
    want = orc.subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=bits)
    assert qo.subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=bits) == want


# ------------------------------------------------------------------------------ (5) bit packing
@st.composite
def _packing_cases(draw):
    bits = draw(st.sampled_from(BITS))
    signed = draw(st.booleans())  # weights (two's complement fields) or activations
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
             _channels(draw, bits))
    n = shape[0] * shape[1] * shape[2] * shape[3]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else orc.act_range(bits)
    values = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
    order = draw(st.permutations(range(n)))
    return bits, signed, shape, values, order


@EXAMPLES
@given(case=_packing_cases())
def test_bit_packing_numpy_and_c_equal_oracle(clib, case):
    bits, signed, shape, values, order = case
    channels, n = shape[3], len(values)
    want = orc.pack(values, bits=bits, channels=channels, signed=signed)
    assert orc.unpack(want, bits=bits, channels=channels, signed=signed) == values
    logical = np.array(values, np.int64).reshape(shape)
    stored = _stored_array(want, bits=bits, shape=shape)
    # numpy: pack_bits / unpack_bits and the kernels' load / store
    assert qo.pack_bits(values=logical, bits=bits).tobytes() == want
    unpacked = qo.unpack_bits(packed=stored, bits=bits, channels=channels, signed=signed)
    assert unpacked.reshape(-1).tolist() == values
    if signed:
        loaded = qk.load_weights(data=stored.view(np.int8), bits=bits, shape=shape)
    else:
        assert qk.store_activation(values=logical, bits=bits).tobytes() == want
        loaded = qk.load_activation(data=stored, bits=bits, shape=shape)
    assert loaded.reshape(-1).tolist() == values
    # C: qmcu_load_act / qmcu_load_weight and qmcu_store_act (in a random order, into 0xA5 bytes)
    out = _int32s([0] * n)
    clib.lib.qmcu_oracle_shim_load(ctypes.c_char_p(want), n, bits, int(signed), out)
    assert list(out)[:n] == values
    if not signed:
        buf = _cbuf(clib, size=len(want))
        clib.lib.qmcu_oracle_shim_store(ctypes.c_void_p(buf), _int32s(order), _int32s(values),
                                        n, bits)
        assert clib.read(ptr=buf, size=len(want)) == want
    clib.free_all()


# ------------------------------------------------------------------------------ (2) QMCU_ADD
@st.composite
def _add_cases(draw):
    b1, b2, bo = (draw(st.sampled_from(BITS)) for _ in range(3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
             _channels(draw, b1, b2, bo))
    n = shape[0] * shape[1] * shape[2] * shape[3]
    # the doc fixes left_shift = 20; other values in the C check's 0..22 are drawn as well
    left_shift = draw(st.one_of(st.just(20), st.integers(0, 22)))
    if draw(st.booleans()):
        # TFLM ADD's Prepare, in double from float32 scales (docs §4)
        s1 = draw(_scales())
        s2 = draw(st.one_of(st.floats(min_value=1 / 16, max_value=16.0).map(
            lambda r: orc.float32(s1 * r)), _scales()))
        ratio = draw(st.floats(min_value=0.125, max_value=4.0))
        s_out = orc.float32((s1 * (1 << b1) + s2 * (1 << b2)) / (1 << bo) * ratio)
        twice_max = 2.0 * max(s1, s2)
        (m1, sh1), (m2, sh2) = (orc.quantize_multiplier(s / twice_max) for s in (s1, s2))
        mo, sho = orc.quantize_multiplier(twice_max / ((1 << left_shift) * s_out))
        scales = (s1, s2, s_out)
    else:  # raw encoded multipliers: inputs' shifts <= 0 (M1, M2 <= 1/2 by construction)
        m1, m2, mo = (draw(MULTIPLIERS) for _ in range(3))
        sh1, sh2 = draw(st.integers(-31, 0)), draw(st.integers(-31, 0))
        # anywhere in -31..30, or near -left_shift, where outputs are mostly not saturated
        sho = draw(st.one_of(st.integers(-31, 30),
                             st.integers(-left_shift - 3, -left_shift + 5).map(
                                 lambda v: max(v, -31))))
        scales = None
    lo, hi = _act_bounds(draw, bo)
    params = dict(in1_zero_point=draw(st.integers(*orc.act_range(b1))),
                  in2_zero_point=draw(st.integers(*orc.act_range(b2))),
                  out_zero_point=draw(st.integers(*orc.act_range(bo))),
                  left_shift=left_shift, in1_multiplier=m1, in1_shift=sh1, in2_multiplier=m2,
                  in2_shift=sh2, out_multiplier=mo, out_shift=sho, act_min=lo, act_max=hi)
    x1, x2 = draw(_values(b1, n)), draw(_values(b2, n))
    return (b1, b2, bo), shape, params, x1, x2, scales


@settings(max_examples=250, deadline=None)
@given(case=_add_cases())
def test_add_numpy_and_c_equal_oracle(clib, case):
    (b1, b2, bo), shape, p, x1, x2, _ = case
    try:
        want_values = orc.add(x1, x2, **p)
    except orc.OutsideSpec:
        assume(False)
    c = shape[3]
    in1, in2 = orc.pack(x1, bits=b1, channels=c), orc.pack(x2, bits=b2, channels=c)
    want = orc.pack(want_values, bits=bo, channels=c)
    opts = qo.AddOptions(in1_bits=b1, in2_bits=b2, out_bits=bo, shape=shape, **p)
    got = qk.add(input1=_stored_array(in1, bits=b1, shape=shape),
                 input2=_stored_array(in2, bits=b2, shape=shape), options=opts)
    _assert_same(got=got.tobytes(), want=want, bits=bo, channels=c, what="qmcu_kernels.add",
                 context=case)
    params = AddParams(Dims(*shape), b1, b2, bo, p["in1_zero_point"], p["in2_zero_point"],
                       p["out_zero_point"], p["left_shift"], p["in1_multiplier"], p["in1_shift"],
                       p["in2_multiplier"], p["in2_shift"], p["out_multiplier"], p["out_shift"],
                       p["act_min"], p["act_max"])
    for fn in ("qmcu_add_ref", "qmcu_add"):
        bufs = AddBuffers(_cbuf(clib, in1), _cbuf(clib, in2), _cbuf(clib, size=len(want)))
        assert getattr(clib.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0, fn
        _assert_same(got=clib.read(ptr=bufs.output, size=len(want)), want=want, bits=bo,
                     channels=c, what=fn, context=case)
    clib.free_all()


# ------------------------------------------------------------------------------ (3) AVERAGE_POOL_2D
@st.composite
def _pool_cases(draw):
    in_bits, out_bits = draw(st.sampled_from(BITS)), draw(st.sampled_from(BITS))
    rescale = True if in_bits != out_bits else draw(st.booleans())
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pt, pb = draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1))
    pl, pr = draw(st.integers(0, kw - 1)), draw(st.integers(0, kw - 1))
    h = draw(st.integers(max(1, kh - pt - pb), 5))
    w = draw(st.integers(max(1, kw - pl - pr), 5))
    shape = (draw(st.integers(1, 2)), h, w, _channels(draw, in_bits, out_bits))
    geo = dict(stride_h=draw(st.integers(1, 3)), stride_w=draw(st.integers(1, 3)),
               pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr)
    in_zp = draw(st.integers(*orc.act_range(in_bits)))
    if not rescale:  # same scale and zero point; multiplier / shift are ignored (doc: write 0)
        out_zp = in_zp
        mult, shift = draw(st.one_of(st.just((0, 0)),
                                     st.tuples(MULTIPLIERS, st.integers(-31, 30))))
    else:
        out_zp = draw(st.integers(*orc.act_range(out_bits)))
        if draw(st.booleans()):  # quantize_multiplier(s_in / s_out) from float32 scales
            s_in = draw(_scales())
            levels = ((1 << in_bits) - 1) / ((1 << out_bits) - 1)
            s_out = orc.float32(s_in * levels * draw(st.floats(min_value=0.125, max_value=8.0)))
            mult, shift = orc.quantize_multiplier(s_in / s_out)
        else:
            mult, shift = draw(MULTIPLIERS), draw(st.integers(-31, 30))
    lo, hi = _act_bounds(draw, out_bits)
    x = draw(_values(in_bits, shape[0] * h * w * shape[3]))
    p = dict(filter_h=kh, filter_w=kw, in_zero_point=in_zp, out_zero_point=out_zp, act_min=lo,
             act_max=hi, rescale=rescale, multiplier=mult, shift=shift, **geo)
    return in_bits, out_bits, shape, p, x


@settings(max_examples=250, deadline=None)
@given(case=_pool_cases())
def test_average_pool_numpy_and_c_equal_oracle(clib, case):
    in_bits, out_bits, shape, p, x = case
    try:
        out_shape, want_values = orc.average_pool_2d(x, in_shape=shape, **p)
    except orc.OutsideSpec:
        assume(False)
    c = shape[3]
    data = orc.pack(x, bits=in_bits, channels=c)
    want = orc.pack(want_values, bits=out_bits, channels=c)
    geo = qo.Geometry(stride_h=p["stride_h"], stride_w=p["stride_w"], padding="EXPLICIT",
                      pad_top=p["pad_top"], pad_bottom=p["pad_bottom"], pad_left=p["pad_left"],
                      pad_right=p["pad_right"])
    opts = qo.AveragePool2DOptions(
        in_bits=in_bits, out_bits=out_bits, in_zero_point=p["in_zero_point"],
        out_zero_point=p["out_zero_point"], in_shape=shape, out_shape=out_shape,
        filter_h=p["filter_h"], filter_w=p["filter_w"], act_min=p["act_min"],
        act_max=p["act_max"], rescale=p["rescale"], multiplier=p["multiplier"],
        shift=p["shift"], geometry=geo)
    got = qk.average_pool_2d(input=_stored_array(data, bits=in_bits, shape=shape), options=opts)
    _assert_same(got=got.tobytes(), want=want, bits=out_bits, channels=c,
                 what="qmcu_kernels.average_pool_2d", context=case)
    params = PoolParams(Dims(*shape), Dims(*out_shape), p["filter_h"], p["filter_w"], in_bits,
                        out_bits, p["in_zero_point"], p["out_zero_point"], p["act_min"],
                        p["act_max"], int(p["rescale"]), p["multiplier"], p["shift"],
                        Geometry(p["stride_h"], p["stride_w"], 1, 1, p["pad_top"],
                                 p["pad_bottom"], p["pad_left"], p["pad_right"]))
    for fn in ("qmcu_average_pool_2d_ref", "qmcu_average_pool_2d"):
        bufs = UnaryBuffers(_cbuf(clib, data), _cbuf(clib, size=len(want)))
        assert getattr(clib.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0, fn
        _assert_same(got=clib.read(ptr=bufs.output, size=len(want)), want=want, bits=out_bits,
                     channels=c, what=fn, context=case)
    clib.free_all()


# ------------------------------------------------------------------------------ (4) PACK / UNPACK
@st.composite
def _requant_cases(draw):
    sub = draw(st.sampled_from((4, 2)))
    packing = draw(st.booleans())
    in_bits, out_bits = (8, sub) if packing else (sub, 8)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
             _channels(draw, sub))
    if draw(st.booleans()):  # the scales of docs §1.5, multiplier from s_in / s_out (§6)
        scale8, zp8 = draw(_scales()), draw(st.integers(-128, 127))
        scale_b, zp_b = orc.subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=sub)
        (s_in, zp_in), (s_out, zp_out) = ((scale8, zp8), (scale_b, zp_b)) if packing else \
            ((scale_b, zp_b), (scale8, zp8))
        mult, shift = orc.quantize_multiplier(s_in / s_out)
    else:
        zp_in = draw(st.integers(*orc.act_range(in_bits)))
        zp_out = draw(st.integers(*orc.act_range(out_bits)))
        mult, shift = draw(MULTIPLIERS), draw(st.integers(-31, 30))
    x = draw(_values(in_bits, shape[0] * shape[1] * shape[2] * shape[3]))
    return in_bits, out_bits, shape, dict(in_zero_point=zp_in, out_zero_point=zp_out,
                                          multiplier=mult, shift=shift), x


@settings(max_examples=250, deadline=None)
@given(case=_requant_cases())
def test_pack_unpack_numpy_and_c_equal_oracle(clib, case):
    in_bits, out_bits, shape, p, x = case
    c = shape[3]
    try:
        want_values = orc.requantize(x, out_bits=out_bits, **p)
    except orc.OutsideSpec:
        assume(False)
    data = orc.pack(x, bits=in_bits, channels=c)
    want = orc.pack(want_values, bits=out_bits, channels=c)
    op = "pack" if in_bits == 8 else "unpack"
    opts = qo.RequantOptions(in_bits=in_bits, out_bits=out_bits, shape=shape, **p)
    got = getattr(qk, op)(input=_stored_array(data, bits=in_bits, shape=shape), options=opts)
    _assert_same(got=got.tobytes(), want=want, bits=out_bits, channels=c,
                 what=f"qmcu_kernels.{op}", context=case)
    params = RequantParams(Dims(*shape), in_bits, out_bits, p["in_zero_point"],
                           p["out_zero_point"], p["multiplier"], p["shift"])
    for fn in (f"qmcu_{op}_ref", f"qmcu_{op}"):
        bufs = UnaryBuffers(_cbuf(clib, data), _cbuf(clib, size=len(want)))
        assert getattr(clib.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0, fn
        _assert_same(got=clib.read(ptr=bufs.output, size=len(want)), want=want, bits=out_bits,
                     channels=c, what=fn, context=case)
    clib.free_all()


def test_pack_then_unpack_keeps_the_real_value_within_half_a_sub_byte_step():
    """A semantic sanity bound on the §1.5 / §6 composition, exhaustive over int8 and zp8."""
    for bits in (4, 2):
        levels = (1 << bits) - 1
        for zp8 in range(-128, 128, 11):
            scale8 = 0.03125
            scale_b, zp_b = orc.subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=bits)
            m_p, s_p = orc.quantize_multiplier(scale8 / scale_b)
            m_u, s_u = orc.quantize_multiplier(scale_b / scale8)
            xs = list(range(-128, 128))
            packed = orc.requantize(xs, in_zero_point=zp8, out_zero_point=zp_b, multiplier=m_p,
                                    shift=s_p, out_bits=bits)
            back = orc.requantize(packed, in_zero_point=zp_b, out_zero_point=zp8,
                                  multiplier=m_u, shift=s_u, out_bits=8)
            for x, q, y in zip(xs, packed, back):
                assert 0 <= q <= levels
                real_err = abs(Fraction(y - zp8) - Fraction(x - zp8)) * Fraction(scale8)
                # half a sub-byte step, plus the zero-point rounding and one int8 LSB
                assert real_err <= Fraction(scale_b) * Fraction(1, 2) + 2 * Fraction(scale8) \
                    or q in (0, levels), (bits, zp8, x, q, y)
