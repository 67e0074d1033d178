"""Patch-based inference on the whole arena: cortex-m totals before/after for every bench model.

Settings per model, for the builtin patch form: the defaults under a 256 KB budget (objective
min-macs: the plan that fits with the fewest extra MACs), min-memory with the 5 % file-growth
cap, and min-memory without the cap; for the stage-op form (one QMCU_PATCH_STAGE op): min-macs
under 256 KB, min-memory within +20 % MACs, min-memory; and auto within +20 % MACs.
Float-I/O models also with `--input-type int8 --output-type int8`.
Figures are our cortex-m head + tail (exact against a Cortex-M4 TFLite Micro build for builtin
ops, see the README); the "wheel" column is the tflite-micro wheel's measured total of the
written model, beside our host64 figure (n/a for the stage-op form: the wheel has no
QMCU_PATCH_STAGE kernel). After the table, per model: whether stage-op <= builtin <=
layer-based (min-memory, no caps), and the best stage-op total under 400 KB, or why none.
Prints Markdown.
Usage: python bench/patch_memory.py [MODEL.tflite ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench_models import BENCH_MODELS
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.errors import BudgetError
from tflite_quantmcu.io_types import IoTypes, convert_io_types
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.runtimes.tflm import measure_arena

BUDGET = 256 * 1024
LOW_BUDGET = 400 * 1024
SETTINGS = {
    "min-macs, 256 KB": PatchOptions(sram_budget=BUDGET),
    "min-memory, file +5 %": PatchOptions(objective="min-memory"),
    "min-memory, no file cap": PatchOptions(objective="min-memory", max_file_growth=None),
    "stage-op, min-macs, 256 KB": PatchOptions(sram_budget=BUDGET, form="stage-op"),
    "stage-op, min-memory, +20 % MACs": PatchOptions(objective="min-memory", form="stage-op",
                                                     max_mac_overhead=0.2),
    "stage-op, min-memory": PatchOptions(objective="min-memory", form="stage-op",
                                         max_file_growth=None),
    "auto, min-memory, +20 % MACs": PatchOptions(objective="min-memory", form="auto",
                                                 max_mac_overhead=0.2),
}


def row(*, path: Path, label: str, options: PatchOptions, io_int8: bool) -> str:
    original = read_model_file(path=path)
    before = arena_bytes(graph=original)
    graph = convert_io_types(graph=original, options=IoTypes(
        input_type="int8", output_type="int8")) if io_int8 else original
    label = f"{label}, int8 I/O" if io_int8 else label
    start = time.perf_counter()
    try:
        plan = plan_patches(graph=graph, options=options)
    except BudgetError as err:
        return (f"| {path.stem} | {label} | {before.total:,} | does not fit: best "
                f"{err.best_peak:,} | | | | | | | |")
    seconds = time.perf_counter() - start
    final = apply_patch_plan(graph=graph, plan=plan)
    after = arena_bytes(graph=final)
    ours_host = arena_bytes(graph=final, target="host64").total
    wheel = "n/a" if plan.is_patched and plan.form == "stage-op" else \
        f"{measure_arena(model_bytes=write_model_bytes(graph=final)).total:,}"
    chosen = (f"{plan.form} #{plan.split_op} {plan.grid[0]}x{plan.grid[1]}"
              f"{' in-place' if plan.in_place else ''}" if plan.is_patched else "layer-based")
    return (f"| {path.stem} | {label} | {before.total:,} ({before.head:,} + {before.tail:,}) "
            f"| {after.total:,} ({after.head:,} + {after.tail:,}) "
            f"| {before.total / after.total:.2f}x | {before.head / after.head:.2f}x "
            f"| {100 * plan.mac_overhead:+.1f} % | {100 * plan.file_growth:+.1f} % "
            f"| {chosen} | {'yes' if after.total <= before.total else 'NO'} "
            f"| {wheel} / {ours_host:,} | {seconds:.1f} |")


def main(argv: list[str]) -> int:
    models = [Path(a) for a in argv] or BENCH_MODELS
    print("| model | setting | original total B (head + tail) | converted total B (head + tail) "
          "| total ratio | head ratio | MAC overhead | file growth | split / grid "
          "| never larger | wheel total B measured / ours host64 | planner s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|:-:|---:|---:|")
    for path in models:
        if not path.exists():
            print(f"| {path.stem} | missing: run `make fixtures` | | | | | | | | | | |")
            continue
        float_io = read_model_file(path=path).main
        has_float_io = any(float_io.tensors[k].dtype == schema.TensorType.FLOAT32
                           for k in float_io.inputs)
        for label, options in SETTINGS.items():
            print(row(path=path, label=label, options=options, io_int8=False), flush=True)
            if has_float_io:
                print(row(path=path, label=label, options=options, io_int8=True), flush=True)
    print()
    for path in (p for p in models if p.exists()):
        print(form_summary(path=path), flush=True)
    return 0


def _total(graph, options: PatchOptions) -> tuple[int, str]:
    try:
        plan = plan_patches(graph=graph, options=options)
    except BudgetError as err:
        return err.best_peak, str(err)
    return plan.total_bytes, plan.reason or ""


def form_summary(*, path: Path) -> str:
    """stage-op <= builtin <= layer-based (min-memory, no caps), and the 400 KB question."""
    graph = read_model_file(path=path)
    layer = arena_bytes(graph=graph).total
    free = dict(objective="min-memory", max_file_growth=None)
    builtin, why_builtin = _total(graph, PatchOptions(form="builtin", **free))
    stage, why_stage = _total(graph, PatchOptions(form="stage-op", **free))
    ordered = stage <= builtin <= layer
    line = (f"- {path.stem}: stage-op {stage:,} B, builtin {builtin:,} B, layer-based "
            f"{layer:,} B: {'stage-op <= builtin <= layer-based' if ordered else 'NOT ordered'}")
    if not ordered:
        line += f" (stage-op: {why_stage or 'patched'}; builtin: {why_builtin or 'patched'})"
    if layer > LOW_BUDGET:
        try:
            plan = plan_patches(graph=graph, options=PatchOptions(
                form="stage-op", sram_budget=LOW_BUDGET, max_file_growth=None))
            line += (f"; under 400 KB: {plan.total_bytes:,} B at "
                     f"{100 * plan.mac_overhead:+.1f} % MACs (#{plan.split_op} "
                     f"{plan.grid[0]}x{plan.grid[1]})")
        except BudgetError as err:
            line += f"; no stage-op plan under 400 KB: {err}"
    return line


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
