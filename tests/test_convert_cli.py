"""`convert`: outputs written together, deterministic, bit-exact, failures leave nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fixture_models import fixture_path, random_inputs
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.runtimes.tflm import run_tflm

MODEL = fixture_path("mobilenetv2_w035_r144.tflite")


def _convert(*args: str) -> subprocess.CompletedProcess:
    """`convert` with the patch-only policy unless the test names one."""
    policy = [] if "--policy" in args else ["--policy", "patch-int8"]
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert",
                           *map(str, args), *policy], capture_output=True, text=True,
                          check=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert")
    proc = _convert(MODEL, "--out", out, "--sram", "256KB", "--flash", "1MB",
                    "--policy", "patch-int8")
    assert proc.returncode == 0, proc.stderr
    return out


def test_writes_the_patch_int8_file_set(converted):
    names = sorted(p.name for p in converted.iterdir())
    outputs = sorted(["mobilenetv2_w035_r144.patch-int8.tflite",
                      "mobilenetv2_w035_r144_op_resolver.h", "mobilenetv2_w035_r144_model_data.h",
                      "mobilenetv2_w035_r144_model_data.cc", "report.json", "report.md",
                      "patch_candidates.json", "memory_per_layer.png", "patch_grid.png"])
    assert names == sorted([".qmcu-manifest", *outputs])
    assert sorted(json.loads((converted / ".qmcu-manifest").read_text())) == outputs


def test_report_has_the_documented_figures(converted):
    report = json.loads((converted / "report.json").read_text())
    arena = report["arena_bytes"]
    assert report["target"] == "cortex-m" and report["fits"] is True
    assert arena["patch_based"]["total"] < arena["layer_based"]["total"]
    assert arena["final"]["total"] <= 256 * 1024
    for figures in arena.values():
        assert figures["total"] == figures["head"] + figures["tail"]
    assert report["macs"]["patch_based"] >= report["macs"]["layer_based"]
    wheel = report["tflm_wheel_arena_bytes"]
    for name in ("layer_based", "patch_based"):
        ours, tflm = wheel[name]["ours"], wheel[name]["tflm"]
        assert (ours["head"], ours["tail"], ours["total"]) == \
            (tflm["head"], tflm["tail"], tflm["total"])
        assert tflm["head"] == arena[name]["head"]
    plan = report["patch_plan"]
    assert plan["split_op"] is not None and len(plan["grid"]) == 2
    assert plan["regions"], "per-patch regions are reported"


def test_converted_model_is_bit_exact_in_tflm(converted):
    original = read_model_file(path=MODEL)
    inputs = random_inputs(graph=original, samples=2, seed=3)
    before = run_tflm(model_bytes=MODEL.read_bytes(), inputs=inputs, num_outputs=1)
    after = run_tflm(model_bytes=(converted / "mobilenetv2_w035_r144.patch-int8.tflite")
                     .read_bytes(), inputs=inputs, num_outputs=1)
    np.testing.assert_array_equal(before.outputs[0], after.outputs[0])


def test_same_inputs_give_identical_model_and_header(converted, tmp_path):
    proc = _convert(MODEL, "--out", tmp_path, "--sram", "256KB", "--flash", "1MB",
                    "--no-tflm")
    assert proc.returncode == 0, proc.stderr
    for name in ("mobilenetv2_w035_r144.patch-int8.tflite", "mobilenetv2_w035_r144_op_resolver.h",
                 "mobilenetv2_w035_r144_model_data.cc", "memory_per_layer.png",
                 "patch_grid.png", "report.md"):
        assert (tmp_path / name).read_bytes() == (converted / name).read_bytes(), name


def test_impossible_sram_budget_names_best_peak_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _convert(MODEL, "--out", out, "--sram", "16KB")
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "best achievable arena" in proc.stderr
    assert not out.exists(), "a failed run leaves no (empty) output folder"


def test_impossible_flash_budget_is_a_budget_error(tmp_path):
    proc = _convert(MODEL, "--out", tmp_path, "--sram", "256KB", "--flash", "100KB",
                    "--no-tflm")
    assert proc.returncode == 2 and "flash budget" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("grid", ["4", "0x3", "axb"])
def test_malformed_grid_is_a_config_error(tmp_path, grid):
    proc = _convert(MODEL, "--out", tmp_path, "--sram", "256KB", "--patch-grid", grid)
    assert proc.returncode == 2 and "--patch-grid" in proc.stderr


def test_forced_split_at_unsupported_op_names_it(tmp_path):
    graph = read_model_file(path=MODEL)
    mean = next(i for i, op in enumerate(graph.main.operators) if op.type == "MEAN")
    proc = _convert(MODEL, "--out", tmp_path, "--sram", "256KB", "--split-after", str(mean),
                    "--patch-grid", "2x2")
    assert proc.returncode == 2
    assert "MEAN" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
