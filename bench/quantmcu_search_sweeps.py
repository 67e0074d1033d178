"""QuantMCU on the bundled Fashion-MNIST model: top-1, BitOPs, peak SRAM, search time.

(The search sweeps of issue 4, with the whole int8 range for every sub-byte map and no
accuracy guard, as README's tables; bench/quantmcu_accuracy.py has the current defaults.)

Rows: int8 layer-based, patch int8 (the planner's split and grid for --sram), QuantMCU
(lambda 0.6, phi 0.96) on the patch stage only, QuantMCU without VDPC (every branch
searched, stage only), every eligible stage feature map at 4 bits; then the same with
the tail (the layer-based ops after the patch stage searched as branch "tail",
``QuantMCUOptions.search_tail``, the default): QuantMCU, QuantMCU without VDPC, uniform
4 and uniform 2 (the BitOPs floor of feature-map quantization). Then lambda sweeps
(paper Table III; with the tail) with and without VDPC, a phi sweep (paper Fig. 5),
and with --bins-sweep a lambda sweep per bin count k. Markdown tables on stdout, PNG plots in
build/bench/ (or --out). --split/--grid force the patch stage (a QuantMCU-specific
choice: a longer stage puts more of the model's BitOPs into the searched branches).

BitOPs are those of the whole final graph (``analyze_model(graph).bitops``: MACs x
weight bits x input-activation bits of every op, QMCU_* ops included); peak SRAM is the
TFLM-style arena plan of the final graph (packed sub-byte tensors counted packed).
Top-1 comes from the numpy reference executor (bit-exact with TFLite Micro).

Data: calibration = testdata/fashion_mnist_calib.npz (512 training images). Evaluation:
``--data test`` (default) the real Fashion-MNIST test set from the Debian package
dataset-fashion-mnist, all 10,000 images (about 40 minutes on 2 cores), or with
``--samples N`` a deterministic stratified subset of N images (seed 0); ``--data heldout`` training images
that neither trained the model (its 12,000-image subset, make_bundled_model.py) nor
calibrated it -- use this one for any tuning, never the test set.

    python3 bench/quantmcu_search_sweeps.py [--samples N] [--data heldout] [--sram 256]
        [--split OP --grid R C] [--bins K] [--density-ratio R] [--classify-on first|any]
        [--lambdas L ...] [--bins-sweep K ...] [--no-sweeps]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testdata import fashion_mnist  # noqa: E402
from tflite_quantmcu.analysis.model_analysis import analyze_model  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_file  # noqa: E402
from tflite_quantmcu.patches.plan import PatchOptions  # noqa: E402
from tflite_quantmcu.patches.planner import plan_patches  # noqa: E402
from tflite_quantmcu.patches.rewrite import apply_patch_plan  # noqa: E402
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan  # noqa: E402
from tflite_quantmcu.quant.calibration_data import calibration_batches  # noqa: E402
from tflite_quantmcu.quant.evaluate import top1_accuracy  # noqa: E402
from tflite_quantmcu.quant.quantmcu_policy import (QuantMCUOptions,  # noqa: E402
                                                   collect_patch_statistics, search_quantmcu,
                                                   uniform_plan)

MODEL = ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite"
CALIBRATION = ROOT / "testdata" / "fashion_mnist_calib.npz"
TRAIN_SUBSET, TRAIN_SEED = 12000, 20251121      # make_bundled_model.py's training subset
LAMBDAS = (0.2, 0.4, 0.6, 0.8)
PHIS = (0.90, 0.93, 0.96, 0.98, 0.99)
READ_BATCH = 250


@dataclass(frozen=True)
class Row:
    name: str
    top1: float
    bitops: int
    peak: int
    search_s: float | None
    widths: str


def evaluation_images(*, args) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images and labels of the chosen evaluation set (module doc)."""
    if args.data == "test":
        x, y = fashion_mnist.load_split(split="test")
        if args.samples is None:
            return x, y
        pick = fashion_mnist.stratified_indices(labels=y, total=args.samples, seed=0)
        return x[pick], y[pick]
    x, y = fashion_mnist.load_split(split="train")
    used = set(fashion_mnist.stratified_indices(labels=y, total=TRAIN_SUBSET,
                                                seed=TRAIN_SEED).tolist())
    rest = np.array([i for i in range(len(y)) if i not in used])
    total = 2000 if args.samples is None else args.samples
    pick = rest[fashion_mnist.stratified_indices(labels=y[rest], total=total, seed=1)]
    return x[pick], y[pick]


def model_batches(*, images: np.ndarray, labels: np.ndarray | None = None):
    """(float model input, labels) batches made on the fly (an iterable source)."""
    for start in range(0, len(images), READ_BATCH):
        x = fashion_mnist.to_model_input(images=images[start:start + READ_BATCH])
        yield x if labels is None else (x, labels[start:start + READ_BATCH])


class Evaluator:
    """Top-1 of a graph on the evaluation set, cached by the plan that made it."""

    def __init__(self, *, images, labels) -> None:
        self.images, self.labels = images, labels
        self.cache: dict[str, float] = {}

    def top1(self, *, graph, cache_key: str) -> float:
        if cache_key not in self.cache:
            data = model_batches(images=self.images, labels=self.labels)
            self.cache[cache_key] = top1_accuracy(graph=graph, data=data, batch_size=125,
                                                  progress=False)
        return self.cache[cache_key]


def width_counts(bits) -> str:
    counts = Counter(bits.values())
    return " ".join(f"{b}b:{counts[b]}" for b in (8, 4, 2) if counts[b])


def measured_row(*, name: str, graph, evaluator: Evaluator, cache_key: str,
                 search_s: float | None = None, widths: str = "") -> Row:
    analysis = analyze_model(graph=graph)
    return Row(name=name, top1=evaluator.top1(graph=graph, cache_key=cache_key),
               bitops=analysis.bitops, peak=analysis.peak_sram_bytes, search_s=search_s,
               widths=widths)


def plan_row(*, name: str, patched, plan, evaluator: Evaluator, search_s: float | None) -> Row:
    final = apply_bitwidth_plan(graph=patched, plan=plan)
    key = json.dumps(sorted(plan.bits.items()))
    return measured_row(name=name, graph=final, evaluator=evaluator, cache_key=key,
                        search_s=search_s, widths=width_counts(plan.bits))


def print_table(*, title: str, rows: list[Row], reference: Row, first: str = "config") -> None:
    print(f"\n### {title}\n")
    print(f"| {first} | top-1 % | delta vs int8 (pt) | BitOPs (M) | patch-int8 / BitOPs | "
          f"peak SRAM (B) | search s | feature-map widths |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        search = "" if r.search_s is None else f"{r.search_s:.2f}"
        print(f"| {r.name} | {100 * r.top1:.2f} | {100 * (r.top1 - reference.top1):+.2f} | "
              f"{r.bitops / 1e6:,.1f} | {reference.bitops / r.bitops:.2f} | {r.peak:,} | "
              f"{search} | {r.widths} |")


def options_from(*, args, **changes) -> QuantMCUOptions:
    base = dict(lam=0.6, phi=0.96, bins=args.bins, min_density_ratio=args.density_ratio,
                classify_on=args.classify_on, range_rules=("full",))  # as before ranges
    return QuantMCUOptions(**{**base, **changes})


def quantmcu_row(*, name: str, ctx: dict, options: QuantMCUOptions) -> tuple[Row, object]:
    result = search_quantmcu(graph=ctx["graph"], patch_plan=ctx["plan"],
                             patched_graph=ctx["patched"], calibration=None,
                             sram_budget=ctx["sram"], options=options,
                             statistics=ctx["statistics"])
    search_s = ctx["statistics_s"] + result.search_time_s
    row = plan_row(name=name, patched=ctx["patched"], plan=result.plan,
                   evaluator=ctx["evaluator"], search_s=search_s)
    return row, result


def uniform_row(*, ctx: dict, bits: int, tail: bool) -> Row:
    plan = uniform_plan(graph=ctx["graph"], patch_plan=ctx["plan"], patched_graph=ctx["patched"],
                        bits=bits, tail=tail)
    where = "stage + tail" if tail else "stage"
    return plan_row(name=f"uniform {bits}-bit {where} activations", patched=ctx["patched"],
                    plan=plan, evaluator=ctx["evaluator"], search_s=None)


def baseline_rows(*, ctx: dict) -> list[Row]:
    """int8 layer-based and patch int8 (the reference of every ratio)."""
    evaluator = ctx["evaluator"]
    int8 = measured_row(name="int8 layer-based", graph=ctx["graph"], evaluator=evaluator,
                        cache_key="int8")
    patch = measured_row(name=f"patch int8 (split op {ctx['plan'].split_op}, grid "
                              f"{ctx['plan'].grid[0]}x{ctx['plan'].grid[1]})",
                         graph=ctx["patched"], evaluator=evaluator, cache_key="patch")
    return [int8, patch]


def main_rows(*, ctx: dict, args) -> list[Row]:
    int8, patch = baseline_rows(ctx=ctx)
    stage_only, _ = quantmcu_row(name="QuantMCU (lambda 0.6, phi 0.96), stage only", ctx=ctx,
                                 options=options_from(args=args, search_tail=False))
    no_vdpc, _ = quantmcu_row(name="QuantMCU without VDPC, stage only", ctx=ctx,
                              options=options_from(args=args, use_vdpc=False,
                                                   search_tail=False))
    quantmcu, result = quantmcu_row(name="QuantMCU (lambda 0.6, phi 0.96) with tail", ctx=ctx,
                                    options=options_from(args=args))
    no_vdpc_tail, _ = quantmcu_row(name="QuantMCU without VDPC, with tail", ctx=ctx,
                                   options=options_from(args=args, use_vdpc=False))
    ctx["main_result"] = result
    return [int8, patch, stage_only, no_vdpc, uniform_row(ctx=ctx, bits=4, tail=False),
            quantmcu, no_vdpc_tail, uniform_row(ctx=ctx, bits=4, tail=True),
            uniform_row(ctx=ctx, bits=2, tail=True)]


def floor_plan(*, ctx: dict, eight_bit_branches) -> object:
    """Every eligible feature map at 2 bits except the maps of ``eight_bit_branches``."""
    plan = uniform_plan(graph=ctx["graph"], patch_plan=ctx["plan"], patched_graph=ctx["patched"],
                        bits=2, tail=True)
    keep = {key for record in ctx["main_result"].plan.branches
            if record.name in set(eight_bit_branches) for key in record.keys}
    bits = {key: (8 if key in keep else b) for key, b in plan.bits.items()}
    return dataclasses.replace(plan, bits=bits)


def floor_rows(*, ctx: dict) -> list[tuple[str, int, float]]:
    """(case, BitOPs, patch-int8 / BitOPs) of the BitOPs floors (accuracy ignored)."""
    result = ctx["main_result"]
    stage = [r.name for r in result.plan.branches if r.name != "tail"]
    cases = [("no outlier branch (no VDPC)", ())]
    cases += [(f"{n} of {len(stage)} stage branches outlier-class", tuple(stage[:n]))
              for n in range(1, len(stage) + 1)]
    cases.append((f"VDPC's classes ({len(result.outlier_branches)} outlier: "
                  f"{', '.join(result.outlier_branches)})", tuple(result.outlier_branches)))
    out = []
    for name, branches in cases:
        final = apply_bitwidth_plan(graph=ctx["patched"],
                                    plan=floor_plan(ctx=ctx, eight_bit_branches=branches))
        out.append((name, analyze_model(graph=final).bitops))
    return out


def two_bit_thresholds(*, result) -> list[float]:
    """Per searched map: the largest lambda at which S(i, 2) > S(i, 8) = 0 (Eq. 6), i.e.
    Phi / (Omega + Phi) of its 2-bit candidate; 0 where 2 bits is not a candidate."""
    out = []
    for record in result.plan.branches:
        for scores in record.scores:
            two = [s for s in scores if s.bits == 2]
            out.append(0.0 if not two else two[0].phi / (two[0].omega + two[0].phi)
                       if two[0].omega + two[0].phi > 0 else 1.0)
    return out


def print_target_analysis(*, ctx: dict, args, rows: list[Row]) -> None:
    """Why patch-int8 / 2.2 is or is not reachable on this model (issue 4's figure)."""
    patch_bitops = rows[1].bitops
    print("\n### BitOPs floor of feature-map quantization (accuracy ignored)\n")
    print("Every eligible feature map (stage and tail) at 2 bits, the maps of outlier-class "
          "branches at 8 bits (VDPC keeps them 8-bit); weights stay 8-bit.\n")
    print("| case | BitOPs (M) | patch-int8 / BitOPs |")
    print("|---|---:|---:|")
    for name, bitops in floor_rows(ctx=ctx):
        print(f"| {name} | {bitops / 1e6:,.1f} | {patch_bitops / bitops:.2f} |")
    no_vdpc = search_quantmcu(graph=ctx["graph"], patch_plan=ctx["plan"],
                              patched_graph=ctx["patched"], calibration=None,
                              sram_budget=ctx["sram"], statistics=ctx["statistics"],
                              options=options_from(args=args, use_vdpc=False))
    limits = sorted(two_bit_thresholds(result=no_vdpc))
    print(f"\nVDQS (Eq. 6) prefers 2 over 8 bits for a map only when lambda < Phi / (Omega + "
          f"Phi) of its 2-bit candidate. Over the {len(limits)} searched maps (no VDPC, with "
          f"tail, bins {args.bins}) that bound is: max {limits[-1]:.3f}, median "
          f"{limits[len(limits) // 2]:.3f}; maps with bound >= 0.6: "
          f"{sum(v >= 0.6 for v in limits)}, >= 0.2: {sum(v >= 0.2 for v in limits)}.")


def sweep(*, ctx: dict, args, name: str, values, make) -> list[tuple[float, Row, object]]:
    out = []
    for value in values:
        row, result = quantmcu_row(name=f"{name} = {value}", ctx=ctx,
                                   options=make(value))
        out.append((value, row, result))
    return out


def plot(*, path: Path, sweeps: dict, patch_row: Row, int8_row: Row) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\n(matplotlib not installed: no plots; pip install '.[bench]')")
        return
    path.mkdir(parents=True, exist_ok=True)
    for label, points in sweeps.items():
        fig, left = plt.subplots(figsize=(5, 3.4))
        xs = [p[0] for p in points]
        left.plot(xs, [100 * p[1].top1 for p in points], "o-", color="tab:blue")
        left.axhline(100 * int8_row.top1, color="tab:blue", ls=":", lw=1, label="int8 top-1")
        left.set_xlabel(label)
        left.set_ylabel("top-1 %", color="tab:blue")
        right = left.twinx()
        right.plot(xs, [p[1].bitops / 1e6 for p in points], "s--", color="tab:red")
        right.axhline(patch_row.bitops / 1e6, color="tab:red", ls=":", lw=1)
        right.set_ylabel("BitOPs (M)", color="tab:red")
        fig.tight_layout()
        slug = label.replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")
        target = path / f"quantmcu_{slug}_sweep.png"
        fig.savefig(target, dpi=120)
        plt.close(fig)
        print(f"wrote {target}")


def context(*, args) -> dict:
    graph = read_model_file(path=MODEL)
    sram = int(args.sram * 1024)
    grid = tuple(args.grid) if args.grid else None
    options = PatchOptions(sram_budget=sram, split=args.split, grid=grid,
                           max_file_growth=None if args.split is not None else 0.05)
    plan = plan_patches(graph=graph, options=options)
    patched = apply_patch_plan(graph=graph, plan=plan)
    calib = np.load(CALIBRATION)
    start = time.perf_counter()
    statistics = collect_patch_statistics(
        graph=graph, patch_plan=plan,
        calibration=calibration_batches(source=model_batches(images=calib["x"]), graph=graph,
                                        progress=False))
    statistics_s = time.perf_counter() - start
    images, labels = evaluation_images(args=args)
    return {"graph": graph, "plan": plan, "patched": patched, "sram": sram,
            "statistics": statistics, "statistics_s": statistics_s,
            "evaluator": Evaluator(images=images, labels=labels)}


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("test", "heldout"), default="test")
    parser.add_argument("--samples", type=int, default=None,
                        help="a stratified subset of N images (default: the whole test set; "
                             "2000 with --data heldout)")
    parser.add_argument("--sram", type=float, default=256, help="SRAM budget in KB")
    parser.add_argument("--split", type=int, default=None, help="force the stage's last op")
    parser.add_argument("--grid", type=int, nargs=2, default=None)
    parser.add_argument("--bins", type=int, default=24)
    parser.add_argument("--density-ratio", type=float, default=1.0)
    parser.add_argument("--classify-on", choices=("first", "any"), default="first")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--bins-sweep", type=int, nargs="+", default=[],
                        help="bin counts k for an extra lambda sweep each (with tail)")
    parser.add_argument("--only-sweeps", action="store_true",
                        help="skip the policy rows (int8 and patch int8 still measured)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    return parser.parse_args(argv)


def print_policies(*, ctx: dict, args, rows: list[Row]) -> None:
    result = ctx["main_result"]
    print_table(title="Policies", rows=rows, reference=rows[1])
    print(f"\n(delta vs patch int8, which equals int8; BitOPs ratio vs patch int8.) "
          f"VDPC classes: {json.dumps(result.to_dict()['class_counts'])}, outlier branches "
          f"{list(result.outlier_branches)}; tail: {json.dumps(result.to_dict()['tail'])}. "
          f"'search s' = statistics over the 512 calibration images, whole graph "
          f"({ctx['statistics_s']:.2f} s) + VDPC and VDQS ({result.search_time_s:.3f} s)")


def run_sweeps(*, ctx: dict, args, rows: list[Row]) -> dict:
    lambdas = tuple(args.lambdas)
    sweeps = {}
    sweeps["lambda (phi 0.96)"] = sweep(ctx=ctx, args=args, name="lambda", values=lambdas,
                                        make=lambda v: options_from(args=args, lam=v))
    print_table(title=f"Lambda sweep, QuantMCU with tail, bins {args.bins} (paper Table III)",
                rows=[p[1] for p in sweeps["lambda (phi 0.96)"]], reference=rows[1])
    for bins in args.bins_sweep:
        points = sweep(ctx=ctx, args=args, name=f"lambda (bins {bins})", values=lambdas,
                       make=lambda v, k=bins: options_from(args=args, lam=v, bins=k))
        print_table(title=f"Lambda sweep, QuantMCU with tail, bins {bins}",
                    rows=[p[1] for p in points], reference=rows[1])
    if args.only_sweeps:
        return sweeps
    sweeps["lambda (no VDPC)"] = sweep(
        ctx=ctx, args=args, name="lambda, no VDPC", values=lambdas,
        make=lambda v: options_from(args=args, lam=v, use_vdpc=False))
    print_table(title="Lambda sweep, every branch searched (no VDPC), with tail",
                rows=[p[1] for p in sweeps["lambda (no VDPC)"]], reference=rows[1])
    sweeps["phi (lambda 0.6)"] = sweep(ctx=ctx, args=args, name="phi", values=PHIS,
                                       make=lambda v: options_from(args=args, phi=v))
    print_table(title="Phi sweep (paper Fig. 5), with tail",
                rows=[p[1] for p in sweeps["phi (lambda 0.6)"]], reference=rows[1])
    print("\nOutlier branches per phi: " + ", ".join(
        f"{v}: {len(r.outlier_branches)}" for v, _, r in sweeps["phi (lambda 0.6)"]))
    return sweeps


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    ctx = context(args=args)
    evaluator = ctx["evaluator"]
    print(f"model {MODEL.name}; evaluation: {args.data}, {len(evaluator.labels)} images; "
          f"calibration: {CALIBRATION.name}; SRAM budget {args.sram:g} KB; bins {args.bins}, "
          f"density ratio {args.density_ratio}, classify on {args.classify_on}")
    if args.only_sweeps:
        rows = baseline_rows(ctx=ctx)
        print_table(title="Baselines", rows=rows, reference=rows[1])
    else:
        rows = main_rows(ctx=ctx, args=args)
        print_policies(ctx=ctx, args=args, rows=rows)
        print_target_analysis(ctx=ctx, args=args, rows=rows)
    if not args.no_sweeps:
        sweeps = run_sweeps(ctx=ctx, args=args, rows=rows)
        plot(path=args.out, sweeps=sweeps, patch_row=rows[1], int8_row=rows[0])
    print(f"\ntotal bench time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
