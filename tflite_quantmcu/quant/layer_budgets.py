"""What the layer-based seed policies (Rusci et al., RL) see of a graph, and the real
figures of a candidate plan.

Both papers quantize the layer-based network (no patches): ``LayerProblem`` lists its
int8 activation maps in execution order (graph input first) with the widths
``apply_bitwidths`` allows each, and its cuttable filters (``weight_cuts``) in op
order. :func:`measure` applies a plan and returns the figures the budgets are checked
on: TFLite Micro's whole arena (head + tail) on the target and the written file size
(flash), both of the graph the plan really produces (QMCU ops, packed tensors,
requant constants), so no estimate decides whether a budget holds.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tflite_quantmcu.analysis.costs import op_bitops
from tflite_quantmcu.analysis.memory import plan_memory
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.schema import TensorType
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.quant.apply_bitwidths import _View, apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.weight_cuts import weight_candidates


@dataclass(frozen=True)
class LayerProblem:
    """Activation maps (execution order) and cuttable filters (op order) of a graph."""

    act_keys: tuple[str, ...]
    act_widths: Mapping[str, tuple[int, ...]]
    weight_keys: tuple[str, ...]
    weight_widths: Mapping[str, tuple[int, ...]]
    weight_shapes: Mapping[str, tuple[int, ...]]


def layer_problem(*, graph: Graph) -> LayerProblem:
    sub = graph.main
    allowed = subbyte_candidates(graph=graph)
    keys = [k for k in sub.inputs if sub.tensors[k].dtype == TensorType.INT8]
    for op in sub.operators:
        for key in op.outputs:
            tensor = sub.tensors[key]
            if tensor.dtype == TensorType.INT8 and not tensor.is_constant and key not in keys:
                keys.append(key)
    view = _View(subgraph=sub)
    filters = weight_candidates(subgraph=sub, has_form=view.has_form)
    order = []
    for op in sub.operators:
        if len(op.inputs) > 1 and op.inputs[1] in filters and op.inputs[1] not in order:
            order.append(op.inputs[1])
    return LayerProblem(
        act_keys=tuple(keys),
        act_widths={k: tuple(b for b in (8, 4, 2) if b in allowed.get(k, (8,))) or (8,)
                    for k in keys},
        weight_keys=tuple(order), weight_widths={k: filters[k] for k in order},
        weight_shapes={k: tuple(sub.tensors[k].shape) for k in order})


@dataclass(frozen=True)
class Figures:
    """Real figures of the graph a plan produces; ``peak_keys``: the buffers live at the
    arena head's peak op."""

    arena_total: int
    arena_head: int
    flash_bytes: int
    bitops: int
    peak_keys: tuple[str, ...] = ()


def measure(*, graph: Graph, bits: Mapping[str, int], target: str) -> tuple[Graph, Figures]:
    """Apply ``bits`` (8-bit entries dropped) and measure the result."""
    plan = BitwidthPlan(policy="measure", options={},
                        bits={k: int(v) for k, v in bits.items() if v != 8})
    converted = apply_bitwidth_plan(graph=graph, plan=plan)
    memory = plan_memory(graph=converted, scratch=scratch_requests)
    arena = arena_bytes(graph=converted, target=target, memory=memory)
    sub = converted.main
    return converted, Figures(arena_total=arena.total, arena_head=arena.head,
                              flash_bytes=len(write_model_bytes(graph=converted)),
                              bitops=sum(op_bitops(subgraph=sub, op=op)
                                         for op in sub.operators),
                              peak_keys=tuple(b.key for b in memory.live_during_op(
                                  memory.peak_op())))


def fits(*, figures: Figures, sram_budget: int, flash_budget: int | None) -> bool:
    return figures.arena_total <= sram_budget and (
        flash_budget is None or figures.flash_bytes <= flash_budget)


def describe(*, figures: Figures, sram_budget: int, flash_budget: int | None) -> str:
    flash = "" if flash_budget is None else \
        f", flash {figures.flash_bytes} B (budget {flash_budget} B)"
    return (f"arena {figures.arena_total} B (budget {sram_budget} B){flash}")
