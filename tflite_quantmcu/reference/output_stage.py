"""The output stage of conv-like kernels: multipliers, bias, requantization, clamping."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.ir.graph import Tensor
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.quant_params import scale_of, scales_of
from tflite_quantmcu.reference.requantize import quantize_multiplier, wrap_int32
from tflite_quantmcu.reference.requantize_fast import multiply_by_quantized_multiplier_fast


@dataclass(frozen=True)
class OutputRequant:
    """How accumulators become stored values: per-channel (multiplier, shift), zero point, clamp."""

    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int
    lo: int
    hi: int

    def apply(self, acc: np.ndarray) -> np.ndarray:
        return requantize_to_output(acc=acc, multiplier=self.multiplier, shift=self.shift,
                                    zero_point=self.zero_point, lo=self.lo, hi=self.hi)


def per_channel_multipliers(*, ctx: OpContext, input_t: Tensor, filter_t: Tensor,
                            output_t: Tensor, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """PopulateConvolutionQuantizationParams: double(in) * double(filter[c]) / double(out).

    A single filter scale is broadcast over the channels, as TFLite does.
    """
    filter_scales = scales_of(ctx=ctx, tensor=filter_t)
    if filter_scales.size not in (1, channels):
        raise ctx.error(f"filter {filter_t.name!r} has {filter_scales.size} scales, "
                        f"expected 1 or {channels}")
    filter_scales = np.broadcast_to(filter_scales, (channels,))
    in_scale = scale_of(ctx=ctx, tensor=input_t)
    out_scale = scale_of(ctx=ctx, tensor=output_t)
    pairs = [quantize_multiplier(in_scale * float(s) / out_scale) for s in filter_scales]
    return (np.array([m for m, _ in pairs], dtype=np.int64),
            np.array([s for _, s in pairs], dtype=np.int64))


def bias_values(*, ctx: OpContext, index: int, channels: int) -> np.ndarray:
    """The bias input as int64 (zeros when the optional bias is omitted)."""
    if ctx.input_tensor(index) is None:
        return np.zeros(channels, dtype=np.int64)
    bias = ctx.parameter(index).astype(np.int64).reshape(-1)
    if bias.size != channels:
        raise ctx.error(f"bias has {bias.size} values, expected {channels}")
    return bias


def requantize_to_output(*, acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray,
                         zero_point: int, lo: int, hi: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier on the last axis' channels, + zero point, clamp, int8.

    An accumulator outside int32 wraps around as TFLM's int32 arithmetic does.
    """
    if acc.size and (acc.min() < -(1 << 31) or acc.max() >= 1 << 31):
        acc = wrap_int32(acc)
    scaled = multiply_by_quantized_multiplier_fast(acc, multiplier, shift)
    scaled += zero_point
    np.clip(scaled, lo, hi, out=scaled)
    return scaled.astype(np.int8)
