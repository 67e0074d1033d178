"""The QMCU_* custom ops (docs/qmcu_ops.md) as executor kernels, wrapping `qmcu_kernels`.

Each adapter decodes the op's flexbuffer options, folds the executor's sample
axis into the ops' batch dimension (the options' shapes are widened to match),
calls the numpy reference kernel, and returns the result in the output tensor's
stored dtype (int8 for 8-bit, packed bytes otherwise).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.reference import qmcu_kernels
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import numpy_dtype


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


def _conv_like(function: Callable) -> Callable:
    return _calling(lambda *, ctx, options: function(
        input=folded_input(ctx=ctx, i=0), filter=ctx.parameter(1),
        bias=optional_parameter(ctx=ctx, i=2), requant=ctx.parameter(3), options=options))


QMCU_KERNELS: Mapping[str, Callable] = MappingProxyType({
    "QMCU_CONV_2D": _conv_like(qmcu_kernels.conv_2d),
    "QMCU_DEPTHWISE_CONV_2D": _conv_like(qmcu_kernels.depthwise_conv_2d),
    "QMCU_ADD": _calling(lambda *, ctx, options: qmcu_kernels.add(
        input1=folded_input(ctx=ctx, i=0), input2=folded_input(ctx=ctx, i=1), options=options)),
    "QMCU_AVERAGE_POOL_2D": _calling(lambda *, ctx, options: qmcu_kernels.average_pool_2d(
        input=folded_input(ctx=ctx, i=0), options=options)),
    "QMCU_PACK": _calling(lambda *, ctx, options: qmcu_kernels.pack(
        input=folded_input(ctx=ctx, i=0), options=options)),
    "QMCU_UNPACK": _calling(lambda *, ctx, options: qmcu_kernels.unpack(
        input=folded_input(ctx=ctx, i=0), options=options)),
})
