"""Whole arena (head + tail): ours vs what the tflite-micro wheel allocates.

The wheel is a 64-bit host build of TFLite Micro: our `host64` figures must equal
its `Arena allocation head/tail/total`. The last column is our `cortex-m` total (the larger of
what a 32-bit firmware's `arena_used_bytes()` reports with TFLM's reference kernels and with its
CMSIS-NN kernels; checked against a real Cortex-M4 build, see docs/benchmarks.md). Also times
reading and writing each model. Prints a Markdown table.
Usage: python bench/memory_vs_tflm.py [MODEL.tflite ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench_models import BENCH_MODELS, TESTDATA
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.runtimes.tflm import measure_arena

DEFAULT_MODELS = BENCH_MODELS + [TESTDATA / "conv_chain.tflite"]


def measure(path: Path) -> str:
    data = path.read_bytes()
    start = time.perf_counter()
    graph = read_model_bytes(data=data, source=str(path))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    write_model_bytes(graph=graph)
    write_s = time.perf_counter() - start
    ours = arena_bytes(graph=graph, target="host64")
    tflm = measure_arena(model_bytes=data)
    cortex = arena_bytes(graph=graph, target="cortex-m")
    same = "yes" if (ours.head, ours.tail, ours.total) == (tflm.head, tflm.tail, tflm.total) \
        else "NO"
    return (f"| {path.stem} | {len(data):,} | {ours.head:,} / {tflm.head:,} "
            f"| {ours.tail:,} / {tflm.tail:,} | {ours.total:,} / {tflm.total:,} | {same} "
            f"| {cortex.total:,} | {read_s:.3f} | {write_s:.3f} |")


def main(argv: list[str]) -> int:
    models = [Path(a) for a in argv] or DEFAULT_MODELS
    print("| model | file B | head B ours / TFLM | tail B ours / TFLM | total B ours / TFLM "
          "| exact | cortex-m total B | read s | write s |")
    print("|---|---:|---:|---:|---:|:-:|---:|---:|---:|")
    for path in models:
        if not path.exists():
            print(f"| {path.stem} | missing: run `make fixtures` | | | | | | | |")
            continue
        print(measure(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
