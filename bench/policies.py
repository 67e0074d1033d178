"""Table II analog: every bit-width policy on a real model at one SRAM and two flash budgets.

Models (``--model``): ``fashion`` (the bundled Fashion-MNIST MobileNetV2, SRAM 256 KB, test set:
all 10,000 Fashion-MNIST test images) and ``digits`` (the MobileNetV1-0.25 64x64 handwritten-digit
model, testdata/README_digits.md; its int8 arena is 51 KB, so its SRAM budget is 40 KB; test
split: all 1,000 images). ``--sram`` overrides the budget.

Budgets: SRAM = ``--sram`` KB of TFLite Micro's whole arena on Cortex-M (head + tail,
``analysis.model_analysis.ArenaBytes.total``). Flash = the written ``.tflite`` file:
"none" (no budget, no cut needed) and "60 %": the int8 file minus 40 % of the int8
bytes of the filters a policy may cut (``weight_cuts``), i.e. those weights must shrink
to 60 % whatever the rest of the file costs.

Rows: int8 layer-based (the input model), patch int8 and QuantMCU (the convert
defaults: patches + VDPC/VDQS, feature maps only), Rusci et al. (``--policy rusci``),
the RL search (``--policy rl``, ``--rl-episodes``, seed 0, reward = top-1 on the last
128 calibration images), and uniform W4/A4 (PACT-like: every cuttable filter and
feature map of the layer-based model at 4 bits). A policy that cannot meet a budget
prints its BudgetError. Top-1: the numpy reference executor (bit-exact with TFLite
Micro) on the model's whole test set (``--samples N``: a subset), in batches of 250.

Checks printed after the table: (1) the Rusci and RL models at 60 % flash run bit-exact in
the reference executor vs their own C kernels: every QMCU_* op of them run by the host build
of cmixnn_bridge (gcc) on the inputs the executor fed it, on ``--c-samples`` test images
(``tests/qmcu_c_oracle.py``); (2) the RL search at 60 % flash run a second time with the same
seed: same plan, and both search times (``--no-rl-repeat`` skips it).

Also printed: the weight-cut error (relative RMS of the cut filters against the int8
filters' float values) and, for the Rusci plan at 60 %, the same 4-bit filters in
TFLite Micro's own INT4 form (builtin ops, no requant constants, but an arena scratch
of one byte per weight while each such op runs) beside the QMCU form.

    python3 bench/policies.py [--model fashion|digits] [--samples N] [--sram KB]
                              [--rl-episodes 30] [--c-samples 4] [--no-rl-repeat]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))   # the C-kernel oracle of the test suite

from testdata import digits_mnist, fashion_mnist  # noqa: E402
from tflite_quantmcu.analysis.model_analysis import analyze_model  # noqa: E402
from tflite_quantmcu.errors import BudgetError, CalibrationDataWarning  # noqa: E402
from tflite_quantmcu.ir import schema  # noqa: E402
from tflite_quantmcu.ir.graph import Buffer  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_file  # noqa: E402
from tflite_quantmcu.patches.plan import PatchOptions  # noqa: E402
from tflite_quantmcu.patches.planner import plan_patches  # noqa: E402
from tflite_quantmcu.patches.rewrite import apply_patch_plan, copy_graph  # noqa: E402
from tflite_quantmcu.qmcu_options import pack_bits  # noqa: E402
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan  # noqa: E402
from tflite_quantmcu.quant.calibration_data import calibration_batches  # noqa: E402
from tflite_quantmcu.quant.evaluate import top1_accuracy  # noqa: E402
from tflite_quantmcu.quant.layer_budgets import layer_problem, measure  # noqa: E402
from tflite_quantmcu.quant.quantmcu_policy import search_quantmcu  # noqa: E402
from tflite_quantmcu.quant.rl_policy import RlOptions, search_rl  # noqa: E402
from tflite_quantmcu.quant.rusci_policy import search_rusci  # noqa: E402
from tflite_quantmcu.quant.weight_cuts import weight_cuts  # noqa: E402

TARGET = "cortex-m"
READ_BATCH = 250
HOLDOUT = 128


@dataclasses.dataclass(frozen=True)
class Case:
    model: Path
    sram_kb: float


CASES = {"fashion": Case(model=ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite", sram_kb=256),
         "digits": Case(model=ROOT / "testdata" / "digits_mnv1_w025_r64_int8.tflite",
                        sram_kb=40)}


@dataclasses.dataclass(frozen=True)
class Row:
    policy: str
    flash_budget: str
    weights: str
    activations: str
    top1: float | None
    bitops: int | None
    arena: int | None
    flash: int | None
    fits: bool
    search_s: float | None
    note: str = ""


def model_batches(*, images, labels=None, prepare=fashion_mnist.to_model_input):
    for start in range(0, len(images), READ_BATCH):
        x = prepare(images=images[start:start + READ_BATCH])
        yield x if labels is None else (x, labels[start:start + READ_BATCH])


def _as_is(*, images):
    return images


def load_data(*, model: str, samples: int | None):
    """(test images, test labels, calibration images, calibration labels, prepare)."""
    if model == "digits":
        paths = digits_mnist.ensure_generated()
        with np.load(paths["test"]) as test, np.load(paths["calib"]) as calib:
            x, y, cx, cy = test["x"], test["y"], calib["x"], calib["y"]
        if samples is not None:
            x, y = x[:samples], y[:samples]
        return x, y, cx, cy, _as_is
    x, y = fashion_mnist.load_split(split="test")
    if samples is not None:
        pick = fashion_mnist.stratified_indices(labels=y, total=samples, seed=0)
        x, y = x[pick], y[pick]
    with np.load(ROOT / "testdata" / "fashion_mnist_calib.npz") as calib:
        cx, cy = calib["x"], calib["y"] if "y" in calib.files else None
    return x, y, cx, cy, fashion_mnist.to_model_input


def counts(*, bits: dict, keys) -> str:
    c = Counter(bits.get(k, 8) for k in keys)
    return "/".join(f"{c[b]}" for b in (8, 4, 2))


class Context:
    def __init__(self, *, args) -> None:
        case = CASES[args.model]
        self.model = case.model
        self.graph = read_model_file(path=case.model)
        self.sram = int((args.sram or case.sram_kb) * 1024)
        self.problem = layer_problem(graph=self.graph)
        x, y, cx, cy, self.prepare = load_data(model=args.model, samples=args.samples)
        self.images, self.labels = x, y
        self.calib_x = np.concatenate(list(calibration_batches(
            source=model_batches(images=cx, prepare=self.prepare), graph=self.graph,
            progress=False)))
        self.calib_y = cy
        self.cache: dict[bytes, float] = {}
        filters = sum(self.graph.main.tensors[k].num_elements for k in self.problem.weight_keys)
        _, self.int8 = measure(graph=self.graph, bits={}, target=TARGET)
        self.flash60 = self.int8.flash_bytes - int(0.4 * filters)

    def top1(self, *, graph) -> float:
        from tflite_quantmcu.ir.writer import write_model_bytes
        key = write_model_bytes(graph=graph)
        if key not in self.cache:
            self.cache[key] = top1_accuracy(
                graph=graph, data=model_batches(images=self.images, labels=self.labels,
                                                prepare=self.prepare),
                batch_size=READ_BATCH, progress=False)
        return self.cache[key]


def measured(*, ctx: Context, policy: str, flash_name: str, flash: int | None, graph, bits,
             search_s) -> Row:
    analysis = analyze_model(graph=graph, target=TARGET)
    fits = analysis.arena.total <= ctx.sram and (flash is None or analysis.flash_bytes <= flash)
    return Row(policy=policy, flash_budget=flash_name,
               weights=counts(bits=bits, keys=ctx.problem.weight_keys),
               activations=counts(bits=bits, keys=ctx.problem.act_keys),
               top1=ctx.top1(graph=graph), bitops=analysis.bitops, arena=analysis.arena.total,
               flash=analysis.flash_bytes, fits=fits, search_s=search_s)


def failed(*, policy: str, flash_name: str, err: Exception) -> Row:
    return Row(policy=policy, flash_budget=flash_name, weights="-", activations="-", top1=None,
               bitops=None, arena=None, flash=None, fits=False, search_s=None,
               note=f"{type(err).__name__}: {str(err)[:400]}")


def quantmcu_row(*, ctx: Context, flash_name: str, flash: int | None) -> list[Row]:
    try:
        plan = plan_patches(graph=ctx.graph, options=PatchOptions(sram_budget=ctx.sram,
                                                                 target=TARGET))
    except BudgetError as err:
        return [failed(policy="patch int8", flash_name=flash_name, err=err)]
    patched = apply_patch_plan(graph=ctx.graph, plan=plan)
    rows = [measured(ctx=ctx, policy="patch int8", flash_name=flash_name, flash=flash,
                     graph=patched, bits={}, search_s=None)]
    start = time.perf_counter()
    try:
        result = search_quantmcu(graph=ctx.graph, patch_plan=plan, patched_graph=patched,
                                 calibration=[ctx.calib_x], sram_budget=ctx.sram)
    except BudgetError as err:
        return rows + [failed(policy="QuantMCU", flash_name=flash_name, err=err)]
    final = apply_bitwidth_plan(graph=patched, plan=result.plan)
    row = measured(ctx=ctx, policy="QuantMCU", flash_name=flash_name, flash=flash, graph=final,
                   bits={}, search_s=time.perf_counter() - start)
    counted = Counter(result.plan.bits.values())
    rows.append(dataclasses.replace(row, activations="/".join(
        str(counted[b]) for b in (8, 4, 2)) + " (patched)"))
    return rows


def run_rl(*, ctx: Context, flash: int | None, episodes: int):
    return search_rl(graph=ctx.graph, x=ctx.calib_x[-HOLDOUT:],
                     y=None if ctx.calib_y is None else ctx.calib_y[-HOLDOUT:],
                     sram_budget=ctx.sram, flash_budget=flash, target=TARGET,
                     options=RlOptions(episodes=episodes, holdout=HOLDOUT))


def seed_rows(*, ctx: Context, flash_name: str, flash: int | None, episodes: int,
              results: dict) -> list[Row]:
    """Rusci and RL rows; each search result also goes into ``results[(policy, flash_name)]``."""
    rows = []
    runs = (("rusci", "Rusci et al.", lambda: search_rusci(
                graph=ctx.graph, sram_budget=ctx.sram, flash_budget=flash, target=TARGET)),
            ("rl", f"RL ({episodes} ep.)", lambda: run_rl(ctx=ctx, flash=flash,
                                                          episodes=episodes)))
    for key, name, run in runs:
        try:
            result = run()
        except BudgetError as err:
            rows.append(failed(policy=name, flash_name=flash_name, err=err))
            continue
        results[(key, flash_name)] = result
        graph, _ = measure(graph=ctx.graph, bits=result.plan.bits, target=TARGET)
        rows.append(measured(ctx=ctx, policy=name, flash_name=flash_name, flash=flash,
                             graph=graph, bits=dict(result.plan.bits),
                             search_s=result.search_time_s))
    return rows


def uniform_row(*, ctx: Context, flash_name: str, flash: int | None) -> Row:
    p = ctx.problem
    bits = {k: 4 for k in p.act_keys if 4 in p.act_widths[k]}
    bits.update({k: 4 for k in p.weight_keys if 4 in p.weight_widths[k]})
    graph, _ = measure(graph=ctx.graph, bits=bits, target=TARGET)
    return measured(ctx=ctx, policy="uniform W4/A4 (PACT-like)", flash_name=flash_name,
                    flash=flash, graph=graph, bits=bits, search_s=None)


def int4_form(*, graph, bits: dict):
    """The same graph with every 4-bit filter whose op keeps 8-bit activations stored as
    TFLite Micro's INT4 (builtin op) instead of a QMCU op; the other cuts as planned."""
    sub = graph.main
    cuts = weight_cuts(subgraph=sub, bits={k: v for k, v in bits.items() if v == 4})
    acts = {k: v for k, v in bits.items() if k not in cuts}
    int4 = {}
    for key, cut in cuts.items():
        readers = [op for op in sub.operators if key in op.inputs[1:2]]
        if all(acts.get(op.inputs[0], 8) == 8 and acts.get(op.outputs[0], 8) == 8
               for op in readers):
            int4[key] = cut
    result = apply_bitwidth_plan(graph=graph, plan=_plan(
        bits={k: v for k, v in bits.items() if k not in int4}))
    result = copy_graph(graph=result)
    for key, cut in int4.items():
        tensor = result.main.tensors[key]
        data = pack_bits(values=cut.values, bits=4).tobytes()
        result.main.tensors[key] = dataclasses.replace(
            tensor, dtype=schema.TensorType.INT4, buffer=Buffer(data=data),
            quantization=dataclasses.replace(tensor.quantization, scale=cut.scales))
    return result, len(int4)


def _plan(*, bits):
    from tflite_quantmcu.quant.plan import BitwidthPlan
    return BitwidthPlan(policy="int4-form", options={}, bits=bits)


def cut_errors(*, ctx: Context) -> str:
    lines = []
    for b in (4, 2):
        bits = {k: b for k in ctx.problem.weight_keys if b in ctx.problem.weight_widths[k]}
        errs = [c.rel_rmse for c in weight_cuts(subgraph=ctx.graph.main, bits=bits).values()]
        lines.append(f"{b}-bit filters ({len(errs)}): relative RMS error vs the int8 filters' "
                     f"float values: mean {np.mean(errs):.3f}, max {np.max(errs):.3f}")
    return "\n".join(lines)


def c_kernel_check(*, ctx: Context, results: dict, samples: int) -> str:
    """Rusci and RL models at 60 % flash: every QMCU op in C (host build) vs the executor."""
    import ctypes
    from qmcu_c_oracle import compare_qmcu_ops
    from test_cmixnn_host import Kernels, _build
    kernels = Kernels(lib=ctypes.CDLL(str(_build(variant="plain"))))
    with warnings.catch_warnings():   # a few images are plenty here: no "few samples" warning
        warnings.simplefilter("ignore", CalibrationDataWarning)
        x = np.concatenate(list(calibration_batches(
            source=model_batches(images=ctx.images[:samples], prepare=ctx.prepare),
            graph=ctx.graph, progress=False)))
    lines = [f"C kernels (cmixnn_bridge host build) vs the reference executor, {samples} test "
             "images, every QMCU op:"]
    for key, name in (("rusci", "Rusci et al."), ("rl", "RL")):
        result = results.get((key, "60 %"))
        if result is None:
            lines.append(f"- {name} at 60 % flash: no model (budget error)")
            continue
        graph, _ = measure(graph=ctx.graph, bits=result.plan.bits, target=TARGET)
        found = compare_qmcu_ops(graph=graph, x=x, kernels=kernels)
        verdict = "bit-exact" if found.all_equal else f"DIFFERS at {found.mismatches[:3]}"
        lines.append(f"- {name} at 60 % flash: {verdict} ({found.summary()})")
    kernels.free_all()
    return "\n".join(lines)


def rl_repeat(*, ctx: Context, first, episodes: int) -> str:
    """The RL search at 60 % flash again with the same seed: same plan? both times."""
    second = run_rl(ctx=ctx, flash=ctx.flash60, episodes=episodes)
    same = dict(first.plan.bits) == dict(second.plan.bits)
    return (f"\nRL search at 60 % flash, seed 0, {episodes} episodes, run twice: same plan: "
            f"{'yes' if same else 'NO'}; search time {first.search_time_s:.1f} s and "
            f"{second.search_time_s:.1f} s (limit {RlOptions().time_limit_s:.0f} s; stopped "
            f"by the limit: {first.details['stopped_by_time_limit']}, "
            f"{second.details['stopped_by_time_limit']}); best reward "
            f"{first.details['best_reward']:.3f} on {first.details['holdout_samples']} "
            f"held-out calibration images")


def print_table(*, rows: list[Row], ctx: Context) -> None:
    print(f"SRAM budget {ctx.sram} B (whole arena, {TARGET}); flash budgets: none, 60 % = "
          f"{ctx.flash60} B (int8 file {ctx.int8.flash_bytes} B)\n")
    print("| policy | flash budget | W 8/4/2 | A 8/4/2 | top-1 % | GBitOPs | arena B | flash B "
          "| fits | search s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.top1 is None:
            print(f"| {r.policy} | {r.flash_budget} | - | - | - | - | - | - | no | - |")
            continue
        search = "-" if r.search_s is None else f"{r.search_s:.1f}"
        print(f"| {r.policy} | {r.flash_budget} | {r.weights} | {r.activations} | "
              f"{r.top1 * 100:.2f} | {r.bitops / 1e9:.3f} | {r.arena:,} | {r.flash:,} | "
              f"{'yes' if r.fits else 'no'} | {search} |")
    for r in rows:
        if r.note:
            print(f"\n{r.policy} at flash {r.flash_budget}: {r.note}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(CASES), default="fashion")
    parser.add_argument("--samples", type=int, default=None,
                        help="test subset (default: the whole test set)")
    parser.add_argument("--sram", type=float, default=None,
                        help="SRAM budget in KB (fashion 256, digits 40)")
    parser.add_argument("--rl-episodes", type=int, default=30)
    parser.add_argument("--c-samples", type=int, default=4,
                        help="test images for the C-kernel check (default 4)")
    parser.add_argument("--no-rl-repeat", action="store_true",
                        help="skip the same-seed rerun of the RL search at 60 %% flash")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    ctx = Context(args=args)
    rows = [measured(ctx=ctx, policy="int8 layer-based", flash_name="none", flash=None,
                     graph=ctx.graph, bits={}, search_s=None)]
    results: dict = {}
    for name, flash in (("none", None), ("60 %", ctx.flash60)):
        rows += quantmcu_row(ctx=ctx, flash_name=name, flash=flash)
        rows += seed_rows(ctx=ctx, flash_name=name, flash=flash, episodes=args.rl_episodes,
                          results=results)
        rows.append(uniform_row(ctx=ctx, flash_name=name, flash=flash))
    print(f"model {ctx.model.name}; top-1 on {len(ctx.labels)} test images "
          f"({'all' if args.samples is None else 'subset'})\n")
    print_table(rows=rows, ctx=ctx)
    print()
    print(c_kernel_check(ctx=ctx, results=results, samples=args.c_samples))
    if not args.no_rl_repeat and ("rl", "60 %") in results:
        print(rl_repeat(ctx=ctx, first=results[("rl", "60 %")], episodes=args.rl_episodes))
    print("\nWeight cuts (per-channel MSE-clipped symmetric scales):")
    print(cut_errors(ctx=ctx))
    rusci = search_rusci(graph=ctx.graph, sram_budget=ctx.sram, flash_budget=ctx.flash60,
                         target=TARGET)
    qmcu_graph, qmcu = measure(graph=ctx.graph, bits=rusci.plan.bits, target=TARGET)
    int4_graph, moved = int4_form(graph=ctx.graph, bits=dict(rusci.plan.bits))
    int4 = analyze_model(graph=int4_graph, target=TARGET)
    print(f"\nRusci plan at 60 % flash, its {moved} 4-bit filters on 8-bit activations: "
          f"QMCU form arena {qmcu.arena_total:,} B, flash {qmcu.flash_bytes:,} B; TFLM INT4 "
          f"form arena {int4.arena.total:,} B (head {int4.arena.head:,}, INT4 unpack scratch "
          f"included), flash {int4.flash_bytes:,} B")
    print("\nQuantMCU cuts no weights: its 60 % rows are the same models, judged against "
          "the flash budget.")
    print(f"\ntotal bench time {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
