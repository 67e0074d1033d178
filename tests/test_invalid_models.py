"""Each class of bad model found by attacking the reader ends in a typed error naming the part.

Every case edits one field of a valid fixture (conv_chain.tflite) through the schema's
object API, so the rest of the file stays valid and the error can only come from that
field. The CLI cases check the user-visible contract: one `error:` line, exit 2, no
traceback; an internal failure prints `error: internal: ...` and exits 3.
"""
from __future__ import annotations

import tracemalloc

import flatbuffers
import numpy as np
import pytest

from cli_output import message_lines
from flatbuffers import flexbuffers

from fixture_models import fixture_path
from model_mutations import seed_models
from tflite_quantmcu import cli
from tflite_quantmcu.errors import (InvalidModelError, ModelLimitError, UnsupportedModelError,
                                    UnsupportedOpError)
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.limits import ReaderLimits
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file

fb = schema.fb
BASE = fixture_path("conv_chain.tflite").read_bytes()
FIRST_CONV_FILTER = 18   # input 1 of op #0 (CONV_2D), per-channel quantized
CONV_OUT = 19            # output of op #0


def _model():
    return fb.ModelT.InitFromPackedBuf(BASE, 0)


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _read(model, **kwargs):
    return read_model_bytes(data=_pack(model), source="bad.tflite", **kwargs)


def _set(array, index, value, dtype=np.int32):
    values = list(array)
    values[index] = value
    return np.asarray(values, dtype=dtype)


def test_unchanged_fixture_reads():
    assert _read(_model()).main.operators


def test_negative_dimension():
    model = _model()
    model.subgraphs[0].tensors[CONV_OUT].shape = np.asarray([1, -20, 24, 8], dtype=np.int32)
    with pytest.raises(InvalidModelError, match=r"tensor 19 .*negative dimension"):
        _read(model)


@pytest.mark.parametrize("field, values, match", [
    ("scale", [0.1, 0.2, 0.3], r"3 scale values and \d+ zero points"),
    ("both", [0.1, 0.2, 0.3], r"3 scales for dimension 0 of size \d+"),
])
def test_quantization_lengths(field, values, match):
    model = _model()
    quant = model.subgraphs[0].tensors[FIRST_CONV_FILTER].quantization
    quant.scale = np.asarray(values, dtype=np.float32)
    if field == "both":
        quant.zeroPoint = np.zeros(len(values), dtype=np.int64)
    with pytest.raises(InvalidModelError, match=match):
        _read(model)


def test_ops_out_of_order():
    model = _model()
    ops = model.subgraphs[0].operators
    ops[0], ops[1] = ops[1], ops[0]
    with pytest.raises(InvalidModelError, match=r"op #0 PAD reads .* before op #1 writes it"):
        _read(model)


def test_op_writing_a_constant():
    model = _model()
    model.subgraphs[0].operators[3].outputs = np.asarray([FIRST_CONV_FILTER], dtype=np.int32)
    with pytest.raises(InvalidModelError, match=r"op #3 .* writes .*a constant"):
        _read(model)


@pytest.mark.parametrize("where", ["tensor", "subgraph", "description", "metadata"])
def test_invalid_utf8_name(where):
    model = _model()
    bad = b"conv\xff\xfe"
    if where == "tensor":
        model.subgraphs[0].tensors[CONV_OUT].name = bad
    elif where == "subgraph":
        model.subgraphs[0].name = bad
    elif where == "description":
        model.description = bad
    else:
        model.metadata[0].name = bad
    with pytest.raises(InvalidModelError, match="not valid UTF-8"):
        _read(model)


def test_minus_one_where_the_input_is_not_optional():
    model = _model()
    model.subgraphs[0].operators[0].inputs = _set(model.subgraphs[0].operators[0].inputs, 1, -1)
    with pytest.raises(InvalidModelError, match=r"op #0 CONV_2D: input 1 is -1; only inputs "
                                                r"\[2\] may be omitted"):
        _read(model)


def test_omitted_bias_is_allowed():
    model = _model()
    model.subgraphs[0].operators[0].inputs = _set(model.subgraphs[0].operators[0].inputs, 2, -1)
    graph = _read(model)
    assert graph.main.operators[0].inputs[2] is None


def test_missing_inputs():
    model = _model()
    model.subgraphs[0].operators[0].inputs = np.asarray([0], dtype=np.int32)
    with pytest.raises(InvalidModelError, match=r"op #0 CONV_2D: 1 inputs; expected 2..3"):
        _read(model)


def test_string_tensor():
    model = _model()
    model.subgraphs[0].tensors[CONV_OUT].type = schema.TensorType.STRING
    with pytest.raises(UnsupportedModelError, match=r"tensor 19 .*type STRING"):
        _read(model)


def test_minus_one_as_subgraph_input():
    model = _model()
    model.subgraphs[0].inputs = np.asarray([-1], dtype=np.int32)
    with pytest.raises(InvalidModelError, match=r"subgraph 0 inputs: index -1"):
        _read(model)


def _with_offline_plan(model, data: bytes):
    buf = fb.BufferT()
    buf.data = np.frombuffer(data, dtype=np.uint8).copy()
    model.buffers.append(buf)
    meta = fb.MetadataT()
    meta.name = b"OfflineMemoryAllocation"
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    return model


def test_offline_plan_not_a_multiple_of_4():
    tensors = len(_model().subgraphs[0].tensors)
    data = np.asarray([0, 1, tensors] + [-1] * tensors, dtype="<i4").tobytes()[:-2]
    with pytest.raises(InvalidModelError, match=r"OfflineMemoryAllocation.*not|multiple of 4"):
        _read(_with_offline_plan(_model(), data))


def test_offline_plan_with_the_wrong_tensor_count():
    data = np.asarray([0, 1, 5] + [-1] * 5, dtype="<i4").tobytes()
    with pytest.raises(InvalidModelError, match=r"OfflineMemoryAllocation.*expected header"):
        _read(_with_offline_plan(_model(), data))


def _qmcu_model():
    data = next(s.data for s in seed_models() if s.name == "synthetic_qmcu")
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    codes = {i for i, c in enumerate(model.operatorCodes)
             if (c.customCode or b"").startswith(b"QMCU_")}
    op = next(op for op in model.subgraphs[0].operators if op.opcodeIndex in codes)
    return model, op


def test_valid_qmcu_model_reads():
    model, _ = _qmcu_model()
    assert any(op.type.startswith("QMCU_") for op in _read(model).main.operators)


@pytest.mark.parametrize("options, error, match", [
    (b"\x01\x02\x03", InvalidModelError, "custom options"),
    (b"", InvalidModelError, "custom options"),
    ("version-2", UnsupportedOpError, "options version 2; this tool reads version 1"),
    ("missing-key", InvalidModelError, "do not decode"),
])
def test_malformed_or_version_2_qmcu_options(options, error, match):
    model, op = _qmcu_model()
    raw = flexbuffers.Loads(bytes(np.asarray(op.customOptions, dtype=np.uint8)))
    if options == "version-2":
        options = bytes(flexbuffers.Dumps({**raw, "version": 2}))
    elif options == "missing-key":
        options = bytes(flexbuffers.Dumps({k: v for k, v in raw.items() if k != "in_shape"}))
    op.customOptions = np.frombuffer(options, dtype=np.uint8).copy()
    with pytest.raises(error, match=match):
        _read(model)


def test_wrong_options_type_for_an_op():
    model = _model()
    ops = model.subgraphs[0].operators
    pad_op = ops[1]
    ops[0].builtinOptionsType, ops[0].builtinOptions = pad_op.builtinOptionsType, \
        pad_op.builtinOptions
    with pytest.raises(InvalidModelError, match=r"op #0 CONV_2D: builtin options .*expected "
                                                r"Conv2DOptions"):
        _read(model)


def test_filter_that_contradicts_the_op():
    model = _model()
    model.subgraphs[0].operators[0].inputs = _set(model.subgraphs[0].operators[0].inputs, 1, 1)
    with pytest.raises(InvalidModelError, match=r"op #0 CONV_2D: filter shape \[4, 2\]"):
        _read(model)


# ---- limits: typed errors before the memory is spent -----------------------------------
class _SharedBufferT(fb.BufferT):
    """Every instance points at one data vector (what a hostile file can do)."""

    packed: dict = {}

    def Pack(self, builder):
        if id(builder) not in self.packed:
            self.packed[id(builder)] = builder.CreateNumpyVector(self.data)
        offset = self.packed[id(builder)]
        fb.BufferStart(builder)
        fb.BufferAddData(builder, offset)
        return fb.BufferEnd(builder)


def test_one_buffer_repeated_does_not_multiply_memory():
    model = _model()
    shared = _SharedBufferT()
    shared.data = np.zeros(143 * 1024, dtype=np.uint8)
    model.buffers += [shared] * 5000     # 5000 x 143 KB = 700 MB if each were copied
    data = _pack(model)
    assert len(data) < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(InvalidModelError, match="buffer data overlaps"):
            read_model_bytes(data=data, source="alias.tflite")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


class _SharedSubGraphT(fb.SubGraphT):
    packed: dict = {}

    def Pack(self, builder):
        if id(builder) not in self.packed:
            self.packed[id(builder)] = super().Pack(builder)
        return self.packed[id(builder)]


def test_one_subgraph_repeated_20000_times_is_refused():
    model = _model()
    shared = _SharedSubGraphT()
    shared.__dict__.update(vars(model.subgraphs[0]))
    model.subgraphs = [shared] * 20_000
    data = _pack(model)
    with pytest.raises(ModelLimitError, match=r"20000 subgraphs .* max_subgraphs=1000"):
        read_model_bytes(data=data, source="repeat.tflite")


@pytest.mark.parametrize("limit, match", [
    (ReaderLimits(max_file_bytes=1000), "max_file_bytes=1000"),
    (ReaderLimits(max_tensors=10), "max_tensors=10"),
    (ReaderLimits(max_ops=3), "max_ops=3"),
    (ReaderLimits(max_buffers=5), "max_buffers=5"),
    (ReaderLimits(max_buffer_bytes=100), "max_buffer_bytes=100"),
    (ReaderLimits(max_table_bytes=100), "max_table_bytes=100"),
])
def test_each_limit_is_a_typed_error(limit, match):
    with pytest.raises(ModelLimitError, match=match):
        read_model_bytes(data=BASE, source="limits.tflite", limits=limit)


def test_file_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.tflite"
    path.write_bytes(BASE)
    with pytest.raises(ModelLimitError, match=str(path)):
        read_model_file(path=path, limits=ReaderLimits(max_file_bytes=len(BASE) - 1))


# ---- CLI: one line, exit 2; internal failures exit 3 -----------------------------------
def test_cli_prints_one_error_line_for_a_bad_model(tmp_path, capsys):
    model = _model()
    model.subgraphs[0].tensors[CONV_OUT].type = schema.TensorType.STRING
    path = tmp_path / "string.tflite"
    path.write_bytes(_pack(model))
    assert cli.main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "STRING" in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_last_resort_handler(monkeypatch, capsys):
    def broken(**kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "analyze_model", broken)
    assert cli.main(["analyze", str(fixture_path("conv_chain.tflite"))]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: internal: KeyError: 'a bug' (please report this")
    assert "Traceback" not in err


def test_signature_entry_that_is_no_subgraph_input():
    model = _model()
    model.signatureDefs[0].inputs[0].tensorIndex = CONV_OUT
    with pytest.raises(InvalidModelError, match=r"signature .* input .* not one of subgraph 0's "
                                                r"inputs"):
        _read(model)


# ---- found by bench/fuzz_reader.py: LiteRT segfaulted on these in the verify step ------
def test_op_writing_a_variable_tensor():
    model = _model()
    model.subgraphs[0].tensors[CONV_OUT].isVariable = True
    with pytest.raises(InvalidModelError, match=r"op #0 CONV_2D writes .*a variable tensor"):
        _read(model)


def test_int8_activation_without_quantization():
    model = _model()
    model.subgraphs[0].tensors[CONV_OUT].quantization = None
    with pytest.raises(InvalidModelError, match=r"op #0 CONV_2D: INT8 tensor .* has no "
                                                r"quantization"):
        _read(model)


def test_dead_op_is_refused_with_its_name():
    model = _model()
    ops = model.subgraphs[0].operators
    ops[5].inputs = _set(ops[5].inputs, 1, 21)   # ADD reads op #2's output twice: #3, #4 dead
    with pytest.raises(UnsupportedModelError, match=r"op #4 CONV_2D: no op reads its output"):
        _read(model)


def test_op_without_outputs():
    model = _model()
    model.subgraphs[0].operators[14].outputs = np.asarray([], dtype=np.int32)
    model.subgraphs[0].outputs = np.asarray([32], dtype=np.int32)  # op #13's output
    with pytest.raises(UnsupportedOpError, match=r"op #14 RESHAPE: no outputs"):
        _read(model)


def test_litert_refusal_in_the_verify_step_is_one_typed_line(tmp_path, capsys):
    model = tmp_path / "qmcu.tflite"
    model.write_bytes(next(s.data for s in seed_models() if s.name == "synthetic_qmcu"))
    code = cli.main(["convert", str(model), "--out", str(tmp_path / "out"), "--sram", "64KB",
                     "--policy", "patch-int8", "--no-tflm"])
    err = capsys.readouterr().err
    assert code == 2 and len(message_lines(err)) == 1
    line = message_lines(err)[0]
    assert line.startswith("error: LiteRT rejects the input model: ") and "QMCU_CONV_2D" in line
    assert not (tmp_path / "out").exists()
