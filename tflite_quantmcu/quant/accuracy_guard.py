"""Accuracy guard: hold a bit-width plan's top-1 drop vs the int8 model within a bound.

    guarded = guard_plan(graph=g, patch_plan=p, patched_graph=pg, plan=plan,
                         heldout=HeldOut(x=codes, y=labels_or_None),
                         options=GuardOptions(max_drop_pts=1.0))
    guarded.plan       # the plan with the costliest sub-byte maps raised back to 8 bits
    guarded.record     # JSON-ready: what was measured, on what, what was raised

The data are **held-out calibration samples** (never the samples the ranges and widths were
fitted on, never the user's evaluation/test data). The drop is, in percentage points:

* with labels: top-1 of the int8 model minus top-1 of the converted model;
* without labels: 100 - top-1 agreement (%) of the converted model with the int8 model.

Both are measured exactly: the converted graph (``apply_bitwidth_plan``) runs in the
reference executor, which is bit-exact with TFLite Micro.

If the plan's drop exceeds the bound, each sub-byte map gets a **cost**: the mean squared
difference (int8 output codes) between the int8 model's first output and the output when
only that map is quantized with its planned width and range, on the first
``GuardOptions.cost_samples`` held-out samples, simulated in the int8 graph
(:class:`range_selection.OutputSimulator`). The range selection already simulated most of
them (``known_costs``: there a patch layer's branch maps share their layer's cost, ties go
by key); the others cost one partial run each. The maps are then raised to 8 bits in
descending cost per BitOP they save (``saved_bitops``: a costly map that saves few BitOPs goes
first; a map that saves many must cost proportionally more), and
the smallest number k of raised maps whose exactly measured drop holds the bound is found
by bisection over k (k = all maps is the patch-int8 plan, drop 0). If no k holds the
bound (a negative bound), every map is kept at int8 and the record says so.

**Descent** (``GuardOptions.descend``, on by default; ``lowerable``: the maps the search
could have put at 4 bits, with the range the range selection chose for them). The bound is
a budget: whatever part of it the plan does not use can buy BitOPs. After the raise step
(or at once, when the searched plan already holds the bound), every lowerable map still at
8 bits (the raised ones included) gets the same cost at 4 bits, and they are taken in
*ascending* cost per BitOP saved: the largest k whose plan with the first k of them at 4
bits holds the bound, measured exactly on the hold-out, is found by bisection over k (one
evaluation when all of them hold). Same assumption as the raise step: the drop grows with k.
Lowering widths only shrinks maps, so VDQS's memory limits keep holding; the convert's final
budget check still runs. The record lists the lowered maps.

**Measure** (``savings``, ``--objective min-latency``): with an :mod:`instruction_savings`
model, "saved" above is the predicted Cortex-M4 instructions a map saves at its width instead
of BitOPs: the raise step takes maps that cost instructions (saved <= 0) first, and the descent
lowers only maps that save instructions.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.analysis.costs import op_macs, weight_bits
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.patches.branches import patch_branches
from tflite_quantmcu.patches.plan import PatchPlan
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan
from tflite_quantmcu.quant.instruction_savings import InstructionSavings
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import stage_map_regions
from tflite_quantmcu.quant.range_selection import SELECT_SAMPLES, OutputSimulator
from tflite_quantmcu.quant.ranges import SubbyteRange, full_range, int8_lookup
from tflite_quantmcu.reference.blas_threads import limited_blas_threads
from tflite_quantmcu.reference.executor import run_graph

COST_SAMPLES = SELECT_SAMPLES


@dataclass(frozen=True)
class GuardOptions:
    """max_drop_pts: the bound (percentage points); cost_samples: held-out samples used to
    rank the maps (the bound itself is measured on all held-out samples); descend: lower
    cheap maps while the bound holds (module doc); workers: threads that run the held-out
    samples (two halves at once on 2 cores; the figures do not depend on it)."""

    max_drop_pts: float = 1.0
    cost_samples: int = COST_SAMPLES
    descend: bool = True
    workers: int = 2

    def __post_init__(self) -> None:
        if not np.isfinite(self.max_drop_pts) or int(self.cost_samples) < 1 or self.workers < 1:
            raise ConfigError(f"accuracy guard: the bound must be a finite number of points and "
                              f"cost_samples, workers >= 1, got {self.max_drop_pts}, "
                              f"{self.cost_samples}, {self.workers}")


@dataclass(frozen=True)
class HeldOut:
    """Held-out calibration samples: int8 model-input codes ``[n, *input shape]`` and labels
    (None: compare with the int8 model's predictions)."""

    x: np.ndarray
    y: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class GuardResult:
    plan: BitwidthPlan
    record: dict


def top1(outputs: np.ndarray) -> np.ndarray:
    return np.argmax(outputs.reshape(outputs.shape[0], -1), axis=1)


class _Judge:
    """Exact drop of a plan on the held-out samples, cached by the plan's widths."""

    def __init__(self, *, graph: Graph, patched_graph: Graph, heldout: HeldOut,
                 workers: int = 1, losses_only: bool = False) -> None:
        self.patched = patched_graph
        self.heldout = heldout
        self.workers = workers
        self.losses_only = losses_only
        self.int8_outputs = first_outputs(graph=graph, x=heldout.x, workers=workers)
        self.int8_pred = top1(self.int8_outputs)
        self.cache: dict[tuple, float] = {}

    @property
    def metric(self) -> str:
        return "top-1 accuracy (labels)" if self.heldout.y is not None else \
            "top-1 agreement with the int8 model (no labels)"

    def drop(self, plan: BitwidthPlan) -> float:
        key = tuple(sorted(plan.bits.items()))
        if key not in self.cache:
            final = apply_bitwidth_plan(graph=self.patched, plan=plan)
            pred = top1(first_outputs(graph=final, x=self.heldout.x, workers=self.workers))
            self.cache[key] = drop_points(pred=pred, int8_pred=self.int8_pred, labels=self.heldout.y,
                                          losses_only=self.losses_only)
        return self.cache[key]


def first_outputs(*, graph: Graph, x: np.ndarray, workers: int) -> np.ndarray:
    """The graph's first output on ``x`` (reference executor), the samples split into
    ``workers`` parts run in threads (numpy releases the GIL in the kernels' array work)."""
    parts = [p for p in np.array_split(x, max(1, min(workers, x.shape[0] // 32))) if p.shape[0]]
    if len(parts) == 1:
        return run_graph(graph=graph, inputs=[x])[0]
    with limited_blas_threads(threads=1), ThreadPoolExecutor(max_workers=len(parts)) as pool:
        outs = list(pool.map(lambda part: run_graph(graph=graph, inputs=[part],
                                                    blas_threads=None)[0], parts))
    return np.concatenate(outs, axis=0)


def plan_drop_judge(*, graph: Graph, patched_graph: Graph, heldout: HeldOut,
                    losses_only: bool = False):
    """plan -> its exact top-1 drop (points) on the held-out samples, cached by widths;
    ``losses_only``: the stricter judge of :func:`drop_points`."""
    return _Judge(graph=graph, patched_graph=patched_graph, heldout=heldout,
                  losses_only=losses_only).drop


def drop_points(*, pred: np.ndarray, int8_pred: np.ndarray, labels: np.ndarray | None,
                losses_only: bool = False) -> float:
    """The guard's drop in points (module doc). ``losses_only`` (with labels): the share of
    samples the int8 model gets right and the plan wrong, its gains not netted out; an upper
    bound of the drop on these samples, less easily fooled by a few lucky flips (a plan that
    changes 14 of 256 answers can net 0.8 pt there and lose 2.3 pt on test data)."""
    if labels is None:
        return 100.0 * float(np.mean(pred != int8_pred))
    labels = np.asarray(labels).reshape(-1)
    if losses_only:
        return 100.0 * float(np.mean((int8_pred == labels) & (pred != labels)))
    return 100.0 * (float(np.mean(int8_pred == labels)) - float(np.mean(pred == labels)))


def raised(*, plan: BitwidthPlan, keys) -> BitwidthPlan:
    """The plan with ``keys`` at 8 bits (their ranges dropped)."""
    keys = set(keys)
    return dataclasses.replace(plan, bits={k: (8 if k in keys else b) for k, b in plan.bits.items()},
                               ranges={k: r for k, r in plan.ranges.items() if k not in keys},
                               reasons={k: r for k, r in plan.reasons.items() if k not in keys})


def guard_plan(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph, plan: BitwidthPlan,
               heldout: HeldOut, options: GuardOptions = GuardOptions(),
               known_costs: Mapping[str, float] | None = None,
               lowerable: Mapping[str, SubbyteRange] | None = None,
               lowerable_costs: Mapping[str, float] | None = None,
               savings: InstructionSavings | None = None) -> GuardResult:
    """The plan, with maps raised until the held-out drop holds the bound, then (``descend``)
    the cheapest ``lowerable`` maps lowered while it still holds (module doc).
    ``known_costs``: map costs already simulated (the range selection's), by key;
    ``lowerable``: key -> its 4-bit range, for the maps the search may put at 4 bits, and
    ``lowerable_costs`` their simulated costs at that range where known; ``savings``: weigh
    predicted instructions instead of BitOPs (module doc)."""
    if heldout.size < 1:
        raise ConfigError("accuracy guard: no held-out calibration samples")
    judge = _Judge(graph=graph, patched_graph=patched_graph, heldout=heldout,
                   workers=options.workers)
    before = judge.drop(plan)
    record = {"bound_pts": float(options.max_drop_pts), "data": "calibration hold-out",
              "samples": heldout.size, "metric": judge.metric, "drop_before_pts": before,
              "raised": [], "lowered": [], "held": True}
    subbyte = sorted(k for k, b in plan.bits.items() if b < 8)
    final = plan
    if before > options.max_drop_pts and subbyte:
        costs = map_costs(graph=graph, patch_plan=patch_plan, patched_graph=patched_graph,
                          plan=plan, heldout=heldout, samples=options.cost_samples,
                          known=known_costs)
        saved = saved_measure(patched_graph=patched_graph, plan=plan, savings=savings)
        order = sorted(subbyte, key=lambda k: (-costs[k] / max(saved[k], 1), k))
        count = _fewest_raised(judge=judge, plan=plan, order=order, bound=options.max_drop_pts)
        final = raised(plan=plan, keys=order[:count])
        record.update(raised=order[:count], costs={k: costs[k] for k in order})
    if options.descend and lowerable and judge.drop(final) <= options.max_drop_pts:
        final, lowered = _descend(graph=graph, patch_plan=patch_plan,
                                  patched_graph=patched_graph, plan=final, judge=judge,
                                  lowerable=lowerable, heldout=heldout, options=options,
                                  known=lowerable_costs, savings=savings)
        record["lowered"] = lowered
    drop = judge.drop(final)
    record.update(drop_pts=drop, evaluations=len(judge.cache), held=drop <= options.max_drop_pts)
    if drop > options.max_drop_pts:
        record["note"] = (f"the bound {options.max_drop_pts} pt cannot hold on the hold-out even "
                          "with every map at int8; all maps kept at int8")
    return GuardResult(plan=dataclasses.replace(final, guard=record), record=record)


def lowered(*, plan: BitwidthPlan, ranges: Mapping[str, SubbyteRange]) -> BitwidthPlan:
    """The plan with each key of ``ranges`` at that range's width and range."""
    return dataclasses.replace(plan, bits={**plan.bits, **{k: r.bits for k, r in ranges.items()}},
                               ranges={**plan.ranges, **ranges})


def _descend(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph, plan: BitwidthPlan,
             judge: _Judge, lowerable: Mapping[str, SubbyteRange], heldout: HeldOut,
             options: GuardOptions, known: Mapping[str, float] | None,
             savings: InstructionSavings | None = None) -> tuple[BitwidthPlan, list[str]]:
    """The plan with the largest prefix of the 8-bit lowerable maps, in ascending cost per
    BitOP (or instruction) saved, lowered while the exact held-out drop holds the bound (module
    doc); with ``savings`` only maps that save instructions are candidates."""
    candidates = {k: r for k, r in sorted(lowerable.items()) if plan.bits.get(k, 8) == 8
                  and (savings is None or savings.saved(key=k, bits=r.bits) > 0)}
    if not candidates:
        return plan, []
    alone = BitwidthPlan(policy=plan.policy, options={}, ranges=candidates,
                         bits={k: r.bits for k, r in candidates.items()})   # costs are per map
    costs = map_costs(graph=graph, patch_plan=patch_plan, patched_graph=patched_graph,
                      plan=alone, heldout=heldout, samples=options.cost_samples,
                      known={k: c for k, c in (known or {}).items() if k in candidates})
    saved = saved_measure(patched_graph=patched_graph, plan=alone, savings=savings)
    order = sorted(candidates, key=lambda k: (costs[k] / max(saved[k], 1), k))

    def prefix(count: int) -> BitwidthPlan:
        return lowered(plan=plan, ranges={k: candidates[k] for k in order[:count]})

    bound = options.max_drop_pts
    if judge.drop(prefix(len(order))) <= bound:
        return prefix(len(order)), order
    low, high = 0, len(order)          # drop(low) holds the bound; drop(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if judge.drop(prefix(middle)) <= bound:
            low = middle
        else:
            high = middle
    return prefix(low), order[:low]


def saved_measure(*, patched_graph: Graph, plan: BitwidthPlan,
                  savings: InstructionSavings | None) -> dict[str, float]:
    """What each sub-byte map saves: BitOPs (``savings`` None) or predicted instructions."""
    if savings is None:
        return saved_bitops(patched_graph=patched_graph, plan=plan)
    return {k: savings.saved(key=k, bits=b) for k, b in plan.bits.items() if b < 8}


def saved_bitops(*, patched_graph: Graph, plan: BitwidthPlan) -> dict[str, int]:
    """BitOPs each sub-byte map saves: MACs x weight bits of the ops reading it (through a
    foldable PAD) x (8 - its bits)."""
    sub = patched_graph.main
    readers = sub.consumers()
    out = {}
    for key, bits in plan.bits.items():
        if bits == 8:
            continue
        ops = list(readers.get(key, ()))
        ops += [j for i in ops if sub.operators[i].type == "PAD"
                for j in readers.get(sub.operators[i].outputs[0], ())]
        per_bit = sum(op_macs(subgraph=sub, op=sub.operators[i])
                      * weight_bits(subgraph=sub, op=sub.operators[i]) for i in set(ops))
        out[key] = per_bit * (8 - bits)
    return out


def _fewest_raised(*, judge: _Judge, plan: BitwidthPlan, order: list[str], bound: float) -> int:
    """Smallest k (by bisection, 1..len(order)) whose plan with the first k maps raised
    holds the bound; len(order) if none does."""
    low, high = 0, len(order)          # drop(low) > bound is known; high is the fallback
    while high - low > 1:
        middle = (low + high) // 2
        if judge.drop(raised(plan=plan, keys=order[:middle])) <= bound:
            high = middle
        else:
            low = middle
    return high


# -- per-map cost by simulation in the int8 graph ---------------------------------------------
def map_locations(*, graph: Graph, patch_plan: PatchPlan,
                  patched_graph: Graph) -> dict[str, tuple[str, tuple[int, int, int, int] | None]]:
    """Patched key -> (original key, region (y0, y1, x0, x1) or None for a whole tensor)."""
    out: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {}
    if patch_plan.is_patched:
        regions = stage_map_regions(graph=graph, patch_plan=patch_plan)
        for branch in patch_branches(graph=graph, patched_graph=patched_graph, plan=patch_plan):
            for m in branch.feature_maps:
                out[m.patched_key] = (m.original_key, regions[m.original_key][branch.name])
    for key in graph.main.tensors:
        out.setdefault(key, (key, None))
    return out


def map_costs(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph, plan: BitwidthPlan,
              heldout: HeldOut, samples: int, known: Mapping[str, float] | None = None
              ) -> dict[str, float]:
    """Cost of every sub-byte map of the plan alone (module doc); ``known`` costs (e.g. from
    the range selection, :class:`range_selection.Selection`) are taken as they are."""
    known = dict(known or {})
    wanted = sorted(k for k, b in plan.bits.items() if b < 8 and k not in known)
    if not wanted:
        return known
    simulator = OutputSimulator(graph=graph, x=heldout.x[:samples])
    locations = map_locations(graph=graph, patch_plan=patch_plan, patched_graph=patched_graph)
    for key in wanted:
        original, region = locations[key]
        quant = graph.main.tensors[original].quantization
        scale8, zp8 = float(quant.scale[0]), int(quant.zero_point[0])
        subbyte = plan.range_of(key) or full_range(scale8=scale8, zero_point8=zp8,
                                                   bits=plan.bits[key])
        lut = int8_lookup(scale8=scale8, zero_point8=zp8, subbyte=subbyte)
        known[key] = simulator.cost(tensor=original, edits=[(region, lut)])
    return known


def lowerable_ranges(*, selection, bits: int = 4) -> dict[str, SubbyteRange]:
    """Key -> the range the range selection chose at ``bits``, for every map it judged there
    (the maps the search may put at that width)."""
    if selection is None:
        return {}
    return {key: r for (key, b), r in sorted(selection.ranges.items()) if b == bits}


def lowerable_costs(*, selection, bits: int = 4) -> dict[str, float]:
    """The simulated costs of :func:`lowerable_ranges`' maps at their chosen ranges (where the
    range selection simulated them)."""
    if selection is None:
        return {}
    costs = {key: selection.cost(key=key, bits=bits)
             for key in lowerable_ranges(selection=selection, bits=bits)}
    return {k: c for k, c in costs.items() if c is not None}


def selection_costs(*, plan: BitwidthPlan, selection) -> dict[str, float]:
    """Costs the range selection simulated for the plan's sub-byte maps at their widths."""
    if selection is None:
        return {}
    costs = {key: selection.cost(key=key, bits=bits) for key, bits in plan.bits.items() if bits < 8}
    return {k: c for k, c in costs.items() if c is not None}


def heldout_from_batches(*, batches, labels: bool = True) -> HeldOut:
    """One HeldOut from ``calibration_data.Batch`` objects (labels kept only if all have them)."""
    batches = list(batches)
    if not batches:
        raise ConfigError("accuracy guard: no held-out calibration samples")
    x = np.concatenate([b.x for b in batches], axis=0)
    have = labels and all(b.y is not None for b in batches)
    return HeldOut(x=x, y=np.concatenate([b.y for b in batches]) if have else None)


__all__ = ["GuardOptions", "GuardResult", "HeldOut", "drop_points", "guard_plan",
           "heldout_from_batches", "lowerable_costs", "lowerable_ranges", "lowered", "map_costs",
           "map_locations", "plan_drop_judge", "raised", "selection_costs"]
