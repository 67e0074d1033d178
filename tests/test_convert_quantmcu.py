"""`convert --policy quantmcu` end to end on the bundled model (small calibration set)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cli_output import message_lines

from fixture_models import TESTDATA, fixture_path
from tflite_quantmcu.analysis.model_analysis import analyze_model
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.ir import schema
from tflite_quantmcu.quant.evaluate import top1_accuracy
from tflite_quantmcu.ir.reader import read_model_file

sys.path.insert(0, str(TESTDATA))
import fashion_mnist  # noqa: E402

MODEL = fixture_path("fashion_mnv2_r96_int8.tflite")
STEM = "fashion_mnv2_r96_int8"


def _convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert", str(MODEL),
                           "--sram", "256KB", "--no-tflm", *map(str, args)],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Calibration (first 32) and labelled eval (next 48) images from the committed set."""
    folder = tmp_path_factory.mktemp("data")
    with np.load(TESTDATA / "fashion_mnist_calib.npz") as raw:
        x = fashion_mnist.to_model_input(images=raw["x"][:80])
        y = raw["y"][:80]
    np.savez(folder / "calib.npz", x=x[:32])
    np.savez(folder / "eval.npz", x=x[32:], y=y[32:])
    return folder


@pytest.fixture(scope="module")
def converted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantmcu")
    proc = _convert("--out", out, "--calibration", data / "calib.npz",
                    "--eval-data", data / "eval.npz")
    assert proc.returncode == 0, proc.stderr
    return out


def test_writes_model_header_report_and_plan(converted):
    outputs = sorted([f"{STEM}.quantmcu.tflite", f"{STEM}_op_resolver.h", "report.json",
                      f"{STEM}.bitwidth_plan.json", f"{STEM}_model_data.h",
                      f"{STEM}_model_data.cc", "report.md", "patch_candidates.json",
                      "memory_per_layer.png", "patch_grid.png", "bitwidths.png"])
    assert sorted(p.name for p in converted.iterdir()) == sorted([".qmcu-manifest", *outputs])
    assert sorted(json.loads((converted / ".qmcu-manifest").read_text())) == outputs


def test_report_figures_are_consistent_with_the_written_model(converted):
    report = json.loads((converted / "report.json").read_text())
    final = analyze_model(graph=read_model_file(path=converted / f"{STEM}.quantmcu.tflite"))
    assert report["bitops"]["final"] == final.bitops
    assert report["arena_bytes"]["final"] == final.arena.to_json()
    assert report["bitops"]["final"] <= report["bitops"]["patch_based"]
    assert report["arena_bytes"]["final"]["head"] <= report["arena_bytes"]["patch_based"]["head"]
    assert set(report["accuracy"]) == {"int8", "final"}
    assert report["calibration_samples"] + report["holdout_samples"] == 32
    assert report["search_time_s"] > 0
    counts = report["patch_classes"]["class_counts"]
    assert counts["outlier"] + counts["non_outlier"] == \
        report["patch_plan"]["grid"][0] * report["patch_plan"]["grid"][1]
    assert set(report["bitwidths"].values()) <= {2, 4, 8}


def test_report_accuracy_is_that_of_the_written_models(converted, data):
    report = json.loads((converted / "report.json").read_text())
    written = read_model_file(path=converted / f"{STEM}.quantmcu.tflite")
    assert report["accuracy"]["final"] == top1_accuracy(graph=written, data=str(data / "eval.npz"))
    assert report["accuracy"]["int8"] == top1_accuracy(graph=read_model_file(path=MODEL),
                                                       data=str(data / "eval.npz"))


def _independent_head(graph) -> int:
    """TFLite Micro's greedy arena head, restated from its algorithm (not analysis/memory.py):
    stored bytes of every non-constant tensor (packed tensors are stored as bytes) and each
    op's scratch, lifetimes in allocation scopes, 16-byte sizes, largest first (equal sizes:
    later first), lowest offset free over the overlapping lifetimes."""
    sub = graph.main
    n = len(sub.operators)
    life = {key: [0, 0] for key in sub.inputs}
    for i, op in enumerate(sub.operators, start=1):
        for key in op.outputs:
            life.setdefault(key, [i, i])
        for key in [k for k in op.inputs if k is not None] + op.outputs:
            if key in life:
                life[key][1] = i
    for key in sub.outputs:
        life.setdefault(key, [n, n])[1] = n
    bufs = []
    for key, tensor in sub.tensors.items():
        if key in life and not tensor.is_constant and not tensor.is_variable:
            nbytes = tensor.num_elements * (4 if tensor.dtype == schema.TensorType.INT32 else 1)
            bufs.append(((nbytes + 15) // 16 * 16, *life[key]))
    for i, op in enumerate(sub.operators, start=1):
        for need in scratch_requests(subgraph=sub, op=op) or []:
            bufs.append(((need + 15) // 16 * 16, i, i))
    placed, top = [], 0
    for size, first, last in sorted(reversed(bufs), key=lambda b: -b[0]):
        offset = 0
        for o, s, f, l in sorted(placed):
            if f <= last and first <= l and offset + size > o:
                offset = max(offset, o + s)
        placed.append((offset, size, first, last))
        top = max(top, offset + size)
    return top


def test_final_head_equals_an_independent_computation(converted):
    report = json.loads((converted / "report.json").read_text())
    written = read_model_file(path=converted / f"{STEM}.quantmcu.tflite")
    assert any(op.type.startswith("QMCU_") for op in written.main.operators)
    assert report["arena_bytes"]["final"]["head"] == _independent_head(written)


def test_sub_byte_maps_become_qmcu_ops_in_the_header(converted):
    report = json.loads((converted / "report.json").read_text())
    header = (converted / f"{STEM}_op_resolver.h").read_text()
    if any(bits < 8 for bits in report["bitwidths"].values()):
        assert 'AddCustom("QMCU_' in header
    graph = read_model_file(path=converted / f"{STEM}.quantmcu.tflite")
    custom = {op.type for op in graph.main.operators if op.type.startswith("QMCU_")}
    assert all(f'"{name}"' in header for name in custom)


def test_plan_replay_gives_identical_model(converted, tmp_path):
    proc = _convert("--out", tmp_path, "--plan", converted / f"{STEM}.bitwidth_plan.json")
    assert proc.returncode == 0, proc.stderr
    name = f"{STEM}.quantmcu.tflite"
    assert (tmp_path / name).read_bytes() == (converted / name).read_bytes()


def test_same_calibration_gives_identical_outputs(converted, data, tmp_path):
    proc = _convert("--out", tmp_path, "--calibration", data / "calib.npz")
    assert proc.returncode == 0, proc.stderr
    for name in (f"{STEM}.quantmcu.tflite", f"{STEM}_op_resolver.h", f"{STEM}.bitwidth_plan.json"):
        assert (tmp_path / name).read_bytes() == (converted / name).read_bytes(), name


def test_quantmcu_without_calibration_is_a_config_error(tmp_path):
    proc = _convert("--out", tmp_path / "o")
    assert proc.returncode == 2 and "--calibration" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad,fragment", [
    ("nan", "NaN"), ("shape", "shape"), ("empty", "no samples")])
def test_bad_calibration_data_is_named_and_writes_nothing(tmp_path, bad, fragment):
    x = np.full((4, 96, 96, 3), 0.5, dtype=np.float32)
    if bad == "nan":
        x[1, 2, 3, 0] = np.nan
    elif bad == "shape":
        x = np.zeros((4, 32, 32, 3), dtype=np.float32)
    else:
        x = np.zeros((0, 96, 96, 3), dtype=np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    proc = _convert("--out", tmp_path / "o", "--calibration", tmp_path / "calib.npz")
    assert proc.returncode == 2, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment.lower() in lines[0].lower(), proc.stderr
    assert not (tmp_path / "o").exists()


def test_malformed_plan_is_a_config_error(tmp_path):
    (tmp_path / "plan.json").write_text('{"version": 1, "policy": "x", "bits": {"nope": 4}}')
    proc = _convert("--out", tmp_path / "o", "--plan", tmp_path / "plan.json")
    assert proc.returncode == 2 and "nope" in proc.stderr, proc.stderr


def test_report_states_the_guard_and_the_measured_drop(converted):
    report = json.loads((converted / "report.json").read_text())
    guard = report["accuracy_guard"]
    assert guard["data"] == "calibration hold-out" and guard["bound_pts"] == 1.0
    assert guard["samples"] == report["holdout_samples"] == 16
    assert "agreement" in guard["metric"]            # the calibration file has no labels
    assert guard["drop_pts"] <= 1.0 and guard["held"]
    drop = report["accuracy_drop"]
    assert drop["data"].startswith("--eval-data") and drop["samples"] == 48
    accuracy = report["accuracy"]
    assert drop["drop_pts"] == pytest.approx(100 * (accuracy["int8"] - accuracy["final"]))
    plan = json.loads((converted / f"{STEM}.bitwidth_plan.json").read_text())
    assert plan["version"] == 2 and plan["guard"] == guard
    assert set(plan["ranges"]) == {k for k, b in plan["bits"].items() if b < 8}
    assert report["subbyte_ranges"] == plan["ranges"]


def test_bad_range_rules_are_a_config_error(data, tmp_path):
    proc = _convert("--out", tmp_path / "o", "--calibration", data / "calib.npz",
                    "--range-rules", "full,kl")
    assert proc.returncode == 2 and "--range-rules" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()
