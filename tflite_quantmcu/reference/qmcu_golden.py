"""Random QMCU test cases computed by the numpy reference, and their C header form.

Used by the host (ctypes) tests, the emulated Cortex-M tests and the instruction-count
benchmark, so that every C build is checked against the same oracle.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Union

import numpy as np

from tflite_quantmcu import qmcu_options as qo
from tflite_quantmcu.reference import qmcu_kernels as qk
from tflite_quantmcu.reference.requantize import quantize_multiplier


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One conv / depthwise case: bit widths and geometry (pads explicit)."""
    in_bits: int
    w_bits: int
    out_bits: int
    in_shape: tuple[int, int, int, int]
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    depthwise: bool = False
    relu: bool = False


@dataclasses.dataclass(frozen=True)
class ConvCase:
    options: Union[qo.Conv2DOptions, qo.DepthwiseConv2DOptions]
    input: np.ndarray
    filter: np.ndarray
    bias: np.ndarray
    requant: np.ndarray
    expected: np.ndarray

    @property
    def depthwise(self) -> bool:
        return isinstance(self.options, qo.DepthwiseConv2DOptions)


@dataclasses.dataclass(frozen=True)
class AddCase:
    options: qo.AddOptions
    input1: np.ndarray
    input2: np.ndarray
    expected: np.ndarray


@dataclasses.dataclass(frozen=True)
class PoolCase:
    options: qo.AveragePool2DOptions
    input: np.ndarray
    expected: np.ndarray


@dataclasses.dataclass(frozen=True)
class RequantCase:
    options: qo.RequantOptions
    input: np.ndarray
    expected: np.ndarray

    @property
    def op(self) -> str:
        return "pack" if self.options.in_bits == 8 else "unpack"


Case = Union[ConvCase, AddCase, PoolCase, RequantCase]


def _random_act(*, rng, bits: int, shape) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = qo.act_range(bits=bits)
    values = rng.integers(lo, hi + 1, size=shape)
    return values, qo.pack_bits(values=values, bits=bits)


def _zero_point(*, rng, bits: int) -> int:
    lo, hi = qo.act_range(bits=bits)
    return int(rng.integers(lo, hi + 1))


def _geometry(*, spec: ConvSpec) -> qo.Geometry:
    return qo.Geometry(stride_h=spec.stride[0], stride_w=spec.stride[1],
                       dilation_h=spec.dilation[0], dilation_w=spec.dilation[1],
                       padding="EXPLICIT", pad_top=spec.pads[0], pad_bottom=spec.pads[1],
                       pad_left=spec.pads[2], pad_right=spec.pads[3])


def _out_shape(*, spec: ConvSpec) -> tuple[int, int, int, int]:
    n, h, w, _ = spec.in_shape
    oh = qo.conv_out_size(size=h, kernel=spec.kernel[0], stride=spec.stride[0],
                          dilation=spec.dilation[0], pad_before=spec.pads[0],
                          pad_after=spec.pads[1])
    ow = qo.conv_out_size(size=w, kernel=spec.kernel[1], stride=spec.stride[1],
                          dilation=spec.dilation[1], pad_before=spec.pads[2],
                          pad_after=spec.pads[3])
    return n, oh, ow, spec.c_out


def _conv_requant(*, rng, spec: ConvSpec, depth: int) -> np.ndarray:
    """Per-channel multipliers that keep outputs mostly inside the output range."""
    x_std = (1 << spec.in_bits) / 2.0
    w_std = max((1 << (spec.w_bits - 1)) / 1.8, 0.7)
    target = (1 << spec.out_bits) / 5.0
    base = target / (math.sqrt(depth) * x_std * w_std)
    reals = base * rng.uniform(0.5, 2.0, size=spec.c_out)
    return np.array([quantize_multiplier(float(r)) for r in reals], dtype=np.int64).T \
        .astype(np.int32)


def conv_options(*, spec: ConvSpec, in_zp: int, out_zp: int):
    """Options dataclass of a conv spec."""
    kh, kw = spec.kernel
    in_c = spec.in_shape[3]
    lo, hi = qo.act_range(bits=spec.out_bits)
    common = dict(in_bits=spec.in_bits, out_bits=spec.out_bits, w_bits=spec.w_bits,
                  in_zero_point=in_zp, out_zero_point=out_zp, in_shape=spec.in_shape,
                  out_shape=_out_shape(spec=spec), act_min=max(lo, out_zp) if spec.relu else lo,
                  act_max=hi, geometry=_geometry(spec=spec))
    if spec.depthwise:
        return qo.DepthwiseConv2DOptions(filter_shape=(1, kh, kw, spec.c_out),
                                         depth_multiplier=spec.c_out // in_c, **common)
    return qo.Conv2DOptions(filter_shape=(spec.c_out, kh, kw, in_c), **common)


def random_conv_case(*, rng: np.random.Generator, spec: ConvSpec) -> ConvCase:
    """Random data for ``spec`` and the reference output."""
    opts = conv_options(spec=spec, in_zp=_zero_point(rng=rng, bits=spec.in_bits),
                        out_zp=_zero_point(rng=rng, bits=spec.out_bits))
    _, x = _random_act(rng=rng, bits=spec.in_bits, shape=spec.in_shape)
    wlo, whi = qo.qrange(bits=spec.w_bits, signed=True)
    w_values = rng.integers(wlo + 1, whi + 1, size=opts.filter_shape)
    w = qo.pack_bits(values=w_values, bits=spec.w_bits).view(np.int8)
    depth = spec.kernel[0] * spec.kernel[1] * (1 if spec.depthwise else spec.in_shape[3])
    spread = int(math.sqrt(depth) * (1 << spec.in_bits) * (1 << spec.w_bits) / 8)
    bias = rng.integers(-spread, spread + 1, size=spec.c_out).astype(np.int32)
    requant = _conv_requant(rng=rng, spec=spec, depth=depth)
    fn = qk.depthwise_conv_2d if spec.depthwise else qk.conv_2d
    expected = fn(input=x, filter=w, bias=bias, requant=requant, options=opts)
    return ConvCase(options=opts, input=x, filter=w, bias=bias, requant=requant,
                    expected=expected)


def random_add_case(*, rng, bits: tuple[int, int, int], shape) -> AddCase:
    """QMCU_ADD with random scales, multipliers computed as TFLite does."""
    b1, b2, bo = bits
    s1, s2 = (float(np.float32(v)) for v in rng.uniform(0.01, 0.2, size=2) * 16 / (1 << np.array([b1, b2])))
    s_out = float(np.float32((s1 * (1 << b1) + s2 * (1 << b2)) / (1 << bo) * rng.uniform(0.5, 1.0)))
    twice = 2 * max(s1, s2)
    m1, m2 = quantize_multiplier(s1 / twice), quantize_multiplier(s2 / twice)
    mo = quantize_multiplier(twice / ((1 << qo.ADD_LEFT_SHIFT) * s_out))
    lo, hi = qo.act_range(bits=bo)
    opts = qo.AddOptions(in1_bits=b1, in2_bits=b2, out_bits=bo,
                         in1_zero_point=_zero_point(rng=rng, bits=b1),
                         in2_zero_point=_zero_point(rng=rng, bits=b2),
                         out_zero_point=_zero_point(rng=rng, bits=bo), in1_multiplier=m1[0],
                         in1_shift=m1[1], in2_multiplier=m2[0], in2_shift=m2[1],
                         out_multiplier=mo[0], out_shift=mo[1], act_min=lo, act_max=hi,
                         shape=tuple(shape))
    _, x1 = _random_act(rng=rng, bits=b1, shape=shape)
    _, x2 = _random_act(rng=rng, bits=b2, shape=shape)
    return AddCase(options=opts, input1=x1, input2=x2,
                   expected=qk.add(input1=x1, input2=x2, options=opts))


def random_pool_case(*, rng, in_bits: int, out_bits: int, in_shape, filt: tuple[int, int],
                     stride: tuple[int, int], pads: tuple[int, int, int, int],
                     rescale: Optional[bool] = None) -> PoolCase:
    """QMCU_AVERAGE_POOL_2D; ``rescale`` defaults to ``in_bits != out_bits``."""
    rescale = in_bits != out_bits if rescale is None else rescale
    n, h, w, c = in_shape
    oh = qo.conv_out_size(size=h, kernel=filt[0], stride=stride[0], dilation=1,
                          pad_before=pads[0], pad_after=pads[1])
    ow = qo.conv_out_size(size=w, kernel=filt[1], stride=stride[1], dilation=1,
                          pad_before=pads[2], pad_after=pads[3])
    in_zp = _zero_point(rng=rng, bits=in_bits)
    out_zp = _zero_point(rng=rng, bits=out_bits) if rescale else in_zp
    mult, shift = quantize_multiplier(((1 << out_bits) / (1 << in_bits)) * rng.uniform(0.6, 1.0)) \
        if rescale else (0, 0)
    lo, hi = qo.act_range(bits=out_bits)
    geo = qo.Geometry(stride_h=stride[0], stride_w=stride[1], padding="EXPLICIT",
                      pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])
    opts = qo.AveragePool2DOptions(in_bits=in_bits, out_bits=out_bits, in_zero_point=in_zp,
                                   out_zero_point=out_zp, in_shape=tuple(in_shape),
                                   out_shape=(n, oh, ow, c), filter_h=filt[0], filter_w=filt[1],
                                   act_min=lo, act_max=hi, rescale=rescale, multiplier=mult,
                                   shift=shift, geometry=geo)
    _, x = _random_act(rng=rng, bits=in_bits, shape=in_shape)
    return PoolCase(options=opts, input=x, expected=qk.average_pool_2d(input=x, options=opts))


def random_requant_case(*, rng, in_bits: int, out_bits: int, shape) -> RequantCase:
    """QMCU_PACK (in_bits 8) or QMCU_UNPACK (out_bits 8) with §1.5 quantization parameters."""
    scale8 = float(np.float32(rng.uniform(0.01, 0.1)))
    zp8 = _zero_point(rng=rng, bits=8)
    sub = min(in_bits, out_bits)
    scale_b, zp_b = qo.subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=sub)
    if in_bits == 8:
        (m, s), zps = quantize_multiplier(scale8 / scale_b), (zp8, zp_b)
    else:
        (m, s), zps = quantize_multiplier(scale_b / scale8), (zp_b, zp8)
    opts = qo.RequantOptions(in_bits=in_bits, out_bits=out_bits, in_zero_point=zps[0],
                             out_zero_point=zps[1], multiplier=m, shift=s, shape=tuple(shape))
    _, x = _random_act(rng=rng, bits=in_bits, shape=shape)
    fn = qk.pack if in_bits == 8 else qk.unpack
    return RequantCase(options=opts, input=x, expected=fn(input=x, options=opts))


# ------------------------------------------------------------------ C header form
def _dims(shape) -> str:
    return "{%d, %d, %d, %d}" % tuple(int(v) for v in shape)


def _geometry_c(g: qo.Geometry) -> str:
    return "{%d, %d, %d, %d, %d, %d, %d, %d}" % (g.stride_h, g.stride_w, g.dilation_h,
                                                 g.dilation_w, g.pad_top, g.pad_bottom,
                                                 g.pad_left, g.pad_right)


def conv_params_c(options) -> str:
    """C99 initializer of qmcu_conv_params (field order of qmcu_ops.h)."""
    o = options
    dm = getattr(o, "depth_multiplier", 1)
    return ("{%s, %s, %s, %d, %d, %d, %d, %d, %d, %d, %d, %s}" % (
        _dims(o.in_shape), _dims(o.filter_shape), _dims(o.out_shape), o.in_bits, o.w_bits,
        o.out_bits, o.in_zero_point, o.out_zero_point, o.act_min, o.act_max, dm,
        _geometry_c(o.geometry)))


def add_params_c(o: qo.AddOptions) -> str:
    """C99 initializer of qmcu_add_params."""
    vals = (o.in1_bits, o.in2_bits, o.out_bits, o.in1_zero_point, o.in2_zero_point,
            o.out_zero_point, o.left_shift, o.in1_multiplier, o.in1_shift, o.in2_multiplier,
            o.in2_shift, o.out_multiplier, o.out_shift, o.act_min, o.act_max)
    return "{%s, %s}" % (_dims(o.shape), ", ".join(str(int(v)) for v in vals))


def pool_params_c(o: qo.AveragePool2DOptions) -> str:
    """C99 initializer of qmcu_avg_pool_params."""
    vals = (o.filter_h, o.filter_w, o.in_bits, o.out_bits, o.in_zero_point, o.out_zero_point,
            o.act_min, o.act_max, int(o.rescale), o.multiplier, o.shift)
    return "{%s, %s, %s, %s}" % (_dims(o.in_shape), _dims(o.out_shape),
                                 ", ".join(str(int(v)) for v in vals), _geometry_c(o.geometry))


def requant_params_c(o: qo.RequantOptions) -> str:
    """C99 initializer of qmcu_requant_params."""
    vals = (o.in_bits, o.out_bits, o.in_zero_point, o.out_zero_point, o.multiplier, o.shift)
    return "{%s, %s}" % (_dims(o.shape), ", ".join(str(int(v)) for v in vals))


def c_array(*, name: str, ctype: str, values: np.ndarray) -> str:
    """A static const C array (4-byte aligned) of the flattened values."""
    flat = np.asarray(values).ravel()
    if ctype == "uint8_t":
        flat = flat.view(np.uint8) if flat.dtype.itemsize == 1 else flat
    body = ",".join(str(int(v)) for v in flat) or "0"
    return (f"static const {ctype} {name}[{max(flat.size, 1)}] "
            f"__attribute__((aligned(4))) = {{{body}}};\n")


def _conv_entry(*, name: str, case: ConvCase) -> tuple[str, str]:
    arrays = "".join([
        c_array(name=f"{name}_in", ctype="uint8_t", values=case.input.view(np.uint8)),
        c_array(name=f"{name}_w", ctype="uint8_t", values=case.filter.view(np.uint8)),
        c_array(name=f"{name}_b", ctype="int32_t", values=case.bias),
        c_array(name=f"{name}_m", ctype="int32_t", values=case.requant[0]),
        c_array(name=f"{name}_s", ctype="int32_t", values=case.requant[1]),
        c_array(name=f"{name}_out", ctype="uint8_t", values=case.expected.view(np.uint8)),
    ])
    entry = (f'{{"{name}", {int(case.depthwise)}, {conv_params_c(case.options)}, {name}_in, '
             f'{name}_w, {name}_b, {name}_m, {name}_s, {name}_out, {case.expected.nbytes}u}}')
    return arrays, entry


def _unary_arrays(*, name: str, case) -> str:
    return (c_array(name=f"{name}_in", ctype="uint8_t", values=case.input.view(np.uint8))
            + c_array(name=f"{name}_out", ctype="uint8_t", values=case.expected.view(np.uint8)))


def _table(*, ctype: str, name: str, entries: list[str]) -> str:
    """A table plus its count macro; an empty table gets one zeroed, uncounted entry."""
    body = ",\n  ".join(entries) if entries else "{0}"
    return (f"#define {name.upper()}_COUNT {len(entries)}\n"
            f"static const {ctype} {name}[] = {{\n  {body}\n}};\n")


def golden_header(*, convs=(), adds=(), pools=(), requants=()) -> str:
    """C header text with the cases as static tables (see cmixnn_bridge/test/cortexm)."""
    parts = ["/* Generated by tflite_quantmcu.reference.qmcu_golden; do not edit. */\n"]
    conv_entries, add_entries, pool_entries, req_entries = [], [], [], []
    for i, case in enumerate(convs):
        arrays, entry = _conv_entry(name=f"conv{i}", case=case)
        parts.append(arrays)
        conv_entries.append(entry)
    for i, case in enumerate(adds):
        n = f"add{i}"
        parts.append(c_array(name=f"{n}_a", ctype="uint8_t", values=case.input1.view(np.uint8))
                     + c_array(name=f"{n}_b", ctype="uint8_t", values=case.input2.view(np.uint8))
                     + c_array(name=f"{n}_out", ctype="uint8_t",
                               values=case.expected.view(np.uint8)))
        add_entries.append(f'{{"{n}", {add_params_c(case.options)}, {n}_a, {n}_b, {n}_out, '
                           f'{case.expected.nbytes}u}}')
    for i, case in enumerate(pools):
        n = f"pool{i}"
        parts.append(_unary_arrays(name=n, case=case))
        pool_entries.append(f'{{"{n}", {pool_params_c(case.options)}, {n}_in, {n}_out, '
                            f'{case.expected.nbytes}u}}')
    for i, case in enumerate(requants):
        n = f"{case.op}{i}"
        parts.append(_unary_arrays(name=n, case=case))
        req_entries.append(f'{{"{n}", {int(case.op == "pack")}, '
                           f'{requant_params_c(case.options)}, {n}_in, {n}_out, '
                           f'{case.expected.nbytes}u}}')
    parts += [_table(ctype="qmcu_golden_conv", name="qmcu_golden_convs", entries=conv_entries),
              _table(ctype="qmcu_golden_add", name="qmcu_golden_adds", entries=add_entries),
              _table(ctype="qmcu_golden_pool", name="qmcu_golden_pools", entries=pool_entries),
              _table(ctype="qmcu_golden_requant", name="qmcu_golden_requants",
                     entries=req_entries)]
    outs = [c.expected.nbytes for c in (*convs, *adds, *pools, *requants)] or [4]
    depths = [c.options.filter_shape[1] * c.options.filter_shape[2] * c.options.in_shape[3]
              for c in convs] or [0]
    parts.append(f"#define QMCU_GOLDEN_MAX_OUT {max(outs) + 4}\n")
    parts.append(f"#define QMCU_GOLDEN_SCRATCH_WORDS {(10 * max(depths) + 64) // 4}\n")
    return "".join(parts)
