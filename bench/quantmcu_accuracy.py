"""QuantMCU accuracy vs BitOPs on real data: range rules, VDQS lambda sweeps, the guarded default.

Models (``--model``): ``fashion`` (the bundled MobileNetV2-style Fashion-MNIST model, 256 KB, the
planner's patch stage; test set: the 10,000 Fashion-MNIST test images of the Debian package
dataset-fashion-mnist, or with ``--samples N`` a stratified subset) and ``digits`` (the
MobileNetV1-0.25 64x64 handwritten-digit model, testdata/README_digits.md; its whole arena is
51 KB and the planner keeps it layer-based, so the patch stage is forced: ``--split-after 4
--patch-grid 2x2``; test split: 1,000 images).

Calibration: the model's 512 committed/generated calibration images. As in ``convert``, every
second one is held out (``calibration_split``): ranges/widths are fitted on the others, range
rules are judged and the accuracy guard measured on the held-out ones. Test images are used
for nothing but the table.

Rows: int8 layer-based; patch-int8 (reference of every ratio); uniform 4-bit on every
eligible map (patch stage and tail) with each range rule alone and with the per-map choice
among all three rules and among the default two; the VDQS lambda sweep (default bins 16) with
the whole int8 range (``full``, the behaviour before ranges were plan data) and with the
default per-map range choice; the guarded default, i.e.
``convert()`` with default options (its wall time is the 'search s' figure: calibration
statistics + range choice + VDQS + guard). Columns: top-1 on the test images, delta vs int8,
patch-int8 BitOPs / BitOPs, the whole TFLM arena on cortex-m (``analyze_model(...).arena``),
search time. A PNG (top-1 vs BitOPs) per model goes to build/bench/.

    python3 bench/quantmcu_accuracy.py --model fashion [--samples N] [--only-default]
    python3 bench/quantmcu_accuracy.py --model digits
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testdata"))

import digits_mnist  # noqa: E402
import fashion_mnist  # noqa: E402
from tflite_quantmcu.analysis.model_analysis import analyze_model  # noqa: E402
from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_file  # noqa: E402
from tflite_quantmcu.patches.plan import PatchOptions  # noqa: E402
from tflite_quantmcu.patches.planner import plan_patches  # noqa: E402
from tflite_quantmcu.patches.rewrite import apply_patch_plan  # noqa: E402
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan  # noqa: E402
from tflite_quantmcu.quant.calibration_data import data_batches  # noqa: E402
from tflite_quantmcu.quant.calibration_split import split_holdout  # noqa: E402
from tflite_quantmcu.quant.evaluate import top1_counts  # noqa: E402
from tflite_quantmcu.quant.quantmcu_policy import (DEFAULT_RANGE_RULES,  # noqa: E402
                                                   QuantMCUOptions,
                                                   collect_patch_statistics, search_quantmcu,
                                                   uniform_plan)

LAMBDAS = (0.2, 0.4, 0.6, 0.8)
RULE_SETS = {"full": ("full",), "mse": ("mse",), "percentile": ("percentile",),
             "choice full/mse/percentile": ("full", "mse", "percentile"),
             "choice full/percentile (default)": DEFAULT_RANGE_RULES}
OUT = ROOT / "build" / "bench"


@dataclass(frozen=True)
class Row:
    name: str
    top1: float
    bitops: int
    arena: int
    search_s: float | None
    widths: str


@dataclass(frozen=True)
class ModelCase:
    name: str
    model: Path
    sram: int
    split: int | None
    grid: tuple[int, int] | None

    def patch_options(self) -> PatchOptions:
        return PatchOptions(sram_budget=self.sram, split=self.split, grid=self.grid,
                            max_file_growth=None if self.split is not None else 0.05)


CASES = {
    "fashion": ModelCase(name="fashion", model=ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite",
                         sram=256 * 1024, split=None, grid=None),
    "digits": ModelCase(name="digits",
                        model=ROOT / "testdata" / "digits_mnv1_w025_r64_int8.tflite",
                        sram=256 * 1024, split=4, grid=(2, 2)),
}


def calibration_file(*, case: ModelCase) -> Path:
    """Model-ready calibration .npz (x float in [0, 1], y) for ``convert``."""
    if case.name == "digits":
        return Path(digits_mnist.ensure_generated()["calib"])
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "fashion_calib_r96.npz"
    if not path.exists():
        with np.load(ROOT / "testdata" / "fashion_mnist_calib.npz") as raw:
            np.savez(path, x=fashion_mnist.to_model_input(images=raw["x"]), y=raw["y"])
    return path


def test_source(*, case: ModelCase, samples: int | None):
    """An iterable of (x, y) batches of the test images (re-iterable)."""
    if case.name == "digits":
        with np.load(digits_mnist.ensure_generated()["test"]) as raw:
            x, y = raw["x"], raw["y"]
        if samples is not None:
            x, y = x[:samples], y[:samples]
        return _Batches(images=x, labels=y, prepare=lambda images: images)
    x, y = fashion_mnist.load_split(split="test")
    if samples is not None:
        pick = fashion_mnist.stratified_indices(labels=y, total=samples, seed=0)
        x, y = x[pick], y[pick]
    return _Batches(images=x, labels=y,
                    prepare=lambda images: fashion_mnist.to_model_input(images=images))


class _Batches:
    """Re-iterable (model input, labels) batches; ``prepare`` turns stored images into input."""

    def __init__(self, *, images, labels, prepare) -> None:
        self.images, self.labels, self.prepare = images, labels, prepare

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        for start in range(0, len(self.labels), 250):
            yield (self.prepare(self.images[start:start + 250]),
                   self.labels[start:start + 250])


class Context:
    def __init__(self, *, case: ModelCase, samples: int | None) -> None:
        self.case = case
        self.graph = read_model_file(path=case.model)
        self.plan = plan_patches(graph=self.graph, options=case.patch_options())
        self.patched = apply_patch_plan(graph=self.graph, plan=self.plan)
        self.calibration = calibration_file(case=case)
        self.test = test_source(case=case, samples=samples)
        start = time.perf_counter()
        fit, heldout = split_holdout(batches=data_batches(source=str(self.calibration),
                                                          graph=self.graph, progress=False))
        self.fit = collect_patch_statistics(graph=self.graph, patch_plan=self.plan,
                                            calibration=fit)
        self.check = collect_patch_statistics(graph=self.graph, patch_plan=self.plan,
                                              calibration=[b.x for b in heldout])
        self.heldout_x = np.concatenate([b.x for b in heldout])
        self.statistics_s = time.perf_counter() - start
        self.patch_bitops = analyze_model(graph=self.patched).bitops

    def top1(self, graph) -> float:
        correct, total = top1_counts(graph=graph, data=iter(self.test), progress=False)
        return correct / total

    def row(self, *, name: str, graph, search_s: float | None, plan=None) -> Row:
        analysis = analyze_model(graph=graph)
        return Row(name=name, top1=self.top1(graph), bitops=analysis.bitops,
                   arena=analysis.arena.total, search_s=search_s,
                   widths="" if plan is None else widths(plan))

    def plan_row(self, *, name: str, plan, search_s: float | None) -> Row:
        return self.row(name=name, graph=apply_bitwidth_plan(graph=self.patched, plan=plan),
                        search_s=search_s, plan=plan)


def widths(plan) -> str:
    counts = Counter(plan.bits.values())
    rules = Counter(r.rule for r in plan.ranges.values())
    text = " ".join(f"{b}b:{counts[b]}" for b in (8, 4, 2) if counts[b])
    return text + ("; " + " ".join(f"{r}:{n}" for r, n in sorted(rules.items())) if rules else "")


def uniform_rows(*, ctx: Context) -> list[Row]:
    rows = []
    for label, rules in RULE_SETS.items():
        start = time.perf_counter()
        plan = uniform_plan(graph=ctx.graph, patch_plan=ctx.plan, patched_graph=ctx.patched,
                            bits=4, tail=True, statistics=ctx.fit, check_statistics=ctx.check,
                            range_rules=rules, heldout_x=ctx.heldout_x)
        spent = ctx.statistics_s + time.perf_counter() - start
        rows.append(ctx.plan_row(name=f"uniform 4-bit, ranges {label}", plan=plan,
                                 search_s=spent))
    return rows


def lambda_rows(*, ctx: Context, lambdas) -> list[Row]:
    rows = []
    for label in ("full", "choice full/percentile (default)"):
        for lam in lambdas:
            start = time.perf_counter()
            result = search_quantmcu(
                graph=ctx.graph, patch_plan=ctx.plan, patched_graph=ctx.patched,
                calibration=None, sram_budget=ctx.case.sram,
                options=QuantMCUOptions(lam=lam, range_rules=RULE_SETS[label]),
                statistics=ctx.fit, check_statistics=ctx.check, heldout_x=ctx.heldout_x)
            spent = ctx.statistics_s + time.perf_counter() - start
            rows.append(ctx.plan_row(name=f"VDQS lambda {lam}, ranges {label}", plan=result.plan,
                                     search_s=spent))
    return rows


def guarded_row(*, ctx: Context) -> tuple[Row, dict]:
    """``convert()`` with default options (the case's forced patch stage for digits)."""
    case = ctx.case
    start = time.perf_counter()
    conv = run_pipeline(options=ConvertOptions(
        model_path=case.model, out_dir=OUT / f"convert_{case.name}", sram_budget=case.sram,
        calibration=ctx.calibration, measure_tflm=False, patch_grid=case.grid,
        split_after=case.split))
    spent = time.perf_counter() - start
    row = ctx.row(name="guarded default (convert, --max-accuracy-drop 1.0)", graph=conv.converted,
                  search_s=spent, plan=conv.bitwidth_plan)
    return row, dict(conv.bitwidth_plan.guard or {})


def print_table(*, title: str, rows: list[Row], int8: Row, patch: Row) -> None:
    print(f"\n### {title}\n")
    print("| policy | top-1 % | delta vs int8 (pt) | patch-int8 / BitOPs | arena cortex-m (B) | "
          "search s | widths; range rules |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        search = "" if r.search_s is None else f"{r.search_s:.1f}"
        print(f"| {r.name} | {100 * r.top1:.2f} | {100 * (r.top1 - int8.top1):+.2f} | "
              f"{patch.bitops / r.bitops:.3f} | {r.arena:,} | {search} | {r.widths} |")


def plot(*, path: Path, rows: list[Row], patch: Row, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        marker = "*" if r.name.startswith("guarded") else ("s" if "int8" in r.name else "o")
        ax.scatter(r.bitops / 1e6, 100 * r.top1, marker=marker, s=60 if marker == "*" else 25)
        ax.annotate(r.name.replace("ranges ", ""), (r.bitops / 1e6, 100 * r.top1), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    ax.axhline(100 * patch.top1 - 1.0, color="grey", ls=":", lw=1, label="int8 - 1 pt")
    ax.set_xlabel("BitOPs (M)")
    ax.set_ylabel("top-1 % (test)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"\nwrote {path}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(CASES), default="fashion")
    parser.add_argument("--samples", type=int, default=None,
                        help="a stratified subset of N test images (default: all)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--only-default", action="store_true",
                        help="int8, patch-int8 and the guarded default only")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    case = CASES[args.model]
    begin = time.perf_counter()
    ctx = Context(case=case, samples=args.samples)
    int8 = ctx.row(name="int8 layer-based", graph=ctx.graph, search_s=None)
    patch = ctx.row(name=f"patch-int8 (split op {ctx.plan.split_op}, grid "
                         f"{ctx.plan.grid[0]}x{ctx.plan.grid[1]})", graph=ctx.patched,
                    search_s=None)
    guarded, guard = guarded_row(ctx=ctx)
    rows = [int8, patch]
    if not args.only_default:
        rows += uniform_rows(ctx=ctx) + lambda_rows(ctx=ctx, lambdas=args.lambdas)
    rows.append(guarded)
    print(f"model {case.model.name}; test images: {len(ctx.test)}"
          f" ({'all' if args.samples is None else f'subset of {args.samples}'}); calibration "
          f"{ctx.calibration.name}: {ctx.heldout_x.shape[0]} held out, the rest fit; statistics "
          f"{ctx.statistics_s:.1f} s (included in every 'search s' but the guarded row's)")
    print_table(title=f"QuantMCU policies, {case.model.name}", rows=rows, int8=int8, patch=patch)
    print(f"\nguard on the held-out calibration samples: drop {guard.get('drop_before_pts', 0):.2f}"
          f" -> {guard.get('drop_pts', 0):.2f} pt (bound {guard.get('bound_pts')}), "
          f"{guard.get('samples')} samples, {guard.get('metric')}, "
          f"{len(guard.get('raised', []))} maps raised to int8")
    suffix = "default" if args.only_default else "all"
    plot(path=OUT / f"quantmcu_pareto_{case.name}_{suffix}.png", rows=rows, patch=patch,
         title=f"{case.model.name}: top-1 vs BitOPs")
    print(f"\ntotal bench time {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
