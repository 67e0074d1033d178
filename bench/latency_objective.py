"""`--objective min-latency` for QuantMCU: bit widths weighed by predicted instructions.

For the bundled model and the digits model, the default guarded `convert --policy quantmcu`
(256 KB; digits with its patch stage forced as in bench/quantmcu_accuracy.py, the models' calibration files, the public API = the command line's pipeline) with
``--objective`` min-macs (VDQS and the guard weigh BitOPs, the paper) and min-latency (they
weigh predicted Cortex-M4 instructions, tflite_quantmcu/quant/instruction_savings.py), each
with ``--kernels builtin`` (int8 layers on CMSIS-NN; min-macs's default) and ``--kernels
fastest`` (min-latency's default). Printed per
convert: maps at 8/4/2 bits, BitOPs below patch-int8, predicted instructions of one Invoke
(latency table, docs/latency_model.md) of patch-int8 and of the final model, and top-1 on the
test images (reference executor, bit-exact with TFLite Micro) against the int8 model.

    python3 bench/latency_objective.py [--model fashion|digits|both] [--samples N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tflite_quantmcu as tq  # noqa: E402
from memory_fit_convert import predictions  # noqa: E402
from quantmcu_accuracy import CASES, calibration_file, test_source  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file  # noqa: E402

CONFIGS = (("min-macs", "builtin"), ("min-latency", "builtin"),
           ("min-macs", "fastest"), ("min-latency", "fastest"))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(CASES) + ("both",), default="both")
    parser.add_argument("--samples", type=int, default=None,
                        help="a stratified subset of N test images (default: all)")
    return parser.parse_args(argv)


def convert_row(*, case, objective: str, kernels: str):
    """(converted graph, row dict) of one guarded convert."""
    start = time.perf_counter()
    result = tq.convert(case.model, sram=case.sram, policy="quantmcu", objective=objective,
                        kernels=kernels, calibration=calibration_file(case=case),
                        measure_tflm=False, patch_grid=case.grid,
                        split_after=case.split,
                        progress=False)
    seconds = time.perf_counter() - start
    report = result.report
    bits = list(result.plan.bits.values())
    latency = report["predicted_instructions"]
    bitops = report["bitops"]
    return read_model_bytes(data=result.model_bytes), {
        "objective": objective, "kernels": kernels,
        "maps": f"{bits.count(8)}/{bits.count(4)}/{bits.count(2)}",
        "bitops_ratio": bitops["patch_based"] / bitops["final"],
        "patch_insns": latency["patch_based"]["instructions"],
        "final_insns": latency["final"]["instructions"],
        "guard_drop": result.plan.guard["drop_pts"] if result.plan.guard else None,
        "seconds": seconds}


def model_table(*, case, samples: int | None) -> str:
    graphs, rows = [], []
    for objective, kernels in CONFIGS:
        graph, row = convert_row(case=case, objective=objective, kernels=kernels)
        graphs.append(graph)
        rows.append(row)
    test = test_source(case=case, samples=samples)
    preds, labels = predictions(graphs=[read_model_file(path=case.model)] + graphs, test=test)
    int8_top1 = 100.0 * float(np.mean(preds[0] == labels))
    lines = [f"{case.name}: {len(labels)} test images, int8 top-1 {int8_top1:.2f} %, "
             f"{case.sram // 1024} KB", "",
             "| --objective | --kernels | maps 8/4/2 | BitOPs below patch-int8 | predicted "
             "instructions patch-int8 -> final | speed-up | top-1 | drop | held-out drop | "
             "convert s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row, pred in zip(rows, preds[1:]):
        top1 = 100.0 * float(np.mean(pred == labels))
        guard = "-" if row["guard_drop"] is None else f"{row['guard_drop']:.2f} pt"
        lines.append(
            f"| {row['objective']} | {row['kernels']} | {row['maps']} | "
            f"{row['bitops_ratio']:.3f}x | {row['patch_insns'] / 1e6:.1f} M -> "
            f"{row['final_insns'] / 1e6:.1f} M | {row['patch_insns'] / row['final_insns']:.2f}x | "
            f"{top1:.2f} % | {int8_top1 - top1:+.2f} pt | {guard} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv) -> int:
    args = parse_args(argv)
    names = tuple(CASES) if args.model == "both" else (args.model,)
    for name in names:
        print(model_table(case=CASES[name], samples=args.samples), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
