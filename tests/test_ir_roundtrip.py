"""Reader/writer round trip: nothing the file carries is lost, numerics unchanged."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from flatbuffers import flexbuffers

from fixture_models import all_fixture_names, random_inputs
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Buffer, Metadata, Quantization
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file
from tflite_quantmcu.ir.writer import BUFFER_ALIGNMENT, write_model_bytes
from tflite_quantmcu.runtimes.litert import run_litert
from tflite_quantmcu.runtimes.tflm import run_tflm

MODELS = all_fixture_names()


@pytest.mark.parametrize("model_path", MODELS, indirect=True)
def test_round_trip_keeps_graph_and_bytes_are_deterministic(model_path):
    graph = read_model_file(path=model_path)
    written = write_model_bytes(graph=graph)
    reread = read_model_bytes(data=written)
    assert reread == graph
    assert write_model_bytes(graph=reread) == written
    assert write_model_bytes(graph=graph) == written


@pytest.mark.parametrize("model_path", MODELS, indirect=True)
def test_round_trip_outputs_identical_in_litert_and_tflm(model_path):
    original = model_path.read_bytes()
    graph = read_model_bytes(data=original)
    written = write_model_bytes(graph=graph)
    inputs = random_inputs(graph=graph, samples=3, seed=7)
    num_outputs = len(graph.main.outputs)
    for before, after in zip(run_litert(model_bytes=original, inputs=inputs),
                             run_litert(model_bytes=written, inputs=inputs)):
        np.testing.assert_array_equal(before, after)
    tflm_before = run_tflm(model_bytes=original, inputs=inputs, num_outputs=num_outputs)
    tflm_after = run_tflm(model_bytes=written, inputs=inputs, num_outputs=num_outputs)
    for before, after in zip(tflm_before.outputs, tflm_after.outputs):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("model_path", MODELS, indirect=True)
def test_round_trip_keeps_signatures_metadata_and_names(model_path):
    raw = schema.fb.ModelT.InitFromPackedBuf(model_path.read_bytes(), 0)
    graph = read_model_file(path=model_path)
    again = schema.fb.ModelT.InitFromPackedBuf(write_model_bytes(graph=graph), 0)
    assert [t.name for t in again.subgraphs[0].tensors] == [t.name for t in raw.subgraphs[0].tensors]
    assert [m.name for m in again.metadata or []] == [m.name for m in raw.metadata or []]
    for old, new in zip(raw.metadata or [], again.metadata or []):
        assert _buffer_bytes(again, new.buffer) == _buffer_bytes(raw, old.buffer)
    assert [(s.signatureKey, [i.name for i in s.inputs], [o.tensorIndex for o in s.outputs])
            for s in again.signatureDefs or []] == \
        [(s.signatureKey, [i.name for i in s.inputs], [o.tensorIndex for o in s.outputs])
         for s in raw.signatureDefs or []]


def _buffer_bytes(model, index):
    data = model.buffers[index].data
    return b"" if data is None else bytes(np.asarray(data, dtype=np.uint8))


@pytest.mark.parametrize("model_path", MODELS[:1], indirect=True)
def test_written_buffers_are_16_byte_aligned(model_path):
    data = write_model_bytes(graph=read_model_file(path=model_path))
    model = schema.fb.Model.GetRootAs(data, 0)
    checked = 0
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            vector = buffer._tab.Vector(buffer._tab.Offset(4))
            assert vector % BUFFER_ALIGNMENT == 0, f"buffer {i} at byte {vector}"
            checked += 1
    assert checked > 0


def _support_metadata_blob() -> bytes:
    """Stand-in for a TFLite Support metadata flatbuffer: identifier M001 plus payload."""
    payload = b"model description: shoes and shirts" + bytes(range(37))
    return struct.pack("<I", 8) + b"M001" + payload


@pytest.mark.parametrize("model_path", ["conv_chain.tflite"], indirect=True)
def test_round_trip_keeps_everything_a_file_can_carry(model_path):
    graph = read_model_file(path=model_path)
    blob = _support_metadata_blob()
    graph.metadata.append(Metadata(name="TFLITE_METADATA", buffer=Buffer(data=blob)))
    graph.metadata_buffers.append(graph.metadata[-1].buffer)
    graph.description = "round-trip probe"
    sub = graph.main
    op = sub.operators[0]
    op.opcode = type(op.opcode)(builtin=op.opcode.builtin, custom=None, version=3)
    builder = flexbuffers.Builder()
    with builder.Map():
        builder.Int("probe", 7)
    conv = next(o for o in sub.operators if o.type == "CONV_2D")
    weights = sub.tensors[conv.inputs[1]]
    weights.quantization = Quantization(
        scale=weights.quantization.scale, zero_point=weights.quantization.zero_point,
        quantized_dimension=weights.quantization.quantized_dimension,
        min=(-1.5,), max=(2.25,))
    options_blob = bytes(builder.Finish())
    custom = schema.fb.CustomQuantizationT()
    custom.custom = np.frombuffer(options_blob, dtype=np.uint8)
    out_tensor = sub.tensors[conv.outputs[0]]
    out_tensor.quantization = Quantization(
        scale=out_tensor.quantization.scale, zero_point=out_tensor.quantization.zero_point,
        details_type=schema.fb.QuantizationDetails.CustomQuantization, details=custom)
    written = write_model_bytes(graph=graph)
    reread = read_model_bytes(data=written)
    assert reread == graph
    assert reread.metadata[-1].buffer.data == blob
    assert reread.metadata_buffers[0] is reread.metadata[-1].buffer
    assert reread.description == "round-trip probe"
    assert reread.main.operators[0].opcode.version == 3
    quant = reread.main.tensors[conv.outputs[0]].quantization
    assert bytes(np.asarray(quant.details.custom, dtype=np.uint8)) == options_blob
    assert reread.main.tensors[conv.inputs[1]].quantization.max == (2.25,)


@pytest.mark.parametrize("model_path", ["conv_chain.tflite"], indirect=True)
def test_shared_buffers_stay_shared(model_path):
    graph = read_model_file(path=model_path)
    sub = graph.main
    conv = next(o for o in sub.operators if o.type == "CONV_2D")
    weights = sub.tensors[conv.inputs[1]]
    twin = type(weights)(name="weights_twin", shape=weights.shape, dtype=weights.dtype,
                         buffer=weights.buffer, quantization=weights.quantization)
    sub.add_tensor(tensor=twin)
    before = len(write_model_bytes(graph=read_model_file(path=model_path)))
    written = write_model_bytes(graph=graph)
    assert len(written) - before < len(weights.buffer.data)
    reread = read_model_bytes(data=written)
    assert reread.main.tensors["weights_twin"].buffer is reread.main.tensors[conv.inputs[1]].buffer
