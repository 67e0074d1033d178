"""`.tflite` bytes -> `Graph`.

The reader checks the file before trusting it (identifier, truncation, every
index in range, constant sizes against shapes) and raises `InvalidModelError`
or `UnsupportedOpError` naming the part at fault.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tflite_quantmcu.errors import (InvalidModelError, ModelFileError,
                                    UnsupportedOpError)
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import (Buffer, Graph, Metadata, OpCode, Operator,
                                      Quantization, SignatureDef, Subgraph, Tensor)

FILE_IDENTIFIER = b"TFL3"
_PARSE_ERRORS = (IndexError, struct.error, ValueError, UnicodeDecodeError, TypeError,
                 AttributeError)


def read_model_file(*, path: str | Path) -> Graph:
    """Reads a `.tflite` file; `ModelFileError` if it cannot be opened."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"{path}: cannot be read ({err.strerror})") from err
    return read_model_bytes(data=data, source=str(path))


def read_model_bytes(*, data: bytes, source: str = "<bytes>") -> Graph:
    """Parses and validates a TFLite flatbuffer."""
    _check_header(data=data, source=source)
    try:
        model = schema.fb.ModelT.InitFromPackedBuf(data, 0)
    except _PARSE_ERRORS as err:
        raise InvalidModelError(
            f"{source}: truncated or corrupt TFLite flatbuffer ({len(data)} bytes): {err}") from err
    return _GraphBuilder(model=model, source=source).build()


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
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _GraphBuilder:
    """Turns a parsed ModelT into a Graph, validating indices on the way."""

    def __init__(self, *, model: object, source: str) -> None:
        self.model = model
        self.source = source
        self.buffers = [self._buffer(raw) for raw in (model.buffers or [])]
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
    @staticmethod
    def _buffer(raw: object) -> Buffer:
        data = b"" if raw.data is None else np.asarray(raw.data, dtype=np.uint8).tobytes()
        return Buffer(data=data, offset=int(raw.offset), size=int(raw.size))

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
            buffer=buffer if (buffer.data or buffer.offset) else None,
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
            tensor.extra["externalBuffer"] = raw.externalBuffer
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
            custom_options=(np.asarray(raw.customOptions, dtype=np.uint8).tobytes()
                            if raw.customOptions is not None else None),
            intermediates=[key_of(int(i), f"{label} intermediates")
                           for i in _ints(raw.intermediates)],
        )
        defaults = {"customOptionsFormat": 0, "largeCustomOptionsOffset": 0,
                    "largeCustomOptionsSize": 0, "builtinOptions2Type": 0,
                    "builtinOptions2": None, "debugMetadataIndex": -1}
        for field_name, default in defaults.items():
            value = getattr(raw, field_name, default)
            if value is not None and value != default:
                op.extra[field_name] = value
        if raw.mutatingVariableInputs is not None and len(raw.mutatingVariableInputs):
            op.extra["mutatingVariableInputs"] = [bool(v) for v in raw.mutatingVariableInputs]
        return op

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
    if any(d < 0 for d in tensor.shape) or tensor.buffer.offset:
        return
    expected = (tensor.num_elements * schema.TENSOR_TYPE_BITS[tensor.dtype] + 7) // 8
    got = len(tensor.buffer.data)
    if got != expected:
        raise InvalidModelError(
            f"{where}: {tensor.type_name}{list(tensor.shape)} needs {expected} bytes of data, "
            f"buffer has {got}")
