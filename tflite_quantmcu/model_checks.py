"""Checks that a model is something this tool can work on, with errors naming the part."""
from __future__ import annotations

from tflite_quantmcu.errors import UnsupportedModelError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph

# Ops that may legitimately touch float tensors in an int8 model (its float I/O boundary).
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def require_int8(*, graph: Graph, source: str) -> None:
    """Every op but QUANTIZE/DEQUANTIZE must compute on quantized tensors."""
    sub = graph.main
    for i, op in enumerate(sub.operators):
        if op.type in _BOUNDARY_OPS:
            continue
        for key in [k for k in op.inputs if k is not None] + op.outputs:
            tensor = sub.tensors[key]
            if tensor.dtype in schema.FLOAT_TYPES:
                raise UnsupportedModelError(
                    f"{source}: op {sub.op_label(i)} computes in {tensor.type_name} "
                    f"(tensor '{tensor.name}'); expected an int8-quantized model "
                    f"(convert with a representative dataset and TFLITE_BUILTINS_INT8)")
