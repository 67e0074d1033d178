"""Elementwise int8 ops as TFLite Micro computes them: ADD, SUB, MUL, RELU, RELU6.

ADD/SUB: both inputs are shifted left by 20 bits, brought to a common scale
(twice the larger input scale) by per-input multipliers, summed, and rescaled to
the output. ADD derives its multipliers in double, SUB in float (as TFLM does).
Broadcasting follows numpy/TFLite rules on the tensors' own shapes.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import (fused_activation_range, quantize_real,
                                                    scale_of, type_range, zero_point_of)
from tflite_quantmcu.reference.requantize import quantize_multiplier
from tflite_quantmcu.reference.requantize_fast import (
    multiply_by_quantized_multiplier_fast as multiply_by_quantized_multiplier)

INT8 = schema.TensorType.INT8
LEFT_SHIFT_INT8 = 20


def aligned_input(*, ctx: OpContext, i: int) -> np.ndarray:
    """Input i as int64 with singleton axes inserted after the sample axis up to output rank."""
    value = ctx.input(i).astype(np.int64)
    missing = len(ctx.output_tensor().shape) + 1 - value.ndim
    if missing < 0:
        raise ctx.error(f"input {i} has more dimensions than the output")
    return value.reshape(value.shape[:1] + (1,) * missing + value.shape[1:])


def _check_int8(ctx: OpContext) -> None:
    for tensor in (ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()):
        ctx.require_dtype(tensor, INT8)


def add_sub_multipliers(*, ctx: OpContext, subtract: bool):
    """(input1, input2, output) (multiplier, shift) pairs of int8 ADD (double) or SUB (float)."""
    s1 = scale_of(ctx=ctx, tensor=ctx.input_tensor(0))
    s2 = scale_of(ctx=ctx, tensor=ctx.input_tensor(1))
    so = scale_of(ctx=ctx, tensor=ctx.output_tensor())
    if subtract:
        twice = np.float32(2) * np.float32(max(s1, s2))
        reals = (float(np.float32(s1) / twice), float(np.float32(s2) / twice),
                 float(twice / (np.float32(1 << LEFT_SHIFT_INT8) * np.float32(so))))
    else:
        twice = 2 * max(s1, s2)
        reals = (s1 / twice, s2 / twice, twice / ((1 << LEFT_SHIFT_INT8) * so))
    return [quantize_multiplier(real) for real in reals]


def add_or_sub(*, ctx: OpContext, subtract: bool) -> list[np.ndarray]:
    _check_int8(ctx)
    (m1, s1), (m2, s2), (mo, so) = add_sub_multipliers(ctx=ctx, subtract=subtract)
    a = aligned_input(ctx=ctx, i=0) - zero_point_of(tensor=ctx.input_tensor(0))
    b = aligned_input(ctx=ctx, i=1) - zero_point_of(tensor=ctx.input_tensor(1))
    a = multiply_by_quantized_multiplier(a << LEFT_SHIFT_INT8, m1, s1)
    b = multiply_by_quantized_multiplier(b << LEFT_SHIFT_INT8, m2, s2)
    raw = multiply_by_quantized_multiplier(a - b if subtract else a + b, mo, so)
    out_t = ctx.output_tensor()
    lo, hi = fused_activation_range(ctx=ctx, activation=ctx.options.fusedActivationFunction,
                                    tensor=out_t)
    out = np.clip(raw + zero_point_of(tensor=out_t), lo, hi).astype(np.int8)
    return [np.broadcast_to(out, ctx.output_shape()).copy()]


def add(*, ctx: OpContext) -> list[np.ndarray]:
    return add_or_sub(ctx=ctx, subtract=False)


def sub(*, ctx: OpContext) -> list[np.ndarray]:
    return add_or_sub(ctx=ctx, subtract=True)


def mul(*, ctx: OpContext) -> list[np.ndarray]:
    """int8 MUL: (x1 - zp1)(x2 - zp2) * (s1 s2 / so) in double."""
    _check_int8(ctx)
    in1, in2, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    real = (scale_of(ctx=ctx, tensor=in1) * scale_of(ctx=ctx, tensor=in2)
            / scale_of(ctx=ctx, tensor=out_t))
    multiplier, shift = quantize_multiplier(real)
    a = aligned_input(ctx=ctx, i=0) - zero_point_of(tensor=in1)
    b = aligned_input(ctx=ctx, i=1) - zero_point_of(tensor=in2)
    raw = multiply_by_quantized_multiplier(a * b, multiplier, shift)
    lo, hi = fused_activation_range(ctx=ctx, activation=ctx.options.fusedActivationFunction,
                                    tensor=out_t)
    out = np.clip(raw + zero_point_of(tensor=out_t), lo, hi).astype(np.int8)
    return [np.broadcast_to(out, ctx.output_shape()).copy()]


def relu(*, ctx: OpContext) -> list[np.ndarray]:
    """TFLM ReluQuantized: requantize by float(s_in / s_out), clamp below at the output zero."""
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    ctx.require_dtype(x_t, INT8)
    ctx.require_dtype(out_t, INT8)
    real = float(np.float32(scale_of(ctx=ctx, tensor=x_t))
                 / np.float32(scale_of(ctx=ctx, tensor=out_t)))
    multiplier, shift = quantize_multiplier(real)
    out_zp = zero_point_of(tensor=out_t)
    lo, hi = type_range(ctx=ctx, tensor=out_t)
    x = ctx.input(0).astype(np.int64) - zero_point_of(tensor=x_t)
    raw = multiply_by_quantized_multiplier(x, multiplier, shift) + out_zp
    return [np.clip(raw, max(lo, out_zp), hi).astype(np.int8)]


def relu6(*, ctx: OpContext) -> list[np.ndarray]:
    """TFLM Relu6Quantized: clamps stored values to [zero, six] of the *input* quantization."""
    x_t = ctx.input_tensor(0)
    ctx.require_dtype(x_t, INT8)
    ctx.require_dtype(ctx.output_tensor(), INT8)
    zp = zero_point_of(tensor=x_t)
    six = quantize_real(value=6.0, scale=scale_of(ctx=ctx, tensor=x_t), zero_point=zp)
    six = min(max(six, -128), 127)
    return [np.clip(ctx.input(0), zp, six).astype(np.int8)]


KERNELS = {"ADD": add, "SUB": sub, "MUL": mul, "RELU": relu, "RELU6": relu6}
