"""Float data -> the integer values a quantized model input expects.

For evaluation and calibration sets stored as floats (images in the model's
real-valued input range): each value becomes clamp(zp + round(x / scale)) in
float32 with halves rounded away from zero, exactly as TFLite's QUANTIZE op
would compute it in front of a float-interface model.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tflite_quantmcu.errors import CalibrationDataError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph, Tensor
from tflite_quantmcu.reference.quantize import affine_quantize

_RANGES = {schema.TensorType.INT8: (-128, 127, np.int8),
           schema.TensorType.UINT8: (0, 255, np.uint8),
           schema.TensorType.INT16: (-32768, 32767, np.int16)}


def quantize_input(*, tensor: Tensor, values: np.ndarray) -> np.ndarray:
    """Float values quantized with the tensor's (per-tensor) scale and zero point."""
    q = tensor.quantization
    if tensor.dtype not in _RANGES or q is None or len(q.scale) != 1:
        raise CalibrationDataError(
            f"input {tensor.name!r}: expected a per-tensor quantized int8/uint8/int16 tensor, "
            f"got {tensor.type_name} with {0 if q is None else len(q.scale)} scales")
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) or not np.all(np.isfinite(values)):
        raise CalibrationDataError(f"input {tensor.name!r}: expected finite float values, "
                                   f"got {values.dtype}")
    lo, hi, dtype = _RANGES[tensor.dtype]
    zero_point = int(q.zero_point[0]) if q.zero_point else 0
    return affine_quantize(values=values, scale=q.scale[0], zero_point=zero_point,
                           lo=lo, hi=hi).astype(dtype)


def quantize_inputs(*, graph: Graph, values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One float array per model input -> arrays ready for `run_graph`."""
    keys = graph.main.inputs
    if len(values) != len(keys):
        raise CalibrationDataError(f"the model has {len(keys)} inputs, got {len(values)} arrays")
    return [quantize_input(tensor=graph.main.tensors[key], values=array)
            for key, array in zip(keys, values)]
