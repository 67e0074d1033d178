"""Numpy reference of the ``QMCU_*`` ops (docs/qmcu_ops.md), bit-exact integer math.

Tensors are passed as they are stored: 8-bit activations as int8 arrays of the
logical shape, sub-byte activations as packed uint8 arrays; 8-bit weights as int8,
sub-byte weights packed (int8 or uint8 bytes). Results are returned the same way.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.qmcu_options import (AddOptions, AveragePool2DOptions, Conv2DOptions,
                                          DepthwiseConv2DOptions, RequantOptions, act_range,
                                          pack_bits, unpack_bits)
from tflite_quantmcu.reference.requantize import (INT32_MAX, INT32_MIN,
                                                  multiply_by_quantized_multiplier)
from tflite_quantmcu.reference.requantize_fast import multiply_by_quantized_multiplier_fast


def load_activation(*, data: np.ndarray, bits: int, shape) -> np.ndarray:
    """Stored activation -> int64 logical values, checking the stored shape."""
    data = np.asarray(data)
    stored = tuple(shape[:-1]) + (shape[-1] * bits // 8,)
    if data.shape != stored:
        raise ValueError(f"activation stored shape {data.shape} != expected {stored}")
    if bits == 8:
        return data.astype(np.int8).astype(np.int64)
    return unpack_bits(packed=data.view(np.uint8) if data.dtype == np.int8 else data,
                       bits=bits, channels=shape[-1]).astype(np.int64)


def store_activation(*, values: np.ndarray, bits: int) -> np.ndarray:
    """Logical integer values -> stored form (int8 or packed uint8)."""
    return pack_bits(values=values, bits=bits)


def load_weights(*, data: np.ndarray, bits: int, shape) -> np.ndarray:
    """Stored weights -> int64 signed logical values."""
    data = np.asarray(data)
    stored = tuple(shape[:-1]) + (shape[-1] * bits // 8,)
    if data.shape != stored:
        raise ValueError(f"weights stored shape {data.shape} != expected {stored}")
    if bits == 8:
        return data.astype(np.int8).astype(np.int64)
    return unpack_bits(packed=data.view(np.uint8) if data.dtype == np.int8 else data,
                       bits=bits, channels=shape[-1], signed=True).astype(np.int64)


def _windows(*, x: np.ndarray, opts, kh: int, kw: int, fill: int) -> np.ndarray:
    """Patches [N, OH, OW, KH, KW, C] of x with the op's pads filled with ``fill``."""
    g = opts.geometry
    padded = np.pad(x, ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)),
                    constant_values=fill)
    oh, ow = opts.out_shape[1], opts.out_shape[2]
    rows = (np.arange(oh) * g.stride_h)[:, None] + (np.arange(kh) * g.dilation_h)[None, :]
    cols = (np.arange(ow) * g.stride_w)[:, None] + (np.arange(kw) * g.dilation_w)[None, :]
    return padded[:, rows[:, None, :, None], cols[None, :, None, :]]


def _finish(*, acc: np.ndarray, bias, requant, opts) -> np.ndarray:
    """Bias, per-channel requantization, zero point, clamp, store (docs §2 steps 2-4)."""
    c_out = opts.out_shape[3]
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape(c_out)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError("accumulator leaves the int32 range")
    requant = np.asarray(requant, dtype=np.int64).reshape(2, c_out)
    out = multiply_by_quantized_multiplier(acc, requant[0], requant[1]) + opts.out_zero_point
    return store_activation(values=np.clip(out, opts.act_min, opts.act_max), bits=opts.out_bits)


def conv_2d(*, input: np.ndarray, filter: np.ndarray, bias, requant: np.ndarray,
            options: Conv2DOptions) -> np.ndarray:
    """QMCU_CONV_2D (docs §2)."""
    x = load_activation(data=input, bits=options.in_bits, shape=options.in_shape)
    w = load_weights(data=filter, bits=options.w_bits, shape=options.filter_shape)
    c_out, kh, kw, c_in = options.filter_shape
    patches = _windows(x=x - options.in_zero_point, opts=options, kh=kh, kw=kw, fill=0)
    n, oh, ow = patches.shape[:3]
    acc = patches.reshape(n * oh * ow, kh * kw * c_in) @ w.reshape(c_out, -1).T
    return _finish(acc=acc.reshape(n, oh, ow, c_out), bias=bias, requant=requant, opts=options)


def depthwise_conv_2d(*, input: np.ndarray, filter: np.ndarray, bias, requant: np.ndarray,
                      options: DepthwiseConv2DOptions) -> np.ndarray:
    """QMCU_DEPTHWISE_CONV_2D (docs §3)."""
    x = load_activation(data=input, bits=options.in_bits, shape=options.in_shape)
    w = load_weights(data=filter, bits=options.w_bits, shape=options.filter_shape)
    _, kh, kw, _ = options.filter_shape
    patches = _windows(x=x - options.in_zero_point, opts=options, kh=kh, kw=kw, fill=0)
    patches = np.repeat(patches, options.depth_multiplier, axis=-1)
    acc = np.einsum("nhwijc,ijc->nhwc", patches, w[0])
    return _finish(acc=acc, bias=bias, requant=requant, opts=options)


def add(*, input1: np.ndarray, input2: np.ndarray, options: AddOptions) -> np.ndarray:
    """QMCU_ADD (docs §4): TFLite's int8 ADD arithmetic on any bit widths."""
    o = options
    a = load_activation(data=input1, bits=o.in1_bits, shape=o.shape) - o.in1_zero_point
    b = load_activation(data=input2, bits=o.in2_bits, shape=o.shape) - o.in2_zero_point
    # the same TFLM arithmetic as requantize.multiply_by_quantized_multiplier, fewer passes
    a = multiply_by_quantized_multiplier_fast(a << o.left_shift, o.in1_multiplier, o.in1_shift)
    b = multiply_by_quantized_multiplier_fast(b << o.left_shift, o.in2_multiplier, o.in2_shift)
    out = multiply_by_quantized_multiplier_fast(a + b, o.out_multiplier, o.out_shift)
    return store_activation(values=np.clip(out + o.out_zero_point, o.act_min, o.act_max),
                            bits=o.out_bits)


def round_div(*, value: np.ndarray, count: np.ndarray) -> np.ndarray:
    """TFLite average-pool rounding: half away from zero."""
    half = count // 2
    return np.where(value > 0, (value + half) // count, -((half - value) // count))


def average_pool_2d(*, input: np.ndarray, options: AveragePool2DOptions) -> np.ndarray:
    """QMCU_AVERAGE_POOL_2D (docs §5): padding excluded from window and count."""
    o = options
    x = load_activation(data=input, bits=o.in_bits, shape=o.in_shape)
    base = x - o.in_zero_point if o.rescale else x
    kh, kw = o.filter_h, o.filter_w
    total = _windows(x=base, opts=o, kh=kh, kw=kw, fill=0).sum(axis=(3, 4))
    ones = np.ones(o.in_shape[:3] + (1,), dtype=np.int64)
    count = _windows(x=ones, opts=o, kh=kh, kw=kw, fill=0).sum(axis=(3, 4))
    if o.rescale:
        total = multiply_by_quantized_multiplier(total, o.multiplier, o.shift)
        out = round_div(value=total, count=count) + o.out_zero_point
    else:
        out = round_div(value=total, count=count)
    return store_activation(values=np.clip(out, o.act_min, o.act_max), bits=o.out_bits)


def _requant_op(*, input: np.ndarray, options: RequantOptions) -> np.ndarray:
    o = options
    x = load_activation(data=input, bits=o.in_bits, shape=o.shape) - o.in_zero_point
    out = multiply_by_quantized_multiplier(x, o.multiplier, o.shift) + o.out_zero_point
    lo, hi = act_range(bits=o.out_bits)
    return store_activation(values=np.clip(out, lo, hi), bits=o.out_bits)


def pack(*, input: np.ndarray, options: RequantOptions) -> np.ndarray:
    """QMCU_PACK (docs §6): int8 -> packed sub-byte."""
    if options.in_bits != 8:
        raise ValueError("QMCU_PACK reads an 8-bit tensor")
    return _requant_op(input=input, options=options)


def unpack(*, input: np.ndarray, options: RequantOptions) -> np.ndarray:
    """QMCU_UNPACK (docs §6): packed sub-byte -> int8."""
    if options.out_bits != 8:
        raise ValueError("QMCU_UNPACK writes an 8-bit tensor")
    return _requant_op(input=input, options=options)
