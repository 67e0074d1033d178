"""What a user touches besides `convert`: the Python API, `run`, the firmware files, the
report, `bridge`, and CLI manners (--version, bare command, closed pipes)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tflite_quantmcu
from fixture_models import TESTDATA, fixture_path
from tflite_quantmcu import api
from tflite_quantmcu.bridge_export import bridge_files
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file
from tflite_quantmcu.quant.calibration_data import data_batches
from tflite_quantmcu.quant.evaluate import top1_accuracy
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.runtimes.random_inputs import random_inputs

sys.path.insert(0, str(TESTDATA))
import fashion_mnist  # noqa: E402

REPO = TESTDATA.parent
BUNDLED = fixture_path("fashion_mnv2_r96_int8.tflite")
SMALL = fixture_path("mobilenetv2_w035_r144.tflite")
STEM = "fashion_mnv2_r96_int8"


def _cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", *map(str, args)],
                          capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def images():
    with np.load(TESTDATA / "fashion_mnist_calib.npz") as raw:
        return fashion_mnist.to_model_input(images=raw["x"][:56]), raw["y"][:56]


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("cli")
    x, y = images
    np.savez(folder / "calib.npz", x=x[:24])
    np.savez(folder / "eval.npz", x=x[24:], y=y[24:])
    out = folder / "out"
    proc = _cli("convert", BUNDLED, "--out", out, "--sram", "256KB", "--no-tflm",
                "--calibration", folder / "calib.npz", "--eval-data", folder / "eval.npz")
    assert proc.returncode == 0, proc.stderr
    return folder, out


def test_api_from_path_bytes_and_graph_with_array_or_generator_equals_the_cli(cli_outputs,
                                                                              images):
    _, out = cli_outputs
    expected = (out / f"{STEM}.quantmcu.tflite").read_bytes()
    calib = images[0][:24]
    sources = [BUNDLED, str(BUNDLED), BUNDLED.read_bytes(), read_model_file(path=BUNDLED)]
    datasets = [calib, (row for row in calib), lambda: iter(calib)]
    for k, model in enumerate(sources):
        result = tflite_quantmcu.convert(model, sram="256KB", calibration=datasets[k % 3],
                                         name=BUNDLED.name, measure_tflm=False)
        assert result.model_bytes == expected, type(model)
    assert result.plan is not None and result.report["fits"] is True


def test_api_save_writes_the_cli_file_set(cli_outputs, images, tmp_path):
    _, out = cli_outputs
    result = tflite_quantmcu.convert(BUNDLED, sram=256 * 1024, calibration=images[0][:24],
                                     measure_tflm=False)
    result.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(p.name for p in out.iterdir() if p.name != "report.md") + ["report.md"]
    for name in (f"{STEM}.quantmcu.tflite", f"{STEM}_op_resolver.h", f"{STEM}_model_data.cc"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_api_rejects_what_it_cannot_take():
    with pytest.raises(ConfigError, match="expected a path, bytes or a Graph"):
        tflite_quantmcu.convert(42, sram="256KB")
    with pytest.raises(ConfigError, match="sram"):
        tflite_quantmcu.convert(BUNDLED, sram=1.5)


def test_api_analyze_takes_paths_and_bytes():
    assert api.analyze(SMALL).arena == api.analyze(SMALL.read_bytes()).arena
    assert tflite_quantmcu.__version__ in _cli("--version").stdout


def test_report_json_is_slim_and_has_the_promised_keys(cli_outputs):
    _, out = cli_outputs
    report = json.loads((out / "report.json").read_text())
    assert report["tool"] == {"name": "tflite-quantmcu", "version": tflite_quantmcu.__version__}
    assert {"fits", "target", "arena_bytes", "final_layers", "output_model"} <= set(report)
    assert "candidates" not in report["patch_plan"]
    candidates = json.loads((out / "patch_candidates.json").read_text())
    assert candidates and all("total_bytes" in c for c in candidates)
    written = read_model_file(path=out / report["output_model"])
    assert len(report["final_layers"]) == len(written.main.operators)
    assert max(layer["arena_end_bytes"] for layer in report["final_layers"]) == \
        report["arena_bytes"]["final"]["head"]


def test_report_md_links_png_figures_that_exist(cli_outputs):
    _, out = cli_outputs
    text = (out / "report.md").read_text()
    linked = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert set(linked) == {"memory_per_layer.png", "patch_grid.png", "bitwidths.png"}
    for name in linked:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert f"{report['arena_bytes']['final']['total']:,} B" in text


def test_model_data_array_compiles_to_the_model_bytes(cli_outputs, tmp_path):
    """The generated C array, compiled by the host C++ compiler, holds exactly the model."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed (apt-get install g++)")
    _, out = cli_outputs
    (tmp_path / "dump.cc").write_text(
        f'#include <cstdio>\n#include "{STEM}_model_data.h"\n'
        f"int main() {{ std::fwrite({STEM}_model::kModelData, 1, "
        f"{STEM}_model::kModelDataSize, stdout); "
        f"return reinterpret_cast<unsigned long>({STEM}_model::kModelData) % 16 != 0; }}\n")
    binary = tmp_path / "dump"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{out}",
                    str(tmp_path / "dump.cc"), str(out / f"{STEM}_model_data.cc"), "-o",
                    str(binary)], check=True)
    dumped = subprocess.run([str(binary)], capture_output=True, check=True).stdout
    assert dumped == (out / f"{STEM}.quantmcu.tflite").read_bytes()


def test_run_compare_reports_bit_identical_outputs_of_a_patch_rewrite(tmp_path, images):
    """patch-int8 does not change numerics, so `run --compare` finds every sample identical."""
    x, y = images
    out = tmp_path / "out"
    proc = _cli("convert", BUNDLED, "--out", out, "--sram", "256KB", "--no-tflm",
                "--policy", "patch-int8")
    assert proc.returncode == 0, proc.stderr
    np.savez(tmp_path / "data.npz", x=x[:20], y=y[:20])
    proc = _cli("run", out / f"{STEM}.patch-int8.tflite", "--data", tmp_path / "data.npz",
                "--compare", BUNDLED, "--save", tmp_path / "o.npy")
    assert proc.returncode == 0, proc.stderr
    assert "20/20 samples bit-identical, top-1 agreement 100.00 %" in proc.stdout
    expected = top1_accuracy(graph=read_model_file(path=BUNDLED), data=str(tmp_path / "data.npz"),
                             progress=False)
    assert f"top-1: {expected * 100:.2f} %" in proc.stdout
    original = read_model_file(path=BUNDLED)
    codes = np.concatenate([b.x for b in data_batches(source=str(tmp_path / "data.npz"),
                                                      graph=original, progress=False)])
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"),
                                  run_graph(graph=original, inputs=[codes])[0])


def test_run_in_the_tflm_wheel_equals_the_reference_executor(tmp_path):
    graph = read_model_file(path=SMALL)
    np.save(tmp_path / "x.npy", random_inputs(graph=graph, samples=3, seed=5)[0][:, 0])
    saved = {}
    for runtime in ("reference", "tflm"):
        proc = _cli("run", SMALL, "--data", tmp_path / "x.npy", "--runtime", runtime,
                    "--save", tmp_path / f"{runtime}.npz")
        assert proc.returncode == 0, proc.stderr
        saved[runtime] = np.load(tmp_path / f"{runtime}.npz")["output_0"]
    np.testing.assert_array_equal(saved["reference"], saved["tflm"])


def test_header_includes_the_glue_only_for_custom_ops(cli_outputs, tmp_path):
    _, out = cli_outputs
    assert '#include "qmcu_tflm_ops.h"' in (out / f"{STEM}_op_resolver.h").read_text()
    proc = _cli("convert", BUNDLED, "--out", tmp_path, "--sram", "256KB", "--no-tflm",
                "--policy", "patch-int8")
    assert proc.returncode == 0, proc.stderr
    header = (tmp_path / f"{STEM}_op_resolver.h").read_text()
    assert "qmcu_tflm_ops.h" not in header and "kTensorArenaSize" in header


def test_bridge_exports_the_c_sources_and_refuses_to_overwrite(tmp_path):
    proc = _cli("bridge", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    exported = tmp_path / "cmixnn_bridge"
    for name in ("src/qmcu_dispatch.c", "include/qmcu/qmcu.h", "tflm/qmcu_tflm_ops.cc",
                 "examples/main.cc", "CMakeLists.txt", "README.md"):
        assert (exported / name).read_bytes() == (REPO / "cmixnn_bridge" / name).read_bytes()
    assert (exported / "docs/qmcu_ops.md").read_bytes() == \
        (REPO / "docs/qmcu_ops.md").read_bytes()
    assert not any(part == "build" for p in exported.rglob("*") for part in p.parts)
    again = _cli("bridge", "--out", tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_wheel_carries_the_bridge(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in bridge_files():
        prefix = "tflite_quantmcu/bridge_docs/" if name.startswith("docs/") else \
            "tflite_quantmcu/cmixnn_bridge/"
        assert prefix + name.removeprefix("docs/") in names, name


def test_bare_command_prints_help_and_a_closed_pipe_is_quiet():
    bare = _cli()
    assert bare.returncode == 0 and "analyze" in bare.stdout and "convert" in bare.stdout
    proc = subprocess.Popen([sys.executable, "-m", "tflite_quantmcu.cli", "analyze",
                             str(fixture_path("mobilenetv2_w100_r224.tflite"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in stderr and stderr == ""


def test_model_bytes_round_trip_through_the_reader(cli_outputs):
    _, out = cli_outputs
    data = (out / f"{STEM}.quantmcu.tflite").read_bytes()
    graph = read_model_bytes(data=data)
    assert graph == read_model_file(path=out / f"{STEM}.quantmcu.tflite")


def test_convert_options_take_string_paths(tmp_path):
    from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline

    options = ConvertOptions(model_path=str(SMALL), out_dir=str(tmp_path), sram_budget=300_000,
                             policy="patch-int8", measure_tflm=False, verify=False)
    conv = run_pipeline(options=options)
    assert (tmp_path / conv.model_file).read_bytes() == conv.model_bytes
