"""QuantMCU timing: statistics, VDPC+VDQS search alone, and a whole `convert`.

For the bundled model (its real calibration images) and MobileNetV2 w0.35 r144
(random-weight fixture, uniform random calibration images): 64 calibration images,
256 KB budget. Prints a Markdown table; times are wall-clock seconds on this machine.

    python3 bench/quantmcu_speed.py
    python3 bench/quantmcu_speed.py --guarded     # issue 11's timing (below)

``--guarded``: the default guarded convert of the bundled model with all 512 of its calibration
images (``convert`` defaults: patches, VDPC + VDQS with range choice, accuracy guard with its
descent, 256 KB, no TFLM measurement, outputs kept in memory), step by step: wall-clock seconds
and this process's CPU seconds (all threads) per pipeline step. The guard runs its held-out
samples in 2 threads (``GuardOptions.workers``); the rest is single-threaded.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testdata import fashion_mnist  # noqa: E402
from tflite_quantmcu import pipeline  # noqa: E402
from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_file  # noqa: E402
from tflite_quantmcu.patches.plan import PatchOptions  # noqa: E402
from tflite_quantmcu.patches.planner import plan_patches  # noqa: E402
from tflite_quantmcu.patches.rewrite import apply_patch_plan  # noqa: E402
from tflite_quantmcu.quant.calibration_data import calibration_batches  # noqa: E402
from tflite_quantmcu.quant.quantmcu_policy import (QuantMCUOptions,  # noqa: E402
                                                   collect_patch_statistics, search_quantmcu)

SRAM = 256 * 1024
SAMPLES = 64
SEARCH_REPEATS = 5


def calibration_file(*, model: str, folder: Path) -> Path:
    path = folder / f"{model}_calib.npz"
    if model == "fashion_mnv2_r96_int8":
        with np.load(ROOT / "testdata" / "fashion_mnist_calib.npz") as raw:
            x = fashion_mnist.to_model_input(images=raw["x"][:SAMPLES])
    else:
        shape = read_model_file(path=ROOT / "testdata" / f"{model}.tflite").main
        x = np.random.default_rng(0).random((SAMPLES, *shape.tensors[shape.inputs[0]].shape[1:]),
                                            dtype=np.float32)
    np.savez(path, x=x)
    return path


def search_only_seconds(*, model_path: Path, calib: Path) -> tuple[float, float]:
    """(statistics seconds, best-of-N seconds of VDPC + VDQS on those statistics)."""
    graph = read_model_file(path=model_path)
    plan = plan_patches(graph=graph, options=PatchOptions(sram_budget=SRAM))
    patched = apply_patch_plan(graph=graph, plan=plan)
    start = time.perf_counter()
    stats = collect_patch_statistics(graph=graph, patch_plan=plan, calibration=calibration_batches(
        source=str(calib), graph=graph, progress=False))
    stats_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(SEARCH_REPEATS):
        result = search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched,
                                 calibration=None, sram_budget=SRAM, options=QuantMCUOptions(),
                                 statistics=stats)
        best = min(best, result.search_time_s)
    return stats_s, best


def convert_seconds(*, model_path: Path, calib: Path, out: Path) -> float:
    start = time.perf_counter()
    run_pipeline(options=ConvertOptions(model_path=model_path, out_dir=out, sram_budget=SRAM,
                                   calibration=calib, measure_tflm=True))
    return time.perf_counter() - start


def guarded_steps(*, folder: Path) -> int:
    """Issue 11: the guarded default convert of the bundled model, 512 calibration images."""
    calib = folder / "fashion_calib_512.npz"
    with np.load(ROOT / "testdata" / "fashion_mnist_calib.npz") as raw:
        np.savez(calib, x=fashion_mnist.to_model_input(images=raw["x"]), y=raw["y"])
    conv = pipeline.Conversion(options=ConvertOptions(
        model_path=ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite", out_dir=None,
        sram_budget=SRAM, calibration=calib, measure_tflm=False))
    print(f"guarded default convert, fashion_mnv2_r96_int8, 512 calibration images, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} at start\n")
    print("| step | wall s | CPU s |")
    print("|---|---:|---:|")
    total_wall = total_cpu = 0.0
    for step in pipeline.PIPELINE:
        wall, cpu = time.perf_counter(), time.process_time()
        step(conv)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        if wall >= 0.05:
            print(f"| {step.__name__} | {wall:.1f} | {cpu:.1f} |")
    print(f"| **whole convert** | **{total_wall:.1f}** | **{total_cpu:.1f}** |")
    guard = conv.bitwidth_plan.guard or {}
    print(f"\nguard: {guard.get('evaluations')} exact evaluations of {guard.get('samples')} "
          f"held-out images; drop {guard.get('drop_before_pts', 0):.2f} -> "
          f"{guard.get('drop_pts', 0):.2f} pt; raised {len(guard.get('raised', []))}, lowered "
          f"{len(guard.get('lowered', []))}; load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guarded", action="store_true",
                        help="time the guarded default convert with 512 images, step by step")
    args = parser.parse_args(argv)
    if args.guarded:
        with tempfile.TemporaryDirectory() as tmp:
            return guarded_steps(folder=Path(tmp))
    print(f"| model | statistics s ({SAMPLES} images) | VDPC+VDQS s | whole convert s |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("fashion_mnv2_r96_int8", "mobilenetv2_w035_r144"):
            model_path = ROOT / "testdata" / f"{model}.tflite"
            calib = calibration_file(model=model, folder=Path(tmp))
            stats_s, search_s = search_only_seconds(model_path=model_path, calib=calib)
            total_s = convert_seconds(model_path=model_path, calib=calib, out=Path(tmp) / model)
            print(f"| {model} | {stats_s:.2f} | {search_s:.3f} | {total_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
