"""Which patch plan QuantMCU should start from when no int8 patch plan fits the budget.

    chosen = choose_patch_plan(graph=g, first=plan, calibration=fit_arrays,
                               quantmcu=QuantMCUOptions(), fit=FitOptions(budget=B))
    chosen.plan        # the PatchPlan the rest of the pipeline uses
    chosen.screened    # every candidate with its figures (report data)

The planner's builtin candidates (:func:`candidate_plans`: a few grids per split, ranked by
an estimated int8 total, at most ``MAX_CANDIDATES``) are screened for sub-byte memory (a plan whose int8 total is worse can be the better sub-byte plan: QMCU ops
carry less op data than builtin ones, and VDPC leaves other branches at 8 bits):

1. **VDPC** per candidate: the stage's first feature map (the map VDPC classifies by default,
   ``classify_on="first"``) is computed once on the calibration samples and its statistics are
   collected with each candidate's patch regions; the candidate's outlier-class branches keep
   8 bits (``classify_on="any"`` needs every stage map: the screen still uses the first).
2. **Quick total**: every eligible map outside the outlier branches at 4 bits; the
   ``MAX_SCREENED`` lowest go on to
3. **Memory path** (:func:`memory_fit.memory_path`) from all-int8, every eligible map at the
   peak lowered one step at a time, exact totals; a 2-bit step costs 4 units and a 4-bit step 1
   (measured: one 2-bit map costs 2-11 pt of top-1, a 4-bit one up to 1.8 pt), so the path
   prefers 4 bits; it stops at the first total within the budget. Its cost to fit is the sum of
   the units of its moves; a path that does not fit ends at the smallest total the candidate can
   reach (``lowest``).

**Forms** (``forms``): the builtin form's candidates as above; the stage-op form's
(:func:`_stage_op_plans`: one ``QMCU_PATCH_STAGE`` op, op data once per layer, one scratch
slot per stage map) per split every grid up to 4x4 within the caps, since there more patches
shrink the scratch at about the same int8 total. Both forms' candidates meet in one quick-total
ranking; where memory binds the converter screens both unless ``--patch-form`` names one.

The candidate that fits with the smallest cost wins (then fewer maps lowered, fewer BitOPs of
its int8 form is the same model: fewer extra MACs, then lower total). If none fits, the one
with the lowest ``lowest`` is taken (the memory fit then fails with the figures). The full search
(statistics of every map, range selection, VDQS, guard, :mod:`memory_fit` with simulated costs
and the exact held-out drop) runs on the chosen candidate only: simulating every candidate's
maps would multiply the conversion time by the number of candidates.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.ir.graph import Graph, Subgraph
from tflite_quantmcu.patches.plan import PatchOptions, PatchPlan
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.patches.stage import make_stage
from tflite_quantmcu.patches.stage_op import stage_op_problem
from tflite_quantmcu.quant.apply_bitwidths import subbyte_candidates
from tflite_quantmcu.quant.memory_fit import (FitOptions, FitProblem, convert_plan,
                                              memory_path)
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import QuantMCUOptions, stage_map_regions
from tflite_quantmcu.quant.ranges import full_range
from tflite_quantmcu.quant.statistics import StatisticsCollector
from tflite_quantmcu.quant.vdpc import classify_patches
from tflite_quantmcu.reference.executor import run_graph

MAX_CANDIDATES = 24
MAX_SCREENED = 3
GRIDS_PER_SPLIT = 3
TRIES_PER_SPLIT = 16   # grids planned per split to find those within the caps
MIN_STAGE_OPS = 2   # a VDQS branch needs two feature maps
SPLIT_SLACK = 2.0
STAGE_OP_MAX_GRID = 4   # stage-op grids tried per axis (16 patches; the scratch shrinks little
#                         beyond, the MACs keep growing)
STEP_UNITS = {8: 0.0, 4: 1.0, 2: 4.0}


@dataclass(frozen=True)
class Screened:
    """One candidate's screen: its plan, outlier branches, int8 total, the lowest total its
    path reached, the moves and step units it needed to fit (None: it does not fit)."""

    plan: PatchPlan
    outliers: tuple[str, ...]
    int8_total: int
    lowest: int
    moves_to_fit: int | None
    cost_to_fit: float | None

    def to_dict(self) -> dict:
        return {"split_op": self.plan.split_op, "grid": list(self.plan.grid),
                "in_place": self.plan.in_place, "outlier_branches": list(self.outliers),
                "int8_total": self.int8_total, "lowest_total": self.lowest,
                "moves_to_fit": self.moves_to_fit, "cost_to_fit": self.cost_to_fit,
                "mac_overhead": self.plan.mac_overhead}


@dataclass(frozen=True)
class JointChoice:
    """The chosen plan, the screened candidates, and patch-int8's lowest total over every
    candidate of every form searched (and the planner's plans given)."""

    plan: PatchPlan
    screened: tuple[Screened, ...]
    patch_int8_total: int | None = None


def candidate_plans(*, graph: Graph, first: PatchPlan, options: PatchOptions,
                    limit: int = MAX_CANDIDATES, form: str = "builtin") -> list[PatchPlan]:
    """Candidate plans of one patch form (``form``: builtin or stage-op).

    Builtin: the planner's candidates as plans, ranked by an estimated int8 total: the candidate's
    head (exact or estimated) plus the tail its per-patch ops add (the model's mean tail per op
    times patches times stage ops); per split the ``GRIDS_PER_SPLIT`` best, splits whose best
    is within ``SPLIT_SLACK`` times the overall best, at most ``limit`` in all; stages of at
    least ``MIN_STAGE_OPS`` ops (a VDQS branch needs two maps); within the options' file-growth
    and MAC-overhead caps (per split the best grids whose plans keep them).
    Stage-op: :func:`_stage_op_plans`."""
    if form == "stage-op":
        return _stage_op_plans(graph=graph, first=first, options=options, limit=limit)
    per_op = (first.layer_based_total - first.layer_based_peak) / max(
        1, len(graph.main.operators))
    by_split: dict[int, dict[tuple[int, int], tuple[float, bool]]] = {}
    for c in first.candidates:
        if c.form != "builtin" or c.split_op < MIN_STAGE_OPS - 1 or not _may_fit_caps(
                candidate=c, options=options):
            continue
        estimate = c.peak_bytes + c.grid[0] * c.grid[1] * (c.split_op + 1) * per_op
        grids = by_split.setdefault(c.split_op, {})
        grid = tuple(c.grid)
        grids[grid] = min(grids.get(grid, (estimate, c.in_place)), (estimate, c.in_place))
    if not by_split:
        return []
    best = min(e for grids in by_split.values() for e, _ in grids.values())
    ranked = []
    for split, grids in by_split.items():
        top = sorted((e, grid, in_place) for grid, (e, in_place) in grids.items())
        if top[0][0] <= SPLIT_SLACK * best:
            ranked += _within_caps_per_split(graph=graph, options=options, split=split, top=top)
    return [p for _, p in sorted(ranked, key=lambda r: (r[0], r[1].split_op,
                                                         tuple(r[1].grid)))[:limit]]


def _stage_op_plans(*, graph: Graph, first: PatchPlan, options: PatchOptions,
                    limit: int) -> list[PatchPlan]:
    """Stage-op plans: every (split, grid) the planner scored (its builtin candidate records
    hold every layout; the stage-op form keeps only a few exact ones) whose stage has a
    ``QMCU_PATCH_STAGE`` form, grids up to ``STAGE_OP_MAX_GRID`` per axis, planned exactly
    in that form and kept within the user's caps. Unlike the builtin form, more patches barely
    grow the file or the int8 total (one op, one scratch slot per map), but they shrink the
    stage's scratch once the maps after the stage are sub-byte; so per split every grid is kept,
    ranked by int8 total; splits whose best is within ``SPLIT_SLACK`` times the overall best,
    at most ``limit`` in all."""
    sub = graph.main
    layouts: dict[int, set[tuple[int, int]]] = {}
    for c in first.candidates:
        if (c.split_op >= MIN_STAGE_OPS - 1 and max(c.grid) <= STAGE_OP_MAX_GRID
                and c.grid[0] * c.grid[1] > 1 and (
                    options.max_mac_overhead is None
                    or c.mac_overhead <= options.max_mac_overhead)):
            layouts.setdefault(c.split_op, set()).add(tuple(c.grid))
    per_split: dict[int, list[tuple[int, PatchPlan]]] = {}
    for split, grids in sorted(layouts.items()):
        if stage_op_problem(subgraph=sub, stage=make_stage(subgraph=sub, split=split)):
            continue
        for grid in sorted(grids):
            plan = plan_patches(graph=graph, options=dataclasses.replace(
                options, sram_budget=None, split=split, grid=grid, in_place=None,
                form="stage-op"))
            if plan.is_patched and plan.form == "stage-op" and _within_caps(plan=plan,
                                                                          options=options):
                per_split.setdefault(split, []).append((plan.total_bytes, plan))
    if not per_split:
        return []
    best = min(t for plans in per_split.values() for t, _ in plans)
    ranked = [r for plans in per_split.values() if min(t for t, _ in plans) <= SPLIT_SLACK * best
              for r in plans]
    return [p for _, p in sorted(ranked, key=lambda r: (r[0], r[1].split_op,
                                                         tuple(r[1].grid)))[:limit]]


def _within_caps_per_split(*, graph: Graph, options: PatchOptions, split: int,
                           top: list) -> list[tuple[float, PatchPlan]]:
    """(total, plan) of the ``GRIDS_PER_SPLIT`` lowest-total plans of a split that keep the
    caps: grids are planned by patch count, then estimate (more patches, more file growth and
    MACs), until every grid of one patch count breaks a cap or ``TRIES_PER_SPLIT`` were
    planned; the planner picks in-place per grid."""
    kept, tried = [], 0
    by_count: dict[int, list] = {}
    for estimate, grid, _ in top:
        by_count.setdefault(grid[0] * grid[1], []).append((estimate, grid))
    for count in sorted(by_count):
        before = len(kept)
        for _, grid in sorted(by_count[count]):
            if tried == TRIES_PER_SPLIT:
                break
            tried += 1
            plan = plan_patches(graph=graph, options=dataclasses.replace(
                options, sram_budget=None, split=split, grid=grid, in_place=None,
                form="builtin"))
            if _within_caps(plan=plan, options=options):
                kept.append((plan.total_bytes, plan))
        if len(kept) == before or tried == TRIES_PER_SPLIT:
            break
    return sorted(kept, key=lambda k: k[0])[:GRIDS_PER_SPLIT]


def _may_fit_caps(*, candidate, options: PatchOptions) -> bool:
    """False when the planner already knows the candidate breaks a cap."""
    growth, macs = options.max_file_growth, options.max_mac_overhead
    return not ((growth is not None and candidate.file_growth is not None
                 and candidate.file_growth > growth)
                or (macs is not None and candidate.mac_overhead > macs))


def _within_caps(*, plan: PatchPlan, options: PatchOptions) -> bool:
    """A forced split and grid skip the planner's caps: the user's file-growth and MAC caps
    (--max-file-growth, --max-mac-overhead) still hold for every candidate."""
    growth, macs = options.max_file_growth, options.max_mac_overhead
    return (growth is None or plan.file_growth <= growth) and \
        (macs is None or plan.mac_overhead <= macs)


def quick_total(*, graph: Graph, plan: PatchPlan, outliers: tuple[str, ...],
                target: str) -> int:
    """Total arena with every eligible map (outside the outlier branches) at 4 bits, in the
    plan's form."""
    patched = search_graph(graph=graph, plan=plan)
    prefixes = tuple(f"{name}/" for name in outliers)
    tensors = patched.main.tensors
    bits = {k: 4 for k, widths in subbyte_candidates(graph=patched).items()
            if 4 in widths and not k.startswith(prefixes)}
    ranges = {k: full_range(scale8=tensors[k].quantization.scale[0],
                            zero_point8=tensors[k].quantization.zero_point[0], bits=4)
              for k in bits}
    converted = convert_plan(graph=graph, patch_plan=plan, patched_graph=patched,
                             plan=BitwidthPlan(policy="screen", options={}, bits=bits,
                                               ranges=ranges))
    return arena_bytes(graph=converted, target=target).total


def search_graph(*, graph: Graph, plan: PatchPlan) -> Graph:
    """The graph the search names maps in: the builtin form of the plan (its per-patch keys
    ``p{i}_{j}/{k}`` name a stage map's parts in both forms)."""
    return apply_patch_plan(graph=graph, plan=dataclasses.replace(plan, form="builtin")
                            if plan.form == "stage-op" else plan)


def first_map_outliers(*, graph: Graph, plans: Sequence[PatchPlan],
                       calibration: Sequence[np.ndarray],
                       quantmcu: QuantMCUOptions) -> list[tuple[str, ...]]:
    """VDPC's outlier-class branches of each plan, from its stage's first map (module doc)."""
    firsts = [next(iter(stage_map_regions(graph=graph, patch_plan=p))) for p in plans]
    producers = graph.main.producers()
    last = max(producers[k] for k in firsts)
    sub = graph.main
    cut = Subgraph(name=sub.name, tensors=dict(sub.tensors), inputs=list(sub.inputs),
                   outputs=list(dict.fromkeys(firsts)), operators=list(sub.operators[:last + 1]),
                   extra=dict(sub.extra))
    runnable = dataclasses.replace(graph, subgraphs=[cut] + list(graph.subgraphs[1:]))
    collectors = [StatisticsCollector() for _ in plans]
    regions = [stage_map_regions(graph=graph, patch_plan=p)[k] for p, k in zip(plans, firsts)]
    for batch in calibration:
        outputs = dict(zip(cut.outputs, run_graph(graph=runnable, inputs=[batch])))
        for collector, key, region in zip(collectors, firsts, regions):
            quant = sub.tensors[key].quantization
            values = outputs[key].reshape((outputs[key].shape[0],)
                                          + tuple(sub.tensors[key].shape[-3:]))
            collector.update(key=key, values=values, scale=quant.scale[0],
                             zero_point=quant.zero_point[0], regions=region)
    result = []
    for collector, key in zip(collectors, firsts):
        classes = classify_patches(statistics=collector.finish()[key],
                                   options=quantmcu.vdpc_options())
        result.append(tuple(sorted(classes.outlier_patches)) if quantmcu.use_vdpc else ())
    return result


def screen(*, graph: Graph, plan: PatchPlan, outliers: tuple[str, ...],
           fit: FitOptions) -> Screened:
    """The memory path of one candidate with step units as costs (module doc)."""
    patched = search_graph(graph=graph, plan=plan)
    tensors = patched.main.tensors
    ranges = {}
    for key, widths in subbyte_candidates(graph=patched).items():
        quant = tensors[key].quantization
        for bits in widths:
            if bits < 8:
                ranges[(key, bits)] = full_range(scale8=quant.scale[0],
                                                 zero_point8=quant.zero_point[0], bits=bits)
    problem = FitProblem(graph=graph, patch_plan=plan, patched_graph=patched, ranges=ranges,
                         outlier_branches=outliers,
                         cost=lambda key, bits, subbyte: STEP_UNITS[bits])
    start = BitwidthPlan(policy="screen", options={}, bits={})
    path = memory_path(problem=problem, options=fit, start=start)
    first = path.first_fitting(budget=fit.budget)
    cost = None if first is None else float(sum(
        STEP_UNITS[s.to_bits] - STEP_UNITS[s.from_bits] for s in path.steps[:first]))
    return Screened(plan=plan, outliers=outliers, int8_total=plan.total_bytes,
                    lowest=min(path.totals), moves_to_fit=first, cost_to_fit=cost)


def choose_patch_plan(*, graph: Graph, first: PatchPlan, options: PatchOptions,
                      calibration: Sequence[np.ndarray], quantmcu: QuantMCUOptions,
                      fit: FitOptions, forms: Sequence[str] = ("builtin",),
                      firsts: Sequence[PatchPlan] = ()) -> JointChoice | None:
    """The candidate to run the full QuantMCU search on (module doc), over the candidates of
    every form in ``forms``; None when no patched candidate exists. ``firsts``: other plans of
    the planner (e.g. its plan of the other form) that count for patch-int8's lowest total."""
    plans = [p for form in forms
             for p in candidate_plans(graph=graph, first=first, options=options, form=form)]
    known = {(p.form, p.split_op, tuple(p.grid)) for p in plans}
    plans += [p for p in firsts if p.form in forms and p.is_patched
              and (p.form, p.split_op, tuple(p.grid)) not in known]
    plans = [p for p in plans if p.is_patched] or ([first] if first.is_patched else [])
    if not plans:
        return None
    outliers = first_map_outliers(graph=graph, plans=plans, calibration=calibration,
                                  quantmcu=quantmcu)
    quick = sorted(((quick_total(graph=graph, plan=p, outliers=o, target=fit.target), i)
                    for i, (p, o) in enumerate(zip(plans, outliers))))
    kept = [i for _, i in quick[:MAX_SCREENED]]
    screened = tuple(screen(graph=graph, plan=plans[i], outliers=outliers[i], fit=fit)
                     for i in kept)
    fitting = [s for s in screened if s.moves_to_fit is not None]
    if fitting:
        best = min(fitting, key=lambda s: (s.cost_to_fit, s.moves_to_fit, s.plan.macs_patch,
                                           s.int8_total))
    else:
        best = min(screened, key=lambda s: (s.lowest, s.plan.macs_patch))
    lowest = min(p.total_bytes for p in [first, *firsts, *plans])
    return JointChoice(plan=best.plan, screened=screened, patch_int8_total=lowest)


__all__ = ["JointChoice", "Screened", "candidate_plans", "choose_patch_plan",
           "first_map_outliers", "quick_total", "screen", "search_graph"]
