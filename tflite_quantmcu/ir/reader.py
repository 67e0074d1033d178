"""`.tflite` bytes -> `Graph`.

The reader checks the file before trusting it, in three steps:
1. `_scan_sizes`: from the flatbuffer's own length fields, before any object is
   built, every vector lies inside the file and the counts stay within
   `ReaderLimits` (`ModelLimitError`), so a small hostile file cannot make us
   allocate gigabytes;
2. the object API parse and `_GraphBuilder`: every index in range, constant
   sizes against shapes, buffer data stored after the flatbuffer (`Buffer.offset`
   / `size`, as the TF converter writes for large models) read from the file;
3. `validate_graph` (validate.py): the graph is one this tool can rely on.
Failures raise `InvalidModelError` / `UnsupportedModelError` naming the part.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tflite_quantmcu.errors import (InvalidModelError, ModelFileError, ModelLimitError,
                                    UnsupportedModelError, UnsupportedOpError)
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import (Buffer, Graph, Metadata, OpCode, Operator,
                                      Quantization, SignatureDef, Subgraph, Tensor)
from tflite_quantmcu.ir.limits import DEFAULT_LIMITS, ReaderLimits
from tflite_quantmcu.ir.validate import validate_graph

fb = schema.fb
FILE_IDENTIFIER = b"TFL3"
_PARSE_ERRORS = (IndexError, struct.error, ValueError, UnicodeDecodeError, TypeError,
                 AttributeError, OverflowError)
# A buffer offset of 0 or 1 means "no data after the flatbuffer" (1 is the TF converter's
# placeholder); larger values are byte positions from the start of the file.
_MIN_EXTERNAL_OFFSET = 2


def read_model_file(*, path: str | Path, limits: ReaderLimits = DEFAULT_LIMITS) -> Graph:
    """Reads a `.tflite` file; `ModelFileError` if it cannot be opened."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise ModelLimitError(f"{path}: {size} bytes, more than the limit max_file_bytes="
                                  f"{limits.max_file_bytes}")
        data = path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"{path}: cannot be read ({err.strerror})") from err
    return read_model_bytes(data=data, source=str(path), limits=limits)


def read_model_bytes(*, data: bytes, source: str = "<bytes>",
                     limits: ReaderLimits = DEFAULT_LIMITS) -> Graph:
    """Parses and validates a TFLite flatbuffer."""
    data = bytes(data)
    if len(data) > limits.max_file_bytes:
        raise ModelLimitError(f"{source}: {len(data)} bytes, more than the limit "
                              f"max_file_bytes={limits.max_file_bytes}")
    _check_header(data=data, source=source)
    try:
        _SizeScan(data=data, source=source, limits=limits).run()
        model = fb.ModelT.InitFromPackedBuf(data, 0)
    except _PARSE_ERRORS as err:
        raise InvalidModelError(
            f"{source}: truncated or corrupt TFLite flatbuffer ({len(data)} bytes): "
            f"{type(err).__name__}: {err}") from err
    graph = _GraphBuilder(model=model, source=source, data=data).build()
    validate_graph(graph=graph, source=source, limits=limits)
    return graph


def _check_header(*, data: bytes, source: str) -> None:
    if len(data) < 8:
        raise InvalidModelError(
            f"{source}: not a TFLite flatbuffer: {len(data)} bytes, expected at least 8")
    identifier = bytes(data[4:8])
    if identifier != FILE_IDENTIFIER:
        raise InvalidModelError(
            f"{source}: not a TFLite model: file identifier {identifier!r}, "
            f"expected {FILE_IDENTIFIER!r}")
    root = struct.unpack_from("<I", data, 0)[0]
    if root + 4 > len(data):
        raise InvalidModelError(
            f"{source}: truncated TFLite flatbuffer: root table at byte {root}, "
            f"file has {len(data)} bytes")


def _text(value: bytes | str | None) -> str:
    """Names as str; bytes that are not UTF-8 survive as surrogates for validate.py to name."""
    if value is None:
        return ""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class _SizeScan:
    """Walks the flatbuffer's length fields (no objects built) against `ReaderLimits`.

    Every vector must lie inside the file; buffer data (inline and external) must
    fit in the file without overlapping, so shared data cannot multiply memory.
    """

    def __init__(self, *, data: bytes, source: str, limits: ReaderLimits) -> None:
        self.data, self.source, self.limits = data, source, limits
        self.model = fb.Model.GetRootAs(data, 0)
        self.table_bytes = 0

    def run(self) -> None:
        model = self.model
        subgraphs = self._vector(model, 8, 4, "subgraphs")
        self._limit("max_subgraphs", subgraphs)
        self._limit("max_buffers", self._vector(model, 12, 4, "buffers"))
        self._vector(model, 6, 4, "operator codes")
        self._vector(model, 16, 4, "metadata")
        self._vector(model, 18, 4, "signature defs")
        self._vector(model, 14, 4, "metadata buffers")
        tensors = ops = 0
        for i in range(subgraphs):
            sub = model.Subgraphs(i)
            where = f"subgraph {i}"
            tensors += self._vector(sub, 4, 4, f"{where} tensors")
            ops += self._vector(sub, 10, 4, f"{where} operators")
            self._limit("max_tensors", tensors)
            self._limit("max_ops", ops)
            self._table(sub, ((6, 4), (8, 4), (12, 1)), where)
            for j in range(sub.TensorsLength()):
                self._tensor(sub.Tensors(j), f"{where} tensor {j}")
            for j in range(sub.OperatorsLength()):
                self._table(sub.Operators(j), ((6, 4), (8, 4), (14, 1), (18, 1), (20, 4)),
                            f"{where} op {j}")
        self._buffers()

    def _tensor(self, tensor: object, where: str) -> None:
        self._table(tensor, ((4, 4), (10, 1), (18, 4)), where)
        quant = tensor.Quantization()
        if quant is not None:
            self._table(quant, ((4, 4), (6, 4), (8, 4), (10, 8)), f"{where} quantization")

    def _table(self, table: object, vectors: tuple[tuple[int, int], ...], where: str) -> None:
        for slot, width in vectors:
            self.table_bytes += self._vector(table, slot, width, where) * width
        if self.table_bytes > self.limits.max_table_bytes:
            raise ModelLimitError(
                f"{self.source}: names, shapes, quantization and op lists take more than the "
                f"limit max_table_bytes={self.limits.max_table_bytes} (at {where})")

    def _buffers(self) -> None:
        total = 0
        model = self.model
        for i in range(model.BuffersLength()):
            buffer = model.Buffers(i)
            total += self._vector(buffer, 4, 1, f"buffer {i}")
            if buffer.Offset() >= _MIN_EXTERNAL_OFFSET:
                _external_range(buffer.Offset(), buffer.Size(), len(self.data),
                                f"{self.source}: buffer {i}")
                total += buffer.Size()
            if total > self.limits.max_buffer_bytes:
                raise ModelLimitError(f"{self.source}: constant data takes more than the limit "
                                      f"max_buffer_bytes={self.limits.max_buffer_bytes}")
        if total > len(self.data):
            raise InvalidModelError(
                f"{self.source}: buffers hold {total} bytes of data in a {len(self.data)}-byte "
                f"file: buffer data overlaps (expected every buffer stored once)")

    def _vector(self, table: object, slot: int, width: int, what: str) -> int:
        """Length of the vector (or string) in `slot`, after checking it lies in the file."""
        tab = table._tab
        offset = tab.Offset(slot)
        if offset == 0:
            return 0
        start = tab.Vector(offset)
        length = tab.VectorLen(offset)
        if start < 0 or start + length * width > len(self.data):
            raise InvalidModelError(
                f"{self.source}: {what}: a vector of {length} entries at byte {start} runs past "
                f"the end of the {len(self.data)}-byte file")
        return length

    def _limit(self, name: str, value: int) -> None:
        if value > getattr(self.limits, name):
            raise ModelLimitError(f"{self.source}: {value} {name[4:]} (or more), more than the "
                                  f"limit {name}={getattr(self.limits, name)}")


def _external_range(offset: int, size: int, file_size: int, where: str) -> None:
    if offset + size > file_size:
        raise InvalidModelError(
            f"{where}: data stored at bytes {offset}..{offset + size} after the flatbuffer, "
            f"file has {file_size} bytes")


class _GraphBuilder:
    """Turns a parsed ModelT into a Graph, validating indices on the way."""

    def __init__(self, *, model: object, source: str, data: bytes) -> None:
        self.model = model
        self.source = source
        self.data = data
        self.buffers = [self._buffer(i, raw) for i, raw in enumerate(model.buffers or [])]
        self.opcodes = [self._opcode(i, raw) for i, raw in enumerate(model.operatorCodes or [])]

    def build(self) -> Graph:
        model = self.model
        if not model.subgraphs:
            raise InvalidModelError(f"{self.source}: model has no subgraphs")
        subgraphs = [self._subgraph(i, raw) for i, raw in enumerate(model.subgraphs)]
        extra = {name: getattr(model, name) for name in ("externalBufferGroups", "externalBuffers")
                 if getattr(model, name, None)}
        return Graph(
            subgraphs=subgraphs,
            version=model.version,
            description=_text(model.description) if model.description is not None else None,
            metadata=[Metadata(name=_text(m.name), buffer=self._buffer_at(m.buffer, f"metadata "
                                                                          f"'{_text(m.name)}'"))
                      for m in (model.metadata or [])],
            signature_defs=[self._signature(raw, subgraphs) for raw in (model.signatureDefs or [])],
            metadata_buffers=[self._buffer_at(int(i), "metadata_buffer")
                              for i in (model.metadataBuffer if model.metadataBuffer is not None
                                        else [])],
            extra=extra,
        )

    # -- pieces ---------------------------------------------------------------
    def _buffer(self, index: int, raw: object) -> Buffer:
        inline = b"" if raw.data is None else np.asarray(raw.data, dtype=np.uint8).tobytes()
        offset, size = int(raw.offset), int(raw.size)
        if offset < _MIN_EXTERNAL_OFFSET:
            return Buffer(data=inline)
        where = f"{self.source}: buffer {index}"
        if inline:
            raise InvalidModelError(f"{where}: holds {len(inline)} bytes inline and {size} "
                                    f"bytes at offset {offset}; expected one or the other")
        _external_range(offset, size, len(self.data), where)
        return Buffer(data=self.data[offset:offset + size], external=True)

    def _buffer_at(self, index: int, owner: str) -> Buffer:
        if not 0 <= index < len(self.buffers):
            raise InvalidModelError(
                f"{self.source}: {owner} refers to buffer {index}, model has {len(self.buffers)}")
        return self.buffers[index]

    def _opcode(self, index: int, raw: object) -> OpCode:
        code = max(int(raw.builtinCode), int(raw.deprecatedBuiltinCode))
        if code not in schema.BUILTIN_NAMES:
            raise UnsupportedOpError(
                f"{self.source}: operator code {index} has unknown builtin code {code} "
                f"(newest known is {max(schema.BUILTIN_NAMES)})")
        custom = _text(raw.customCode) if raw.customCode is not None else None
        return OpCode(builtin=code, custom=custom, version=int(raw.version))

    def _subgraph(self, index: int, raw: object) -> Subgraph:
        where = f"{self.source}: subgraph {index}"
        sub = Subgraph(name=_text(raw.name))
        keys = [sub.add_tensor(tensor=self._tensor(raw_t, f"{where} tensor {i}"))
                for i, raw_t in enumerate(raw.tensors or [])]

        def key_of(i: int, owner: str) -> str | None:
            if i == -1:
                return None
            if not 0 <= i < len(keys):
                raise InvalidModelError(f"{owner} refers to tensor {i}, subgraph has {len(keys)}")
            return keys[i]

        sub.inputs = [key_of(int(i), f"{where} inputs") for i in _ints(raw.inputs)]
        sub.outputs = [key_of(int(i), f"{where} outputs") for i in _ints(raw.outputs)]
        sub.operators = [self._operator(raw_op, key_of, f"{where} op #{j}")
                         for j, raw_op in enumerate(raw.operators or [])]
        if raw.debugMetadataIndex != -1:
            sub.extra["debugMetadataIndex"] = raw.debugMetadataIndex
        return sub

    def _tensor(self, raw: object, where: str) -> Tensor:
        name = _text(raw.name)
        buffer = self._buffer_at(int(raw.buffer), f"{where} '{name}'")
        shape = tuple(int(d) for d in _ints(raw.shape))
        tensor = Tensor(
            name=name, shape=shape, dtype=int(raw.type),
            buffer=buffer if buffer.data else None,
            quantization=_quantization(raw.quantization),
            is_variable=bool(raw.isVariable),
            shape_signature=(tuple(int(d) for d in raw.shapeSignature)
                             if raw.shapeSignature is not None else None),
            has_rank=bool(raw.hasRank),
        )
        for field_name in ("sparsity", "variantTensors"):
            if getattr(raw, field_name, None) is not None:
                tensor.extra[field_name] = getattr(raw, field_name)
        if getattr(raw, "externalBuffer", 0):
            raise UnsupportedModelError(
                f"{where} '{name}': data in external buffer {raw.externalBuffer} (a separate "
                f"file); expected the data inside the .tflite file")
        _check_constant_size(tensor=tensor, where=f"{where} '{name}'")
        return tensor

    def _operator(self, raw: object, key_of, where: str) -> Operator:
        if not 0 <= raw.opcodeIndex < len(self.opcodes):
            raise InvalidModelError(
                f"{where}: opcode index {raw.opcodeIndex}, model has {len(self.opcodes)} op codes")
        opcode = self.opcodes[raw.opcodeIndex]
        label = f"{where} ({opcode.name})"
        outputs = [key_of(int(i), f"{label} outputs") for i in _ints(raw.outputs)]
        if None in outputs:
            raise InvalidModelError(f"{label}: output index -1")
        op = Operator(
            opcode=opcode,
            inputs=[key_of(int(i), f"{label} inputs") for i in _ints(raw.inputs)],
            outputs=outputs,
            options_type=int(raw.builtinOptionsType),
            options=raw.builtinOptions,
            custom_options=self._custom_options(raw, label),
            intermediates=[key_of(int(i), f"{label} intermediates")
                           for i in _ints(raw.intermediates)],
        )
        defaults = {"customOptionsFormat": 0, "builtinOptions2Type": 0,
                    "builtinOptions2": None, "debugMetadataIndex": -1}
        for field_name, default in defaults.items():
            value = getattr(raw, field_name, default)
            if value is not None and value != default:
                op.extra[field_name] = value
        if raw.mutatingVariableInputs is not None and len(raw.mutatingVariableInputs):
            op.extra["mutatingVariableInputs"] = [bool(v) for v in raw.mutatingVariableInputs]
        return op

    def _custom_options(self, raw: object, where: str) -> bytes | None:
        """Inline custom options, or large ones stored after the flatbuffer (read here)."""
        offset = int(getattr(raw, "largeCustomOptionsOffset", 0))
        if offset >= _MIN_EXTERNAL_OFFSET:
            size = int(raw.largeCustomOptionsSize)
            _external_range(offset, size, len(self.data), f"{where}: large custom options")
            return self.data[offset:offset + size]
        if raw.customOptions is None:
            return None
        return np.asarray(raw.customOptions, dtype=np.uint8).tobytes()

    def _signature(self, raw: object, subgraphs: list[Subgraph]) -> SignatureDef:
        index = int(raw.subgraphIndex)
        key = _text(raw.signatureKey)
        if not 0 <= index < len(subgraphs):
            raise InvalidModelError(
                f"{self.source}: signature '{key}' names subgraph {index}, "
                f"model has {len(subgraphs)}")
        keys = list(subgraphs[index].tensors)

        def entries(maps: list | None) -> list[tuple[str, str]]:
            out = []
            for m in maps or []:
                if not 0 <= m.tensorIndex < len(keys):
                    raise InvalidModelError(
                        f"{self.source}: signature '{key}' entry '{_text(m.name)}' refers to "
                        f"tensor {m.tensorIndex}, subgraph {index} has {len(keys)}")
                out.append((_text(m.name), keys[m.tensorIndex]))
            return out

        return SignatureDef(key=key, subgraph_index=index, inputs=entries(raw.inputs),
                            outputs=entries(raw.outputs))


def _ints(values: object) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _floats(values: object) -> tuple[float, ...]:
    return () if values is None else tuple(float(v) for v in values)


def _quantization(raw: object | None) -> Quantization | None:
    if raw is None:
        return None
    return Quantization(
        scale=_floats(raw.scale),
        zero_point=tuple(_ints(raw.zeroPoint)),
        quantized_dimension=int(raw.quantizedDimension),
        min=_floats(raw.min),
        max=_floats(raw.max),
        details_type=int(raw.detailsType),
        details=raw.details,
    )


def _check_constant_size(*, tensor: Tensor, where: str) -> None:
    """A constant's byte count must match its shape (packed types rounded up)."""
    if not tensor.is_constant or tensor.dtype not in schema.TENSOR_TYPE_BITS:
        return
    if any(d < 0 for d in tensor.shape):
        return
    expected = (tensor.num_elements * schema.TENSOR_TYPE_BITS[tensor.dtype] + 7) // 8
    got = len(tensor.buffer.data)
    if got != expected:
        raise InvalidModelError(
            f"{where}: {tensor.type_name}{list(tensor.shape)} needs {expected} bytes of data, "
            f"buffer has {got}")
