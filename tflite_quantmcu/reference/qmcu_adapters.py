"""The QMCU_* custom ops (docs/qmcu_ops.md) as executor kernels.

Each adapter decodes the op's flexbuffer options, folds the executor's sample
axis into the ops' batch dimension (the options' shapes are widened to match),
computes the op, and returns the result in the output tensor's stored dtype
(int8 for 8-bit, packed bytes otherwise).

QMCU_ADD, QMCU_AVERAGE_POOL_2D, QMCU_PACK and QMCU_UNPACK call `qmcu_kernels`
directly. QMCU_CONV_2D and QMCU_DEPTHWISE_CONV_2D unpack their operands with
`qmcu_kernels` and run the blocked builtin machinery of conv.py / depthwise.py
(about 10x faster than `qmcu_kernels`' einsum on a MobileNetV2); tests check them
bit for bit against `qmcu_kernels` over random shapes, bit widths and geometries.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.reference import qmcu_kernels
from tflite_quantmcu.reference.conv import conv_values
from tflite_quantmcu.reference.depthwise import depthwise_values
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.output_stage import OutputRequant
from tflite_quantmcu.reference.quant_params import numpy_dtype
from tflite_quantmcu.reference.windows import AxisWindow


def batched_options(*, options, samples: int):
    """Options whose logical shapes cover `samples` times their batch."""
    changes = {name: (getattr(options, name)[0] * samples,) + tuple(getattr(options, name)[1:])
               for name in ("in_shape", "out_shape", "shape") if hasattr(options, name)}
    return dataclasses.replace(options, **changes)


def decoded_options(*, ctx: OpContext):
    """The op's options, batched over the samples; typed error when malformed."""
    try:
        options = decode_options(op=ctx.op.opcode.custom, data=ctx.op.custom_options or b"")
        return batched_options(options=options, samples=ctx.num_samples)
    except ValueError as err:
        raise ctx.error(f"bad custom options: {err}") from err


def folded_input(*, ctx: OpContext, i: int) -> np.ndarray:
    """Stored input i with the sample axis folded into the tensor's batch axis."""
    value = np.broadcast_to(ctx.input(i), (ctx.num_samples,) + ctx.input(i).shape[1:])
    return value.reshape((-1,) + value.shape[2:])


def optional_parameter(*, ctx: OpContext, i: int) -> np.ndarray | None:
    return None if ctx.input_tensor(i) is None else ctx.parameter(i)


def stored_output(*, ctx: OpContext, result: np.ndarray) -> list[np.ndarray]:
    """The kernel's result viewed as the output tensor's dtype, with the sample axis."""
    dtype = numpy_dtype(ctx=ctx, tensor=ctx.output_tensor())
    result = np.asarray(result)
    if result.dtype != dtype:
        result = result.view(dtype)
    if result.size != int(np.prod(ctx.output_shape())):
        raise ctx.error(f"kernel produced {result.shape}, output is {ctx.output_shape()[1:]}")
    return [result.reshape(ctx.output_shape())]


def _calling(kernel_call: Callable) -> Callable:
    """Turns a call of a qmcu kernel into an executor kernel with typed errors."""
    def kernel(*, ctx: OpContext) -> list[np.ndarray]:
        options = decoded_options(ctx=ctx)
        try:
            result = kernel_call(ctx=ctx, options=options)
        except ValueError as err:
            raise ctx.error(str(err)) from err
        return stored_output(ctx=ctx, result=result)
    return kernel


def qmcu_windows(*, options) -> tuple[AxisWindow, AxisWindow]:
    """Row and column geometry of a QMCU conv-like op (explicit pads from its options)."""
    g, kernel_h, kernel_w = options.geometry, options.filter_shape[1], options.filter_shape[2]
    rows = AxisWindow(kernel=kernel_h, stride=g.stride_h, dilation=g.dilation_h,
                      out=options.out_shape[1], pad_before=g.pad_top, pad_after=g.pad_bottom)
    cols = AxisWindow(kernel=kernel_w, stride=g.stride_w, dilation=g.dilation_w,
                      out=options.out_shape[2], pad_before=g.pad_left, pad_after=g.pad_right)
    return rows, cols


def fast_conv_like(*, input: np.ndarray, filter: np.ndarray, bias, requant: np.ndarray,
                   options, depthwise: bool) -> np.ndarray:
    """QMCU_CONV_2D / QMCU_DEPTHWISE_CONV_2D (docs §2-3) on the blocked builtin kernels."""
    o = options
    x = qmcu_kernels.load_activation(data=input, bits=o.in_bits, shape=o.in_shape)
    weights = qmcu_kernels.load_weights(data=filter, bits=o.w_bits, shape=o.filter_shape)
    channels = o.out_shape[3]
    pairs = np.asarray(requant, dtype=np.int64).reshape(2, channels)
    stage = OutputRequant(multiplier=pairs[0], shift=pairs[1], zero_point=o.out_zero_point,
                          lo=o.act_min, hi=o.act_max)
    bias = (np.zeros(channels, dtype=np.int64) if bias is None
            else np.asarray(bias, dtype=np.int64).reshape(channels))
    rows, cols = qmcu_windows(options=o)
    compute = depthwise_values if depthwise else conv_values
    out = compute(x=x, weights=weights[0] if depthwise else weights, bias=bias, rows=rows,
                  cols=cols, input_zero_point=o.in_zero_point, requant=stage)
    return qmcu_kernels.store_activation(values=out, bits=o.out_bits)


def _conv_like(*, depthwise: bool) -> Callable:
    return _calling(lambda *, ctx, options: fast_conv_like(
        input=folded_input(ctx=ctx, i=0), filter=ctx.parameter(1),
        bias=optional_parameter(ctx=ctx, i=2), requant=ctx.parameter(3), options=options,
        depthwise=depthwise))


QMCU_KERNELS: Mapping[str, Callable] = MappingProxyType({
    "QMCU_CONV_2D": _conv_like(depthwise=False),
    "QMCU_DEPTHWISE_CONV_2D": _conv_like(depthwise=True),
    "QMCU_ADD": _calling(lambda *, ctx, options: qmcu_kernels.add(
        input1=folded_input(ctx=ctx, i=0), input2=folded_input(ctx=ctx, i=1), options=options)),
    "QMCU_AVERAGE_POOL_2D": _calling(lambda *, ctx, options: qmcu_kernels.average_pool_2d(
        input=folded_input(ctx=ctx, i=0), options=options)),
    "QMCU_PACK": _calling(lambda *, ctx, options: qmcu_kernels.pack(
        input=folded_input(ctx=ctx, i=0), options=options)),
    "QMCU_UNPACK": _calling(lambda *, ctx, options: qmcu_kernels.unpack(
        input=folded_input(ctx=ctx, i=0), options=options)),
})
