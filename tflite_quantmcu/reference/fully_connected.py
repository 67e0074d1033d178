"""FULLY_CONNECTED, int8 activations with int8 or INT4 weights (per-tensor or per-channel).

As in TFLM: a per-tensor multiplier is double(float(s_in * s_w)) / double(s_out)
(GetQuantizedConvolutionMultipler), a per-channel one double(s_in) * double(s_w[c]) /
double(s_out). Rows are every input element group of the weights' depth.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.integer_matmul import abs_max_offset, exact_matmul
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.output_stage import (bias_values, per_channel_multipliers,
                                                    requantize_to_output)
from tflite_quantmcu.reference.quant_params import (fused_activation_range, scale_of,
                                                    scales_of, zero_point_of)
from tflite_quantmcu.reference.requantize import quantize_multiplier

INT8 = schema.TensorType.INT8
INT4 = schema.TensorType.INT4


def fc_multipliers(*, ctx: OpContext, channels: int) -> tuple[np.ndarray, np.ndarray]:
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    if scales_of(ctx=ctx, tensor=w_t).size > 1:
        return per_channel_multipliers(ctx=ctx, input_t=x_t, filter_t=w_t, output_t=out_t,
                                       channels=channels)
    product = float(np.float32(scale_of(ctx=ctx, tensor=x_t))
                    * np.float32(scale_of(ctx=ctx, tensor=w_t)))
    multiplier, shift = quantize_multiplier(product / scale_of(ctx=ctx, tensor=out_t))
    return (np.full(channels, multiplier, dtype=np.int64),
            np.full(channels, shift, dtype=np.int64))


def fully_connected(*, ctx: OpContext) -> list[np.ndarray]:
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    for tensor, allowed in ((x_t, (INT8,)), (w_t, (INT8, INT4)), (out_t, (INT8,))):
        ctx.require_dtype(tensor, *allowed)
    weights = ctx.parameter(1)
    if weights.ndim != 2:
        raise ctx.error(f"weights have shape {weights.shape}, expected (units, depth)")
    units, depth = weights.shape
    x = ctx.input(0)
    if x[0].size % depth:
        raise ctx.error(f"input of {x[0].size} elements per sample is not a multiple of "
                        f"the weights' depth {depth}")
    x_zp = zero_point_of(tensor=x_t)
    rhs = (weights.astype(np.int64) - zero_point_of(tensor=w_t)).T
    lhs = x.reshape(-1, depth).astype(np.float32) - np.float32(x_zp)
    acc = exact_matmul(lhs=lhs, rhs=rhs, lhs_abs_max=abs_max_offset(x=x, offset=-x_zp))
    acc += bias_values(ctx=ctx, index=2, channels=units)
    multiplier, shift = fc_multipliers(ctx=ctx, channels=units)
    lo, hi = fused_activation_range(ctx=ctx, activation=ctx.options.fusedActivationFunction,
                                    tensor=out_t)
    out = requantize_to_output(acc=acc, multiplier=multiplier, shift=shift,
                               zero_point=zero_point_of(tensor=out_t), lo=lo, hi=hi)
    return [out.reshape(ctx.output_shape())]


KERNELS = {"FULLY_CONNECTED": fully_connected}
