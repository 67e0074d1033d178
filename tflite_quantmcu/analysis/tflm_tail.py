"""The arena tail TFLite Micro allocates for a model: what the head does not count.

TFLite Micro's arena is one buffer: the *head* (planned activations and kernel
scratch, `plan_memory`) grows up from the start, the *tail* (persistent data) grows
down from the end. The firmware must provide head + tail
(`MicroInterpreter::arena_used_bytes()`). The tail is the allocator's own objects
and, per model, in this order (tflite-micro `micro_allocator.cc`,
`micro_interpreter.cc`, commit 90b983c2 and the tflite-micro wheel 0.dev20261023):

1. the buffer allocator, the greedy memory planner and the `MicroAllocator` object
   (in the wheel: their recording variants);
2. `StartModelAllocation`: the builtin-data allocator, one `SubgraphAllocations` per
   subgraph, one `TfLiteEvalTensor` per tensor of each subgraph, one
   `NodeAndRegistration` per op of each subgraph;
3. per op, the parsed builtin options (`TfLite*Params`, allocated at their own
   alignment);
4. per op, what the kernel's Init allocates (its OpData);
5. per op, what the kernel's Prepare allocates (per-channel output multipliers and
   shifts of CONV_2D / DEPTHWISE_CONV_2D / per-channel FULLY_CONNECTED, copied dims);
6. the scratch-buffer handles (one per scratch request), if any;
7. the pointer arrays of the model inputs and outputs and one persistent
   `TfLiteTensor` per input and output with its quantization parameters.

Every allocation is placed at `align_down(tail - size, alignment)`; kernels' buffers
use the arena alignment (16).

Phases 4-6 depend on the kernels linked (`kernels`): TFLM's reference kernels (the only
set of `host64`, the tflite-micro wheel) or, on `cortex-m`, its CMSIS-NN kernels
(`kernels/cmsis_nn`, the usual Cortex-M build), whose CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, pooling, ADD, SOFTMAX and TRANSPOSE_CONV allocate their own OpData (the
reference struct plus scratch indices: 16 more bytes per pool op and 32 per fully
connected op after alignment) and request other scratch (`tflm_scratch`, one handle each).
`model_analysis.arena_bytes` computes the whole arena for each kernel set of the target and
reports the larger. Struct sizes and alignments come from compiling the
TFLM headers for each target (arm-none-eabi-g++ for Cortex-M: 4-byte pointers and
AAPCS short enums; g++ x86-64 for the host). An op whose kernel is not in the tables
is named in `unmodelled_ops`, and the tail is then a lower bound.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph, Operator, Subgraph
from tflite_quantmcu.qmcu_stage_options import STAGE_OP, decode_stage_options, stage_pool_words

ARENA_ALIGNMENT = 16
INT32_BYTES = 4
REFERENCE = "reference"   # TFLM's reference kernels (the tflite-micro wheel's too)
CMSIS_NN = "cmsis_nn"     # TFLM's kernels/cmsis_nn (OPTIMIZED_KERNEL_DIR=cmsis_nn)

# (size, alignment) per struct. Measured with sizeof/alignof on tflite-micro 90b983c2.
# host64 is the tflite-micro wheel (0.dev20261023, newer than 90b983c2): where it differs
# from 90b983c2 the wheel's value is used, found from its allocation report on single-op
# and whole models (RecordingMicroAllocator 248 -> 280, TfLiteFullyConnectedParams
# 16 -> 33..36, OpDataConv 72 -> 80, OpDataFullyConnected 64 -> 72, concatenation's
# OpData 40 -> 80). tests/test_arena_total.py checks every figure against the wheel.
_HOST64 = {
    "SingleArenaBufferAllocator": (72, 8), "RecordingSingleArenaBufferAllocator": (104, 8),
    "GreedyMemoryPlanner": (72, 8), "MicroAllocator": (72, 8),
    "RecordingMicroAllocator": (280, 8), "MicroBuiltinDataAllocator": (16, 8),
    "SubgraphAllocations": (16, 8), "TfLiteEvalTensor": (24, 8),
    "NodeAndRegistration": (64, 8), "TfLiteTensor": (64, 8),
    "TfLiteAffineQuantization": (24, 8), "TfLiteIntArray": (4, 4),
    "ScratchBufferHandle": (8, 8), "pointer": (8, 8),
    # parsed builtin options
    "TfLiteAddParams": (8, 4), "TfLiteArgMaxParams": (4, 4), "TfLiteArgMinParams": (4, 4),
    "TfLiteConcatenationParams": (8, 4), "TfLiteConvParams": (28, 4),
    "TfLiteDepthwiseConvParams": (28, 4), "TfLiteDivParams": (4, 4),
    "TfLiteFullyConnectedParams": (36, 4), "TfLiteGatherParams": (8, 4),
    "TfLiteLeakyReluParams": (4, 4), "TfLiteMirrorPaddingParams": (4, 4),
    "TfLiteMulParams": (4, 4), "TfLitePackParams": (8, 4), "TfLitePoolParams": (40, 4),
    "TfLiteReducerParams": (1, 1), "TfLiteReshapeParams": (36, 4),
    "TfLiteResizeBilinearParams": (2, 1), "TfLiteResizeNearestNeighborParams": (2, 1),
    "TfLiteShapeParams": (4, 4), "TfLiteSoftmaxParams": (4, 4),
    "TfLiteSplitParams": (4, 4), "TfLiteSplitVParams": (4, 4),
    "TfLiteSqueezeParams": (36, 4), "TfLiteStridedSliceParams": (24, 4),
    "TfLiteSubParams": (8, 4), "TfLiteTransposeConvParams": (20, 4),
    "TfLiteUnpackParams": (8, 4), "TfLiteL2NormParams": (4, 4),
    "TfLiteDepthToSpaceParams": (4, 4), "TfLiteSpaceToDepthParams": (4, 4),
    # kernel OpData (Init; allocated at the arena alignment, so only the size matters)
    "OpDataConv": (80, 8), "OpDataFullyConnected": (72, 8), "OpDataPooling": (32, 4),
    "OpDataAdd": (60, 4), "OpDataSub": (52, 4), "OpDataMul": (36, 4),
    "OpDataConcatenation": (80, 8), "StridedSliceParams": (84, 4), "OpDataPad": (56, 4),
    "OpDataQuantizeReference": (32, 8), "DequantizeOpData": (32, 8),
    "SoftmaxParams": (80, 8), "OpDataReduce": (44, 4), "ReluOpData": (28, 4),
    "Relu6OpData": (8, 4), "HardSwishParams": (20, 4), "OpDataLogistic": (16, 4),
    "OpDataTanh": (16, 4), "LeakyReluOpData": (24, 4), "PreluParams": (28, 4),
    "OpDataTransposeConv": (80, 8), "OpDataDiv": (28, 4), "OpDataComparisons": (32, 4),
    "L2NormalizationParams": (4, 4), "OpDataMirrorPad": (20, 4),
    # QMCU_* glue (cmixnn_bridge/tflm/qmcu_tflm_ops.cc: ConvData, AddData, PoolData, RequantData,
    # and qmcu_stage_op_data of qmcu/qmcu_stage.h, followed by its int32 pool)
    "QmcuConvData": (120, 8), "QmcuAddData": (80, 8), "QmcuPoolData": (112, 8),
    "QmcuRequantData": (44, 4), "QmcuStageData": (40, 8),
}
# cortex-m: arm-none-eabi-g++ 12.2 -mcpu=cortex-m4 -mthumb (AAPCS: 4-byte pointers, enums
# as small as their values), checked against a Cortex-M4 build of 90b983c2 under QEMU.
_CORTEX_M = {
    "SingleArenaBufferAllocator": (36, 4), "RecordingSingleArenaBufferAllocator": (52, 4),
    "GreedyMemoryPlanner": (44, 4), "MicroAllocator": (36, 4),
    "RecordingMicroAllocator": (124, 4), "MicroBuiltinDataAllocator": (8, 4),
    "SubgraphAllocations": (8, 4), "TfLiteEvalTensor": (12, 4),
    "NodeAndRegistration": (32, 4), "TfLiteTensor": (32, 4),
    "TfLiteAffineQuantization": (12, 4), "TfLiteIntArray": (4, 4),
    "ScratchBufferHandle": (4, 4), "pointer": (4, 4),
    "TfLiteAddParams": (2, 1), "TfLiteArgMaxParams": (1, 1), "TfLiteArgMinParams": (1, 1),
    "TfLiteConcatenationParams": (8, 4), "TfLiteConvParams": (28, 4),
    "TfLiteDepthwiseConvParams": (28, 4), "TfLiteDivParams": (1, 1),
    "TfLiteFullyConnectedParams": (5, 1), "TfLiteGatherParams": (8, 4),
    "TfLiteLeakyReluParams": (4, 4), "TfLiteMirrorPaddingParams": (1, 1),
    "TfLiteMulParams": (1, 1), "TfLitePackParams": (8, 4), "TfLitePoolParams": (40, 4),
    "TfLiteReducerParams": (1, 1), "TfLiteReshapeParams": (36, 4),
    "TfLiteResizeBilinearParams": (2, 1), "TfLiteResizeNearestNeighborParams": (2, 1),
    "TfLiteShapeParams": (1, 1), "TfLiteSoftmaxParams": (4, 4),
    "TfLiteSplitParams": (4, 4), "TfLiteSplitVParams": (4, 4),
    "TfLiteSqueezeParams": (36, 4), "TfLiteStridedSliceParams": (24, 4),
    "TfLiteSubParams": (2, 1), "TfLiteTransposeConvParams": (16, 4),
    "TfLiteUnpackParams": (8, 4), "TfLiteL2NormParams": (1, 1),
    "TfLiteDepthToSpaceParams": (4, 4), "TfLiteSpaceToDepthParams": (4, 4),
    "OpDataConv": (56, 4), "OpDataFullyConnected": (48, 4), "OpDataPooling": (32, 4),
    "OpDataAdd": (60, 4), "OpDataSub": (52, 4), "OpDataMul": (36, 4),
    "OpDataConcatenation": (24, 4), "StridedSliceParams": (84, 4), "OpDataPad": (56, 4),
    "OpDataQuantizeReference": (32, 8), "DequantizeOpData": (32, 8),
    "SoftmaxParams": (56, 8), "OpDataReduce": (44, 4), "ReluOpData": (28, 4),
    "Relu6OpData": (8, 4), "HardSwishParams": (20, 4), "OpDataLogistic": (16, 4),
    "OpDataTanh": (16, 4), "LeakyReluOpData": (24, 4), "PreluParams": (28, 4),
    "OpDataTransposeConv": (72, 4), "OpDataDiv": (28, 4), "OpDataComparisons": (32, 4),
    "L2NormalizationParams": (4, 4), "OpDataMirrorPad": (20, 4),
    "QmcuConvData": (120, 4), "QmcuAddData": (80, 4), "QmcuPoolData": (112, 4),
    "QmcuRequantData": (44, 4), "QmcuStageData": (36, 4),
    # The CMSIS-NN kernels' own OpData (kernels/cmsis_nn/*.cc of 90b983c2, sizeof of the
    # anonymous-namespace struct with CMSIS-NN 4ab83cc3's headers): the reference struct
    # plus scratch indices (conv, depthwise: OpDataConv + int; pooling: OpDataPooling +
    # int; fully connected: OpDataFullyConnected + 2 ints, a pointer, 3 int32; softmax:
    # SoftmaxParams + 2 int32); add has its own 60-byte struct.
    "CmsisConvOpData": (60, 4), "CmsisDepthwiseConvOpData": (60, 4),
    "CmsisFullyConnectedOpData": (72, 4), "CmsisPoolingOpData": (36, 4),
    "CmsisAddOpData": (60, 4), "CmsisSoftmaxParams": (64, 8),
    "CmsisTransposeConvOpData": (76, 4),
}


@dataclass(frozen=True)
class Target:
    """A TFLite Micro build: its struct sizes and how its interpreter is created.

    recording: the interpreter allocates through `RecordingMicroAllocator` (the
    tflite-micro wheel's `print_allocations()` needs it); firmware uses the plain one.
    """

    name: str
    pointer_bytes: int
    recording: bool
    sizes: Mapping[str, tuple[int, int]]
    kernel_sets: tuple[str, ...] = (REFERENCE,)


TARGETS: Mapping[str, Target] = MappingProxyType({
    "cortex-m": Target(name="cortex-m", pointer_bytes=4, recording=False,
                       sizes=MappingProxyType(_CORTEX_M), kernel_sets=(REFERENCE, CMSIS_NN)),
    "host64": Target(name="host64", pointer_bytes=8, recording=True,
                     sizes=MappingProxyType(_HOST64)),
})
DEFAULT_TARGET = "cortex-m"


def target_named(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"--target {name!r}: expected one of {', '.join(TARGETS)}")
    return TARGETS[name]


# Builtin options struct each op's parser allocates (micro_mutable_op_resolver.h);
# ops not listed parse without allocating.
_PARAMS = {
    "ADD": "TfLiteAddParams", "ARG_MAX": "TfLiteArgMaxParams", "ARG_MIN": "TfLiteArgMinParams",
    "AVERAGE_POOL_2D": "TfLitePoolParams", "MAX_POOL_2D": "TfLitePoolParams",
    "L2_POOL_2D": "TfLitePoolParams", "CONCATENATION": "TfLiteConcatenationParams",
    "CONV_2D": "TfLiteConvParams", "DEPTHWISE_CONV_2D": "TfLiteDepthwiseConvParams",
    "DIV": "TfLiteDivParams", "FULLY_CONNECTED": "TfLiteFullyConnectedParams",
    "GATHER": "TfLiteGatherParams", "LEAKY_RELU": "TfLiteLeakyReluParams",
    "MIRROR_PAD": "TfLiteMirrorPaddingParams", "MUL": "TfLiteMulParams",
    "PACK": "TfLitePackParams", "MEAN": "TfLiteReducerParams", "SUM": "TfLiteReducerParams",
    "REDUCE_MAX": "TfLiteReducerParams", "REDUCE_MIN": "TfLiteReducerParams",
    "RESHAPE": "TfLiteReshapeParams", "RESIZE_BILINEAR": "TfLiteResizeBilinearParams",
    "RESIZE_NEAREST_NEIGHBOR": "TfLiteResizeNearestNeighborParams",
    "SHAPE": "TfLiteShapeParams", "SOFTMAX": "TfLiteSoftmaxParams",
    "SPLIT": "TfLiteSplitParams", "SPLIT_V": "TfLiteSplitVParams",
    "SQUEEZE": "TfLiteSqueezeParams", "STRIDED_SLICE": "TfLiteStridedSliceParams",
    "SUB": "TfLiteSubParams", "TRANSPOSE_CONV": "TfLiteTransposeConvParams",
    "UNPACK": "TfLiteUnpackParams", "L2_NORMALIZATION": "TfLiteL2NormParams",
    "DEPTH_TO_SPACE": "TfLiteDepthToSpaceParams", "SPACE_TO_DEPTH": "TfLiteSpaceToDepthParams",
}
# OpData each kernel's Init allocates; None: the kernel has no Init.
_INIT = {
    "CONV_2D": "OpDataConv", "DEPTHWISE_CONV_2D": "OpDataConv",
    "FULLY_CONNECTED": "OpDataFullyConnected", "AVERAGE_POOL_2D": "OpDataPooling",
    "MAX_POOL_2D": "OpDataPooling", "ADD": "OpDataAdd", "SUB": "OpDataSub", "MUL": "OpDataMul",
    "CONCATENATION": "OpDataConcatenation", "STRIDED_SLICE": "StridedSliceParams",
    "PAD": "OpDataPad", "PADV2": "OpDataPad", "QUANTIZE": "OpDataQuantizeReference",
    "DEQUANTIZE": "DequantizeOpData", "SOFTMAX": "SoftmaxParams", "MEAN": "OpDataReduce",
    "SUM": "OpDataReduce", "REDUCE_MAX": "OpDataReduce", "REDUCE_MIN": "OpDataReduce",
    "RELU": "ReluOpData", "RELU6": "Relu6OpData", "HARD_SWISH": "HardSwishParams",
    "LOGISTIC": "OpDataLogistic", "TANH": "OpDataTanh", "LEAKY_RELU": "LeakyReluOpData",
    "PRELU": "PreluParams", "TRANSPOSE_CONV": "OpDataTransposeConv", "DIV": "OpDataDiv",
    "EQUAL": "OpDataComparisons", "NOT_EQUAL": "OpDataComparisons",
    "GREATER": "OpDataComparisons", "GREATER_EQUAL": "OpDataComparisons",
    "LESS": "OpDataComparisons", "LESS_EQUAL": "OpDataComparisons",
    "L2_NORMALIZATION": "L2NormalizationParams", "MIRROR_PAD": "OpDataMirrorPad",
    "RESHAPE": None, "SQUEEZE": None, "EXPAND_DIMS": None, "TRANSPOSE": None, "SLICE": None,
    "SPLIT": None, "SPLIT_V": None, "PACK": None, "UNPACK": None, "MAXIMUM": None,
    "MINIMUM": None, "GATHER": None, "SHAPE": None, "ARG_MAX": None, "ARG_MIN": None,
    "RESIZE_NEAREST_NEIGHBOR": None, "FLOOR": None, "ROUND": None, "CAST": None,
    "ZEROS_LIKE": None, "FILL": None, "NEG": None, "DEPTH_TO_SPACE": None,
    "SPACE_TO_DEPTH": None,
}
_QMCU_INIT = {
    "QMCU_CONV_2D": "QmcuConvData", "QMCU_DEPTHWISE_CONV_2D": "QmcuConvData",
    "QMCU_ADD": "QmcuAddData", "QMCU_AVERAGE_POOL_2D": "QmcuPoolData",
    "QMCU_PACK": "QmcuRequantData", "QMCU_UNPACK": "QmcuRequantData",
    STAGE_OP: STAGE_OP,
}
# OpData the CMSIS-NN kernels' Init allocates instead; other ops use the reference kernel.
_CMSIS_NN_INIT = {
    "CONV_2D": "CmsisConvOpData", "DEPTHWISE_CONV_2D": "CmsisDepthwiseConvOpData",
    "FULLY_CONNECTED": "CmsisFullyConnectedOpData", "AVERAGE_POOL_2D": "CmsisPoolingOpData",
    "MAX_POOL_2D": "CmsisPoolingOpData", "ADD": "CmsisAddOpData",
    "SOFTMAX": "CmsisSoftmaxParams", "TRANSPOSE_CONV": "CmsisTransposeConvOpData",
}
_COPIES_OUTPUT_DIMS = frozenset({"GATHER", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"})


@dataclass(frozen=True)
class ArenaTail:
    """The tail for one target; `parts` split `bytes` by phase (alignment included)."""

    target: str
    bytes: int
    parts: Mapping[str, int]
    unmodelled_ops: tuple[str, ...] = ()

    @property
    def is_lower_bound(self) -> bool:
        return bool(self.unmodelled_ops)


class _TailCursor:
    """The tail pointer, counted as bytes below the (16-byte aligned) arena end."""

    def __init__(self) -> None:
        self.used = 0

    def allocate(self, size: int, alignment: int) -> None:
        end = self.used + size
        self.used = (end + alignment - 1) // alignment * alignment


def arena_tail(*, graph: Graph, target: Target, scratch_requests: int = 0,
               kernels: str = REFERENCE) -> ArenaTail:
    """The tail TFLM allocates for `graph` on `target` (see the module doc).

    scratch_requests: how many scratch buffers the kernels request (one handle each).
    kernels: the kernel set linked (one of `target.kernel_sets`).
    """
    if kernels not in target.kernel_sets:
        raise ConfigError(f"kernels {kernels!r} on target {target.name!r}: expected one of "
                          f"{', '.join(target.kernel_sets)}")
    sizes = target.sizes
    cursor = _TailCursor()
    parts: dict[str, int] = {}

    def phase(name: str, allocations: list[tuple[int, int]]) -> None:
        before = cursor.used
        for size, alignment in allocations:
            cursor.allocate(size, alignment)
        parts[name] = parts.get(name, 0) + cursor.used - before

    phase("allocator", _allocator_objects(target=target))
    phase("subgraphs", [sizes["MicroBuiltinDataAllocator"],
                        _array(sizes["SubgraphAllocations"], len(graph.subgraphs))])
    phase("eval_tensors", [_array(sizes["TfLiteEvalTensor"], len(sub.tensors))
                           for sub in graph.subgraphs])
    phase("nodes", [_array(sizes["NodeAndRegistration"], len(sub.operators))
                    for sub in graph.subgraphs])
    ops = [(sub, op) for sub in graph.subgraphs for op in sub.operators]
    phase("builtin_options", [sizes[_PARAMS[op.type]] for _, op in ops if op.type in _PARAMS])
    unmodelled = []
    init: list[tuple[int, int]] = []
    for index, (sub, op) in enumerate(ops):
        data = _init_struct(op=op, kernels=kernels)
        if data == STAGE_OP:
            init.append((_stage_op_data(op=op, sizes=sizes), ARENA_ALIGNMENT))
        elif data is _UNKNOWN:
            unmodelled.append(f"{op.type}")
        elif data is not None:
            init.append((sizes[data][0], ARENA_ALIGNMENT))
    phase("op_data", init)
    phase("op_data", [(size, ARENA_ALIGNMENT) for sub, op in ops
                      for size in _prepare_buffers(subgraph=sub, op=op)])
    if scratch_requests:
        phase("scratch_handles", [_array(sizes["ScratchBufferHandle"], scratch_requests)])
    phase("io_tensors", _io_tensors(graph=graph, target=target))
    return ArenaTail(target=target.name, bytes=cursor.used, parts=MappingProxyType(parts),
                     unmodelled_ops=tuple(sorted(set(unmodelled))))


def _array(struct: tuple[int, int], count: int) -> tuple[int, int]:
    return struct[0] * count, struct[1]


def _allocator_objects(*, target: Target) -> list[tuple[int, int]]:
    sizes = target.sizes
    if target.recording:
        return [sizes["RecordingSingleArenaBufferAllocator"], sizes["GreedyMemoryPlanner"],
                sizes["RecordingMicroAllocator"]]
    return [sizes["SingleArenaBufferAllocator"], sizes["GreedyMemoryPlanner"],
            sizes["MicroAllocator"]]


_UNKNOWN = object()


def _init_struct(*, op: Operator, kernels: str) -> str | None | object:
    if op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
        return _QMCU_INIT.get(op.opcode.custom or "", _UNKNOWN)
    if kernels == CMSIS_NN and op.type in _CMSIS_NN_INIT:
        return _CMSIS_NN_INIT[op.type]
    return _INIT.get(op.type, _UNKNOWN)


def _stage_op_data(*, op: Operator, sizes: Mapping[str, tuple[int, int]]) -> int:
    """QMCU_PATCH_STAGE's one persistent block: `qmcu_stage_op_data` + the int32 pool
    (tensors, patch parts, layers, per-layer multipliers and shifts: once per layer)."""
    options = decode_stage_options(data=op.custom_options or b"")
    return sizes["QmcuStageData"][0] + INT32_BYTES * stage_pool_words(options=options)


def _prepare_buffers(*, subgraph: Subgraph, op: Operator) -> list[int]:
    """Sizes of the persistent buffers the kernel's Prepare allocates."""
    kind = op.type
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
        filt = subgraph.tensors[op.inputs[1]]
        channels = filt.shape[3 if kind == "DEPTHWISE_CONV_2D" else 0]
        return [INT32_BYTES * channels] * 2
    if kind == "FULLY_CONNECTED":
        quant = subgraph.tensors[op.inputs[1]].quantization
        channels = len(quant.scale) if quant is not None else 0
        return [INT32_BYTES * channels] * 2 if channels > 1 else []
    if kind == "RESHAPE" or kind in _COPIES_OUTPUT_DIMS:
        out = subgraph.tensors[op.outputs[0]]
        copies = kind in _COPIES_OUTPUT_DIMS or -1 in out.shape
        return [INT32_BYTES * (1 + len(out.shape))] if copies else []
    return []


def _io_tensors(*, graph: Graph, target: Target) -> list[tuple[int, int]]:
    """Input and output pointer arrays, then one persistent TfLiteTensor each."""
    sizes = target.sizes
    main = graph.main
    allocations: list[tuple[int, int]] = []
    for keys in (main.inputs, main.outputs):
        allocations.append((target.pointer_bytes * len(keys), ARENA_ALIGNMENT))
        for key in keys:
            allocations.append(sizes["TfLiteTensor"])
            quant = main.tensors[key].quantization
            if quant is not None and quant.scale and quant.zero_point:
                allocations.append(sizes["TfLiteAffineQuantization"])
                allocations.append((INT32_BYTES * (1 + len(quant.scale)), 4))
    return allocations
