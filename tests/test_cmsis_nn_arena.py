"""The cortex-m arena with TFLite Micro's CMSIS-NN kernels (the Cortex-M4 build).

tests/data/cmsis_nn_90b983c2_4ab83cc3.json records facts read from tflite-micro 90b983c2's
kernels/cmsis_nn and CMSIS-NN 4ab83cc3 (its "how" says how): the kernels' OpData sizes,
CMSIS-NN's own *_get_buffer_size results on a set of shapes, and arena_used_bytes of a
Cortex-M4 firmware (QEMU) with either kernel set on the bundled models. Nothing of that
build is in the repository; these tests check our model against the recorded figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixture_models import TESTDATA
from tflite_quantmcu.analysis.model_analysis import analyze_model, arena_bytes
from tflite_quantmcu.analysis.tflm_scratch import cmsis_nn_scratch_requests, scratch_requests
from tflite_quantmcu.analysis.tflm_tail import CMSIS_NN, REFERENCE, TARGETS, arena_tail
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Buffer, OpCode, Operator, Quantization, Subgraph, Tensor
from tflite_quantmcu.ir.reader import read_model_file

DATA = json.loads((Path(__file__).parent / "data" / "cmsis_nn_90b983c2_4ab83cc3.json").read_text())
INT8, INT4, INT32 = schema.TensorType.INT8, schema.TensorType.INT4, schema.TensorType.INT32


def _act(name, shape):
    return Tensor(name=name, shape=tuple(shape), dtype=INT8,
                  quantization=Quantization(scale=(0.1,), zero_point=(0,)))


def _const(name, shape, dtype=INT8, channels=1):
    count = 1
    for d in shape:
        count *= d
    nbytes = (count * schema.TENSOR_TYPE_BITS[dtype] + 7) // 8
    quant = Quantization(scale=(0.1,) * channels, zero_point=(0,) * channels)
    return Tensor(name=name, shape=tuple(shape), dtype=dtype, buffer=Buffer(data=bytes(nbytes)),
                  quantization=quant)


def _out(size, kernel, stride, same):
    return (size + stride - 1) // stride if same else (size - kernel + stride) // stride


def _single_op(case) -> tuple[Subgraph, Operator]:
    """A one-op graph of a recorded case: x[1,h,w,cin] -op-> y."""
    h, w, kh, kw, s = case["h"], case["w"], case["kh"], case["kw"], case["stride"]
    oh, ow = _out(h, kh, s, case["same"]), _out(w, kw, s, case["same"])
    sub = Subgraph()
    sub.add_tensor(tensor=_act("x", (1, h, w, case["cin"])))
    sub.add_tensor(tensor=_act("y", (1, oh, ow, case["cout"])))
    kind = case["op"]
    padding = schema.Padding.SAME if case["same"] else schema.Padding.VALID
    if kind == "AVERAGE_POOL_2D":
        options = schema.fb.Pool2DOptionsT()
        inputs = ["x"]
    else:
        dtype = INT4 if case["int4"] else INT8
        if kind == "CONV_2D":
            options = schema.fb.Conv2DOptionsT()
            shape = (case["cout"], kh, kw, case["cin"])
        else:
            options = schema.fb.DepthwiseConv2DOptionsT()
            options.depthMultiplier = case["cout"] // case["cin"]
            shape = (1, kh, kw, case["cout"])
        options.dilationHFactor = options.dilationWFactor = 1
        sub.add_tensor(tensor=_const("w", shape, dtype, channels=case["cout"]))
        sub.add_tensor(tensor=_const("b", (case["cout"],), INT32, channels=case["cout"]))
        inputs = ["x", "w", "b"]
    options.padding, options.strideH, options.strideW = padding, s, s
    if kind == "AVERAGE_POOL_2D":
        options.filterHeight, options.filterWidth = kh, kw
    op = Operator(opcode=OpCode(builtin=getattr(schema.BuiltinOperator, kind)), inputs=inputs,
                  outputs=["y"], options=options)
    sub.inputs, sub.outputs, sub.operators = ["x"], ["y"], [op]
    return sub, op


def _case_id(c) -> str:
    padding = "same" if c["same"] else "valid"
    return (f"{c['op']}-{c['kh']}x{c['kw']}-c{c['cin']}-{c['cout']}-s{c['stride']}-{padding}"
            + ("-int4" if c["int4"] else ""))


@pytest.mark.parametrize("case", DATA["scratch_cases"],
                         ids=[_case_id(c) for c in DATA["scratch_cases"]])
def test_scratch_equals_cmsis_nn_get_buffer_size(case):
    sub, op = _single_op(case)
    requests = cmsis_nn_scratch_requests(subgraph=sub, op=op)
    assert requests == ([case["bytes"]] if case["bytes"] else []), case


def test_dsp_paths_that_ask_nothing_still_ask_nothing():
    # our model omits the 1x1-fast and fully-connected buffers because CMSIS-NN gives 0
    assert DATA["zero_on_dsp"] == {"conv_1x1_fast": 0, "fully_connected_s8": 0}


@pytest.mark.parametrize("name", sorted(DATA["struct_sizes"]))
def test_cmsis_nn_op_data_sizes(name):
    assert TARGETS["cortex-m"].sizes[name] == tuple(DATA["struct_sizes"][name])


def test_fully_connected_rank3_per_tensor_asks_for_fake_per_channel_params():
    sub = Subgraph()
    for t in (_act("x", (1, 5, 16)), _const("w", (10, 16)), _const("b", (10,), INT32),
              _act("y", (1, 5, 10))):
        sub.add_tensor(tensor=t)
    op = Operator(opcode=OpCode(builtin=schema.BuiltinOperator.FULLY_CONNECTED),
                  inputs=["x", "w", "b"], outputs=["y"],
                  options=schema.fb.FullyConnectedOptionsT())
    assert cmsis_nn_scratch_requests(subgraph=sub, op=op) == [8 * 10]
    sub.tensors["w"].quantization = Quantization(scale=(0.1,) * 10, zero_point=(0,) * 10)
    assert cmsis_nn_scratch_requests(subgraph=sub, op=op) == []
    sub.tensors["w"].shape = (10, 15)
    assert scratch_requests(subgraph=sub, op=op) == []


MEASURED = DATA["measured_arena_used_bytes"]


@pytest.mark.parametrize("model", sorted(MEASURED["models"]))
def test_cortex_m_builds_equal_the_measured_firmware(model):
    path = TESTDATA / model
    if not path.exists():
        pytest.skip(f"{path} missing")
    arena = arena_bytes(graph=read_model_file(path=path), target="cortex-m")
    measured = MEASURED["models"][model]
    assert dict(arena.build_totals) == measured
    assert arena.total == max(measured.values())
    assert arena.kernels == max(measured, key=measured.get)


def test_host64_has_only_the_reference_build():
    graph = read_model_file(path=TESTDATA / "digits_mnv1_w025_r64_int8.tflite")
    arena = arena_bytes(graph=graph, target="host64")
    assert dict(arena.build_totals) == {REFERENCE: arena.total}
    with pytest.raises(ConfigError, match="cmsis_nn"):
        arena_tail(graph=graph, target=TARGETS["host64"], kernels=CMSIS_NN)


def test_analysis_layers_use_the_plan_of_the_reported_build():
    graph = read_model_file(path=TESTDATA / "digits_mnv1_w025_r64_int8.tflite")
    analysis = analyze_model(graph=graph)
    assert analysis.arena.head == analysis.peak_sram_bytes
    assert analysis.peak_sram_bytes == max(layer.arena_end_bytes for layer in analysis.layers)
    assert analysis.arena.total == max(analysis.arena.build_totals.values())
