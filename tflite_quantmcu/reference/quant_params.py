"""Quantization parameters as TFLite's kernels derive them (float/double rounding included)."""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Tensor
from tflite_quantmcu.reference.op_context import OpContext

_TYPE_RANGES = {
    schema.TensorType.INT8: (-128, 127),
    schema.TensorType.UINT8: (0, 255),
    schema.TensorType.INT16: (-32768, 32767),
    schema.TensorType.INT32: (-(1 << 31), (1 << 31) - 1),
}


def type_range(*, ctx: OpContext, tensor: Tensor) -> tuple[int, int]:
    """Smallest and largest value of an integer tensor type."""
    if tensor.dtype not in _TYPE_RANGES:
        raise ctx.error(f"tensor {tensor.name!r} is {tensor.type_name}, expected an integer type")
    return _TYPE_RANGES[tensor.dtype]


def scale_of(*, ctx: OpContext, tensor: Tensor) -> float:
    """The single (per-tensor) scale, as the double TFLite widens the stored float to."""
    q = tensor.quantization
    if q is None or len(q.scale) != 1:
        got = 0 if q is None else len(q.scale)
        raise ctx.error(f"tensor {tensor.name!r} needs one quantization scale, has {got}")
    return float(np.float32(q.scale[0]))


def scales_of(*, ctx: OpContext, tensor: Tensor) -> np.ndarray:
    """All scales of a (possibly per-channel) quantized tensor as float64 of float32 values."""
    q = tensor.quantization
    if q is None or not q.scale:
        raise ctx.error(f"tensor {tensor.name!r} has no quantization scale")
    return np.asarray(q.scale, dtype=np.float32).astype(np.float64)


def zero_point_of(*, tensor: Tensor) -> int:
    """The per-tensor zero point (0 when absent, as TFLite reads it)."""
    q = tensor.quantization
    return int(q.zero_point[0]) if q is not None and q.zero_point else 0


def round_half_away(value: np.ndarray | float) -> np.ndarray:
    """C's round(): halves go away from zero (exact for float32 inputs)."""
    wide = np.asarray(value, dtype=np.float64)
    return np.sign(wide) * np.floor(np.abs(wide) + 0.5)


def quantize_real(*, value: float, scale: float, zero_point: int) -> int:
    """TFLite's `zero_point + round(value / scale)` computed in float32."""
    ratio = np.float32(value) / np.float32(scale)
    return zero_point + int(round_half_away(ratio))


def fused_activation_range(*, ctx: OpContext, activation: int, tensor: Tensor) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: clamp bounds of a fused activation on `tensor`."""
    lo, hi = type_range(ctx=ctx, tensor=tensor)
    scale = scale_of(ctx=ctx, tensor=tensor)
    zp = zero_point_of(tensor=tensor)
    kind = schema.ActivationFunctionType
    if activation == kind.NONE:
        return lo, hi
    if activation == kind.RELU:
        return max(lo, quantize_real(value=0.0, scale=scale, zero_point=zp)), hi
    if activation == kind.RELU6:
        return (max(lo, quantize_real(value=0.0, scale=scale, zero_point=zp)),
                min(hi, quantize_real(value=6.0, scale=scale, zero_point=zp)))
    if activation == kind.RELU_N1_TO_1:
        return (max(lo, quantize_real(value=-1.0, scale=scale, zero_point=zp)),
                min(hi, quantize_real(value=1.0, scale=scale, zero_point=zp)))
    raise ctx.error(f"fused activation {activation} is not supported on integer tensors")


def numpy_dtype(*, ctx: OpContext, tensor: Tensor) -> np.dtype:
    """numpy dtype of a tensor's values."""
    name = schema.TENSOR_TYPE_NUMPY.get(tensor.dtype)
    if name is None:
        raise ctx.error(f"tensor {tensor.name!r} has unsupported type {tensor.type_name}")
    return np.dtype(name)
