"""The TFLite flatbuffer schema (object API) and name tables derived from it.

Only `reader.py` and `writer.py` build or parse flatbuffers; the rest of the
package uses the enums and option classes re-exported here.
"""
from ai_edge_litert import schema_py_generated as fb

BuiltinOperator = fb.BuiltinOperator
BuiltinOptions = fb.BuiltinOptions
TensorType = fb.TensorType
Padding = fb.Padding
ActivationFunctionType = fb.ActivationFunctionType


def _enum_names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items()
            if not name.startswith("_") and isinstance(value, int)}


BUILTIN_NAMES: dict[int, str] = _enum_names(BuiltinOperator)
TENSOR_TYPE_NAMES: dict[int, str] = _enum_names(TensorType)

# Bits per element of each tensor type this tool sizes (packed types included).
TENSOR_TYPE_BITS: dict[int, int] = {
    TensorType.FLOAT32: 32, TensorType.FLOAT16: 16, TensorType.INT32: 32,
    TensorType.UINT8: 8, TensorType.INT64: 64, TensorType.BOOL: 8,
    TensorType.INT16: 16, TensorType.INT8: 8, TensorType.FLOAT64: 64,
    TensorType.UINT64: 64, TensorType.UINT32: 32, TensorType.UINT16: 16,
    TensorType.INT4: 4, TensorType.BFLOAT16: 16, TensorType.INT2: 2,
    TensorType.UINT4: 4,
}

# numpy dtype names for the types whose values we read.
TENSOR_TYPE_NUMPY: dict[int, str] = {
    TensorType.FLOAT32: "float32", TensorType.FLOAT16: "float16",
    TensorType.INT32: "int32", TensorType.UINT8: "uint8", TensorType.INT64: "int64",
    TensorType.BOOL: "bool", TensorType.INT16: "int16", TensorType.INT8: "int8",
    TensorType.FLOAT64: "float64", TensorType.UINT32: "uint32",
    TensorType.UINT16: "uint16", TensorType.UINT64: "uint64",
}

FLOAT_TYPES = frozenset({TensorType.FLOAT32, TensorType.FLOAT16,
                         TensorType.FLOAT64, TensorType.BFLOAT16})

# The op-code value that stands for "look at builtin_code" in deprecated_builtin_code.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def builtin_name(code: int) -> str:
    """The schema name of a builtin op code (e.g. 3 -> 'CONV_2D')."""
    return BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
