"""The one validation pass over a freshly read `Graph`.

`read_model_bytes` calls `validate_graph` before it returns, so every pass,
analysis and executor after it may rely on what is checked here:

- names are valid UTF-8;
- every tensor has a supported numeric type, no negative dimension, a size within
  `ReaderLimits.max_tensor_bytes`, and quantization arrays of consistent length
  (scale and zero point of equal length, 1 or the size of the quantized dimension),
  positive finite scales and zero points inside the type's range;
- subgraph inputs/outputs name real tensors (no -1);
- every op of a known type has its number of inputs/outputs, -1 only where the
  input is optional, the builtin options its type defines, shapes that agree with
  its type (validate_shapes.py), subgraph indices in range; `QMCU_*` ops carry
  version-1 options that decode;
- ops are in topological order, each tensor is written at most once, never a
  constant or a subgraph input, and each input is available when read;
- the `OfflineMemoryAllocation` metadata, if present, matches the tensor lists.

Errors name the file, subgraph, op and tensor and say what was expected.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from flatbuffers import flexbuffers

from tflite_quantmcu import qmcu_options
from tflite_quantmcu.errors import InvalidModelError, UnsupportedModelError, UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph, Operator, Subgraph, Tensor
from tflite_quantmcu.ir.limits import DEFAULT_LIMITS, ReaderLimits
from tflite_quantmcu.ir.validate_shapes import check_op_shapes

OFFLINE_PLAN_METADATA = "OfflineMemoryAllocation"
_UNSIGNED_TYPES = frozenset({schema.TensorType.UINT8, schema.TensorType.UINT4,
                             schema.TensorType.UINT16, schema.TensorType.UINT32,
                             schema.TensorType.UINT64, schema.TensorType.BOOL})
_NUMERIC_TYPE_NAMES = tuple(sorted(schema.TENSOR_TYPE_NAMES[t] for t in schema.TENSOR_TYPE_BITS))
_QUANTIZED_TYPES = frozenset({schema.TensorType.INT8, schema.TensorType.UINT8,
                              schema.TensorType.INT16, schema.TensorType.INT4})
_FLEX_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeDecodeError,
                RecursionError, AttributeError, AssertionError, struct.error)


@dataclass(frozen=True)
class OpSignature:
    """What a builtin op must look like: input/output counts, optional inputs, options."""

    inputs: tuple[int, int]                 # min, max (max -1: any number)
    outputs: tuple[int, int] = (1, 1)
    optional: frozenset[int] = frozenset()  # input positions that may be -1
    options: str | None = None              # BuiltinOptions member name
    options_required: bool = False


def _sig(inputs, outputs=(1, 1), optional=(), options=None, required=False) -> OpSignature:
    return OpSignature(inputs=inputs, outputs=outputs, optional=frozenset(optional),
                       options=options, options_required=required)


_ANY = -1
OP_SIGNATURES: dict[str, OpSignature] = {
    "CONV_2D": _sig((2, 3), optional=(2,), options="Conv2DOptions", required=True),
    "DEPTHWISE_CONV_2D": _sig((2, 3), optional=(2,), options="DepthwiseConv2DOptions",
                              required=True),
    "TRANSPOSE_CONV": _sig((3, 4), optional=(3,), options="TransposeConvOptions", required=True),
    "FULLY_CONNECTED": _sig((2, 3), optional=(2,), options="FullyConnectedOptions",
                            required=True),
    "AVERAGE_POOL_2D": _sig((1, 1), options="Pool2DOptions", required=True),
    "MAX_POOL_2D": _sig((1, 1), options="Pool2DOptions", required=True),
    "ADD": _sig((2, 2), options="AddOptions", required=True),
    "SUB": _sig((2, 2), options="SubOptions", required=True),
    "MUL": _sig((2, 2), options="MulOptions", required=True),
    "DIV": _sig((2, 2), options="DivOptions"),
    "MAXIMUM": _sig((2, 2)), "MINIMUM": _sig((2, 2)),
    "SOFTMAX": _sig((1, 1), options="SoftmaxOptions", required=True),
    "RESHAPE": _sig((1, 2), options="ReshapeOptions"),
    "CONCATENATION": _sig((1, _ANY), options="ConcatenationOptions", required=True),
    "PAD": _sig((2, 2), options="PadOptions"),
    "PADV2": _sig((2, 3), options="PadV2Options"),
    "MIRROR_PAD": _sig((2, 2), options="MirrorPadOptions", required=True),
    "MEAN": _sig((2, 2), options="ReducerOptions"),
    "SUM": _sig((2, 2), options="ReducerOptions"),
    "REDUCE_MAX": _sig((2, 2), options="ReducerOptions"),
    "REDUCE_MIN": _sig((2, 2), options="ReducerOptions"),
    "QUANTIZE": _sig((1, 1)), "DEQUANTIZE": _sig((1, 1)),
    "RELU": _sig((1, 1)), "RELU6": _sig((1, 1)), "LOGISTIC": _sig((1, 1)),
    "TANH": _sig((1, 1)), "HARD_SWISH": _sig((1, 1)),
    "LEAKY_RELU": _sig((1, 1), options="LeakyReluOptions", required=True),
    "L2_NORMALIZATION": _sig((1, 1), options="L2NormOptions"),
    "STRIDED_SLICE": _sig((4, 4), options="StridedSliceOptions"),
    "SLICE": _sig((3, 3), options="SliceOptions"),
    "SQUEEZE": _sig((1, 1), options="SqueezeOptions"),
    "EXPAND_DIMS": _sig((2, 2), options="ExpandDimsOptions"),
    "SHAPE": _sig((1, 1), options="ShapeOptions"),
    "TRANSPOSE": _sig((2, 2), options="TransposeOptions"),
    "GATHER": _sig((2, 2), options="GatherOptions"),
    "PACK": _sig((1, _ANY), options="PackOptions", required=True),
    "UNPACK": _sig((1, 1), outputs=(1, _ANY), options="UnpackOptions", required=True),
    "SPLIT": _sig((2, 2), outputs=(1, _ANY), options="SplitOptions", required=True),
    "SPLIT_V": _sig((3, 3), outputs=(1, _ANY), options="SplitVOptions", required=True),
    "SPACE_TO_DEPTH": _sig((1, 1), options="SpaceToDepthOptions", required=True),
    "DEPTH_TO_SPACE": _sig((1, 1), options="DepthToSpaceOptions", required=True),
    "RESIZE_NEAREST_NEIGHBOR": _sig((2, 2), options="ResizeNearestNeighborOptions"),
    "RESIZE_BILINEAR": _sig((2, 2), options="ResizeBilinearOptions"),
    "ARG_MAX": _sig((2, 2), options="ArgMaxOptions"),
    "ARG_MIN": _sig((2, 2), options="ArgMinOptions"),
}

# Options fields that name another subgraph (control flow).
_SUBGRAPH_FIELDS = ("thenSubgraphIndex", "elseSubgraphIndex", "condSubgraphIndex",
                    "bodySubgraphIndex", "initSubgraphIndex", "decompositionSubgraphIndex",
                    "subgraphIndex")


def validate_graph(*, graph: Graph, source: str, limits: ReaderLimits = DEFAULT_LIMITS) -> None:
    """Raises `InvalidModelError` / `UnsupportedModelError` at the first problem found."""
    _check_text(graph.description or "", f"{source}: model description")
    for m in graph.metadata:
        _check_text(m.name, f"{source}: metadata name")
    for index, sub in enumerate(graph.subgraphs):
        _SubgraphCheck(graph=graph, index=index, source=source, limits=limits).run()
    for sig in graph.signature_defs:
        _check_signature_def(graph=graph, sig=sig, source=source)
    _check_offline_plan(graph=graph, source=source)


def _check_signature_def(*, graph: Graph, sig: object, source: str) -> None:
    """Signature entries name the inputs and outputs of their subgraph."""
    _check_text(sig.key, f"{source}: signature key")
    sub = graph.subgraphs[sig.subgraph_index]
    for kind, entries, allowed in (("input", sig.inputs, sub.inputs),
                                   ("output", sig.outputs, sub.outputs)):
        for name, key in entries:
            _check_text(name, f"{source}: signature '{sig.key}' entry name")
            if key not in allowed:
                raise InvalidModelError(
                    f"{source}: signature '{sig.key}' {kind} '{name}' is tensor "
                    f"'{sub.tensors[key].name}', not one of subgraph {sig.subgraph_index}'s "
                    f"{kind}s")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raw = text.encode("utf-8", "surrogateescape")
        raise InvalidModelError(f"{where} is not valid UTF-8: {raw[:60]!r} "
                                f"(byte {err.start})") from None


class _SubgraphCheck:
    def __init__(self, *, graph: Graph, index: int, source: str, limits: ReaderLimits) -> None:
        self.graph, self.limits = graph, limits
        self.sub: Subgraph = graph.subgraphs[index]
        self.where = f"{source}: subgraph {index}"

    def run(self) -> None:
        sub = self.sub
        _check_text(sub.name, f"{self.where} name")
        for position, (key, tensor) in enumerate(sub.tensors.items()):
            self._tensor(tensor, f"{self.where} tensor {position}")
        for kind, keys in (("inputs", sub.inputs), ("outputs", sub.outputs)):
            if None in keys:
                raise InvalidModelError(f"{self.where} {kind}: index -1 at position "
                                        f"{keys.index(None)}; expected a tensor index")
        self._data_flow()
        for i, op in enumerate(sub.operators):
            self._operator(i, op)

    # -- tensors ----------------------------------------------------------------
    def _tensor(self, tensor: Tensor, where: str) -> None:
        _check_text(tensor.name, f"{where} name")
        where = f"{where} '{tensor.name}'"
        if tensor.dtype not in schema.TENSOR_TYPE_BITS:
            known = tensor.dtype in schema.TENSOR_TYPE_NAMES
            error = UnsupportedModelError if known else InvalidModelError
            raise error(f"{where}: type {tensor.type_name} ({tensor.dtype}); expected a numeric "
                        f"type ({', '.join(_NUMERIC_TYPE_NAMES)})")
        if any(d < 0 for d in tensor.shape):
            raise InvalidModelError(f"{where}: shape {list(tensor.shape)} has a negative "
                                    f"dimension; expected sizes >= 0")
        if tensor.shape_signature is not None and any(d < -1 for d in tensor.shape_signature):
            raise InvalidModelError(f"{where}: shape signature {list(tensor.shape_signature)}; "
                                    f"expected sizes >= -1")
        size = (math.prod(tensor.shape) * tensor.bits + 7) // 8
        if size > self.limits.max_tensor_bytes:
            raise UnsupportedModelError(f"{where}: shape {list(tensor.shape)} takes {size} "
                                        f"bytes, more than max_tensor_bytes="
                                        f"{self.limits.max_tensor_bytes}")
        self._quantization(tensor, where)

    def _quantization(self, tensor: Tensor, where: str) -> None:
        quant = tensor.quantization
        if quant is None or not (quant.scale or quant.zero_point):
            return
        scale, zero = quant.scale, quant.zero_point
        # No zero points at all is legal (all zero): QMCU sub-byte filters carry scales only
        # (docs/qmcu_ops.md section 1.2).
        if zero and len(scale) != len(zero):
            raise InvalidModelError(f"{where}: {len(scale)} scale values and {len(zero)} zero "
                                    f"points; expected the same number (or no zero points)")
        if len(scale) > 1:
            dim = quant.quantized_dimension
            if not 0 <= dim < len(tensor.shape):
                raise InvalidModelError(f"{where}: quantized dimension {dim} of a rank-"
                                        f"{len(tensor.shape)} tensor")
            # A packed sub-byte tensor (QMCU custom quantization details) holds several
            # channels per byte: its scales follow the logical shape in the details.
            if len(scale) != tensor.shape[dim] and quant.details is None:
                raise InvalidModelError(
                    f"{where}: {len(scale)} scales for dimension {dim} of size "
                    f"{tensor.shape[dim]}; expected 1 or {tensor.shape[dim]}")
        if tensor.dtype in schema.FLOAT_TYPES:
            return
        if not all(math.isfinite(s) and s > 0 for s in scale):
            bad = next(s for s in scale if not (math.isfinite(s) and s > 0))
            raise InvalidModelError(f"{where}: scale {bad}; expected finite scales > 0")
        lo, hi = _integer_range(tensor)
        if not all(lo <= z <= hi for z in zero):
            bad = next(z for z in zero if not lo <= z <= hi)
            raise InvalidModelError(f"{where}: zero point {bad} outside [{lo}, {hi}] of "
                                    f"{tensor.type_name}")

    # -- ops --------------------------------------------------------------------
    def _operator(self, i: int, op: Operator) -> None:
        label = f"{self.where} op #{i} {op.type}"
        if not op.outputs:
            raise UnsupportedOpError(f"{label}: no outputs; this tool handles ops that write "
                                     f"at least one tensor")
        if op.opcode.custom is not None:
            _check_text(op.opcode.custom, f"{label} custom code")
        if op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
            if None in op.inputs and op.type in qmcu_options.OP_OPTIONS:
                raise InvalidModelError(f"{label}: input {op.inputs.index(None)} is -1; "
                                        f"{op.type} has no optional inputs")
            _check_qmcu_options(op=op, label=label)
            return
        signature = OP_SIGNATURES.get(op.type)
        if signature is not None:
            _check_signature(op=op, signature=signature, label=label)
            self._quantized_operands(op, label)
            check_op_shapes(sub=self.sub, op=op, label=label)
        self._subgraph_indices(op, label)

    def _quantized_operands(self, op: Operator, label: str) -> None:
        """Integer tensors of the ops we compute with carry a scale and zero point."""
        for key in [k for k in op.inputs if k is not None] + op.outputs:
            tensor = self.sub.tensors[key]
            quant = tensor.quantization
            if tensor.dtype in _QUANTIZED_TYPES and (quant is None or not quant.scale):
                raise InvalidModelError(f"{label}: {tensor.type_name} tensor '{tensor.name}' "
                                        f"has no quantization (scale, zero point)")

    def _subgraph_indices(self, op: Operator, label: str) -> None:
        count = len(self.graph.subgraphs)
        for name in _SUBGRAPH_FIELDS:
            value = getattr(op.options, name, None)
            if value is not None and not 0 <= value < count:
                raise InvalidModelError(f"{label}: options {name}={value}, model has {count} "
                                        f"subgraphs")

    # -- data flow ---------------------------------------------------------------
    def _data_flow(self) -> None:
        sub = self.sub
        writer = _writers(sub=sub, where=self.where)
        available = set(sub.inputs)
        for i, op in enumerate(sub.operators):
            for key in op.inputs:
                if key is None or key in available or _needs_no_writer(sub.tensors[key]):
                    continue
                name = sub.tensors[key].name
                if key in writer:
                    raise InvalidModelError(
                        f"{self.where}: op #{i} {op.type} reads '{name}' before op "
                        f"#{writer[key]} writes it; expected ops in topological order")
                raise InvalidModelError(
                    f"{self.where}: op #{i} {op.type} reads '{name}', which is no subgraph "
                    f"input, no constant and written by no op")
            available.update(op.outputs)
        for key in sub.outputs:
            if key not in available and not _needs_no_writer(sub.tensors[key]):
                raise InvalidModelError(f"{self.where}: output '{sub.tensors[key].name}' is "
                                        f"written by no op and is no input or constant")
        self._dead_ops()

    def _dead_ops(self) -> None:
        """Every op feeds a later op or a subgraph output (converters prune dead code)."""
        sub = self.sub
        used = set(sub.outputs) | {k for op in sub.operators for k in op.inputs}
        for i, op in enumerate(sub.operators):
            if op.outputs and not used.intersection(op.outputs):
                raise UnsupportedModelError(
                    f"{self.where}: op #{i} {op.type}: no op reads its output "
                    f"'{sub.tensors[op.outputs[0]].name}' and it is no subgraph output "
                    f"(dead code; remove it, e.g. by re-converting)")


def _writers(*, sub: Subgraph, where: str) -> dict[str, int]:
    """Tensor key -> the one op that writes it; constants and inputs are never written."""
    writer: dict[str, int] = {}
    inputs = set(sub.inputs)
    for i, op in enumerate(sub.operators):
        for key in op.outputs:
            tensor = sub.tensors[key]
            label = f"{where}: op #{i} {op.type} writes '{tensor.name}'"
            if tensor.is_constant:
                raise InvalidModelError(f"{label}, a constant; expected an activation tensor")
            if tensor.is_variable:
                raise InvalidModelError(f"{label}, a variable tensor (only read as op state)")
            if key in inputs:
                raise InvalidModelError(f"{label}, a subgraph input")
            if key in writer:
                raise InvalidModelError(f"{label}, already written by op #{writer[key]}")
            writer[key] = i
    return writer


def _needs_no_writer(tensor: Tensor) -> bool:
    """Constants, variables and empty tensors are readable without an op writing them."""
    return tensor.is_constant or tensor.is_variable or 0 in tensor.shape


def _integer_range(tensor: Tensor) -> tuple[int, int]:
    bits = tensor.bits
    if tensor.dtype in _UNSIGNED_TYPES:
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _check_signature(*, op: Operator, signature: OpSignature, label: str) -> None:
    for kind, count, (lo, hi) in (("inputs", len(op.inputs), signature.inputs),
                                  ("outputs", len(op.outputs), signature.outputs)):
        if count < lo or (hi != _ANY and count > hi):
            expected = f"{lo}" if lo == hi else f"{lo}..{'any' if hi == _ANY else hi}"
            raise InvalidModelError(f"{label}: {count} {kind}; expected {expected}")
    for position, key in enumerate(op.inputs):
        if key is None and position not in signature.optional:
            raise InvalidModelError(f"{label}: input {position} is -1; only inputs "
                                    f"{sorted(signature.optional) or 'none'} may be omitted")
    if signature.options is None:
        return
    expected = getattr(schema.BuiltinOptions, signature.options)
    if op.options_type == 0 and op.options is None and not signature.options_required:
        return
    if op.options_type != expected or op.options is None:
        got = _options_name(op.options_type)
        raise InvalidModelError(f"{label}: builtin options {got}; expected "
                                f"{signature.options}")


def _options_name(value: int) -> str:
    names = {v: k for k, v in vars(schema.BuiltinOptions).items()
             if not k.startswith("_") and isinstance(v, int)}
    return names.get(value, f"type {value}")


def _check_qmcu_options(*, op: Operator, label: str) -> None:
    """A QMCU_* op's custom options: a version-1 flexbuffer map that decodes and checks."""
    if op.type not in qmcu_options.OP_OPTIONS:
        return
    try:
        raw = flexbuffers.Loads(bytes(op.custom_options or b""))
    except _FLEX_ERRORS as err:
        raise InvalidModelError(f"{label}: custom options are not a flexbuffer "
                                f"({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict):
        raise InvalidModelError(f"{label}: custom options are a {type(raw).__name__}; "
                                f"expected a flexbuffer map")
    version = raw.get("version")
    if version != qmcu_options.FORMAT_VERSION:
        raise UnsupportedOpError(f"{label}: options version {version!r}; this tool reads "
                                 f"version {qmcu_options.FORMAT_VERSION}")
    try:
        qmcu_options.decode_options(op=op.type, data=op.custom_options)
    except _FLEX_ERRORS as err:
        raise InvalidModelError(f"{label}: custom options do not decode: {err}") from None


def _check_offline_plan(*, graph: Graph, source: str) -> None:
    """TFLM's offline plan: int32 [version 0, subgraphs, n, n offsets >= -1]."""
    entry = next((m for m in graph.metadata if m.name == OFFLINE_PLAN_METADATA), None)
    if entry is None:
        return
    data = entry.buffer.data
    where = f"{source}: metadata '{OFFLINE_PLAN_METADATA}'"
    if len(data) % 4 or len(data) < 12:
        raise InvalidModelError(f"{where}: {len(data)} bytes; expected a multiple of 4, "
                                f"at least 12")
    values = [int.from_bytes(data[i:i + 4], "little", signed=True)
              for i in range(0, len(data), 4)]
    tensors = sum(len(s.tensors) for s in graph.subgraphs)
    expected = [0, len(graph.subgraphs), tensors]
    if values[:3] != expected or len(values) != 3 + tensors:
        raise InvalidModelError(
            f"{where}: header {values[:3]} and {len(values) - 3} offsets; expected header "
            f"{expected} (version, subgraphs, tensors) and {tensors} offsets")
    if any(v < -1 for v in values[3:]):
        raise InvalidModelError(f"{where}: offset {min(values[3:])}; expected >= -1")
