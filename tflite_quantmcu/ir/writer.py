"""`Graph` -> `.tflite` bytes.

Buffers are written once per `Buffer` object (shared objects stay shared) and
their data is 16-byte aligned in the file. A `Buffer` marked `external` keeps
the placement it had in the input: its bytes follow the flatbuffer and the
schema's `Buffer.offset` / `size` point at them (offsets from the file start).
LiteRT reads such files; TFLite Micro does not (it reads only inline
`Buffer.data`), so `inline_buffers=True` writes every buffer inline, as a model
for an MCU needs. Output is deterministic: the same graph always gives the same
bytes. `write_model_file` writes through a temporary file so a failure never
leaves a partial model behind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import flatbuffers

from tflite_quantmcu.ir import schema
from tflite_quantmcu.output_files import write_bytes_atomically
from tflite_quantmcu.ir.graph import Buffer, Graph, OpCode, Operator, Quantization, Subgraph

fb = schema.fb
BUFFER_ALIGNMENT = 16


class _AlignedBufferT(fb.BufferT):
    """A BufferT (data held as bytes) whose data starts on a 16-byte boundary of the file.

    `external` holds bytes written after the flatbuffer instead of inline.
    """

    external: bytes | None = None

    def Pack(self, builder: flatbuffers.Builder) -> int:
        data_offset = None
        if self.data is not None and len(self.data):
            size = len(self.data)
            builder.StartVector(1, size, BUFFER_ALIGNMENT)
            builder.head = builder.head - size
            builder.Bytes[builder.head:builder.head + size] = self.data
            data_offset = builder.EndVector()
        fb.BufferStart(builder)
        if data_offset is not None:
            fb.BufferAddData(builder, data_offset)
        fb.BufferAddOffset(builder, self.offset)
        fb.BufferAddSize(builder, self.size)
        return fb.BufferEnd(builder)


class _SharedQuantizationT(fb.QuantizationParametersT):
    """Packed once per builder; tensors with equal quantization point at one table."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        packed = getattr(self, "_packed", None)
        if packed is None or packed[0] is not builder:
            packed = (builder, super().Pack(builder))
            self._packed = packed
        return packed[1]


# Stands in for the offsets of external buffers while the flatbuffer's size is measured;
# any non-zero value gives the same layout (a uint64 field is present iff non-zero).
_OFFSET_PLACEHOLDER = 1 << 62


def write_model_bytes(*, graph: Graph, inline_buffers: bool = False) -> bytes:
    """Serializes the graph to a TFLite flatbuffer (plus external buffer data, if any)."""
    model_builder = _ModelBuilder(graph=graph, inline_buffers=inline_buffers)
    model = model_builder.build()
    externals = [raw for raw in model_builder.buffers if raw.external is not None]
    if not externals:
        return _pack(model=model, size_hint=_payload_size(graph))
    for raw in externals:
        raw.offset, raw.size = _OFFSET_PLACEHOLDER, len(raw.external)
    head_size = len(_pack(model=model, size_hint=0))
    tail = bytearray()
    for raw in externals:
        tail += bytes(-(head_size + len(tail)) % BUFFER_ALIGNMENT)
        raw.offset = head_size + len(tail)
        tail += raw.external
    head = _pack(model=model, size_hint=0)
    if len(head) != head_size:
        raise AssertionError(f"flatbuffer size changed from {head_size} to {len(head)} "
                             f"when external offsets were filled in")
    return head + bytes(tail)


def _pack(*, model: object, size_hint: int) -> bytes:
    builder = flatbuffers.Builder(1024 + size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_model_file(*, graph: Graph, path: str | Path) -> None:
    """Writes atomically: a temporary file in the same directory, then rename."""
    write_bytes_atomically(data=write_model_bytes(graph=graph), path=path)


def has_external_buffers(*, graph: Graph) -> bool:
    """Whether writing `graph` as it is puts some buffer data after the flatbuffer."""
    return any(t.buffer is not None and t.buffer.external
               for sub in graph.subgraphs for t in sub.tensors.values()) \
        or any(m.buffer.external for m in graph.metadata)


def _payload_size(graph: Graph) -> int:
    sizes = [len(t.buffer.data) for sub in graph.subgraphs for t in sub.tensors.values()
             if t.buffer is not None]
    sizes += [len(m.buffer.data) for m in graph.metadata]
    return sum(sizes) + BUFFER_ALIGNMENT * (len(sizes) + 1)


class _ModelBuilder:
    """Assigns indices (buffers, op codes, tensors) and fills a ModelT."""

    def __init__(self, *, graph: Graph, inline_buffers: bool) -> None:
        self.graph = graph
        self.inline_buffers = inline_buffers
        self.buffer_index: dict[int, int] = {}
        self.buffers: list[fb.BufferT] = [_AlignedBufferT()]
        self.opcode_index: dict[OpCode, int] = {}
        self.quantizations: dict[tuple, object] = {}
        self.opcodes: list[fb.OperatorCodeT] = []

    def build(self) -> object:
        graph = self.graph
        model = fb.ModelT()
        model.version = graph.version
        model.description = graph.description
        model.subgraphs = [self._subgraph(sub) for sub in graph.subgraphs]
        model.metadata = [self._metadata(m.name, m.buffer) for m in graph.metadata] or None
        model.signatureDefs = [self._signature(sig) for sig in graph.signature_defs] or None
        if graph.metadata_buffers:
            model.metadataBuffer = np.array([self._buffer(b) for b in graph.metadata_buffers],
                                            dtype=np.int32)
        for name, value in graph.extra.items():
            setattr(model, name, value)
        model.operatorCodes = self.opcodes
        model.buffers = self.buffers
        return model

    def _buffer(self, buffer: Buffer | None) -> int:
        if buffer is None:
            return 0
        index = self.buffer_index.get(id(buffer))
        if index is None:
            raw = _AlignedBufferT()
            if buffer.external and not self.inline_buffers:
                raw.external = buffer.data
            else:
                raw.data = buffer.data or None
            index = len(self.buffers)
            self.buffers.append(raw)
            self.buffer_index[id(buffer)] = index
        return index

    def _opcode(self, opcode: OpCode) -> int:
        index = self.opcode_index.get(opcode)
        if index is None:
            raw = fb.OperatorCodeT()
            raw.builtinCode = opcode.builtin
            raw.deprecatedBuiltinCode = min(opcode.builtin,
                                            schema.PLACEHOLDER_FOR_GREATER_OP_CODES)
            raw.customCode = opcode.custom
            raw.version = opcode.version
            index = len(self.opcodes)
            self.opcodes.append(raw)
            self.opcode_index[opcode] = index
        return index

    def _subgraph(self, sub: Subgraph) -> object:
        index_of = {key: i for i, key in enumerate(sub.tensors)}
        raw = fb.SubGraphT()
        raw.name = sub.name
        raw.tensors = [self._tensor(t) for t in sub.tensors.values()]
        raw.inputs = np.array([index_of[k] for k in sub.inputs], dtype=np.int32)
        raw.outputs = np.array([index_of[k] for k in sub.outputs], dtype=np.int32)
        raw.operators = [self._operator(op, index_of) for op in sub.operators]
        raw.debugMetadataIndex = sub.extra.get("debugMetadataIndex", -1)
        return raw

    def _tensor(self, tensor: object) -> object:
        raw = fb.TensorT()
        raw.name = tensor.name
        raw.shape = np.array(tensor.shape, dtype=np.int32)
        raw.type = tensor.dtype
        raw.buffer = self._buffer(tensor.buffer)
        raw.quantization = self._quantization(tensor.quantization)
        raw.isVariable = tensor.is_variable
        if tensor.shape_signature is not None:
            raw.shapeSignature = np.array(tensor.shape_signature, dtype=np.int32)
        raw.hasRank = tensor.has_rank
        for name, value in tensor.extra.items():
            setattr(raw, name, value)
        return raw

    def _quantization(self, quant: Quantization | None) -> object | None:
        """Equal plain quantizations share one table (patched models repeat them a lot)."""
        if quant is None or quant.details is not None:
            return _quantization(quant, fb.QuantizationParametersT())
        key = (quant.scale, quant.zero_point, quant.quantized_dimension, quant.min, quant.max)
        if key not in self.quantizations:
            self.quantizations[key] = _quantization(quant, _SharedQuantizationT())
        return self.quantizations[key]

    def _operator(self, op: Operator, index_of: dict[str, int]) -> object:
        raw = fb.OperatorT()
        raw.opcodeIndex = self._opcode(op.opcode)
        raw.inputs = np.array([-1 if k is None else index_of[k] for k in op.inputs],
                              dtype=np.int32)
        raw.outputs = np.array([index_of[k] for k in op.outputs], dtype=np.int32)
        raw.builtinOptionsType = op.options_type
        raw.builtinOptions = op.options
        if op.custom_options is not None:
            raw.customOptions = np.frombuffer(op.custom_options, dtype=np.uint8)
        if op.intermediates:
            raw.intermediates = np.array([index_of[k] for k in op.intermediates], dtype=np.int32)
        for name, value in op.extra.items():
            setattr(raw, name, value)
        return raw

    def _metadata(self, name: str, buffer: Buffer) -> object:
        raw = fb.MetadataT()
        raw.name = name
        raw.buffer = self._buffer_always(buffer)
        return raw

    def _buffer_always(self, buffer: Buffer) -> int:
        """Metadata keeps its own buffer even when empty (index 0 is reserved)."""
        if not buffer.data and id(buffer) not in self.buffer_index:
            self.buffer_index[id(buffer)] = len(self.buffers)
            self.buffers.append(_AlignedBufferT())
        return self._buffer(buffer)

    def _signature(self, sig: object) -> object:
        tensors = self.graph.subgraphs[sig.subgraph_index].tensors
        index_of = {key: i for i, key in enumerate(tensors)}
        raw = fb.SignatureDefT()
        raw.signatureKey = sig.key
        raw.subgraphIndex = sig.subgraph_index
        raw.inputs = [_tensor_map(name, index_of[key]) for name, key in sig.inputs]
        raw.outputs = [_tensor_map(name, index_of[key]) for name, key in sig.outputs]
        return raw


def _tensor_map(name: str, index: int) -> object:
    raw = fb.TensorMapT()
    raw.name = name
    raw.tensorIndex = index
    return raw


def _quantization(quant: Quantization | None, raw: object) -> object | None:
    if quant is None:
        return None
    raw.scale = np.array(quant.scale, dtype=np.float32) if quant.scale else None
    raw.zeroPoint = np.array(quant.zero_point, dtype=np.int64) if quant.zero_point else None
    raw.min = np.array(quant.min, dtype=np.float32) if quant.min else None
    raw.max = np.array(quant.max, dtype=np.float32) if quant.max else None
    raw.quantizedDimension = quant.quantized_dimension
    raw.detailsType = quant.details_type
    raw.details = quant.details
    return raw
