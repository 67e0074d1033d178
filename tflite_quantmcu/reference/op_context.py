"""What a reference kernel sees of the op it runs: its tensors and their current values.

Every activation value carries a leading *sample* axis in front of the tensor's
own shape: a tensor of shape (1, 48, 48, 16) is held as an array (N, 1, 48, 48, 16)
for N samples. Constant tensors are handed out with a sample axis of length 1 so
that they broadcast against activations.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Operator, Subgraph, Tensor


def constant_value(*, tensor: Tensor) -> np.ndarray:
    """The stored value of a constant tensor (INT4 unpacked to int8), without a sample axis."""
    if tensor.dtype == schema.TensorType.INT4:
        return unpack_int4(packed=np.frombuffer(tensor.buffer.data, dtype=np.int8),
                           shape=tensor.shape)
    return tensor.array()


def unpack_int4(*, packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """TFLite's dense INT4 layout: element 2i in the low nibble of byte i, sign-extended."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    low = (packed.astype(np.int8) << 4).astype(np.int8) >> 4
    high = packed.astype(np.int8) >> 4
    both = np.stack([low, high], axis=-1).reshape(-1)
    return both[:count].reshape(shape)


@dataclass(frozen=True)
class OpContext:
    """One op of `subgraph` about to run on `num_samples` samples."""

    subgraph: Subgraph
    index: int
    values: Mapping[str, np.ndarray]
    num_samples: int

    @property
    def op(self) -> Operator:
        return self.subgraph.operators[self.index]

    @property
    def options(self) -> object:
        return self.op.options

    @property
    def label(self) -> str:
        return self.subgraph.op_label(self.index)

    @property
    def num_inputs(self) -> int:
        return len(self.op.inputs)

    def input_tensor(self, i: int) -> Tensor | None:
        """The i-th input tensor, None if omitted or absent."""
        if i >= len(self.op.inputs) or self.op.inputs[i] is None:
            return None
        return self.subgraph.tensors[self.op.inputs[i]]

    def output_tensor(self, i: int = 0) -> Tensor:
        return self.subgraph.tensors[self.op.outputs[i]]

    def input(self, i: int) -> np.ndarray:
        """Value of input i with its sample axis (length 1 for constants)."""
        key = self.op.inputs[i] if i < len(self.op.inputs) else None
        if key is None:
            raise self.error(f"input {i} is missing")
        if key in self.values:
            return self.values[key]
        tensor = self.subgraph.tensors[key]
        if not tensor.is_constant:
            raise self.error(f"input {i} ({tensor.name!r}) has no value: not a constant, "
                             "not a model input and not produced by an earlier op")
        return constant_value(tensor=tensor)[None]

    def parameter(self, i: int) -> np.ndarray:
        """Value of input i that must not vary between samples (weights, axes, shapes)."""
        value = self.input(i)
        if value.shape[0] > 1 and not np.all(value == value[:1]):
            raise self.error(f"input {i} ({self.input_tensor(i).name!r}) differs between "
                             "samples; the reference executor needs it sample-independent")
        return value[0]

    def error(self, reason: str) -> UnsupportedOpError:
        """A typed error naming this op."""
        return UnsupportedOpError(f"reference executor: {self.label}: {reason}")

    def require_dtype(self, tensor: Tensor, *allowed: int) -> None:
        """Raises if `tensor` is not of one of the `allowed` schema types."""
        if tensor.dtype not in allowed:
            names = "/".join(schema.TENSOR_TYPE_NAMES.get(t, str(t)) for t in allowed)
            raise self.error(f"tensor {tensor.name!r} is {tensor.type_name}, expected {names}")

    def output_shape(self, i: int = 0) -> tuple[int, ...]:
        """Shape of output i including the sample axis."""
        return (self.num_samples,) + tuple(self.output_tensor(i).shape)
