"""Issue 17's acceptance convert: `convert --policy quantmcu --sram B` where no int8 plan fits.

B defaults to patch-int8's smallest cortex-m total arena (as bench/memory_frontier.py finds it:
the planner's ``min-memory`` plan, layer-based, or a joint-search candidate as int8, within the
default 5 % file-growth cap) divided by 1.26 (the paper's lower bound), in bytes. The convert
runs through the public API (the same pipeline as the command line) with the model's
calibration file (bench/quantmcu_accuracy.py's; ``--calibration-limit`` as on the command
line). Printed:

* the memory fit's record: int8 and final total arena, the held-out drop the converter judged
  on, each path (from the VDQS plan, from int8) and its drop;
* top-1 of the int8 and the converted model on the test images (reference executor, bit-exact
  with TFLM; ``--samples N``: a stratified subset, default all), their agreement, and the
  samples only one of them gets right;
* every QMCU op of the converted model run by the C kernels (cmixnn_bridge, host build) on the
  inputs the executor gave it, on ``--c-samples`` test images, against the executor's bytes
  (tests/qmcu_c_oracle.py; builtin ops have TFLM as their oracle).

    python3 bench/memory_fit_convert.py [--model fashion] [--sram B] [--samples N]
                                        [--calibration-limit N] [--c-samples 4] [--save DIR]
                                        [--converted DIR/model.tflite]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))   # the C-kernel oracle of the test suite

import tflite_quantmcu as tq  # noqa: E402
from memory_frontier import patch_int8_best  # noqa: E402
from quantmcu_accuracy import CASES, calibration_file, test_source  # noqa: E402
from tflite_quantmcu.analysis.model_analysis import arena_bytes  # noqa: E402
from tflite_quantmcu.errors import BudgetError, CalibrationDataWarning  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file  # noqa: E402
from tflite_quantmcu.patches.plan import PatchOptions  # noqa: E402
from tflite_quantmcu.quant.calibration_data import calibration_batches, data_batches  # noqa: E402
from tflite_quantmcu.reference.executor import run_graph  # noqa: E402

TARGET = "cortex-m"
PAPER_RATIO = 1.26


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(CASES), default="fashion")
    parser.add_argument("--sram", type=int, default=None,
                        help="bytes (default: patch-int8's smallest total / 1.26)")
    parser.add_argument("--samples", type=int, default=None,
                        help="a subset of N test images (default: all)")
    parser.add_argument("--calibration-limit", type=int, default=None)
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0)
    parser.add_argument("--max-file-growth", type=float, default=0.05,
                        help="the file-growth cap of both patch-int8's baseline and the convert")
    parser.add_argument("--c-samples", type=int, default=4)
    parser.add_argument("--save", type=Path, default=None,
                        help="also write the convert's files there")
    parser.add_argument("--converted", type=Path, default=None,
                        help="measure this model (with report.json beside it, as `convert` "
                             "wrote them) instead of converting")
    return parser.parse_args(argv)


def patch_int8_smallest(*, graph, max_file_growth: float) -> tuple[str, int]:
    """patch-int8's smallest total over both patch forms, as bench/memory_frontier.py finds
    it."""
    _, (label, total, _) = patch_int8_best(
        graph=graph, options=PatchOptions(objective="min-memory", target=TARGET,
                                          max_file_growth=max_file_growth),
        forms=("builtin", "stage-op"))
    return label, total


def predictions(*, graphs, test) -> tuple[list[np.ndarray], np.ndarray]:
    """Per graph its predicted class of every test image, and the labels."""
    preds, labels = [[] for _ in graphs], []
    for batch in data_batches(source=iter(test), graph=graphs[0], require_labels=True,
                              progress=False):
        for out, graph in zip(preds, graphs):
            logits = run_graph(graph=graph, inputs=[batch.x])[0]
            out.append(np.argmax(logits.reshape(logits.shape[0], -1), axis=1))
        labels.append(batch.y)
    return [np.concatenate(p) for p in preds], np.concatenate(labels)


def c_check(*, graph, test, samples: int) -> str:
    """Every QMCU op of ``graph`` in C vs the reference executor on ``samples`` test images:
    the per-layer ops by tests/qmcu_c_oracle.py, a QMCU_PATCH_STAGE op by the stage op's host
    build (tests/test_stage_op_host.py; its optimized and reference paths) on the input the
    executor fed it."""
    from qmcu_c_oracle import compare_qmcu_ops
    from test_cmixnn_host import Kernels, _build
    x_all = []
    for x, _ in test:
        x_all.append(x[:samples - sum(len(a) for a in x_all)])
        if sum(len(a) for a in x_all) >= samples:
            break
    with warnings.catch_warnings():   # a few images are plenty here: no "few samples" warning
        warnings.simplefilter("ignore", CalibrationDataWarning)
        x = np.concatenate(list(calibration_batches(source=np.concatenate(x_all), graph=graph,
                                                    progress=False)))
    kernels = Kernels(lib=ctypes.CDLL(str(_build(variant="plain"))))
    try:
        found = compare_qmcu_ops(graph=graph, x=x, kernels=kernels)
    finally:
        kernels.free_all()
    stage = stage_check(graph=graph, x=x)
    ok = found.all_equal and (stage is None or stage[0])
    verdict = "bit-exact" if ok else f"DIFFERS at {found.mismatches[:3]}"
    summary = found.summary() + ("" if stage is None else f", {stage[1]}")
    return (f"C kernels (cmixnn_bridge host build) vs the reference executor, {len(x)} test "
            f"images, every QMCU op: {verdict} ({summary})")


def stage_check(*, graph, x) -> tuple[bool, str] | None:
    """(all equal, 'QMCU_PATCH_STAGE k/n') of the stage op in C, both paths, per image; None
    when the graph has no stage op."""
    import test_stage_op_host as host
    sub = graph.main
    ops = [(i, op) for i, op in enumerate(sub.operators) if op.type == "QMCU_PATCH_STAGE"]
    if not ops:
        return None
    lib = host.Stage(ctypes.CDLL(str(host._build(variant="plain"))))
    checked = equal = 0
    try:
        for i in range(x.shape[0]):
            seen: dict = {}
            run_graph(graph=graph, inputs=[x[i:i + 1]],
                      observer=lambda _j, _op, out: seen.update(out))
            values = {**dict(zip(sub.inputs, [x[i:i + 1]])), **seen}
            for _, op in ops:
                operands = [None] + [sub.tensors[k].array() for k in op.inputs[1:]]
                for use_opt in (True, False):
                    status, got = lib.run(data=op.custom_options, x=values[op.inputs[0]],
                                          operands=operands, use_opt=use_opt)
                    checked += 1
                    equal += status == 0 and np.array_equal(
                        got.reshape(-1), np.asarray(values[op.outputs[0]]).reshape(-1))
                lib.free_all()
    finally:
        lib.free_all()
    return equal == checked, f"QMCU_PATCH_STAGE {equal}/{checked} (opt and ref paths)"


def convert(*, args, case, sram: int):
    """(converted graph, report): converted here, or read from ``--converted``."""
    if args.converted is not None:
        print(f"measuring {args.converted} (not converted here)")
        report = json.loads((args.converted.parent / "report.json").read_text())
        return read_model_file(path=args.converted), report
    result = tq.convert(case.model, sram=sram, policy="quantmcu",
                        calibration=calibration_file(case=case),
                        calibration_limit=args.calibration_limit,
                        max_file_growth=args.max_file_growth,
                        max_accuracy_drop=args.max_accuracy_drop, progress=False)
    if args.save is not None:
        result.save(args.save)
    return read_model_bytes(data=result.model_bytes), result.report


def result_bytes(graph) -> bytes:
    from tflite_quantmcu.ir.writer import write_model_bytes
    return write_model_bytes(graph=graph)


def main(argv) -> int:
    args = parse_args(argv)
    case = CASES[args.model]
    begin = time.perf_counter()
    graph = read_model_file(path=case.model)
    label, smallest = patch_int8_smallest(graph=graph, max_file_growth=args.max_file_growth)
    sram = args.sram if args.sram is not None else int(smallest / PAPER_RATIO)
    print(f"model {case.model.name}; {label} smallest total ({TARGET}) {smallest} B; "
          f"--sram {sram} B ({smallest / sram:.3f}x below); calibration "
          f"{calibration_file(case=case).name} limit {args.calibration_limit}; file-growth cap "
          f"{args.max_file_growth}", flush=True)
    try:
        converted, report = convert(args=args, case=case, sram=sram)
    except BudgetError as err:
        print(f"convert refused ({type(err).__name__}, {time.perf_counter() - begin:.0f} s): "
              f"{err}\nacceptance (drop <= 1.0 pt, fits --sram): NOT met")
        return 1
    arena = arena_bytes(graph=converted, target=TARGET)
    fit = report.get("memory_fit") or {}
    print(f"convert: {time.perf_counter() - begin:.0f} s; final total {arena.total} B (head "
          f"{arena.head}, tail {arena.total - arena.head}); fits: {arena.total <= sram}")
    print(f"memory fit: int8 total {fit.get('int8_total')} B -> {fit.get('final_total')} B in "
          f"{len(fit.get('moves', []))} moves; held-out drop judged {fit.get('drop_pts')} pt; "
          f"paths {json.dumps(fit.get('paths'))}")
    test = test_source(case=case, samples=args.samples)
    (int8_pred, final_pred), labels = predictions(graphs=[graph, converted], test=test)
    int8_top1 = 100 * float(np.mean(int8_pred == labels))
    final_top1 = 100 * float(np.mean(final_pred == labels))
    only_int8 = int(np.sum((int8_pred == labels) & (final_pred != labels)))
    only_final = int(np.sum((int8_pred != labels) & (final_pred == labels)))
    print(f"\n| test images | int8 top-1 | converted top-1 | drop | agreement | right only "
          f"in int8 / only converted |\n|---:|---:|---:|---:|---:|---:|\n"
          f"| {len(labels)} | {int8_top1:.2f} % | {final_top1:.2f} % | "
          f"{int8_top1 - final_top1:.2f} pt | {100 * float(np.mean(int8_pred == final_pred)):.2f} "
          f"% | {only_int8} / {only_final} |")
    growth = len(result_bytes(converted)) / case.model.stat().st_size - 1
    print(f"file: {100 * growth:+.1f} % vs the input model")
    print(f"acceptance (drop <= 1.0 pt, fits --sram): "
          f"{'met' if int8_top1 - final_top1 <= 1.0 and arena.total <= sram else 'NOT met'}")
    if args.c_samples > 0:
        print(c_check(graph=converted, test=test, samples=args.c_samples))
    print(f"\ntotal bench time {time.perf_counter() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
