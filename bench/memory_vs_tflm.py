"""Peak SRAM: our TFLM-style planner vs the arena head the tflite-micro wheel reports.

Also times reading and writing each model (the writer must handle MobileNetV2
w1.0 r224, about 4 MB, in under 2 s). Prints a Markdown table.
Usage: python bench/memory_vs_tflm.py [MODEL.tflite ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench_models import BENCH_MODELS, TESTDATA
from tflite_quantmcu.analysis.memory import plan_memory
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
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
    ours = plan_memory(graph=graph, scratch=scratch_requests).peak_bytes
    head = measure_arena(model_bytes=data).head
    diff = (ours - head) / head * 100
    return (f"| {path.stem} | {len(data):,} | {ours:,} | {head:,} | {diff:+.2f} % "
            f"| {read_s:.3f} | {write_s:.3f} |")


def main(argv: list[str]) -> int:
    models = [Path(a) for a in argv] or DEFAULT_MODELS
    print("| model | file B | ours peak B | TFLM arena head B | difference | read s | write s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in models:
        if not path.exists():
            print(f"| {path.stem} | missing: run `make fixtures` | | | | | |")
            continue
        print(measure(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
