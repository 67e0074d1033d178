"""Bad input ends in one `error:` line naming the part at fault, exit 2, no partial output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_output import message_lines

from fixture_models import fixture_path
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Buffer, Graph, OpCode, Operator, Subgraph, Tensor
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.ir.writer import write_model_file

CONV_CHAIN = fixture_path("conv_chain.tflite")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", *map(str, args)],
                          capture_output=True, text=True, check=False)


def _assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_missing_file(tmp_path):
    _assert_user_error(_cli("analyze", tmp_path / "nope.tflite"), "nope.tflite", "no such file")


def test_directory_instead_of_file(tmp_path):
    _assert_user_error(_cli("analyze", tmp_path), "not a regular file")


def test_not_a_flatbuffer(tmp_path):
    path = tmp_path / "notes.tflite"
    path.write_text("these are my notes, not a model\n")
    _assert_user_error(_cli("analyze", path), "notes.tflite", "not a TFLite model",
                       "expected b'TFL3'")


def test_too_short_file(tmp_path):
    path = tmp_path / "tiny.tflite"
    path.write_bytes(b"TFL")
    _assert_user_error(_cli("analyze", path), "tiny.tflite", "3 bytes, expected at least 8")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.tflite"
    data = CONV_CHAIN.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_user_error(_cli("analyze", path), "cut.tflite", "truncated")


def test_wrong_file_identifier(tmp_path):
    path = tmp_path / "other.tflite"
    data = bytearray(CONV_CHAIN.read_bytes())
    data[4:8] = b"M001"
    path.write_bytes(bytes(data))
    _assert_user_error(_cli("analyze", path), "file identifier b'M001'", "expected b'TFL3'")


def _float_conv_model(path: Path) -> None:
    f32 = schema.TensorType.FLOAT32
    sub = Subgraph()
    sub.add_tensor(tensor=Tensor(name="image", shape=(1, 8, 8, 3), dtype=f32))
    sub.add_tensor(tensor=Tensor(name="kernel", shape=(4, 3, 3, 3), dtype=f32,
                                 buffer=Buffer(data=bytes(4 * 4 * 27))))
    sub.add_tensor(tensor=Tensor(name="features", shape=(1, 6, 6, 4), dtype=f32))
    sub.inputs, sub.outputs = ["image"], ["features"]
    options = schema.fb.Conv2DOptionsT()
    options.padding = schema.Padding.VALID
    options.strideW = options.strideH = 1
    sub.operators = [Operator(opcode=OpCode(builtin=schema.BuiltinOperator.CONV_2D),
                              inputs=["image", "kernel", None], outputs=["features"],
                              options_type=schema.BuiltinOptions.Conv2DOptions, options=options)]
    write_model_file(graph=Graph(subgraphs=[sub]), path=path)


def test_float_model_is_rejected(tmp_path):
    path = tmp_path / "float.tflite"
    _float_conv_model(path)
    _assert_user_error(_cli("analyze", path), "float.tflite", "#0 CONV_2D -> features",
                       "FLOAT32", "expected an int8-quantized model")


def test_unknown_op_code(tmp_path):
    graph = read_model_file(path=CONV_CHAIN)
    op = graph.main.operators[0]
    op.opcode = OpCode(builtin=250, version=1)
    path = tmp_path / "future.tflite"
    write_model_file(graph=graph, path=path)
    _assert_user_error(_cli("analyze", path), "future.tflite", "unknown builtin code 250")


def test_unwritable_json_path_leaves_nothing(tmp_path):
    target = tmp_path / "missing_dir" / "out.json"
    _assert_user_error(_cli("analyze", CONV_CHAIN, "--json", target), "out.json", "cannot write")
    assert not target.parent.exists()


def test_json_path_that_is_a_directory(tmp_path):
    _assert_user_error(_cli("analyze", CONV_CHAIN, "--json", tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_analyze_json_has_the_documented_keys(tmp_path):
    target = tmp_path / "a.json"
    proc = _cli("analyze", CONV_CHAIN, "--json", target)
    assert proc.returncode == 0, proc.stderr
    import json
    data = json.loads(target.read_text())
    for key in ("target", "arena_bytes", "peak_sram_bytes", "flash_bytes", "macs", "bitops",
                "layers"):
        assert key in data
    assert data["peak_sram_bytes"] == max(layer["arena_end_bytes"] for layer in data["layers"])
    arena = data["arena_bytes"]
    assert arena["head"] == data["peak_sram_bytes"]
    assert arena["total"] == arena["head"] + arena["tail"] and arena["tail"] > 0
    assert data["target"] == "cortex-m"
    assert f"arena (cortex-m): {arena['total']} B" in proc.stdout


@pytest.mark.parametrize("args", [["analyze"], ["frobnicate", "x"]])
def test_bad_command_line_exits_2(args):
    assert _cli(*args).returncode == 2
