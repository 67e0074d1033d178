"""Smallest whole arena (cortex-m) vs top-1: patch-int8 against QuantMCU where memory binds.

For each model (``--model fashion|digits``, the cases of bench/quantmcu_accuracy.py):

* **patch-int8**: the lowest total arena of the planner's plan per patch form
  (``objective="min-memory"``, no budget, the default 5 % file-growth cap), the layer-based
  model and every candidate of the joint search as an int8 plan, over the forms of
  ``--forms`` (default both, builtin and stage-op; same caps; the planner's search can miss
  one of them). Its top-1 is the int8 model's (the rewrite is bit-exact).
* **quantmcu**: the joint search of ``convert`` (``quant/joint_search.py``: candidates of the
  same forms, VDPC per candidate, quick 4-bit totals) keeps the ``--candidates`` best; for
  each, the full QuantMCU statistics and range selection run on the calibration fit half, then the memory path
  (``quant/memory_fit.memory_path``, simulated costs on the held-out half) goes from all-int8 to
  the floor (budget 0). Every path point that lowers the running minimum total is a frontier
  point; at most ``--points`` of them, evenly spaced, plus the last, are converted and their
  top-1 measured on the test images (reference executor, bit-exact with TFLM). With
  ``--bisect`` every frontier point is a candidate, but only those the table needs are
  measured: the last, and per bound the last that holds it, found by bisection (assumes the
  drop grows along the path; each figure printed is measured).

Printed: per model the smallest total at <= 1.0 pt and <= 2.0 pt top-1 drop and at any accuracy,
for both policies, the ratio patch-int8 / quantmcu, and, below 1.26x (the paper's lower bound),
the buffers that hold the peak of the best plan within 1 pt and why they stay int8. A PNG of
total arena vs top-1 per model goes to ``--out`` (default testdata/generated/).

    python3 bench/memory_frontier.py --model digits
    python3 bench/memory_frontier.py --model fashion --samples 1000
    python3 bench/memory_frontier.py --model fashion --bisect     # the full test set
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quantmcu_accuracy import CASES, calibration_file, test_source  # noqa: E402
from tflite_quantmcu.analysis.model_analysis import arena_bytes  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_file  # noqa: E402
from tflite_quantmcu.patches.plan import PatchOptions  # noqa: E402
from tflite_quantmcu.patches.planner import plan_patches  # noqa: E402
from tflite_quantmcu.quant.accuracy_guard import COST_SAMPLES, map_locations  # noqa: E402
from tflite_quantmcu.quant.apply_bitwidths import candidate_reasons  # noqa: E402
from tflite_quantmcu.quant.calibration_data import data_batches  # noqa: E402
from tflite_quantmcu.quant.calibration_split import split_holdout  # noqa: E402
from tflite_quantmcu.quant.evaluate import top1_counts  # noqa: E402
from tflite_quantmcu.quant.joint_search import (candidate_plans,  # noqa: E402
                                                first_map_outliers, quick_total, search_graph)
from tflite_quantmcu.quant.memory_fit import (FitOptions, FitProblem,  # noqa: E402
                                              convert_plan, memory_path, peak_maps,
                                              simulated_cost)
from tflite_quantmcu.quant.plan import BitwidthPlan  # noqa: E402
from tflite_quantmcu.quant.quantmcu_policy import (QuantMCUOptions,  # noqa: E402
                                                   collect_patch_statistics, search_quantmcu)

TARGET = "cortex-m"
PAPER_RATIO = 1.26
BOUNDS = (1.0, 2.0)


@dataclass(frozen=True)
class Point:
    label: str
    total: int
    top1: float
    plan: BitwidthPlan | None = None
    patched: object = None
    outliers: tuple[str, ...] = ()
    head: int = 0
    graph: object = None
    patch_plan: object = None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(CASES), default="digits")
    parser.add_argument("--samples", type=int, default=None,
                        help="a subset of N test images (default: all)")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--calibration-limit", type=int, default=None)
    parser.add_argument("--max-file-growth", type=float, default=0.05,
                        help="the file-growth cap of both policies (convert's default 0.05)")
    parser.add_argument("--forms", default="builtin,stage-op",
                        help="patch forms searched, for both policies alike (comma-separated: "
                             "builtin, stage-op; default both)")
    parser.add_argument("--max-mac-overhead", type=float, default=None,
                        help="the MAC-overhead cap of both policies (convert's default: none)")
    parser.add_argument("--bisect", action="store_true",
                        help="measure only the points the table needs: per candidate its last "
                             "frontier point and, per bound, the last one holding it, by "
                             "bisection over every frontier point (fewer test runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "testdata" / "generated")
    return parser.parse_args(argv)


def top1(graph, test) -> float:
    correct, total = top1_counts(graph=graph, data=iter(test), progress=False)
    return correct / total


def frontier_indices(totals, points: int) -> list[int]:
    """Path indices that lower the running minimum total: at most ``points`` evenly spaced, and
    the last of them."""
    lows, best = [], None
    for i, total in enumerate(totals):
        if best is None or total < best:
            lows.append(i)
            best = total
    if len(lows) <= points:
        return lows
    picks = np.linspace(0, len(lows) - 1, points).round().astype(int)
    return sorted({lows[i] for i in picks} | {lows[-1]})


def candidate_points(*, graph, plan, outliers, fit_x, heldout_x, test, args,
                     int8_top1: float) -> list[Point]:
    patched = search_graph(graph=graph, plan=plan)
    statistics = collect_patch_statistics(graph=graph, patch_plan=plan, calibration=fit_x)
    check = collect_patch_statistics(graph=graph, patch_plan=plan, calibration=[heldout_x])
    search = search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched,
                             calibration=None, sram_budget=None, statistics=statistics,
                             check_statistics=check, heldout_x=heldout_x)
    problem = FitProblem(graph=graph, patch_plan=plan, patched_graph=patched,
                         ranges=dict(search.selection.ranges),
                         outlier_branches=search.outlier_branches,
                         cost=simulated_cost(graph=graph, x=heldout_x[:COST_SAMPLES],
                                             locations=map_locations(
                                                 graph=graph, patch_plan=plan,
                                                 patched_graph=patched)))
    start = BitwidthPlan(policy="quantmcu", options={}, bits={})
    path = memory_path(problem=problem, options=FitOptions(budget=0, target=TARGET),
                       start=start)
    name = f"{plan.form} split {plan.split_op} {plan.grid[0]}x{plan.grid[1]}"
    print(f"  {name}: outlier branches {list(search.outlier_branches)}; path of "
          f"{len(path.steps)} moves, totals {path.totals[0]} -> {min(path.totals)} B",
          flush=True)
    measured: dict[int, Point] = {}

    def measure(i: int) -> Point:
        if i not in measured:
            bits_plan = path.plan_after(moves=i, ranges=problem.ranges)
            graph_i = convert_plan(graph=graph, patch_plan=plan, patched_graph=patched,
                                   plan=bits_plan)
            head = arena_bytes(graph=graph_i, target=TARGET).head
            measured[i] = Point(label=f"{name} +{i}", total=path.totals[i],
                                top1=top1(graph_i, test), plan=bits_plan, patched=patched,
                                outliers=search.outlier_branches, head=head, graph=graph,
                                patch_plan=plan)
            print(f"    moves {i:3d}: total {path.totals[i]:7d} B (head {head}), top-1 "
                  f"{100 * measured[i].top1:.2f} %", flush=True)
        return measured[i]

    if args.bisect:
        bisect_points(lows=frontier_indices(path.totals, len(path.totals)), measure=measure,
                      int8_top1=int8_top1)
    else:
        for i in frontier_indices(path.totals, args.points):
            measure(i)
    return [measured[i] for i in sorted(measured)]


def bisect_points(*, lows: list[int], measure, int8_top1: float) -> None:
    """--bisect: measure the path's last frontier point, and per bound the last frontier point
    whose drop holds it, found by bisection over the frontier (position 0, all int8, holds
    every bound: the rewrite is bit-exact); assumes the drop grows along the path."""
    def holds(pos: int, bound: float) -> bool:
        return pos == 0 or 100 * (int8_top1 - measure(lows[pos]).top1) <= bound + 1e-9

    measure(lows[-1])
    found = 0   # BOUNDS ascend: the point holding the smaller bound holds the larger one
    for bound in BOUNDS:
        low, high = found, len(lows) - 1
        if holds(high, bound):
            continue
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if holds(middle, bound) else (low, middle)
        found = low
        if low > 0:
            measure(lows[low])


def smallest(points, int8_top1: float, bound: float | None) -> Point | None:
    fitting = [p for p in points if bound is None or 100 * (int8_top1 - p.top1) <= bound + 1e-9]
    return min(fitting, key=lambda p: (p.total, -p.top1)) if fitting else None


def held_back(point: Point) -> list[str]:
    """Why the buffers at the peak of ``point``'s plan stay int8 (or what they are)."""
    converted = convert_plan(graph=point.graph, patch_plan=point.patch_plan,
                             patched_graph=point.patched, plan=point.plan)
    reasons = candidate_reasons(graph=point.patched)
    prefixes = tuple(f"{n}/" for n in point.outliers)
    lines = []
    for m in peak_maps(converted=converted, plan=point.plan):
        if m["bits"] is None:
            why = "kernel scratch (stage op: one slot per stage map, its widest patch part)" \
                if point.patch_plan.form == "stage-op" else "kernel scratch"
        elif m["bits"] < 8:
            why = f"{m['bits']}-bit ({m['reason'] or 'memory'})"
        elif m["key"].startswith(prefixes):
            why = "int8: VDPC outlier branch"
        elif m["key"] in reasons and len(reasons[m["key"]][0]) == 1:
            why = f"int8: {reasons[m['key']][1]}"
        else:
            why = "int8: lowering it costs more than the 1 pt bound allows"
        lines.append(f"    {m['name'].split(';')[0][:60]:60s} {m['bytes']:7d} B  {why}")
    return lines


def patch_int8_best(*, graph, options: PatchOptions, forms: tuple[str, ...]):
    """(the joint search's patched candidates of every form, (label, total, head) of
    patch-int8's smallest total): the lowest of the planner's plan per form, layer-based and
    every candidate's int8 plan (all within the options' caps; the planner's search can miss
    one of them, e.g. the stage-op form's lowest within the file-growth cap)."""
    layer = arena_bytes(graph=graph, target=TARGET)
    best = [("patch-int8 (layer-based is lowest)", layer.total, layer.head)]
    lowest = plan_patches(graph=graph, options=dataclasses.replace(options, form="builtin"))
    plans = []
    for form in forms:
        first = plan_patches(graph=graph, options=dataclasses.replace(options, form=form))
        plans += [p for p in candidate_plans(graph=graph, first=lowest, options=options,
                                             form=form) if p.is_patched]
        if first.is_patched:
            best.append((f"patch-int8 ({first.form} split {first.split_op} "
                         f"{first.grid[0]}x{first.grid[1]})", first.total_bytes, first.peak_bytes))
    best += [(f"patch-int8 ({p.form} split {p.split_op} {p.grid[0]}x{p.grid[1]})", p.total_bytes,
              p.peak_bytes) for p in plans]
    return plans, min(best, key=lambda b: b[1])


def main(argv) -> int:
    args = parse_args(argv)
    case = CASES[args.model]
    begin = time.perf_counter()
    graph = read_model_file(path=case.model)
    test = test_source(case=case, samples=args.samples)
    options = PatchOptions(objective="min-memory", target=TARGET,
                           max_file_growth=args.max_file_growth,
                           max_mac_overhead=args.max_mac_overhead)
    forms = tuple(f.strip() for f in args.forms.split(",") if f.strip())
    plans, (label, total, head) = patch_int8_best(graph=graph, options=options, forms=forms)
    int8_top1 = top1(graph, test)
    patch_int8 = Point(label=label, total=total, top1=int8_top1, head=head)
    fit, heldout = split_holdout(batches=data_batches(
        source=str(calibration_file(case=case)), graph=graph, limit=args.calibration_limit,
        progress=False))
    fit_x = list(fit)
    heldout_x = np.concatenate([b.x for b in heldout])
    quantmcu = QuantMCUOptions()
    outliers = first_map_outliers(graph=graph, plans=plans, calibration=fit_x,
                                  quantmcu=quantmcu)
    quick = sorted((quick_total(graph=graph, plan=p, outliers=o, target=TARGET), i)
                   for i, (p, o) in enumerate(zip(plans, outliers)))
    print(f"model {case.model.name}; test images {len(test)} "
          f"({'all' if args.samples is None else f'first/stratified {args.samples}'}); "
          f"calibration {sum(len(x) for x in fit_x)} fit + {len(heldout_x)} held out; "
          f"file-growth cap {args.max_file_growth}; MAC cap {args.max_mac_overhead}; "
          f"forms {list(forms)}; patch-int8 best {label} {total} B; "
          f"{len(plans)} candidates screened, best quick totals "
          f"{[q for q, _ in quick[:args.candidates]]}", flush=True)
    points = []
    for _, i in quick[:args.candidates]:
        points += candidate_points(graph=graph, plan=plans[i], outliers=outliers[i],
                                   fit_x=fit_x, heldout_x=heldout_x, test=test, args=args,
                                   int8_top1=int8_top1)
    print_table(case=case, patch=patch_int8, points=points, int8_top1=int8_top1)
    plot(path=args.out / f"memory_frontier_{case.name}.png", patch=patch_int8, points=points,
         title=f"{case.model.name}: total arena ({TARGET}) vs top-1")
    print(f"\ntotal bench time {time.perf_counter() - begin:.0f} s")
    return 0


def print_table(*, case, patch: Point, points: list[Point], int8_top1: float) -> None:
    print(f"\n| {case.name} | <= 1.0 pt | <= 2.0 pt | any accuracy |")
    print("|---|---:|---:|---:|")
    best = {bound: smallest(points, int8_top1, bound) for bound in BOUNDS + (None,)}
    print(f"| {patch.label} total (B; head) | " + " | ".join(
        [f"{patch.total:,}; {patch.head:,}"] * 3) + " |")
    cells = [f"{p.total:,}; {p.head:,} ({100 * (p.top1 - int8_top1):+.2f} pt)" if p else "-"
             for p in best.values()]
    print(f"| quantmcu total (B; head; top-1 delta) | {' | '.join(cells)} |")
    ratios = [f"{patch.total / p.total:.2f}x" if p else "-" for p in best.values()]
    print(f"| ratio patch-int8 / quantmcu | {' | '.join(ratios)} |")
    within = best[1.0]
    ratio = patch.total / within.total if within else 1.0
    print(f"\nint8 top-1 {100 * int8_top1:.2f} %; best ratio within 1.0 pt: {ratio:.2f}x "
          f"({within.label if within else 'none'}); paper's lower bound {PAPER_RATIO}x")
    if within is not None and within.plan is not None and ratio < PAPER_RATIO:
        print("short of the paper's bound; buffers live at that plan's peak:")
        print("\n".join(held_back(within)))


def plot(*, path: Path, patch: Point, points: list[Point], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([patch.total / 1024], [100 * patch.top1], marker="s", s=40, label="patch-int8")
    for name in dict.fromkeys(p.label.split(" +")[0] for p in points):
        mine = [p for p in points if p.label.startswith(name + " +")]
        ax.plot([p.total / 1024 for p in mine], [100 * p.top1 for p in mine], marker="o",
                ms=3, lw=1, label=f"quantmcu {name}")
    for bound in BOUNDS:
        ax.axhline(100 * patch.top1 - bound, color="grey", ls=":", lw=1)
    ax.set_xlabel(f"total arena on {TARGET} (KiB)")
    ax.set_ylabel("top-1 % (test)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
