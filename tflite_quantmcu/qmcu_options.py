"""Options of the ``QMCU_*`` custom ops, their flexbuffer encoding, and bit packing.

The format is defined in ``docs/qmcu_ops.md``; this module is its Python form.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import numpy as np
from flatbuffers import flexbuffers

FORMAT_VERSION = 1
ACT_BITS = (8, 4, 2)
WEIGHT_BITS = (8, 4, 2)
PADDINGS = ("SAME", "VALID", "EXPLICIT")
ADD_LEFT_SHIFT = 20


def qrange(*, bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-wide value."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def act_range(*, bits: int) -> tuple[int, int]:
    """Range of an activation: int8 for 8 bits, unsigned for 4 and 2 bits."""
    return qrange(bits=bits, signed=bits == 8)


def subbyte_quant_params(*, scale8: float, zero_point8: int, bits: int) -> tuple[float, int]:
    """Scale and zero point of a ``bits``-wide tensor covering an int8 tensor's real range.

    scale_b = scale8 * 255 / (2^bits - 1) (rounded to float32),
    zp_b = round_half_up((zp8 + 128) * (2^bits - 1) / 255), exactly in integers.
    """
    _check_bits(name="bits", bits=bits, allowed=ACT_BITS)
    if bits == 8:
        return float(np.float32(scale8)), int(zero_point8)
    levels = (1 << bits) - 1
    scale_b = float(np.float32(float(scale8) * 255.0 / levels))
    zp_b = ((int(zero_point8) + 128) * levels * 2 + 255) // 510
    return scale_b, min(max(zp_b, 0), levels)


def _check_bits(*, name: str, bits: int, allowed: tuple[int, ...]) -> None:
    if bits not in allowed:
        raise ValueError(f"{name}={bits} is not one of {allowed}")


def _check_zero_point(*, name: str, zero_point: int, bits: int) -> None:
    lo, hi = act_range(bits=bits)
    if not lo <= zero_point <= hi:
        raise ValueError(f"{name}={zero_point} outside [{lo}, {hi}] for {bits} bits")


def _check_act(*, act_min: int, act_max: int, bits: int) -> None:
    lo, hi = act_range(bits=bits)
    if not lo <= act_min <= act_max <= hi:
        raise ValueError(f"act range [{act_min}, {act_max}] not inside [{lo}, {hi}]")


def check_packable(*, name: str, channels: int, bits: int) -> None:
    """Raise if ``channels`` cannot be packed at ``bits`` without a partial byte."""
    if bits < 8 and channels % (8 // bits) != 0:
        raise ValueError(
            f"{name}: {channels} channels at {bits} bits is not a multiple of {8 // bits}")


def _check_shape(*, name: str, shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or any(int(d) <= 0 for d in shape):
        raise ValueError(f"{name}={shape} must be 4 positive dims")


def same_padding(*, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """TFLite SAME padding: (out, pad_before, pad_after)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return out, total // 2, total - total // 2


def conv_out_size(*, size: int, kernel: int, stride: int, dilation: int,
                  pad_before: int, pad_after: int) -> int:
    """Output size from explicit pads (docs §1.7)."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Spatial geometry shared by conv, depthwise conv and pooling."""
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    padding: str = "VALID"
    pad_top: int = 0
    pad_bottom: int = 0
    pad_left: int = 0
    pad_right: int = 0

    def check(self, *, in_shape, out_shape, kh: int, kw: int) -> None:
        """Validate strides, pads and the output size against the input size."""
        if min(self.stride_h, self.stride_w, self.dilation_h, self.dilation_w) < 1:
            raise ValueError("strides and dilations must be >= 1")
        if min(self.pad_top, self.pad_bottom, self.pad_left, self.pad_right) < 0:
            raise ValueError("pads must be >= 0")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding={self.padding!r} not one of {PADDINGS}")
        self._check_axis(size=in_shape[1], out=out_shape[1], k=kh, s=self.stride_h,
                         d=self.dilation_h, before=self.pad_top, after=self.pad_bottom)
        self._check_axis(size=in_shape[2], out=out_shape[2], k=kw, s=self.stride_w,
                         d=self.dilation_w, before=self.pad_left, after=self.pad_right)

    def _check_axis(self, *, size, out, k, s, d, before, after) -> None:
        if self.padding == "SAME":
            expect = same_padding(size=size, kernel=k, stride=s, dilation=d)[1:]
            if (before, after) != expect:
                raise ValueError(f"SAME pads {(before, after)} differ from TFLite's {expect}")
        if self.padding == "VALID" and (before, after) != (0, 0):
            raise ValueError("VALID padding with non-zero pads")
        got = conv_out_size(size=size, kernel=k, stride=s, dilation=d,
                            pad_before=before, pad_after=after)
        if got != out:
            raise ValueError(f"output size {out} differs from computed {got}")


def _geometry_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Geometry))


@dataclasses.dataclass(frozen=True)
class Conv2DOptions:
    """Options of QMCU_CONV_2D (docs §2); ``filter_shape`` is logical OHWI."""
    in_bits: int
    out_bits: int
    w_bits: int
    in_zero_point: int
    out_zero_point: int
    in_shape: tuple[int, int, int, int]
    filter_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    act_min: int
    act_max: int
    geometry: Geometry = Geometry()

    def __post_init__(self) -> None:
        _check_conv_like(opts=self, depthwise=False)


@dataclasses.dataclass(frozen=True)
class DepthwiseConv2DOptions:
    """Options of QMCU_DEPTHWISE_CONV_2D (docs §3); ``filter_shape`` is [1, KH, KW, C_out]."""
    in_bits: int
    out_bits: int
    w_bits: int
    in_zero_point: int
    out_zero_point: int
    in_shape: tuple[int, int, int, int]
    filter_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    act_min: int
    act_max: int
    depth_multiplier: int = 1
    geometry: Geometry = Geometry()

    def __post_init__(self) -> None:
        _check_conv_like(opts=self, depthwise=True)


def _check_conv_like(*, opts, depthwise: bool) -> None:
    _check_bits(name="in_bits", bits=opts.in_bits, allowed=ACT_BITS)
    _check_bits(name="out_bits", bits=opts.out_bits, allowed=ACT_BITS)
    _check_bits(name="w_bits", bits=opts.w_bits, allowed=WEIGHT_BITS)
    _check_zero_point(name="in_zero_point", zero_point=opts.in_zero_point, bits=opts.in_bits)
    _check_zero_point(name="out_zero_point", zero_point=opts.out_zero_point, bits=opts.out_bits)
    _check_act(act_min=opts.act_min, act_max=opts.act_max, bits=opts.out_bits)
    for name in ("in_shape", "filter_shape", "out_shape"):
        _check_shape(name=name, shape=getattr(opts, name))
    ins, fs, outs = opts.in_shape, opts.filter_shape, opts.out_shape
    if depthwise:
        _check_depthwise_channels(opts=opts)
    elif fs[3] != ins[3] or fs[0] != outs[3]:
        raise ValueError(f"filter {fs} does not match input {ins} / output {outs}")
    if ins[0] != outs[0]:
        raise ValueError("batch of input and output differ")
    check_packable(name="input", channels=ins[3], bits=opts.in_bits)
    check_packable(name="output", channels=outs[3], bits=opts.out_bits)
    check_packable(name="filter", channels=fs[3], bits=opts.w_bits)
    opts.geometry.check(in_shape=ins, out_shape=outs, kh=fs[1], kw=fs[2])


def _check_depthwise_channels(*, opts) -> None:
    ins, fs, outs = opts.in_shape, opts.filter_shape, opts.out_shape
    if opts.depth_multiplier < 1 or fs[0] != 1:
        raise ValueError("depthwise needs depth_multiplier >= 1 and filter dim 0 == 1")
    if fs[3] != outs[3] or outs[3] != ins[3] * opts.depth_multiplier:
        raise ValueError(f"depthwise channels: in {ins}, filter {fs}, out {outs}")


@dataclasses.dataclass(frozen=True)
class AddOptions:
    """Options of QMCU_ADD (docs §4)."""
    in1_bits: int
    in2_bits: int
    out_bits: int
    in1_zero_point: int
    in2_zero_point: int
    out_zero_point: int
    in1_multiplier: int
    in1_shift: int
    in2_multiplier: int
    in2_shift: int
    out_multiplier: int
    out_shift: int
    act_min: int
    act_max: int
    shape: tuple[int, int, int, int]
    left_shift: int = ADD_LEFT_SHIFT

    def __post_init__(self) -> None:
        for i in ("in1", "in2", "out"):
            bits = getattr(self, f"{i}_bits")
            _check_bits(name=f"{i}_bits", bits=bits, allowed=ACT_BITS)
            _check_zero_point(name=f"{i}_zero_point", zero_point=getattr(self, f"{i}_zero_point"),
                              bits=bits)
            check_packable(name=i, channels=self.shape[3], bits=bits)
        _check_act(act_min=self.act_min, act_max=self.act_max, bits=self.out_bits)
        _check_shape(name="shape", shape=self.shape)


@dataclasses.dataclass(frozen=True)
class AveragePool2DOptions:
    """Options of QMCU_AVERAGE_POOL_2D (docs §5)."""
    in_bits: int
    out_bits: int
    in_zero_point: int
    out_zero_point: int
    in_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    filter_h: int
    filter_w: int
    act_min: int
    act_max: int
    rescale: bool = False
    multiplier: int = 0
    shift: int = 0
    geometry: Geometry = Geometry()

    def __post_init__(self) -> None:
        _check_bits(name="in_bits", bits=self.in_bits, allowed=ACT_BITS)
        _check_bits(name="out_bits", bits=self.out_bits, allowed=ACT_BITS)
        _check_zero_point(name="in_zero_point", zero_point=self.in_zero_point, bits=self.in_bits)
        _check_zero_point(name="out_zero_point", zero_point=self.out_zero_point,
                          bits=self.out_bits)
        _check_act(act_min=self.act_min, act_max=self.act_max, bits=self.out_bits)
        _check_shape(name="in_shape", shape=self.in_shape)
        _check_shape(name="out_shape", shape=self.out_shape)
        if self.in_shape[3] != self.out_shape[3] or self.in_shape[0] != self.out_shape[0]:
            raise ValueError("average pool keeps batch and channels")
        if not self.rescale and self.in_bits != self.out_bits:
            raise ValueError("rescale=False needs in_bits == out_bits")
        if self.geometry.dilation_h != 1 or self.geometry.dilation_w != 1:
            raise ValueError("average pool has no dilation")
        g = self.geometry
        if max(g.pad_top, g.pad_bottom) >= self.filter_h or \
                max(g.pad_left, g.pad_right) >= self.filter_w:
            raise ValueError("average pool pads must be smaller than the filter")
        check_packable(name="input", channels=self.in_shape[3], bits=self.in_bits)
        check_packable(name="output", channels=self.out_shape[3], bits=self.out_bits)
        self.geometry.check(in_shape=self.in_shape, out_shape=self.out_shape,
                            kh=self.filter_h, kw=self.filter_w)


@dataclasses.dataclass(frozen=True)
class RequantOptions:
    """Options of QMCU_PACK (int8 -> packed) and QMCU_UNPACK (packed -> int8), docs §6."""
    in_bits: int
    out_bits: int
    in_zero_point: int
    out_zero_point: int
    multiplier: int
    shift: int
    shape: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        _check_bits(name="in_bits", bits=self.in_bits, allowed=ACT_BITS)
        _check_bits(name="out_bits", bits=self.out_bits, allowed=ACT_BITS)
        if (self.in_bits == 8) == (self.out_bits == 8):
            raise ValueError("exactly one side of PACK/UNPACK is 8-bit")
        _check_zero_point(name="in_zero_point", zero_point=self.in_zero_point, bits=self.in_bits)
        _check_zero_point(name="out_zero_point", zero_point=self.out_zero_point,
                          bits=self.out_bits)
        _check_shape(name="shape", shape=self.shape)
        check_packable(name="packed side", channels=self.shape[3],
                       bits=min(self.in_bits, self.out_bits))


OpOptions = Union[Conv2DOptions, DepthwiseConv2DOptions, AddOptions, AveragePool2DOptions,
                  RequantOptions]

OP_OPTIONS = {
    "QMCU_CONV_2D": Conv2DOptions,
    "QMCU_DEPTHWISE_CONV_2D": DepthwiseConv2DOptions,
    "QMCU_ADD": AddOptions,
    "QMCU_AVERAGE_POOL_2D": AveragePool2DOptions,
    "QMCU_PACK": RequantOptions,
    "QMCU_UNPACK": RequantOptions,
}


def _flat_fields(*, options: OpOptions) -> dict:
    out = {"version": FORMAT_VERSION}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, Geometry):
            out.update(dataclasses.asdict(value))
        elif isinstance(value, tuple):
            out[f.name] = [int(v) for v in value]
        else:
            out[f.name] = value
    return out


def encode_options(*, options: OpOptions) -> bytes:
    """The flexbuffer map stored as the op's custom_options."""
    return bytes(flexbuffers.Dumps(_flat_fields(options=options)))


def decode_options(*, op: str, data: bytes) -> OpOptions:
    """Parse custom_options of ``op`` (e.g. ``"QMCU_CONV_2D"``) into its dataclass."""
    if op not in OP_OPTIONS:
        raise ValueError(f"unknown QMCU op {op!r}")
    raw = flexbuffers.Loads(bytes(data))
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise ValueError(f"{op}: options are not a version-{FORMAT_VERSION} flexbuffer map")
    cls = OP_OPTIONS[op]
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name == "geometry":
            kwargs["geometry"] = Geometry(**{k: raw[k] for k in _geometry_fields() if k in raw})
        elif f.name in raw:
            value = raw[f.name]
            kwargs[f.name] = tuple(int(v) for v in value) if isinstance(value, list) else value
    if "rescale" in kwargs:
        kwargs["rescale"] = bool(kwargs["rescale"])
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{op}: missing option: {err}") from err


def pack_bits(*, values: np.ndarray, bits: int) -> np.ndarray:
    """Pack the innermost axis low bits first; 8 bits returns int8 unchanged in value."""
    values = np.asarray(values)
    _check_bits(name="bits", bits=bits, allowed=ACT_BITS)
    if bits == 8:
        return values.astype(np.int8)
    per_byte = 8 // bits
    check_packable(name="pack_bits", channels=values.shape[-1], bits=bits)
    # the low byte of the two's complement keeps every field's bits (one uint8 pass)
    fields = values.astype(np.uint8) & np.uint8((1 << bits) - 1)
    packed = fields[..., 0::per_byte].copy()
    for i in range(1, per_byte):
        packed |= fields[..., i::per_byte] << np.uint8(i * bits)
    return packed


def unpack_bits(*, packed: np.ndarray, bits: int, channels: int,
                signed: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_bits`; returns int32 values, sign-extended if ``signed``."""
    packed = np.asarray(packed)
    _check_bits(name="bits", bits=bits, allowed=ACT_BITS)
    if bits == 8:
        return packed.astype(np.int8).astype(np.int32) if signed or packed.dtype == np.int8 \
            else packed.astype(np.int32)
    per_byte = 8 // bits
    check_packable(name="unpack_bits", channels=channels, bits=bits)
    if packed.shape[-1] != channels // per_byte:
        raise ValueError(f"packed innermost dim {packed.shape[-1]} != {channels // per_byte}")
    raw = packed.astype(np.uint8)   # an int8 byte holds the same bits
    mask = np.uint8((1 << bits) - 1)
    fields = np.empty(packed.shape + (per_byte,), dtype=np.uint8)
    for i in range(per_byte):
        np.bitwise_and(raw >> np.uint8(i * bits), mask, out=fields[..., i])
    values = fields.reshape(packed.shape[:-1] + (channels,)).astype(np.int32)
    if signed:
        values -= (values >> (bits - 1)) << bits
    return values
