"""Weights stored after the flatbuffer (`Buffer.offset` / `size`, as the TF converter writes
for large models) are read, analysed, rewritten and written faithfully.

The external-buffer file is made by moving every constant buffer of a fixture after the
flatbuffer; LiteRT, not our reader, decides whether that file is right. TFLite Micro reads
only inline buffer data, so it runs the inline original against our inline rewrite of
the external file.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fixture_models import fixture_path, random_inputs
from tflite_quantmcu.analysis.model_analysis import analyze_model
from tflite_quantmcu.errors import InvalidModelError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.ir.writer import BUFFER_ALIGNMENT, write_model_bytes
from tflite_quantmcu.runtimes.litert import run_litert
from tflite_quantmcu.runtimes.tflm import run_tflm

MODEL = fixture_path("resnet8_cifar.tflite")


def _external_copy(data: bytes) -> bytes:
    """The same model with every non-empty buffer moved after the flatbuffer."""
    graph = read_model_bytes(data=data)
    buffers = {id(t.buffer): t.buffer for sub in graph.subgraphs for t in sub.tensors.values()
               if t.buffer is not None}
    for buffer in buffers.values():
        buffer.external = True
    return write_model_bytes(graph=graph)


@pytest.fixture(scope="module")
def models():
    inline = MODEL.read_bytes()
    return inline, _external_copy(inline)


def test_file_really_stores_weights_after_the_flatbuffer(models):
    inline, external = models
    raw = schema.fb.ModelT.InitFromPackedBuf(external, 0)
    placed = [(int(b.offset), int(b.size)) for b in raw.buffers if b.offset > 1]
    assert placed, "no buffer uses offset/size"
    assert all(b.data is None for b in raw.buffers if b.offset > 1)
    assert all(off % BUFFER_ALIGNMENT == 0 and off + size <= len(external)
               for off, size in placed)
    graph = read_model_bytes(data=inline)
    weights = sum(len(b.data) for b in {id(t.buffer): t.buffer for t in
                                        graph.main.tensors.values() if t.buffer}.values())
    assert sum(size for _, size in placed) == weights


def test_outputs_equal_in_litert_and_tflm(models):
    inline, external = models
    graph = read_model_bytes(data=inline)
    inputs = random_inputs(graph=graph, samples=3, seed=11)
    rewritten = write_model_bytes(graph=read_model_bytes(data=external))
    for model in (external, rewritten):
        for before, after in zip(run_litert(model_bytes=inline, inputs=inputs),
                                 run_litert(model_bytes=model, inputs=inputs)):
            np.testing.assert_array_equal(before, after)
    count = len(graph.main.outputs)
    for_mcu = write_model_bytes(graph=read_model_bytes(data=external), inline_buffers=True)
    assert len(for_mcu) < len(external) + 64 and b"".join(
        t.buffer.data for t in read_model_bytes(data=for_mcu).main.tensors.values()
        if t.buffer and t.buffer.external) == b""
    before = run_tflm(model_bytes=inline, inputs=inputs, num_outputs=count).outputs
    after = run_tflm(model_bytes=for_mcu, inputs=inputs, num_outputs=count).outputs
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_read_analyse_and_write_round_trip(models):
    inline, external = models
    graph = read_model_bytes(data=external)
    plain = read_model_bytes(data=inline)
    for key, tensor in graph.main.tensors.items():
        other = plain.main.tensors[key]
        assert (tensor.buffer is None) == (other.buffer is None)
        if tensor.buffer is not None:
            assert tensor.buffer.external and tensor.buffer.data == other.buffer.data
    assert write_model_bytes(graph=graph) == external
    ours, base = analyze_model(graph=graph, target="cortex-m"), \
        analyze_model(graph=plain, target="cortex-m")
    assert ours.weight_bytes == base.weight_bytes > 0
    assert ours.arena.total == base.arena.total and ours.macs == base.macs


def test_offset_past_the_end_is_a_typed_error(models):
    _, external = models
    raw = schema.fb.ModelT.InitFromPackedBuf(external, 0)
    index = next(i for i, b in enumerate(raw.buffers) if b.offset > 1)
    cut = raw.buffers[index].offset + raw.buffers[index].size - 1
    with pytest.raises(InvalidModelError, match="after the flatbuffer|past the end"):
        read_model_bytes(data=external[:cut])


def _convert(model, out):
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert", str(model),
                           "--out", str(out), "--sram", "48KB", "--policy", "patch-int8",
                           "--no-tflm"], capture_output=True, text=True, check=False)


def test_convert_gives_the_same_result_as_the_inline_model(models, tmp_path):
    inline, external = models
    results = {}
    for name, data in (("inline", inline), ("external", external)):
        src = tmp_path / name / "resnet8_cifar.tflite"
        src.parent.mkdir()
        src.write_bytes(data)
        proc = _convert(src, tmp_path / f"{name}_out")
        assert proc.returncode == 0, proc.stderr
        out = tmp_path / f"{name}_out"
        report = json.loads((out / "report.json").read_text())
        results[name] = (report["arena_bytes"], report["macs"], report["patch_plan"],
                         (out / "resnet8_cifar.patch-int8.tflite").read_bytes())
    assert results["inline"] == results["external"]
    assert results["inline"][2]["split_op"] is not None, "the plan patches the model"
    converted = results["external"][3]
    graph = read_model_bytes(data=converted)
    assert not any(t.buffer.external for t in graph.main.tensors.values() if t.buffer)
    inputs = random_inputs(graph=graph, samples=2, seed=3)
    for a, b in zip(run_litert(model_bytes=inline, inputs=inputs),
                    run_litert(model_bytes=converted, inputs=inputs)):
        np.testing.assert_array_equal(a, b)
