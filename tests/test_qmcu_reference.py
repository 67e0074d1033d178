"""Tests of the QMCU option format, bit packing, requantization and numpy kernels."""
from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from fractions import Fraction

import numpy as np
import pytest

from tflite_quantmcu import qmcu_options as qo
from tflite_quantmcu.reference import qmcu_kernels as qk
from tflite_quantmcu.reference.requantize import (multiply_by_quantized_multiplier,
                                                  quantize_multiplier)

IDENTITY = (1 << 30, 1)  # MBQM(x, 2^30, 1) == x


# ---------------------------------------------------------------- packing
def test_pack_bits_hand_values():
    assert qo.pack_bits(values=np.array([1, 2]), bits=4).tolist() == [0x21]
    assert qo.pack_bits(values=np.array([1, 2, 3, 0]), bits=2).tolist() == [0x39]
    assert qo.pack_bits(values=np.array([-1, 7]), bits=4).tolist() == [0x7F]


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("signed", [False, True])
def test_pack_round_trip(bits, signed):
    rng = np.random.default_rng(bits)
    lo, hi = qo.qrange(bits=bits, signed=signed)
    values = rng.integers(lo, hi + 1, size=(2, 3, 5, 16))
    packed = qo.pack_bits(values=values, bits=bits)
    assert packed.shape == (2, 3, 5, 16 * bits // 8) and packed.dtype == np.uint8
    back = qo.unpack_bits(packed=packed, bits=bits, channels=16, signed=signed)
    np.testing.assert_array_equal(back, values)


def test_pack_rejects_partial_byte():
    with pytest.raises(ValueError, match="multiple of 4"):
        qo.pack_bits(values=np.zeros((1, 6)), bits=2)


# ---------------------------------------------------------------- quant params
def test_subbyte_quant_params_hand_values():
    scale, zp = qo.subbyte_quant_params(scale8=0.1, zero_point8=-128, bits=4)
    assert zp == 0 and scale == pytest.approx(0.1 * 17)
    assert qo.subbyte_quant_params(scale8=0.1, zero_point8=0, bits=2)[1] == 2  # 128*3/255=1.506
    assert qo.subbyte_quant_params(scale8=0.1, zero_point8=127, bits=4)[1] == 15
    assert qo.subbyte_quant_params(scale8=0.1, zero_point8=-1, bits=4)[1] == 7  # 127*15/255=7.47


def test_subbyte_quant_params_keep_real_range():
    for zp8 in range(-128, 128):
        for bits in (4, 2):
            scale, zp = qo.subbyte_quant_params(scale8=0.02, zero_point8=zp8, bits=bits)
            exact = (zp8 + 128) * ((1 << bits) - 1) / 255
            assert abs(zp - exact) <= 0.5 and 0 <= zp < (1 << bits)


# ---------------------------------------------------------------- requantization
def _bigint_mbqm(x: int, multiplier: int, shift: int) -> int:
    """Independent statement: round-half-up of x*2^left*m/2^31, then round half away."""
    left, right = max(shift, 0), max(-shift, 0)
    xs = ((x << left) + 2**31) % 2**32 - 2**31
    high = math.floor(Fraction(xs * multiplier, 2**31) + Fraction(1, 2))
    value = Fraction(high, 2**right)
    rounded = math.floor(abs(value) + Fraction(1, 2))
    return rounded if value >= 0 else -rounded


def test_mbqm_matches_bigint():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.integers(-2**31, 2**31, 3000), rng.integers(-5000, 5000, 3000),
                         [0, 1, -1, 2**31 - 1, -2**31]])
    mults = rng.integers(2**30, 2**31, xs.size)
    shifts = rng.integers(-31, 8, xs.size)
    got = multiply_by_quantized_multiplier(xs, mults, shifts)
    want = [_bigint_mbqm(int(x), int(m), int(s)) for x, m, s in zip(xs, mults, shifts)]
    np.testing.assert_array_equal(got, want)


def test_mbqm_ties_round_away_from_zero():
    # multiplier 2^30 = 0.5; shift -1 gives x/4, rounded twice
    got = multiply_by_quantized_multiplier(np.array([2, -2, 6, -6, 1, -1]), 1 << 30, 0)
    np.testing.assert_array_equal(got, [1, -1, 3, -3, 1, 0])  # SRDHM: -0.5 rounds up to 0
    got = multiply_by_quantized_multiplier(np.array([6, -6, 5, -5]), 1 << 30, -1)
    # 3 / 2 -> 2 and -3 / 2 -> -2 (away from zero); 5 -> SRDHM 3 -> 2, -5 -> -2 -> -1 (double rounding)
    np.testing.assert_array_equal(got, [2, -2, 2, -1])


@pytest.mark.parametrize("real,want", [(0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)),
                                       (0.75, (1610612736, 0)), (0.0, (0, 0)),
                                       (2.0**-40, (0, 0))])
def test_quantize_multiplier_hand_values(real, want):
    assert quantize_multiplier(real) == want


def test_quantize_multiplier_precision():
    for real in np.random.default_rng(1).uniform(1e-6, 100.0, 500):
        m, s = quantize_multiplier(float(real))
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2.0**-31


# ---------------------------------------------------------------- options
def _conv_opts(**kw):
    base = dict(in_bits=8, out_bits=8, w_bits=8, in_zero_point=0, out_zero_point=0,
                in_shape=(1, 4, 4, 4), filter_shape=(2, 1, 1, 4), out_shape=(1, 4, 4, 2),
                act_min=-128, act_max=127)
    base.update(kw)
    return qo.Conv2DOptions(**base)


def test_options_round_trip_all_ops():
    opts = {
        "QMCU_CONV_2D": _conv_opts(in_bits=4, in_zero_point=3, out_bits=2, out_zero_point=1,
                                   act_min=1, act_max=3, out_shape=(1, 2, 2, 4),
                                   filter_shape=(4, 3, 3, 4),
                                   geometry=qo.Geometry(stride_h=2, stride_w=2, padding="SAME",
                                                        pad_top=0, pad_bottom=1, pad_left=0,
                                                        pad_right=1)),
        "QMCU_ADD": qo.AddOptions(in1_bits=4, in2_bits=8, out_bits=8, in1_zero_point=2,
                                  in2_zero_point=-3, out_zero_point=5, in1_multiplier=1 << 30,
                                  in1_shift=-1, in2_multiplier=1 << 30, in2_shift=0,
                                  out_multiplier=1234567890, out_shift=-18, act_min=-128,
                                  act_max=127, shape=(1, 2, 2, 4)),
        "QMCU_PACK": qo.RequantOptions(in_bits=8, out_bits=4, in_zero_point=-3, out_zero_point=7,
                                       multiplier=1 << 30, shift=-3, shape=(1, 1, 1, 2)),
    }
    for op, o in opts.items():
        data = qo.encode_options(options=o)
        assert isinstance(data, bytes)
        assert qo.decode_options(op=op, data=data) == o


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="multiple of 2"):
        _conv_opts(in_bits=4, in_shape=(1, 4, 4, 3), filter_shape=(2, 1, 1, 3))
    with pytest.raises(ValueError, match="output size"):
        _conv_opts(out_shape=(1, 3, 4, 2))
    with pytest.raises(ValueError, match="SAME pads"):
        _conv_opts(geometry=qo.Geometry(padding="SAME", pad_top=1))
    with pytest.raises(ValueError, match="zero_point"):
        _conv_opts(in_bits=4, in_zero_point=-1)
    with pytest.raises(ValueError, match="version"):
        qo.decode_options(op="QMCU_CONV_2D", data=bytes(qo.flexbuffers.Dumps({"version": 9})))


# ---------------------------------------------------------------- kernels
def _naive_conv(*, x, w, bias, requant, o, depthwise):
    """Loop-by-loop statement of docs §2/§3 on logical values."""
    g = o.geometry
    n, oh, ow, c_out = o.out_shape
    kh, kw = o.filter_shape[1:3]
    out = np.zeros(o.out_shape, dtype=np.int64)
    for b, oy, ox, co in itertools.product(range(n), range(oh), range(ow), range(c_out)):
        acc = 0
        for ky, kx in itertools.product(range(kh), range(kw)):
            iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h
            ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w
            if not (0 <= iy < o.in_shape[1] and 0 <= ix < o.in_shape[2]):
                continue
            if depthwise:
                acc += (x[b, iy, ix, co // o.depth_multiplier] - o.in_zero_point) * w[0, ky, kx, co]
            else:
                acc += int(np.dot(x[b, iy, ix] - o.in_zero_point, w[co, ky, kx]))
        acc += int(bias[co])
        y = _bigint_mbqm(acc, int(requant[0, co]), int(requant[1, co])) + o.out_zero_point
        out[b, oy, ox, co] = min(max(y, o.act_min), o.act_max)
    return out


def _random_case(*, rng, in_bits, w_bits, out_bits, in_shape, c_out, k, stride, dilation,
                 padding, depthwise):
    lo, hi = qo.act_range(bits=in_bits)
    in_zp = int(rng.integers(lo, hi + 1))
    olo, ohi = qo.act_range(bits=out_bits)
    out_zp = int(rng.integers(olo, ohi + 1))
    geo = {}
    for axis, size in (("h", in_shape[1]), ("w", in_shape[2])):
        if padding == "SAME":
            out, before, after = qo.same_padding(size=size, kernel=k, stride=stride,
                                                 dilation=dilation)
        else:
            before, after = (0, 0) if padding == "VALID" else (1, 2)
            out = qo.conv_out_size(size=size, kernel=k, stride=stride, dilation=dilation,
                                   pad_before=before, pad_after=after)
        geo[axis] = (out, before, after)
    geometry = qo.Geometry(stride_h=stride, stride_w=stride, dilation_h=dilation,
                           dilation_w=dilation, padding=padding, pad_top=geo["h"][1],
                           pad_bottom=geo["h"][2], pad_left=geo["w"][1], pad_right=geo["w"][2])
    out_shape = (in_shape[0], geo["h"][0], geo["w"][0], c_out)
    fshape = (1, k, k, c_out) if depthwise else (c_out, k, k, in_shape[3])
    common = dict(in_bits=in_bits, out_bits=out_bits, w_bits=w_bits, in_zero_point=in_zp,
                  out_zero_point=out_zp, in_shape=in_shape, filter_shape=fshape,
                  out_shape=out_shape, act_min=olo, act_max=ohi, geometry=geometry)
    if depthwise:
        opts = qo.DepthwiseConv2DOptions(depth_multiplier=c_out // in_shape[3], **common)
    else:
        opts = qo.Conv2DOptions(**common)
    x = rng.integers(lo, hi + 1, size=in_shape)
    wlo, whi = qo.qrange(bits=w_bits, signed=True)
    w = rng.integers(wlo + 1, whi + 1, size=fshape)
    bias = rng.integers(-300, 300, size=c_out)
    reals = rng.uniform(0.002, 0.05, size=c_out) * (2.0 ** (8 - out_bits))
    requant = np.array([quantize_multiplier(float(r)) for r in reals]).T.astype(np.int32)
    return opts, x, w, bias, requant


CONV_GRID = [
    # in_bits, w_bits, out_bits, in_shape, c_out, k, stride, dilation, padding
    (8, 8, 8, (1, 5, 6, 4), 4, 3, 1, 1, "SAME"),
    (4, 8, 8, (1, 6, 5, 4), 6, 3, 2, 1, "VALID"),
    (2, 4, 4, (2, 4, 5, 8), 4, 1, 1, 1, "VALID"),
    (8, 4, 2, (1, 7, 4, 8), 8, 3, 2, 2, "EXPLICIT"),
    (4, 2, 8, (1, 5, 5, 8), 2, 2, 1, 1, "SAME"),
]


@pytest.mark.parametrize("case", CONV_GRID)
@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_matches_naive_loops(case, depthwise):
    in_bits, w_bits, out_bits, in_shape, c_out, k, stride, dil, padding = case
    if depthwise:
        c_out = in_shape[3] * (2 if c_out > in_shape[3] else 1)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))  # stable across runs
    opts, x, w, bias, requant = _random_case(rng=rng, in_bits=in_bits, w_bits=w_bits,
                                             out_bits=out_bits, in_shape=in_shape, c_out=c_out,
                                             k=k, stride=stride, dilation=dil, padding=padding,
                                             depthwise=depthwise)
    fn = qk.depthwise_conv_2d if depthwise else qk.conv_2d
    got = fn(input=qo.pack_bits(values=x, bits=in_bits), filter=qo.pack_bits(values=w, bits=w_bits),
             bias=bias, requant=requant, options=opts)
    want = _naive_conv(x=x, w=w, bias=bias, requant=requant, o=opts, depthwise=depthwise)
    np.testing.assert_array_equal(qo.unpack_bits(packed=got, bits=out_bits, channels=c_out,
                                                 signed=out_bits == 8), want)


def test_conv_hand_case_padding_is_zero_point():
    # 1 channel 2x2 input, all ones kernel 3x3 SAME: every output sums all real pixels.
    opts = _conv_opts(in_zero_point=5, in_shape=(1, 2, 2, 1), filter_shape=(1, 3, 3, 1),
                      out_shape=(1, 2, 2, 1),
                      geometry=qo.Geometry(padding="SAME", pad_top=1, pad_bottom=1, pad_left=1,
                                           pad_right=1))
    x = np.array([6, 7, 8, 9], dtype=np.int8).reshape(1, 2, 2, 1)
    got = qk.conv_2d(input=x, filter=np.ones((1, 3, 3, 1), np.int8), bias=np.array([1]),
                     requant=np.array([[IDENTITY[0]], [IDENTITY[1]]]), options=opts)
    assert got.ravel().tolist() == [1 + 2 + 3 + 4 + 1] * 4


def test_average_pool_tflite_rounding():
    opts = qo.AveragePool2DOptions(in_bits=8, out_bits=8, in_zero_point=0, out_zero_point=0,
                                   in_shape=(1, 1, 4, 1), out_shape=(1, 1, 2, 1), filter_h=1,
                                   filter_w=2, act_min=-128, act_max=127,
                                   geometry=qo.Geometry(stride_w=2))
    x = np.array([-3, 0, 3, 0], dtype=np.int8).reshape(1, 1, 4, 1)
    assert qk.average_pool_2d(input=x, options=opts).ravel().tolist() == [-2, 2]


def test_average_pool_excludes_padding_from_count():
    geo = qo.Geometry(padding="SAME", pad_top=0, pad_bottom=1, pad_left=0, pad_right=1)
    opts = qo.AveragePool2DOptions(in_bits=4, out_bits=4, in_zero_point=0, out_zero_point=0,
                                   in_shape=(1, 2, 2, 2), out_shape=(1, 2, 2, 2), filter_h=2,
                                   filter_w=2, act_min=0, act_max=15, geometry=geo)
    x = np.array([1, 15, 3, 15, 5, 15, 8, 15]).reshape(1, 2, 2, 2)
    got = qk.average_pool_2d(input=qo.pack_bits(values=x, bits=4), options=opts)
    vals = qo.unpack_bits(packed=got, bits=4, channels=2)
    assert vals[..., 0].ravel().tolist() == [round(17 / 4), 6, 7, 8]  # (1+3+5+8)/4=4.25; (3+8)/2=5.5->6
    assert vals[..., 1].ravel().tolist() == [15] * 4


def test_add_identity_scales():
    # s1 = s2 = s_out: multipliers as TFLite computes them; x1 + x2 - zp exactly.
    m_in, s_in = quantize_multiplier(0.5)
    m_out, s_out = quantize_multiplier(2.0 / (1 << 20))
    opts = qo.AddOptions(in1_bits=4, in2_bits=8, out_bits=8, in1_zero_point=3, in2_zero_point=-4,
                         out_zero_point=1, in1_multiplier=m_in, in1_shift=s_in,
                         in2_multiplier=m_in, in2_shift=s_in, out_multiplier=m_out,
                         out_shift=s_out, act_min=-128, act_max=127, shape=(1, 1, 1, 4))
    a = np.array([0, 3, 15, 9])
    b = np.array([-4, 10, 127, -128])
    got = qk.add(input1=qo.pack_bits(values=a.reshape(1, 1, 1, 4), bits=4),
                 input2=b.astype(np.int8).reshape(1, 1, 1, 4), options=opts)
    want = np.clip((a - 3) + (b + 4) + 1, -128, 127)
    assert got.ravel().tolist() == want.tolist()


@pytest.mark.parametrize("bits", [4, 2])
def test_pack_unpack_requantize(bits):
    scale8, zp8 = 0.05, -20
    scale_b, zp_b = qo.subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=bits)
    m_p, s_p = quantize_multiplier(float(np.float32(scale8)) / scale_b)
    pack_o = qo.RequantOptions(in_bits=8, out_bits=bits, in_zero_point=zp8, out_zero_point=zp_b,
                               multiplier=m_p, shift=s_p, shape=(1, 1, 16, 16))
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16)
    packed = qk.pack(input=x, options=pack_o)
    q = qo.unpack_bits(packed=packed, bits=bits, channels=16)
    real = scale8 * (x.astype(np.float64) - zp8)
    want = np.clip(np.round(real / scale_b) + zp_b, 0, (1 << bits) - 1)
    assert np.abs(q - want).max() <= 1  # one step: float rounding vs fixed point at ties
    m_u, s_u = quantize_multiplier(scale_b / float(np.float32(scale8)))
    unpack_o = dataclasses.replace(pack_o, in_bits=bits, out_bits=8, in_zero_point=zp_b,
                                   out_zero_point=zp8, multiplier=m_u, shift=s_u)
    back = qk.unpack(input=packed, options=unpack_o).astype(np.int64)
    assert np.abs(back - x).max() <= 255 / ((1 << bits) - 1) / 2 + 1


def test_accumulator_overflow_is_an_error():
    opts = _conv_opts(in_shape=(1, 1, 1, 4), filter_shape=(1, 1, 1, 4), out_shape=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="int32"):
        qk.conv_2d(input=np.full((1, 1, 1, 4), 127, np.int8), filter=np.full((1, 1, 1, 4), 127, np.int8),
                   bias=np.array([2**31 - 100]), requant=np.array([[1 << 30], [0]]), options=opts)


# ---------------------------------------------------------------- LiteRT (TFLite reference kernels)
def _tiny_int8_model() -> bytes:
    tf = pytest.importorskip("tensorflow")
    inp = tf.keras.Input((9, 9, 4), batch_size=1)
    a = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    b = tf.keras.layers.DepthwiseConv2D(3, padding="same")(a)
    c = tf.keras.layers.Add()([a, b])
    d = tf.keras.layers.AveragePooling2D(2, strides=1, padding="same")(c)
    model = tf.keras.Model(inp, d)
    rng = np.random.default_rng(5)

    def calibration():
        for _ in range(8):
            yield [rng.normal(size=(1, 9, 9, 4)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = calibration
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def _quant(details: dict) -> tuple[np.ndarray, np.ndarray]:
    q = details["quantization_parameters"]
    return q["scales"].astype(np.float32), q["zero_points"].astype(np.int64)


def _same_geometry(*, in_shape, out_shape, kh, kw, stride) -> qo.Geometry:
    _, top, bottom = qo.same_padding(size=in_shape[1], kernel=kh, stride=stride, dilation=1)
    _, left, right = qo.same_padding(size=in_shape[2], kernel=kw, stride=stride, dilation=1)
    return qo.Geometry(stride_h=stride, stride_w=stride, padding="SAME", pad_top=top,
                       pad_bottom=bottom, pad_left=left, pad_right=right)


def _conv_like(*, interp, op, tensors, depthwise: bool):
    x_d, w_d, b_d = (tensors[i] for i in op["inputs"])
    y_d = tensors[op["outputs"][0]]
    (s_in,), (zp_in,) = _quant(x_d)
    s_w, _ = _quant(w_d)
    (s_out,), (zp_out,) = _quant(y_d)
    w = interp.get_tensor(w_d["index"])
    stride = 2 if y_d["shape"][1] < x_d["shape"][1] else 1
    kh, kw = w.shape[1:3]
    common = dict(in_bits=8, out_bits=8, w_bits=8, in_zero_point=int(zp_in),
                  out_zero_point=int(zp_out), in_shape=tuple(x_d["shape"]),
                  filter_shape=tuple(w.shape), out_shape=tuple(y_d["shape"]),
                  act_min=-128, act_max=127,
                  geometry=_same_geometry(in_shape=x_d["shape"], out_shape=y_d["shape"], kh=kh,
                                          kw=kw, stride=stride))
    if depthwise:
        opts = qo.DepthwiseConv2DOptions(depth_multiplier=1, **common)
    else:
        opts = dataclasses.replace(qo.Conv2DOptions(**common), act_min=max(-128, int(zp_out)))
    reals = [(float(s_in) * float(s)) / float(s_out) for s in s_w]
    requant = np.array([quantize_multiplier(r) for r in reals]).T
    fn = qk.depthwise_conv_2d if depthwise else qk.conv_2d
    return fn(input=interp.get_tensor(x_d["index"]), filter=w,
              bias=interp.get_tensor(b_d["index"]), requant=requant, options=opts)


def _add(*, interp, op, tensors):
    a_d, b_d = (tensors[i] for i in op["inputs"])
    y_d = tensors[op["outputs"][0]]
    (s1,), (z1,) = _quant(a_d)
    (s2,), (z2,) = _quant(b_d)
    (so,), (zo,) = _quant(y_d)
    twice = 2 * max(float(s1), float(s2))
    m1, m2 = quantize_multiplier(float(s1) / twice), quantize_multiplier(float(s2) / twice)
    mo = quantize_multiplier(twice / ((1 << 20) * float(so)))
    opts = qo.AddOptions(in1_bits=8, in2_bits=8, out_bits=8, in1_zero_point=int(z1),
                         in2_zero_point=int(z2), out_zero_point=int(zo), in1_multiplier=m1[0],
                         in1_shift=m1[1], in2_multiplier=m2[0], in2_shift=m2[1],
                         out_multiplier=mo[0], out_shift=mo[1], act_min=-128, act_max=127,
                         shape=tuple(y_d["shape"]))
    return qk.add(input1=interp.get_tensor(a_d["index"]), input2=interp.get_tensor(b_d["index"]),
                  options=opts)


def _pool(*, interp, op, tensors):
    x_d = tensors[op["inputs"][0]]
    y_d = tensors[op["outputs"][0]]
    (_,), (zp,) = _quant(x_d)
    opts = qo.AveragePool2DOptions(in_bits=8, out_bits=8, in_zero_point=int(zp),
                                   out_zero_point=int(zp), in_shape=tuple(x_d["shape"]),
                                   out_shape=tuple(y_d["shape"]), filter_h=2, filter_w=2,
                                   act_min=-128, act_max=127,
                                   geometry=_same_geometry(in_shape=x_d["shape"],
                                                           out_shape=y_d["shape"], kh=2, kw=2,
                                                           stride=1))
    return qk.average_pool_2d(input=interp.get_tensor(x_d["index"]), options=opts)


def test_8bit_qmcu_ops_equal_litert_reference_kernels():
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interp = litert.Interpreter(model_content=_tiny_int8_model(),
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                                experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    x = np.random.default_rng(9).integers(-128, 128, size=(1, 9, 9, 4), dtype=np.int8)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ours = {"CONV_2D": lambda op: _conv_like(interp=interp, op=op, tensors=tensors,
                                             depthwise=False),
            "DEPTHWISE_CONV_2D": lambda op: _conv_like(interp=interp, op=op, tensors=tensors,
                                                       depthwise=True),
            "ADD": lambda op: _add(interp=interp, op=op, tensors=tensors),
            "AVERAGE_POOL_2D": lambda op: _pool(interp=interp, op=op, tensors=tensors)}
    checked = set()
    for op in interp._get_ops_details():
        if op["op_name"] in ours:
            want = interp.get_tensor(op["outputs"][0])
            np.testing.assert_array_equal(ours[op["op_name"]](op), want, err_msg=op["op_name"])
            checked.add(op["op_name"])
    assert checked == set(ours), f"model lacked ops: {set(ours) - checked}"
