"""Patch-based inference on the whole arena: cortex-m totals before/after for every bench model.

Settings per model: the defaults under a 256 KB budget (objective min-macs: the plan that
fits with the fewest extra MACs), min-memory with the 5 % file-growth cap, and min-memory
without the cap. Float-I/O models also with `--input-type int8 --output-type int8`.
Figures are our cortex-m head + tail (exact against a Cortex-M4 TFLite Micro build, see the
README); the "wheel" column is the tflite-micro wheel's measured total of the written
model, beside our host64 figure. Prints a Markdown table.
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
SETTINGS = {
    "min-macs, 256 KB": PatchOptions(sram_budget=BUDGET),
    "min-memory, file +5 %": PatchOptions(objective="min-memory"),
    "min-memory, no file cap": PatchOptions(objective="min-memory", max_file_growth=None),
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
    wheel = measure_arena(model_bytes=write_model_bytes(graph=final)).total
    ours_host = arena_bytes(graph=final, target="host64").total
    chosen = (f"#{plan.split_op} {plan.grid[0]}x{plan.grid[1]}"
              f"{' in-place' if plan.in_place else ''}" if plan.is_patched else "layer-based")
    return (f"| {path.stem} | {label} | {before.total:,} ({before.head:,} + {before.tail:,}) "
            f"| {after.total:,} ({after.head:,} + {after.tail:,}) "
            f"| {before.total / after.total:.2f}x | {before.head / after.head:.2f}x "
            f"| {100 * plan.mac_overhead:+.1f} % | {100 * plan.file_growth:+.1f} % "
            f"| {chosen} | {'yes' if after.total <= before.total else 'NO'} "
            f"| {wheel:,} / {ours_host:,} | {seconds:.1f} |")


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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
