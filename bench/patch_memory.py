"""Patch-based inference: TFLM-measured arena head, layer-based vs patch-based.

For each model: the automatic plan with the default options (file growth
capped at 5 %) and without the file-growth cap; the arena heads are measured
in the tflite-micro wheel (`Arena allocation head`) on the original and on the
rewritten model, next to the planner's own figure. Then, per model, the
peak-vs-MAC-overhead front: the non-dominated candidates by the planner's
estimate, each re-planned exactly (forced split and grid), non-dominated again.
Prints Markdown tables.
Usage: python bench/patch_memory.py [--no-front] [MODEL.tflite ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench_models import BENCH_MODELS
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import PatchCandidate, PatchOptions, PatchPlan, pareto_front
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.runtimes.tflm import measure_arena

DEFAULT_MODELS = BENCH_MODELS
SETTINGS = {"default (file +5 % max)": PatchOptions(),
            "no file cap": PatchOptions(max_file_growth=None)}
FRONT_POINTS = 12


def table_row(*, path: Path, label: str, options: PatchOptions) -> tuple[str, PatchPlan]:
    graph = read_model_file(path=path)
    start = time.perf_counter()
    plan = plan_patches(graph=graph, options=options)
    seconds = time.perf_counter() - start
    layer_head = measure_arena(model_bytes=path.read_bytes()).head
    patched = write_model_bytes(graph=apply_patch_plan(graph=graph, plan=plan))
    patch_head = measure_arena(model_bytes=patched).head
    chosen = (f"#{plan.split_op} {plan.grid[0]}x{plan.grid[1]}"
              f"{' in-place' if plan.in_place else ''}" if plan.is_patched else "layer-based")
    never_worse = "yes" if patch_head <= layer_head else "NO"
    row = (f"| {path.stem} | {label} | {layer_head:,} | {patch_head:,} | {plan.peak_bytes:,} "
           f"| {layer_head / patch_head:.2f}x | {100 * plan.mac_overhead:+.1f} % "
           f"| {100 * plan.file_growth:+.1f} % | {seconds:.2f} | {chosen} | {never_worse} |")
    return row, plan


def exact_front(*, path: Path, plan: PatchPlan) -> list[PatchCandidate]:
    """The estimated front, each point re-planned exactly; non-dominated again."""
    graph = read_model_file(path=path)
    points = pareto_front(plan.candidates)
    step = max(1, len(points) // FRONT_POINTS)
    exact = []
    for cand in points[::step]:
        forced = plan_patches(graph=graph, options=PatchOptions(
            split=cand.split_op, grid=cand.grid, max_file_growth=None))
        exact.append(PatchCandidate(cand.split_op, cand.split_tensor, cand.grid,
                                    forced.patch_based_peak, forced.mac_overhead, True,
                                    forced.in_place, forced.file_growth))
    return pareto_front(exact)


def print_front(*, path: Path, plan: PatchPlan) -> None:
    print(f"\n#### {path.stem}: peak vs MAC overhead (layer-based {plan.layer_based_peak:,} B, "
          f"{len(plan.candidates)} candidates)\n")
    print("| split op | grid | peak B (exact) | MAC overhead | file growth | in-place |")
    print("|---:|---|---:|---:|---:|---|")
    for cand in exact_front(path=path, plan=plan):
        print(f"| #{cand.split_op} | {cand.grid[0]}x{cand.grid[1]} | {cand.peak_bytes:,} "
              f"| {100 * cand.mac_overhead:+.1f} % | {100 * (cand.file_growth or 0):+.1f} % "
              f"| {'yes' if cand.in_place else 'no'} |")


def main(argv: list[str]) -> int:
    with_front = "--no-front" not in argv
    models = [Path(a) for a in argv if not a.startswith("--")] or DEFAULT_MODELS
    print("| model | options | layer-based TFLM head B | patch-based TFLM head B | planner peak B "
          "| ratio | MAC overhead | file growth | planner s | split / grid | never worse |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    uncapped: dict[Path, PatchPlan] = {}
    for path in models:
        if not path.exists():
            print(f"| {path.stem} | missing: not generated or not bundled yet | | | | | | | | | |")
            continue
        for label, options in SETTINGS.items():
            row, plan = table_row(path=path, label=label, options=options)
            print(row, flush=True)
            uncapped[path] = plan
    if with_front:
        for path, plan in uncapped.items():
            print_front(path=path, plan=plan)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
