"""Kernel scratch that TFLite Micro's kernels request in the arena.

`scratch_requests`: the reference kernels, read from their Prepare functions
(tflite-micro, 2026). `cmsis_nn_scratch_requests`: a Cortex-M4 firmware linking TFLM's
CMSIS-NN kernels (kernels/cmsis_nn/*.cc of tflite-micro 90b983c2 with CMSIS-NN 4ab83cc3,
built with arm-none-eabi-gcc for a DSP core without MVE: `ARM_MATH_DSP`, no
`ARM_MATH_MVEI`, no `__ARMCC_VERSION`); ops without a CMSIS-NN kernel use the reference
kernel's requests. Each request is its own arena buffer living for that op only, and
costs one scratch-buffer handle in the tail. Both return None for ops whose scratch we
do not model (the analyzer then says so).

CMSIS-NN requests, per op (int8 activations; `*_get_buffer_size` of CMSIS-NN):
- CONV_2D: `arm_convolve_wrapper_s8_get_buffer_size_dsp`: 1x1 unpadded undilated
  convolutions 0 (the 1x1 fast path asks 4*C_in only under Arm Compiler 6), any other
  `2 * 2 * align4(KH * KW * C_in)` bytes (im2col of two output pixels as int16);
- DEPTHWISE_CONV_2D: `arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp` (int4 filters:
  the `_s4_` variant): with C_in == C_out, batch 1 and no dilation, 3x3 filters with
  padding <= 1 ask 0 (int8 only), others `2 * C_in * KH * KW`; every other shape 0;
- FULLY_CONNECTED (int8 filter): output rank > 2 and accum depth % 4 == 0 ask
  `8 * out_depth` when per-tensor quantized (fake per-channel multipliers); 0 otherwise;
- AVERAGE_POOL_2D: `arm_avgpool_s8_get_buffer_size_dsp`: `4 * C`; MAX_POOL_2D none;
- the reference kernels' int4 unpack buffers are not requested (CMSIS-NN reads int4).
"""
from __future__ import annotations

from tflite_quantmcu.analysis.qmcu_scratch import qmcu_scratch_requests
from tflite_quantmcu.ir import schema
from tflite_quantmcu.reference.windows import axis_window
from tflite_quantmcu.ir.graph import Operator, Subgraph

INT32_BYTES = 4
_INT4_FILTER_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
_UNMODELLED = frozenset({"ADD_N", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "CUSTOM"})


def scratch_requests(*, subgraph: Subgraph, op: Operator) -> list[int] | None:
    """Byte sizes of the scratch buffers TFLM requests for `op`, None if unknown."""
    kind = op.type
    if op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
        return qmcu_scratch_requests(op_type=kind, custom_options=op.custom_options or b"")
    if kind in _UNMODELLED:
        return None
    if kind in _INT4_FILTER_OPS:
        filt = subgraph.tensors[op.inputs[1]]
        return [filt.num_elements] if filt.dtype == schema.TensorType.INT4 else []
    if kind in ("MEAN", "SUM"):
        return _mean_or_sum(subgraph=subgraph, op=op)
    if kind in ("REDUCE_MAX", "REDUCE_MIN"):
        src = subgraph.tensors[op.inputs[0]]
        axis = subgraph.tensors[op.inputs[1]]
        return [INT32_BYTES * len(src.shape), INT32_BYTES * axis.num_elements]
    if kind == "TRANSPOSE_CONV":
        src = subgraph.tensors[op.inputs[2]]
        out = subgraph.tensors[op.outputs[0]]
        width = {schema.TensorType.INT8: 4, schema.TensorType.INT16: 8}.get(src.dtype, 0)
        return [out.num_elements * width] if width else []
    if kind == "MIRROR_PAD":
        rank = len(subgraph.tensors[op.inputs[0]].shape)
        return [INT32_BYTES * rank, INT32_BYTES * rank]
    return []


def _mean_or_sum(*, subgraph: Subgraph, op: Operator) -> list[int]:
    src = subgraph.tensors[op.inputs[0]]
    axis = subgraph.tensors[op.inputs[1]]
    out = subgraph.tensors[op.outputs[0]]
    sizes = []
    if src.dtype in (schema.TensorType.INT8, schema.TensorType.INT16):
        sizes.append(INT32_BYTES * out.num_elements)
    sizes += [INT32_BYTES * len(src.shape), INT32_BYTES * axis.num_elements]
    return sizes


_CMSIS_NN_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                           "AVERAGE_POOL_2D", "MAX_POOL_2D"})
# CMSIS-NN kernels whose requests differ from the reference ones and are not modelled.
_CMSIS_NN_UNMODELLED = frozenset({"TRANSPOSE_CONV", "BATCH_MATMUL", "SVDF",
                                  "UNIDIRECTIONAL_SEQUENCE_LSTM"})


def cmsis_nn_scratch_requests(*, subgraph: Subgraph, op: Operator) -> list[int] | None:
    """Byte sizes of the scratch buffers a CMSIS-NN (Cortex-M4, DSP) build requests for
    `op` (module doc), None if unknown."""
    kind = op.type
    if kind in _CMSIS_NN_UNMODELLED:
        return None
    if kind not in _CMSIS_NN_OPS or op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
        return scratch_requests(subgraph=subgraph, op=op)
    src = subgraph.tensors[op.inputs[0]]
    if src.dtype != schema.TensorType.INT8:
        return None
    if kind == "MAX_POOL_2D":
        return []
    if kind == "AVERAGE_POOL_2D":
        return [INT32_BYTES * src.shape[3]]
    filt = subgraph.tensors[op.inputs[1]]
    out = subgraph.tensors[op.outputs[0]]
    if kind == "FULLY_CONNECTED":
        return _cmsis_fully_connected(filt=filt, out=out)
    # absent options read as the flatbuffer defaults (SAME, dilation 1); strides of 0 as 1
    opts = op.options if op.options is not None else (
        schema.fb.Conv2DOptionsT() if kind == "CONV_2D" else schema.fb.DepthwiseConv2DOptionsT())
    _, height, width, in_channels = src.shape
    _, kh, kw, _ = filt.shape
    dil_h, dil_w = max(1, opts.dilationHFactor), max(1, opts.dilationWFactor)
    rows = axis_window(padding=opts.padding, size=height, kernel=kh,
                       stride=max(1, opts.strideH), dilation=dil_h)
    cols = axis_window(padding=opts.padding, size=width, kernel=kw,
                       stride=max(1, opts.strideW), dilation=dil_w)
    undilated = dil_h == 1 and dil_w == 1
    if kind == "CONV_2D":
        unpadded = rows.pad_before == 0 and cols.pad_before == 0
        if kh == kw == 1 and unpadded and undilated and in_channels == filt.shape[3]:
            return []
        cols_bytes = kh * kw * in_channels
        return [2 * 2 * ((cols_bytes + 3) // 4 * 4)]
    # DEPTHWISE_CONV_2D
    if in_channels != out.shape[3] or src.shape[0] != 1 or not undilated:
        return []
    small_pad = rows.pad_before <= 1 and cols.pad_before <= 1
    if kh == kw == 3 and small_pad and filt.dtype == schema.TensorType.INT8:
        return []
    return [2 * in_channels * kh * kw]


def _cmsis_fully_connected(*, filt, out) -> list[int]:
    if filt.dtype != schema.TensorType.INT8 or len(out.shape) <= 2 or filt.shape[-1] % 4:
        return []
    quant = filt.quantization
    per_channel = quant is not None and len(quant.scale) > 1
    return [] if per_channel else [2 * INT32_BYTES * out.shape[-1]]
