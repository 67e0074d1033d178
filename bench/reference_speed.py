"""Speed of the numpy reference executor, in ms per image, on the fixture models.

For each model: MACs per image (analysis.costs.op_macs), then the best of
`--repeats` timed runs of `run_graph` on a batch of random int8 images (after one
warm-up run), as ms/image and ms/image per MMAC. For comparison, the same images
through LiteRT's reference kernels (BUILTIN_REF, one image at a time), unless
--no-litert. Prints a Markdown table. Timings depend on the machine and its load.

    python bench/reference_speed.py [--batch 64] [--repeats 3] [MODEL.tflite ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from tflite_quantmcu.analysis.costs import op_macs
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.runtimes.litert import run_litert

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
DEFAULT_MODELS = ("fashion_mnv2_r96_int8.tflite", "conv_chain.tflite", "resnet8_cifar.tflite",
                  "mobilenetv1_w025_r96.tflite", "mobilenetv2_w035_r144.tflite",
                  "generated/mobilenetv2_w100_r224.tflite")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--batch", type=int, default=64, help="images per run_graph call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-litert", action="store_true", help="skip the LiteRT timing")
    return parser.parse_args(argv)


def random_batch(*, graph, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    batch = []
    for key in graph.main.inputs:
        tensor = graph.main.tensors[key]
        shape = (count,) + tuple(tensor.shape)
        if tensor.dtype == 0:
            batch.append(rng.uniform(-1, 1, size=shape).astype(np.float32))
        else:
            batch.append(rng.integers(-128, 128, size=shape).astype(np.int8))
    return batch


def model_macs(*, graph) -> int:
    subgraph = graph.main
    return sum(op_macs(subgraph=subgraph, op=op) for op in subgraph.operators)


def best_seconds(*, run, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (this process, all threads) of `repeats` runs."""
    run()
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def measure(*, path: Path, batch: int, repeats: int, litert: bool) -> dict:
    graph = read_model_file(path=path)
    images = random_batch(graph=graph, count=batch)
    wall, cpu = best_seconds(run=lambda: run_graph(graph=graph, inputs=images), repeats=repeats)
    row = {"model": path.name, "mmacs": model_macs(graph=graph) / 1e6,
           "wall_ms": wall / batch * 1e3, "cpu_ms": cpu / batch * 1e3, "litert_ms": None}
    if litert:
        few = [x[:min(batch, 8)] for x in images]
        data = path.read_bytes()
        wall, cpu = best_seconds(run=lambda: run_litert(model_bytes=data, inputs=few), repeats=1)
        row["litert_ms"] = (wall / few[0].shape[0] * 1e3, cpu / few[0].shape[0] * 1e3)
    return row


def print_table(rows, *, batch: int) -> None:
    load = os.getloadavg()[0]
    print(f"numpy reference executor, batch {batch}, {os.cpu_count()} CPUs, load {load:.1f}")
    print("(wall = elapsed time; cpu = CPU time of this process, all threads)\n")
    print("| model | MMACs/image | wall ms/image | cpu ms/image | wall ms/image/MMAC "
          "| LiteRT-ref wall / cpu ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        lite = "-" if r["litert_ms"] is None else "%.1f / %.1f" % r["litert_ms"]
        per = r["wall_ms"] / r["mmacs"] if r["mmacs"] else float("nan")
        print(f"| {r['model']} | {r['mmacs']:.1f} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} "
              f"| {per:.2f} | {lite} |")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    paths = args.models or [TESTDATA / name for name in DEFAULT_MODELS]
    rows = []
    for path in paths:
        if not path.exists():
            print(f"skipping {path}: absent", file=sys.stderr)
            continue
        rows.append(measure(path=path, batch=args.batch, repeats=args.repeats,
                            litert=not args.no_litert))
    print_table(rows, batch=args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
