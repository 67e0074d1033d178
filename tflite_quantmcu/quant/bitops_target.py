"""A plan for a requested BitOPs ratio: lower feature-map widths until BitOPs fall enough.

    plan = plan_for_bitops_ratio(patched=patched_graph, start=vdqs_plan, ratio=2.2)

BitOPs (``analysis.costs.op_bitops``) are MACs x weight bits x bits of the op's input 0,
so lowering a map from b to b' bits saves ``(b - b') x sum(MACs x weight bits)`` over the
ops that read it as input 0. Starting from `start` (e.g. the VDQS plan; its other keys and
ranges are kept), the greedy step lowers, among the maps whose next narrower width the
packing rule allows (``subbyte_candidates``: 8 -> 4 -> 2), the one that saves the most
BitOPs (ties: the first key in sorted order), until ``reference / BitOPs >= ratio``, where
`reference` is the patched int8 graph's BitOPs. Widths only go down, so every memory bound
the start plan met still holds. A ratio the candidates cannot reach is a ConfigError that
names the best ratio reachable. Meant as the starting point of quantization-aware
fine-tuning (``tflite_quantmcu.keras.finetune``), where accuracy is recovered by training;
post-training, the same plan loses more (docs/qat.md).
"""
from __future__ import annotations

from tflite_quantmcu.analysis.costs import op_bitops, op_macs, weight_bits
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.apply_bitwidths import subbyte_candidates
from tflite_quantmcu.quant.plan import BitwidthPlan

NARROWER = {8: 4, 4: 2}


def plan_bitops(*, graph: Graph, bits) -> int:
    """BitOPs of the main subgraph with the plan's activation widths."""
    sub = graph.main
    return sum(op_bitops(subgraph=sub, op=op, bitwidths=bits) for op in sub.operators)


def plan_for_bitops_ratio(*, patched: Graph, start: BitwidthPlan | None, ratio: float) -> BitwidthPlan:
    """The plan of the module docstring (policy of `start`, option ``bitops_ratio``)."""
    if not ratio >= 1.0:
        raise ConfigError(f"bitops ratio: expected a number >= 1, got {ratio!r}")
    sub = patched.main
    reference = plan_bitops(graph=patched, bits={})
    bits = {} if start is None else dict(start.bits)
    weight = _read_weights(graph=patched)
    candidates = subbyte_candidates(graph=patched)
    current = plan_bitops(graph=patched, bits=bits)
    while reference / current < ratio:
        best = None
        for key in sorted(weight):
            width = bits.get(key, 8)
            narrower = NARROWER.get(width)
            if narrower is None or narrower not in candidates.get(key, ()):
                continue
            saving = (width - narrower) * weight[key]
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, key, narrower)
        if best is None:
            raise ConfigError(f"bitops ratio {ratio:g} cannot be reached: every map that a "
                              f"MAC op reads is at its narrowest width, ratio "
                              f"{reference / current:.3f}")
        bits[best[1]] = best[2]
        current -= best[0]
    assert current == plan_bitops(graph=patched, bits=bits), "incremental BitOPs drifted"
    ranges = {} if start is None else {k: r for k, r in start.ranges.items()
                                      if bits.get(k) == r.bits}
    options = {} if start is None else dict(start.options)
    return BitwidthPlan(policy="bitops-target" if start is None else start.policy,
                        options={**options, "bitops_ratio": ratio}, bits=bits, ranges=ranges,
                        branches=() if start is None else start.branches,
                        weights=None if start is None else start.weights)


def _read_weights(*, graph: Graph) -> dict[str, int]:
    """Map key -> sum of MACs x weight bits over the ops reading it as input 0."""
    sub = graph.main
    out: dict[str, int] = {}
    for op in sub.operators:
        macs = op_macs(subgraph=sub, op=op)
        if macs and op.inputs and op.inputs[0] is not None and len(op.inputs) > 1:
            out[op.inputs[0]] = out.get(op.inputs[0], 0) + macs * weight_bits(subgraph=sub,
                                                                               op=op)
    return out
