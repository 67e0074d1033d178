"""Predicted Cortex-M4 instructions a sub-byte feature map saves: the measure VDQS and the
accuracy guard weigh under ``--objective min-latency``, in place of BitOPs.

    savings = instruction_savings(graph=patched, table=load_latency_table(), kernels="builtin")
    savings.saved(key="p0_0/3", bits=4)    # > 0: fewer instructions; < 0: more
    savings.total(keys=branch_keys)        # int8 instructions of the ops touching those maps

``saved(key, b)`` is exact for the latency model: the predicted instructions
(:func:`latency.predict_instructions`) of the graph converted with every map at 8 bits, minus
those of the graph converted with ``key`` alone at b bits (:func:`apply_bitwidth_plan`: the
map's producer and readers become QMCU ops, a zero-point PAD in front of a QMCU conv is
folded into it). Both conversions follow the kernel choice (``--kernels``): with ``builtin``
the int8 layers run TFLite Micro's builtin kernels (CMSIS-NN on Cortex-M), so a map at b bits
also trades CMSIS-NN for the QMCU kernel on its neighbours; with ``qmcu``/``fastest`` they
already run QMCU kernels where chosen, and b bits saves only what the b-bit kernel saves over
the 8-bit one (often a loss: docs/cmsis_nn_comparison.md). The measure is per map, the others
at 8 bits: where two sub-byte maps touch one op, the op's line depends on both widths, so
savings are not exactly additive (the converted plan's own prediction is).

``total(keys)``: the int8 instructions of the ops that produce or read those maps (through a
PAD), each once: the norm of VDQS's Phi for a branch, as the branch's 8-bit BitOPs are for the
BitOPs measure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tflite_quantmcu.analysis.latency import (LatencyTable, op_cost, predict_instructions,
                                              qmcu_int8_cost)
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan
from tflite_quantmcu.quant.kernel_choice import check_kernel_choice, plan_kernels
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.ranges import full_range


@dataclass(frozen=True)
class InstructionSavings:
    """The savings model of one (patched, int8) graph under one kernel choice."""

    graph: Graph
    table: LatencyTable
    kernels: str
    custom_outputs: frozenset[str]
    int8_total: int
    int8_costs: tuple[float, ...]
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def saved(self, *, key: str, bits: int) -> float:
        """Predicted instructions saved when ``key`` alone is at ``bits`` (module doc)."""
        tensors = self.graph.main.tensors
        if key not in tensors:
            raise ConfigError(f"instruction savings: no tensor {key!r} in the graph")
        if bits == 8:
            return 0.0
        if (key, bits) not in self._cache:
            quant = tensors[key].quantization
            plan = BitwidthPlan(policy="latency-probe", options={}, bits={key: int(bits)},
                                ranges={key: full_range(scale8=quant.scale[0],
                                                        zero_point8=quant.zero_point[0],
                                                        bits=int(bits))})
            converted = apply_bitwidth_plan(graph=self.graph, plan=plan,
                                            custom_outputs=self.custom_outputs)
            self._cache[(key, bits)] = float(
                self.int8_total - predict_instructions(graph=converted, table=self.table).total)
        return self._cache[(key, bits)]

    def total(self, *, keys) -> float:
        """Int8 instructions of the distinct ops producing or reading ``keys`` (module doc)."""
        sub = self.graph.main
        producers, readers = sub.producers(), sub.consumers()
        ops = set()
        for key in keys:
            direct = set(readers.get(key, ()))
            ops |= direct
            ops |= {j for i in direct if sub.operators[i].type == "PAD"
                    for j in readers.get(sub.operators[i].outputs[0], ())}
            if key in producers:
                ops.add(producers[key])
        return float(sum(self.int8_costs[i] for i in ops))


def instruction_savings(*, graph: Graph, table: LatencyTable,
                        kernels: str = "builtin") -> InstructionSavings:
    """The savings model of ``graph`` (int8, builtin ops) under the kernel choice."""
    check_kernel_choice(kernels)
    custom = plan_kernels(graph=graph, mode=kernels, table=table).outputs
    int8 = apply_bitwidth_plan(graph=graph, plan=BitwidthPlan(policy="latency-probe",
                                                              options={}, bits={}),
                               custom_outputs=custom)
    sub = graph.main
    costs = tuple(_int8_cost(graph=graph, index=i, table=table, custom=custom)
                  for i in range(len(sub.operators)))
    return InstructionSavings(graph=graph, table=table, kernels=kernels, custom_outputs=custom,
                              int8_total=predict_instructions(graph=int8, table=table).total,
                              int8_costs=costs)


def _int8_cost(*, graph: Graph, index: int, table: LatencyTable, custom: frozenset[str]) -> float:
    sub = graph.main
    if sub.operators[index].outputs and sub.operators[index].outputs[0] in custom:
        ours = qmcu_int8_cost(subgraph=sub, index=index, table=table)
        if ours is not None:
            return ours
    return op_cost(subgraph=sub, index=index, table=table).instructions


__all__ = ["InstructionSavings", "instruction_savings"]
