"""The model's input and output types, as TFLiteConverter's `inference_input_type` /
`inference_output_type` set them.

A full-int8 model exported with float I/O starts with QUANTIZE (float32 -> int8)
and ends with DEQUANTIZE (int8 -> float32); the float input alone is 4x the int8
tensor and is live at the start of the arena. This pass, on the name-keyed graph:

- input `int8`: a float32 input read only by one QUANTIZE becomes that QUANTIZE's
  int8 output (op and float tensor removed); `uint8`: the float32 input becomes a
  uint8 tensor (same scale, zero point + 128) and the QUANTIZE requantizes it; an
  int8 input gets a uint8 input and a QUANTIZE in front;
- output `int8`: a float32 output written by DEQUANTIZE becomes its int8 input;
  `uint8`: the DEQUANTIZE becomes a QUANTIZE to uint8; an int8 output gets a QUANTIZE
  to a new uint8 output;
- `keep` leaves the side as it is.
The int8 values inside are unchanged, so outputs equal the original's quantized
values bit for bit. Anything else (int16 I/O, a float input read by other ops, an
offline memory plan that indexes tensors) is refused with the tensor named.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from tflite_quantmcu.analysis.memory import OFFLINE_PLAN_METADATA, tensor_bytes
from tflite_quantmcu.errors import ConfigError, UnsupportedModelError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph, OpCode, Operator, Quantization, Subgraph, Tensor

IO_TYPES = ("keep", "int8", "uint8")
UINT8_SHIFT = 128
QUANTIZE_UINT8_VERSION = 2  # QUANTIZE between int8 and uint8 (requantize) is version 2


@dataclass(frozen=True)
class IoTypes:
    input_type: str = "keep"
    output_type: str = "keep"

    def __post_init__(self) -> None:
        for option, value in (("--input-type", self.input_type),
                              ("--output-type", self.output_type)):
            if value not in IO_TYPES:
                raise ConfigError(f"{option} {value!r}: expected one of {', '.join(IO_TYPES)}")


def convert_io_types(*, graph: Graph, options: IoTypes) -> Graph:
    """A copy of `graph` whose main subgraph has the requested input/output types."""
    if any(m.name == OFFLINE_PLAN_METADATA for m in graph.metadata):
        raise UnsupportedModelError(
            "--input-type/--output-type: the model has an offline memory plan "
            f"({OFFLINE_PLAN_METADATA}) that indexes tensors; cannot change its I/O")
    result = copy.deepcopy(graph)
    sub = result.main
    if options.input_type != "keep":
        sub.inputs = [_set_input(sub=sub, key=key, want=options.input_type) for key in sub.inputs]
    if options.output_type != "keep":
        sub.outputs = [_set_output(sub=sub, key=key, want=options.output_type)
                       for key in sub.outputs]
    _rename_in_signatures(graph=result, before=graph)
    return result


def _set_input(*, sub: Subgraph, key: str, want: str) -> str:
    tensor = sub.tensors[key]
    if tensor.dtype == schema.TensorType.FLOAT32:
        quantize = _only_quantize_reader(sub=sub, key=key)
        target = quantize.outputs[0]
        if want == "int8":
            sub.operators.remove(quantize)
            del sub.tensors[key]
            return target
        _retype_uint8(tensor=tensor, like=sub.tensors[target])
        return key
    if tensor.dtype == schema.TensorType.INT8 and want == "uint8":
        new_key = sub.add_tensor(tensor=_uint8_twin(tensor=tensor), key=f"{tensor.name}_uint8")
        sub.operators.insert(0, _quantize_op(src=new_key, dst=key))
        return new_key
    if tensor.dtype == schema.TensorType.INT8 or (
            tensor.dtype == schema.TensorType.UINT8 and want == "uint8"):
        return key
    raise UnsupportedModelError(
        f"--input-type {want}: input {tensor.name!r} is {tensor.type_name}; only float32 "
        f"(followed by QUANTIZE), int8 and uint8 inputs can be retyped")


def _set_output(*, sub: Subgraph, key: str, want: str) -> str:
    tensor = sub.tensors[key]
    if tensor.dtype == schema.TensorType.FLOAT32:
        index, dequantize = _dequantize_writer(sub=sub, key=key)
        source = dequantize.inputs[0]
        if want == "int8":
            sub.operators.pop(index)
            del sub.tensors[key]
            return source
        _retype_uint8(tensor=tensor, like=sub.tensors[source])
        sub.operators[index] = _quantize_op(src=source, dst=key)
        return key
    if tensor.dtype == schema.TensorType.INT8 and want == "uint8":
        new_key = sub.add_tensor(tensor=_uint8_twin(tensor=tensor), key=f"{tensor.name}_uint8")
        sub.operators.append(_quantize_op(src=key, dst=new_key))
        return new_key
    if tensor.dtype == schema.TensorType.INT8 or (
            tensor.dtype == schema.TensorType.UINT8 and want == "uint8"):
        return key
    raise UnsupportedModelError(
        f"--output-type {want}: output {tensor.name!r} is {tensor.type_name}; only float32 "
        f"(written by DEQUANTIZE), int8 and uint8 outputs can be retyped")


def _only_quantize_reader(*, sub: Subgraph, key: str) -> Operator:
    readers = sub.consumers().get(key, [])
    ops = [sub.operators[i] for i in readers]
    if len(ops) != 1 or ops[0].type != "QUANTIZE" or \
            sub.tensors[ops[0].outputs[0]].dtype != schema.TensorType.INT8:
        kinds = ", ".join(op.type for op in ops) or "nothing"
        raise UnsupportedModelError(
            f"--input-type: float32 input {sub.tensors[key].name!r} is read by {kinds}; "
            f"expected exactly one QUANTIZE to int8")
    return ops[0]


def _dequantize_writer(*, sub: Subgraph, key: str) -> tuple[int, Operator]:
    index = sub.producers().get(key)
    op = sub.operators[index] if index is not None else None
    if op is None or op.type != "DEQUANTIZE" or \
            sub.tensors[op.inputs[0]].dtype != schema.TensorType.INT8:
        raise UnsupportedModelError(
            f"--output-type: float32 output {sub.tensors[key].name!r} is written by "
            f"{op.type if op else 'no op'}; expected a DEQUANTIZE from int8")
    return index, op


def _retype_uint8(*, tensor: Tensor, like: Tensor) -> None:
    quant = like.quantization
    if quant is None or len(quant.scale) != 1:
        raise UnsupportedModelError(
            f"tensor {like.name!r} has no per-tensor quantization; cannot derive a uint8 twin")
    tensor.dtype = schema.TensorType.UINT8
    tensor.quantization = Quantization(scale=quant.scale,
                                       zero_point=(quant.zero_point[0] + UINT8_SHIFT,))


def _uint8_twin(*, tensor: Tensor) -> Tensor:
    twin = Tensor(name=f"{tensor.name}_uint8", shape=tensor.shape, dtype=tensor.dtype,
                  shape_signature=tensor.shape_signature, has_rank=tensor.has_rank)
    _retype_uint8(tensor=twin, like=tensor)
    return twin


def _quantize_op(*, src: str, dst: str) -> Operator:
    return Operator(opcode=OpCode(builtin=schema.BuiltinOperator.QUANTIZE,
                                  version=QUANTIZE_UINT8_VERSION),
                    inputs=[src], outputs=[dst])


def _rename_in_signatures(*, graph: Graph, before: Graph) -> None:
    """Signature entries follow the main subgraph's new input/output keys."""
    renames = dict(zip(before.main.inputs, graph.main.inputs))
    renames.update(zip(before.main.outputs, graph.main.outputs))
    for signature in graph.signature_defs:
        if signature.subgraph_index != 0:
            continue
        signature.inputs = [(name, renames.get(key, key)) for name, key in signature.inputs]
        signature.outputs = [(name, renames.get(key, key)) for name, key in signature.outputs]


def dominant_input_hint(*, graph: Graph, peak_tensors: tuple[str, ...]) -> str:
    """'; the float32 input ... is live at the peak: --input-type int8 removes it', or ''."""
    sub = graph.main
    for key in sub.inputs:
        tensor = sub.tensors[key]
        if tensor.dtype == schema.TensorType.FLOAT32 and tensor.name in peak_tensors:
            return (f"; the float32 input {tensor.name!r} ({tensor_bytes(tensor=tensor):,} B) "
                    f"is live at the peak: --input-type int8 removes it")
    return ""
