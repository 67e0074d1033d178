"""--input-type / --output-type: the float I/O ops go, the int8 values stay bit-exact."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fixture_models import fixture_path
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.errors import ConfigError, UnsupportedModelError
from tflite_quantmcu.io_types import IoTypes, convert_io_types
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.runtimes.tflm import run_tflm

FLOAT_IO = "mobilenetv1_w025_r96_float_io.tflite"


def _load():
    path = fixture_path(FLOAT_IO)
    if not path.exists():
        pytest.skip(f"{path} not generated (run `python3 testdata/make_fixtures.py`)")
    return path, read_model_file(path=path)


def _quantize(x: np.ndarray, scale: float, zero_point: int, low: int, high: int) -> np.ndarray:
    """TFLM's QUANTIZE: round half away from zero, then clamp."""
    scaled = x.astype(np.float32) / np.float32(scale)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, low, high)


def _io_quant(graph):
    sub = graph.main
    quantize = next(op for op in sub.operators if op.type == "QUANTIZE")
    dequantize = next(op for op in sub.operators if op.type == "DEQUANTIZE")
    q_in = sub.tensors[quantize.outputs[0]].quantization
    q_out = sub.tensors[dequantize.inputs[0]].quantization
    return (q_in.scale[0], q_in.zero_point[0]), (q_out.scale[0], q_out.zero_point[0])


@pytest.mark.parametrize("kind,shift", [("int8", 0), ("uint8", 128)])
def test_retyped_model_gives_the_quantized_values_of_the_original(kind, shift):
    path, graph = _load()
    (in_scale, in_zp), (out_scale, out_zp) = _io_quant(graph)
    converted = convert_io_types(graph=graph, options=IoTypes(input_type=kind, output_type=kind))
    sub = converted.main
    want = schema.TensorType.INT8 if kind == "int8" else schema.TensorType.UINT8
    assert [sub.tensors[k].dtype for k in sub.inputs + sub.outputs] == [want, want]
    if kind == "int8":
        assert not {"QUANTIZE", "DEQUANTIZE"} & {op.type for op in sub.operators}
    x = np.random.default_rng(5).uniform(-1, 1, size=(3, 1, 96, 96, 3)).astype(np.float32)
    original = run_tflm(model_bytes=path.read_bytes(), inputs=[x], num_outputs=1).outputs[0]
    q = _quantize(x, in_scale, in_zp, -128, 127) + shift
    dtype = np.int8 if kind == "int8" else np.uint8
    got = run_tflm(model_bytes=write_model_bytes(graph=converted), inputs=[q.astype(dtype)],
                   num_outputs=1).outputs[0]
    dequantized = np.float32(out_scale) * (got.astype(np.int32) - shift - out_zp).astype(
        np.float32)
    np.testing.assert_array_equal(dequantized, original)


def test_int8_input_lowers_the_whole_arena_below_the_original():
    _, graph = _load()
    converted = convert_io_types(graph=graph, options=IoTypes(input_type="int8",
                                                              output_type="int8"))
    before, after = arena_bytes(graph=graph), arena_bytes(graph=converted)
    assert after.total < before.total
    assert after.head < before.head  # the 110,592 B float input is gone


def test_cli_budget_error_names_the_float_input_and_int8_input_fits(tmp_path):
    path, graph = _load()
    original_total = arena_bytes(graph=graph).total

    def convert(*extra):
        return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert", str(path),
                               "--policy", "patch-int8", "--no-tflm", *extra],
                              capture_output=True, text=True, check=False)

    failed = convert("--out", str(tmp_path / "a"), "--sram", "64KB")
    assert failed.returncode == 2
    assert "--input-type int8 removes it" in failed.stderr and "float32 input" in failed.stderr
    done = convert("--out", str(tmp_path / "b"), "--sram", "1MB", "--input-type", "int8",
                   "--output-type", "int8")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["arena_bytes"]["final"]["total"] < original_total
    assert report["arena_bytes"]["layer_based"]["total"] == original_total


def test_bad_io_type_and_unsupported_input_are_named():
    _, graph = _load()
    with pytest.raises(ConfigError, match="--input-type 'int16'"):
        IoTypes(input_type="int16")
    sub = graph.main
    sub.tensors[sub.inputs[0]].dtype = schema.TensorType.INT16
    with pytest.raises(UnsupportedModelError, match="INT16"):
        convert_io_types(graph=graph, options=IoTypes(input_type="int8"))
