"""``--policy rusci``: the rules of ``rusci`` on a whole (layer-based) graph, with the
real budgets.

1. **Activations** (rule [M2], ``rusci.cut_activations``): one branch = the graph's
   int8 activation maps in execution order (``layer_budgets.layer_problem``), each
   map's widths those ``apply_bitwidths`` allows; M = the SRAM budget minus the
   arena's tail and whatever else is live besides the two maps of a node is not known
   to the pair rule, so M starts at ``budget - tail(int8 graph)`` and, while the
   converted graph's whole arena (head + tail) still exceeds the budget, M is lowered
   by the excess and the rule re-run (at most ``MAX_ROUNDS``). The histograms VDQS
   would need are not used by Rusci's rule (a flat one is passed).
2. **Weights** (rule [M1], ``rusci.cut_weights``), only with ``--flash``: weights =
   the cuttable filters (``weight_cuts``) in op order; ``flash_other_bytes`` = the file
   size minus the filters' bytes, first of the activation-cut graph (every filter at
   8 bits); after
   each run of the rule the written file is measured and ``flash_other_bytes`` re-read
   from it (cut convs become QMCU ops and bring their requant constants), at least
   raised by the excess, until the file fits (at most ``MAX_ROUNDS``).

:class:`BudgetError` when a rule cannot fit or the rounds run out; it names the best
figures reached.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.errors import BudgetError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.layer_budgets import (Figures, LayerProblem, describe, layer_problem,
                                                 measure)
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.rusci import (RusciOptions, WeightSpec, cut_activations,
                                         cut_weights)
from tflite_quantmcu.quant.vdqs import NUM_CODES, BranchSpec, FeatureMapSpec

MAX_ROUNDS = 8


@dataclass(frozen=True)
class SeedPolicyResult:
    """A layer-based policy's plan, its real figures and how long the search took."""

    plan: BitwidthPlan
    figures: Figures
    search_time_s: float
    rounds: int
    details: dict

    def to_dict(self) -> dict:
        return {"policy": self.plan.policy, "rounds": self.rounds,
                "search_time_s": self.search_time_s,
                "figures": {"arena_total": self.figures.arena_total,
                            "arena_head": self.figures.arena_head,
                            "flash_bytes": self.figures.flash_bytes,
                            "bitops": self.figures.bitops}, **self.details}


def _branch(*, problem: LayerProblem, graph: Graph, limit: int) -> BranchSpec:
    sub = graph.main
    maps = tuple(FeatureMapSpec(key=k, shape=tuple(sub.tensors[k].shape),
                                histogram=(1,) * NUM_CODES, scale=1.0, zero_point=0,
                                candidates=problem.act_widths[k])
                 for k in problem.act_keys)
    return BranchSpec(name="layers", feature_maps=maps, memory_limit=max(int(limit), 1))


def _activation_bits(*, graph: Graph, problem: LayerProblem, sram_budget: int, target: str,
                     options: RusciOptions):
    tail = arena_bytes(graph=graph, target=target).tail
    limit = sram_budget - tail
    best = None
    for rounds in range(1, MAX_ROUNDS + 1):
        try:
            record = cut_activations(branch=_branch(problem=problem, graph=graph, limit=limit),
                                     options=options)
        except BudgetError as err:
            if best is None:
                _, best = measure(graph=graph, bits={k: min(problem.act_widths[k])
                                                     for k in problem.act_keys}, target=target)
            reached = "; best reached: " + describe(figures=best, sram_budget=sram_budget,
                                                    flash_budget=None)
            raise BudgetError(f"--policy rusci: SRAM budget {sram_budget} B cannot be met: "
                              f"{err}{reached}") from err
        bits = dict(zip(record.keys, record.final_bits))
        _, figures = measure(graph=graph, bits=bits, target=target)
        if best is None or figures.arena_total < best.arena_total:
            best = figures
        if figures.arena_total <= sram_budget:
            return record, bits, rounds
        limit -= figures.arena_total - sram_budget
    raise BudgetError(f"--policy rusci: SRAM budget {sram_budget} B not met after "
                      f"{MAX_ROUNDS} rounds of rule [M2]; best reached: "
                      f"{describe(figures=best, sram_budget=sram_budget, flash_budget=None)}")


def _weight_bits(*, graph: Graph, problem: LayerProblem, act_bits: dict, flash_budget: int,
                 target: str, options: RusciOptions):
    specs = tuple(WeightSpec(key=k, shape=problem.weight_shapes[k],
                             candidates=problem.weight_widths[k]) for k in problem.weight_keys)
    _, start = measure(graph=graph, bits=act_bits, target=target)
    other = start.flash_bytes - sum(s.bytes_at(8) for s in specs)
    limit = flash_budget
    best = None
    for rounds in range(1, MAX_ROUNDS + 1):
        try:
            record = cut_weights(weights=specs, flash_limit=max(limit, 1),
                                 flash_other_bytes=max(other, 0), options=options)
        except BudgetError as err:
            if best is None:
                _, best = measure(graph=graph, bits={**act_bits, **{
                    s.key: min(s.candidates) for s in specs}}, target=target)
            reached = f"; best reached: flash {best.flash_bytes} B"
            raise BudgetError(f"--policy rusci: flash budget {flash_budget} B cannot be met: "
                              f"{err}{reached}") from err
        bits = dict(zip(record.keys, record.final_bits))
        _, figures = measure(graph=graph, bits={**act_bits, **bits}, target=target)
        if best is None or figures.flash_bytes < best.flash_bytes:
            best = figures
        if figures.flash_bytes <= flash_budget:
            return record, bits, rounds
        measured_other = figures.flash_bytes - sum(
            s.bytes_at(bits[s.key]) for s in specs)
        other = max(measured_other, other + figures.flash_bytes - flash_budget)
    raise BudgetError(f"--policy rusci: flash budget {flash_budget} B not met after "
                      f"{MAX_ROUNDS} rounds of rule [M1]; best reached: flash "
                      f"{best.flash_bytes} B")


def search_rusci(*, graph: Graph, sram_budget: int, flash_budget: int | None, target: str,
                 options: RusciOptions = RusciOptions()) -> SeedPolicyResult:
    """Rusci et al.'s bit widths for ``graph`` under the real budgets (module doc)."""
    start = time.perf_counter()
    problem = layer_problem(graph=graph)
    record, act_bits, act_rounds = _activation_bits(graph=graph, problem=problem,
                                                    sram_budget=sram_budget, target=target,
                                                    options=options)
    weight_record, w_bits, w_rounds = None, {}, 0
    if flash_budget is not None:
        weight_record, w_bits, w_rounds = _weight_bits(
            graph=graph, problem=problem, act_bits=act_bits, flash_budget=flash_budget,
            target=target, options=options)
    bits = {**act_bits, **w_bits}
    _, figures = measure(graph=graph, bits=bits, target=target)
    plan = BitwidthPlan(policy="rusci", options=options.to_dict(),
                        bits={k: v for k, v in bits.items() if v != 8 or k in w_bits},
                        branches=(record,), weights=weight_record)
    return SeedPolicyResult(plan=plan, figures=figures,
                            search_time_s=time.perf_counter() - start,
                            rounds=act_rounds + w_rounds,
                            details={"activation_rounds": act_rounds, "weight_rounds": w_rounds})
