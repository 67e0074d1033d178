"""Per-op compute: MACs and BitOPs.

MACs count the multiply-accumulates of ops with weights (CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV, BATCH_MATMUL, and their
`QMCU_*` custom forms, and the layers inside a `QMCU_PATCH_STAGE` op, per patch). Element-wise ops, pooling, PAD and reshapes count 0.
BitOPs = MACs x weight bits x input-activation bits, QuantMCU's metric, for
any per-tensor bit widths. `QMCU_*` ops store packed tensors, so their logical
shapes and bit widths are read from the op's options.
"""
from __future__ import annotations

from collections.abc import Mapping

from tflite_quantmcu.ir.graph import Operator, Subgraph, Tensor
from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.qmcu_stage_options import decode_stage_options

QMCU_WEIGHT_OPS = frozenset({"QMCU_CONV_2D", "QMCU_DEPTHWISE_CONV_2D"})
QMCU_STAGE_OP = "QMCU_PATCH_STAGE"


def op_macs(*, subgraph: Subgraph, op: Operator) -> int:
    """Multiply-accumulates of one op (0 for ops without weights)."""
    if op.type == QMCU_STAGE_OP:
        return sum(macs for macs, _ in _stage_layer_costs(op=op))
    if op.type in QMCU_WEIGHT_OPS:
        return _qmcu_macs(op=op)
    if op.type == "CONV_2D":
        return _conv_macs(subgraph=subgraph, op=op)
    if op.type == "DEPTHWISE_CONV_2D":
        filt = _shape(subgraph, op.inputs[1])
        return _elements(_shape(subgraph, op.outputs[0])) * filt[1] * filt[2]
    if op.type == "FULLY_CONNECTED":
        filt = _shape(subgraph, op.inputs[1])
        out = _shape(subgraph, op.outputs[0])
        return _elements(out) * filt[-1]
    if op.type == "TRANSPOSE_CONV":
        filt = _shape(subgraph, op.inputs[1])
        src = _shape(subgraph, op.inputs[2])
        return _elements(src) * filt[0] * filt[1] * filt[2]
    if op.type == "BATCH_MATMUL":
        lhs = _shape(subgraph, op.inputs[0])
        rhs = _shape(subgraph, op.inputs[1])
        return _elements(lhs) * rhs[-1]
    return 0


def _conv_macs(*, subgraph: Subgraph, op: Operator) -> int:
    filt = _shape(subgraph, op.inputs[1])
    return _elements(_shape(subgraph, op.outputs[0])) * filt[1] * filt[2] * filt[3]


def _qmcu_macs(*, op: Operator) -> int:
    """QMCU tensors are packed, so the logical shapes come from the op's options."""
    opts = decode_options(op=op.type, data=op.custom_options or b"")
    filt = opts.filter_shape
    per_output = filt[1] * filt[2] * (filt[3] if op.type == "QMCU_CONV_2D" else 1)
    return _elements(opts.out_shape) * per_output


def _stage_layer_costs(*, op: Operator) -> list[tuple[int, int]]:
    """(MACs, input bits) of each conv/depthwise layer of a QMCU_PATCH_STAGE op per patch
    (every patch computes its own output region, halos included, with its input at the
    patch's own width)."""
    opts = decode_stage_options(data=op.custom_options or b"")
    cols = opts.grid[1]
    costs = []
    for layer in opts.layers:
        if layer.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        src, out = opts.tensors[layer.inputs[0]], opts.tensors[layer.output]
        per_output = layer.kernel[0] * layer.kernel[1] * \
            (src.shape[3] if layer.kind == "CONV_2D" else 1)
        for i, (r0, r1) in enumerate(out.rows):
            for j, (c0, c1) in enumerate(out.cols):
                costs.append(((r1 - r0) * (c1 - c0) * out.shape[3] * per_output,
                              src.bits_at(i * cols + j)))
    return costs


def weight_bits(*, subgraph: Subgraph, op: Operator) -> int:
    """Bits of the op's weight tensor (input 1), 8 if it has none."""
    if len(op.inputs) < 2 or op.inputs[1] is None:
        return 8
    return subgraph.tensors[op.inputs[1]].bits


def op_bitops(*, subgraph: Subgraph, op: Operator,
              bitwidths: Mapping[str, int] | None = None) -> int:
    """MACs x weight bits x bits of the activation input (input 0)."""
    macs = op_macs(subgraph=subgraph, op=op)
    if macs == 0:
        return 0
    if op.type == QMCU_STAGE_OP:   # int8 weights; each layer's input at its own width
        return sum(macs * 8 * in_bits for macs, in_bits in _stage_layer_costs(op=op))
    if op.type in QMCU_WEIGHT_OPS:
        opts = decode_options(op=op.type, data=op.custom_options or b"")
        return macs * opts.w_bits * opts.in_bits
    bitwidths = bitwidths or {}
    act_key = op.inputs[0]
    act_bits = bitwidths.get(act_key, activation_bits(subgraph.tensors[act_key]))
    w_key = op.inputs[1]
    w_bits = bitwidths.get(w_key, weight_bits(subgraph=subgraph, op=op))
    return macs * w_bits * act_bits


def activation_bits(tensor: Tensor) -> int:
    """A tensor's bit width as stored (sub-byte plans pass `bitwidths` instead)."""
    return tensor.bits


def _shape(subgraph: Subgraph, key: str) -> tuple[int, ...]:
    return subgraph.tensors[key].shape


def _elements(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= max(dim, 0)
    return total
