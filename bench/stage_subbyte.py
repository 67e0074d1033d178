"""QuantMCU inside QMCU_PATCH_STAGE: whole-arena totals (cortex-m) of sub-byte plans in the builtin
form (per-patch QMCU_* ops) and in the stage-op form (the widths inside the one op).

Rows:
- fashion_mnv2_r96_int8, `convert --policy quantmcu --sram 256KB --objective min-memory` with
  the committed calibration images (first 64 of testdata/fashion_mnist_calib.npz), per
  `--patch-form` builtin / stage-op / auto (the planner picks the form by the int8 total);
- MobileNetV2 w0.35 r144 and w1.0 r224 (no calibration data bundled): the planner's stage-op
  plan (min-memory, +20 % MACs), every stage map that may take 4 bits at 4 bits ("uniform 4,
  stage"), and also every tail map ("uniform 4, stage + tail"), in both forms.
Both forms of one plan compute the same outputs (tests/test_stage_op_subbyte.py); here only
the memory and BitOPs are printed. Prints Markdown.
Usage: python bench/stage_subbyte.py
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_models import TESTDATA
from tflite_quantmcu.analysis.model_analysis import analyze_model
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.pipeline import PIPELINE, Conversion, ConvertOptions
from tflite_quantmcu.qmcu_stage_options import STAGE_OP, decode_stage_options
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan
from tflite_quantmcu.quant.quantmcu_policy import uniform_plan

sys.path.insert(0, str(TESTDATA))
import fashion_mnist  # noqa: E402

CALIBRATION_SAMPLES = 64
HEADER = ("| model | plan | form | split / grid | total B (head + tail) | BitOPs | maps 8 / 4 / 2 "
          "| stage variants | s |\n|---|---|---|---|---:|---:|---:|---:|---:|")


def _variants(graph) -> str:
    op = graph.main.operators[0]
    if op.opcode.custom != STAGE_OP:
        return "-"
    options = decode_stage_options(data=op.custom_options)
    return f"{sum(len(x.variants) for x in options.layers)} (v{options.version})"


def _row(*, model: str, plan: str, form: str, patch_plan, graph, bits, seconds: float) -> str:
    final = analyze_model(graph=graph)
    counts = [sum(1 for v in bits.values() if v == b) for b in (8, 4, 2)]
    chosen = f"#{patch_plan.split_op} {patch_plan.grid[0]}x{patch_plan.grid[1]}" \
        if patch_plan.is_patched else "layer-based"
    return (f"| {model} | {plan} | {form} | {chosen} | {final.arena.total:,} "
            f"({final.arena.head:,} + {final.arena.tail:,}) | {final.bitops:,} "
            f"| {counts[0]} / {counts[1]} / {counts[2]} | {_variants(graph)} | {seconds:.1f} |")


def fashion_rows() -> list[str]:
    model = TESTDATA / "fashion_mnv2_r96_int8.tflite"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        with np.load(TESTDATA / "fashion_mnist_calib.npz") as raw:
            x = fashion_mnist.to_model_input(images=raw["x"][:CALIBRATION_SAMPLES])
        np.savez(Path(folder) / "calib.npz", x=x)
        for form in ("builtin", "stage-op", "auto"):
            start = time.perf_counter()
            conv = Conversion(options=ConvertOptions(
                model_path=model, out_dir=None, sram_budget=256 * 1024,
                calibration=Path(folder) / "calib.npz", patch_form=form,
                objective="min-memory", measure_tflm=False, verify=False))
            for step in PIPELINE:
                step(conv)
            rows.append(_row(model=model.stem, plan="quantmcu (VDPC + VDQS, guard)",
                             form=f"{form} -> {conv.patch_plan.form}",
                             patch_plan=conv.patch_plan, graph=conv.converted,
                             bits=conv.bitwidth_plan.bits,
                             seconds=time.perf_counter() - start))
    return rows


def uniform_rows(*, name: str) -> list[str]:
    graph = read_model_file(path=TESTDATA / name)
    patch_plan = plan_patches(graph=graph, options=PatchOptions(
        objective="min-memory", form="stage-op", max_mac_overhead=0.2))
    builtin_plan = dataclasses.replace(patch_plan, form="builtin")
    builtin = apply_patch_plan(graph=graph, plan=builtin_plan)
    rows = []
    for label, tail in (("uniform 4, stage", False), ("uniform 4, stage + tail", True)):
        plan = uniform_plan(graph=graph, patch_plan=patch_plan, patched_graph=builtin, bits=4,
                            tail=tail)
        stage_keys = {k for k in plan.bits if k.startswith("p") and "/" in k}
        rest = dataclasses.replace(plan, bits={k: v for k, v in plan.bits.items()
                                               if k not in stage_keys},
                                   ranges={k: v for k, v in plan.ranges.items()
                                           if k not in stage_keys})
        start = time.perf_counter()
        per_patch = apply_bitwidth_plan(graph=builtin, plan=plan)
        rows.append(_row(model=Path(name).stem, plan=label, form="builtin",
                         patch_plan=builtin_plan, graph=per_patch, bits=plan.bits,
                         seconds=time.perf_counter() - start))
        start = time.perf_counter()
        staged = apply_bitwidth_plan(graph=apply_patch_plan(graph=graph, plan=patch_plan,
                                                            bitwidths=plan), plan=rest)
        rows.append(_row(model=Path(name).stem, plan=label, form="stage-op",
                         patch_plan=patch_plan, graph=staged, bits=plan.bits,
                         seconds=time.perf_counter() - start))
    return rows


def main() -> int:
    print(HEADER, flush=True)
    for line in fashion_rows():
        print(line, flush=True)
    for name in ("mobilenetv2_w035_r144.tflite", "generated/mobilenetv2_w100_r224.tflite"):
        path = TESTDATA / name
        if not path.exists():
            print(f"| {path.stem} | missing: run `make fixtures` | | | | | | | |")
            continue
        for line in uniform_rows(name=name):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
