"""The TFLite Micro op resolver header for a converted model.

It defines `OpResolver` (an alias of `tflite::MicroMutableOpResolver<N>` sized to
the model's op kinds), `RegisterOps(resolver)` with one `AddXxx()` per builtin
(method names as in TFLite Micro's micro_mutable_op_resolver.h) and one
`AddCustom("QMCU_...", Register_QMCU_...())` per custom op of ours, and
`kTensorArenaSize`, the whole arena the model needs. The QMCU glue header is
included only when the model has QMCU ops.
"""
from __future__ import annotations

from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.analysis.memory import align
from tflite_quantmcu.analysis.model_analysis import ArenaBytes
from tflite_quantmcu.codegen.model_data import model_namespace
from tflite_quantmcu.ir.graph import Graph

QMCU_PREFIX = "QMCU_"
QMCU_GLUE_HEADER = "qmcu_tflm_ops.h"

TFLM_ADD_METHODS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEPTH_TO_SPACE": "AddDepthToSpace", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}


def _arena_caveat(arena: ArenaBytes) -> str:
    if not arena.lower_bound:
        return "rounded up to 16 B. "
    return (f"a LOWER BOUND: not modelled for {', '.join(arena.unmodelled)}; measure "
            "arena_used_bytes() once. ")


def _kernels_note(arena: ArenaBytes) -> list[str]:
    """Comment lines: which TFLite Micro kernel builds the figure covers (`build_totals`)."""
    names = {"reference": "reference", "cmsis_nn": "CMSIS-NN"}
    totals = dict(arena.build_totals)
    if len(totals) < 2:
        return [f"// Arena the model needs on {arena.target} with TFLite Micro's reference "
                "kernels:"]
    each = " and ".join(f"{names.get(k, k)} {v} B" for k, v in totals.items())
    return [f"// Arena the model needs on {arena.target}: the larger of TFLite Micro's kernel "
            "builds,",
            f"// {each}; so it allocates with either. The {names.get(arena.kernels)} build's",]


def resolver_registrations(*, graph: Graph) -> list[str]:
    """One C++ registration statement per distinct op kind, builtins first, sorted."""
    builtins: set[str] = set()
    customs: set[str] = set()
    for sub in graph.subgraphs:
        for i, op in enumerate(sub.operators):
            if op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
                customs.add(_checked_custom(op.opcode.custom or "", sub.op_label(i)))
            elif op.type in TFLM_ADD_METHODS:
                builtins.add(op.type)
            else:
                raise UnsupportedOpError(
                    f"op {sub.op_label(i)}: TFLite Micro has no kernel for builtin {op.type}")
    lines = [f"{TFLM_ADD_METHODS[name]}()" for name in sorted(builtins)]
    lines += [f'AddCustom("{name}", tflite::Register_{name}())' for name in sorted(customs)]
    return lines


def _checked_custom(name: str, label: str) -> str:
    if not name.startswith(QMCU_PREFIX):
        raise UnsupportedOpError(
            f"op {label}: custom op '{name}' is not one of ours (QMCU_*); "
            f"register its kernel in the firmware yourself")
    return name


def op_resolver_header(*, graph: Graph, stem: str, arena: ArenaBytes,
                       model_file: str | None = None) -> str:
    """The header text; `stem` names the model (e.g. 'fashion_mnv2_r96_int8'),
    `model_file` the .tflite it was written for."""
    registrations = resolver_registrations(graph=graph)
    namespace = model_namespace(stem=stem)
    guard = f"{namespace.upper()}_OP_RESOLVER_H_"
    uses_custom = any(r.startswith("AddCustom") for r in registrations)
    lines = [
        f"// Generated by tflite-quantmcu for {model_file or stem}. Do not edit.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
    ]
    if uses_custom:
        lines.append(f'#include "{QMCU_GLUE_HEADER}"')
    lines += [
        "",
        f"namespace {namespace} {{",
        "",
        f"constexpr int kNumberOperators = {len(registrations)};",
        "",
        *_kernels_note(arena),
        f"// head {arena.head} B (activations, scratch) + tail {arena.tail} B (persistent "
        "data),",
        f"// {_arena_caveat(arena)}Declare it 16-byte aligned:",
        *(["// (QMCU_* kernels: sized for a QMCU_USE_OPT build; a reference build needs less.)"]
          if uses_custom else []),
        "//   alignas(16) static uint8_t tensor_arena[kTensorArenaSize];",
        f"constexpr size_t kTensorArenaSize = {align(arena.total)};",
        "using OpResolver = tflite::MicroMutableOpResolver<kNumberOperators>;",
        "",
        "// Registers exactly the op kinds the model uses.",
        "inline TfLiteStatus RegisterOps(OpResolver& resolver) {",
        *[f"  TF_LITE_ENSURE_STATUS(resolver.{r});" for r in registrations],
        "  return kTfLiteOk;",
        "}",
        "",
        f"}}  // namespace {namespace}",
        "",
        f"#endif  // {guard}",
        "",
    ]
    return "\n".join(lines)
