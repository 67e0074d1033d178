"""Per-op compute: MACs and BitOPs.

MACs count the multiply-accumulates of ops with weights (CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV, BATCH_MATMUL, and their
`QMCU_*` custom forms). Element-wise ops, pooling, PAD and reshapes count 0.
BitOPs = MACs x weight bits x input-activation bits, QuantMCU's metric, for
any per-tensor bit widths.
"""
from __future__ import annotations

from collections.abc import Mapping

from tflite_quantmcu.ir.graph import Operator, Subgraph, Tensor

CONV_TYPES = frozenset({"CONV_2D", "QMCU_CONV_2D"})
DEPTHWISE_TYPES = frozenset({"DEPTHWISE_CONV_2D", "QMCU_DEPTHWISE_CONV_2D"})


def op_macs(*, subgraph: Subgraph, op: Operator) -> int:
    """Multiply-accumulates of one op (0 for ops without weights)."""
    if op.type in CONV_TYPES:
        return _conv_macs(subgraph=subgraph, op=op)
    if op.type in DEPTHWISE_TYPES:
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
