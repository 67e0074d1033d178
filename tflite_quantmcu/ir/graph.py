"""The name-keyed graph every pass works on.

A `Graph` holds everything a `.tflite` file carries, with flatbuffer indices
replaced by names: ops refer to tensors by their key in `Subgraph.tensors`,
signature defs by tensor key, metadata entries hold their buffer.

Constant data lives in `Buffer` objects. Two tensors that share one `Buffer`
object share one buffer in the written file (the patch rewrite relies on
this to reuse weights). Schema objects we do not interpret (builtin options,
sparsity, ...) are carried as the schema's object-API instances.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from tflite_quantmcu.ir import schema


@dataclass(eq=False)
class Buffer:
    """Bytes of a constant tensor or metadata entry; shared by identity.

    `external`: the file stores the bytes after the flatbuffer (`Buffer.offset` /
    `size` in the schema, as the TF converter writes for large models); the writer
    keeps that placement. Either way `data` holds the bytes.
    """

    data: bytes
    external: bool = False

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Buffer) and self.data == other.data
                and self.external == other.external)

    __hash__ = object.__hash__


@dataclass
class Quantization:
    """Affine quantization of a tensor; `details` is the schema's union object."""

    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    min: tuple[float, ...] = ()
    max: tuple[float, ...] = ()
    details_type: int = 0
    details: object | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantization):
            return False
        mine = dataclasses.astuple(self)[:6]
        return mine == dataclasses.astuple(other)[:6] and schema_equal(self.details, other.details)


@dataclass(eq=False)
class Tensor:
    """A tensor; `name` is the name in the file (may repeat), the key is unique."""

    name: str
    shape: tuple[int, ...]
    dtype: int
    buffer: Buffer | None = None
    quantization: Quantization | None = None
    is_variable: bool = False
    shape_signature: tuple[int, ...] | None = None
    has_rank: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def is_constant(self) -> bool:
        return self.buffer is not None and len(self.buffer.data) > 0

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def bits(self) -> int:
        return schema.TENSOR_TYPE_BITS[self.dtype]

    @property
    def type_name(self) -> str:
        return schema.TENSOR_TYPE_NAMES.get(self.dtype, f"TYPE_{self.dtype}")

    def array(self) -> np.ndarray:
        """The constant value as a read-only numpy array of the tensor's shape."""
        dtype = schema.TENSOR_TYPE_NUMPY[self.dtype]
        flat = np.frombuffer(self.buffer.data, dtype=dtype)
        return flat.reshape(self.shape)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return False
        fields = ("name", "shape", "dtype", "buffer", "quantization", "is_variable",
                  "shape_signature", "has_rank")
        return (all(getattr(self, f) == getattr(other, f) for f in fields)
                and schema_equal(self.extra, other.extra))

    __hash__ = object.__hash__


@dataclass(frozen=True)
class OpCode:
    """What an op is: a builtin code, or CUSTOM with a custom code string."""

    builtin: int
    custom: str | None = None
    version: int = 1

    @property
    def name(self) -> str:
        if self.builtin == schema.BuiltinOperator.CUSTOM:
            return self.custom or "CUSTOM"
        return schema.builtin_name(self.builtin)


@dataclass(eq=False)
class Operator:
    """An op; inputs/outputs are tensor keys, None for an omitted optional input."""

    opcode: OpCode
    inputs: list[str | None]
    outputs: list[str]
    options_type: int = 0
    options: object | None = None
    custom_options: bytes | None = None
    intermediates: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.opcode.name

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Operator):
            return False
        fields = ("opcode", "inputs", "outputs", "options_type", "custom_options",
                  "intermediates")
        return (all(getattr(self, f) == getattr(other, f) for f in fields)
                and schema_equal(self.options, other.options)
                and schema_equal(self.extra, other.extra))

    __hash__ = object.__hash__


@dataclass(eq=False)
class Subgraph:
    """Tensors keyed by unique name (file order kept), ops in execution order."""

    name: str = ""
    tensors: dict[str, Tensor] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def add_tensor(self, *, tensor: Tensor, key: str | None = None) -> str:
        """Adds `tensor` under a fresh key derived from `key` or its name; returns the key."""
        base = key if key is not None else (tensor.name or "tensor")
        unique = base
        counter = 1
        while unique in self.tensors:
            unique = f"{base}#{counter}"
            counter += 1
        self.tensors[unique] = tensor
        return unique

    def producers(self) -> dict[str, int]:
        """Tensor key -> index of the op that writes it."""
        return {out: i for i, op in enumerate(self.operators) for out in op.outputs}

    def consumers(self) -> dict[str, list[int]]:
        """Tensor key -> indices of the ops that read it, in op order."""
        readers: dict[str, list[int]] = {}
        for i, op in enumerate(self.operators):
            for key in op.inputs:
                if key is not None:
                    readers.setdefault(key, []).append(i)
        return readers

    def op_label(self, index: int) -> str:
        """How errors and tables name an op: '#3 CONV_2D -> conv1/Relu6'."""
        op = self.operators[index]
        out = self.tensors[op.outputs[0]].name if op.outputs else "?"
        return f"#{index} {op.type} -> {out}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Subgraph):
            return False
        return (self.name == other.name and self.inputs == other.inputs
                and self.outputs == other.outputs and self.operators == other.operators
                and list(self.tensors.items()) == list(other.tensors.items())
                and schema_equal(self.extra, other.extra))

    __hash__ = object.__hash__


@dataclass
class Metadata:
    """A named metadata entry and the buffer it points to (kept byte for byte)."""

    name: str
    buffer: Buffer


@dataclass
class SignatureDef:
    """A signature: names exposed to users -> tensor keys of one subgraph."""

    key: str
    subgraph_index: int
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)


@dataclass(eq=False)
class Graph:
    """A whole model: subgraphs (0 is the main one), metadata, signatures."""

    subgraphs: list[Subgraph]
    version: int = 3
    description: str | None = None
    metadata: list[Metadata] = field(default_factory=list)
    signature_defs: list[SignatureDef] = field(default_factory=list)
    metadata_buffers: list[Buffer] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return False
        return (self.subgraphs == other.subgraphs and self.version == other.version
                and self.description == other.description
                and self.metadata == other.metadata
                and self.signature_defs == other.signature_defs
                and self.metadata_buffers == other.metadata_buffers
                and schema_equal(self.extra, other.extra))

    __hash__ = object.__hash__


def schema_equal(a: object, b: object) -> bool:
    """Deep equality of schema object-API values (objects, lists, numpy arrays)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(schema_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(schema_equal(a[k], b[k]) for k in a)
    if hasattr(a, "__dict__") and hasattr(b, "__dict__"):
        return type(a) is type(b) and schema_equal(vars(a), vars(b))
    return a == b
