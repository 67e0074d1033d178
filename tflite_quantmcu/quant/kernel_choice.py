"""Which kernel runs each int8 layer (``--kernels``): a plan as data.

- ``builtin`` (default): int8 layers stay builtin ops (TFLite Micro's kernels, CMSIS-NN on
  Cortex-M); only layers that touch a sub-byte tensor are QMCU ops.
- ``qmcu``: every layer with a QMCU form (conv, depthwise, ADD, average pool) becomes its
  QMCU op, at 8 bits too (bit-exact with the builtin op).
- ``fastest``: a layer becomes its QMCU op where the latency table predicts fewer
  instructions for the 8-bit QMCU kernel than for the builtin one (CMSIS-NN).

The plan names the layers by their output tensor key; `apply_bitwidth_plan(custom_outputs=)`
applies it.
"""
from __future__ import annotations

from dataclasses import dataclass

from tflite_quantmcu.analysis.latency import LatencyTable, op_cost, qmcu_int8_cost
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.apply_bitwidths import qmcu_form_ops

KERNEL_CHOICES = ("builtin", "qmcu", "fastest")


@dataclass(frozen=True)
class KernelPlan:
    """The layers (output tensor keys) to run on QMCU kernels although they are int8."""

    mode: str
    outputs: frozenset[str]

    def to_dict(self) -> dict:
        return {"mode": self.mode, "qmcu_layers": sorted(self.outputs)}


def check_kernel_choice(mode: object) -> str:
    if mode not in KERNEL_CHOICES:
        raise ConfigError(f"--kernels: expected one of {', '.join(KERNEL_CHOICES)}, "
                          f"got {mode!r}")
    return mode


def plan_kernels(*, graph: Graph, mode: str, table: LatencyTable) -> KernelPlan:
    """The kernel plan of `mode` for `graph` (the graph the bit-width plan is applied to)."""
    check_kernel_choice(mode)
    if mode == "builtin":
        return KernelPlan(mode=mode, outputs=frozenset())
    sub = graph.main
    chosen = []
    for index in qmcu_form_ops(graph=graph):
        if mode == "fastest":
            theirs = op_cost(subgraph=sub, index=index, table=table).instructions
            ours = qmcu_int8_cost(subgraph=sub, index=index, table=table)
            if ours is None or ours >= theirs:
                continue
        chosen.append(sub.operators[index].outputs[0])
    return KernelPlan(mode=mode, outputs=frozenset(chosen))
