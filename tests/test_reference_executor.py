"""The numpy reference executor against the runtimes it imitates.

For every fixture model: every op output equals TFLite Micro's (the model is
rewritten so that all op outputs are model outputs), and every op whose inputs
LiteRT (reference kernels) computed identically gives LiteRT's output too,
except where LiteRT and TFLM are known to disagree (listed below, checked
against TFLM instead). Plus unit checks of the formulas against hand-computed
values or the trusted `requantize` module.
"""
from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tflite_quantmcu.errors import CalibrationDataError, UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Buffer, OpCode
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.reference import conv
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.reference.op_context import unpack_int4
from tflite_quantmcu.reference.pooling import rounded_average
from tflite_quantmcu.reference.reduce import mean_multiplier
from tflite_quantmcu.reference.requantize import multiply_by_quantized_multiplier
from tflite_quantmcu.reference.requantize_fast import multiply_by_quantized_multiplier_fast
from tflite_quantmcu.reference.shape_ops import strided_indices
from tflite_quantmcu.runtimes.tflm import run_tflm

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
BUNDLED_MODEL = "fashion_mnv2_r96_int8.tflite"
LARGE_MODEL_BYTES = 2 << 20


def expected_fixture_paths() -> list[str]:
    """Fixture files the suite expects, relative to testdata/ (present or not)."""
    names = {BUNDLED_MODEL}
    index = TESTDATA / "fixtures.json"
    if index.exists():
        names |= {entry["file"] for entry in json.loads(index.read_text())["fixtures"].values()}
    for pattern in ("*.tflite", "ops/*.tflite", "generated/*.tflite"):
        names |= {str(p.relative_to(TESTDATA)) for p in TESTDATA.glob(pattern)}
    return sorted(names)


FIXTURES = expected_fixture_paths()


def fixture_bytes(name: str) -> bytes:
    path = TESTDATA / name
    if not path.exists():
        reason = f"{path} is absent"
        if name.startswith("generated/"):
            reason += " (run: python3 testdata/make_fixtures.py)"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return path.read_bytes()


def random_inputs(*, graph, samples: int, seed: int) -> list[np.ndarray]:
    """Random int8 values over the full range (uniform floats for float inputs)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for key in graph.main.inputs:
        tensor = graph.main.tensors[key]
        shape = (samples,) + tuple(tensor.shape)
        if tensor.dtype == schema.TensorType.FLOAT32:
            arrays.append(rng.uniform(-1.5, 1.5, size=shape).astype(np.float32))
        else:
            arrays.append(rng.integers(-128, 128, size=shape).astype(np.int8))
    return arrays


def with_every_op_output(*, data: bytes) -> tuple[bytes, list[str]]:
    """The model rewritten so that every op output is also a model output."""
    graph = read_model_bytes(data=data)
    keys = list(graph.main.outputs)
    for op in graph.main.operators:
        keys += [key for key in op.outputs if key not in keys]
    graph.main.outputs = keys
    return write_model_bytes(graph=graph), keys


def litert_all_tensors(*, data: bytes, graph, inputs) -> dict[str, np.ndarray]:
    """Every op output of LiteRT's reference kernels, stacked over samples."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_content=data,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    index = {key: i for i, key in enumerate(graph.main.tensors)}
    keys = [key for op in graph.main.operators for key in op.outputs]
    found: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for sample in range(inputs[0].shape[0]):
        for key, batch in zip(graph.main.inputs, inputs):
            interpreter.set_tensor(index[key], batch[sample])
        interpreter.invoke()
        for key in keys:
            found[key].append(interpreter.get_tensor(index[key]).copy())
    return {key: np.stack(values) for key, values in found.items()}


@dataclasses.dataclass(frozen=True)
class Runs:
    graph: object
    inputs: list
    ours: dict
    outputs: list
    tflm: dict
    litert: dict


@lru_cache(maxsize=None)
def runs_for(name: str) -> Runs:
    """Our executor, TFLM (all op outputs) and LiteRT-ref on the same random inputs."""
    data = fixture_bytes(name)
    graph = read_model_bytes(data=data)
    samples = 1 if len(data) > LARGE_MODEL_BYTES else 3
    inputs = random_inputs(graph=graph, samples=samples, seed=len(data))
    ours: dict[str, np.ndarray] = {}
    outputs = run_graph(graph=graph, inputs=inputs,
                        observer=lambda index, op, values: ours.update(values))
    every, keys = with_every_op_output(data=data)
    tflm_run = run_tflm(model_bytes=every, inputs=inputs, num_outputs=len(keys))
    tflm = {key: value.reshape(ours[key].shape if key in ours else value.shape)
            for key, value in zip(keys, tflm_run.outputs)}
    litert = litert_all_tensors(data=data, graph=graph, inputs=inputs)
    return Runs(graph=graph, inputs=inputs, ours=ours, outputs=outputs, tflm=tflm, litert=litert)


def mismatch_text(*, ours: np.ndarray, other: np.ndarray) -> str:
    diff = np.abs(ours.astype(np.float64) - other.astype(np.float64))
    return f"{int((diff > 0).sum())} of {diff.size} values differ, max by {diff.max()}"


@pytest.mark.parametrize("name", FIXTURES)
def test_outputs_equal_tflite_micro(name):
    runs = runs_for(name)
    for key, value in zip(runs.graph.main.outputs, runs.outputs):
        expected = runs.tflm[key].reshape(value.shape)
        assert np.array_equal(value, expected), \
            f"{name}: output {key}: {mismatch_text(ours=value, other=expected)}"


@pytest.mark.parametrize("name", FIXTURES)
def test_every_intermediate_equals_tflite_micro(name):
    runs = runs_for(name)
    subgraph = runs.graph.main
    for index, op in enumerate(subgraph.operators):
        for key in op.outputs:
            assert np.array_equal(runs.ours[key], runs.tflm[key]), \
                f"{name}: {subgraph.op_label(index)}: " \
                f"{mismatch_text(ours=runs.ours[key], other=runs.tflm[key])}"


def per_channel_fully_connected(subgraph, op) -> bool:
    if op.type != "FULLY_CONNECTED":
        return False
    q = subgraph.tensors[op.inputs[1]].quantization
    return q is not None and len(q.scale) > 1


def requantizing_relu6(subgraph, op) -> bool:
    if op.type != "RELU6":
        return False
    q_in = subgraph.tensors[op.inputs[0]].quantization
    q_out = subgraph.tensors[op.outputs[0]].quantization
    return (q_in.scale, q_in.zero_point) != (q_out.scale, q_out.zero_point)


def int8_softmax(subgraph, op) -> bool:
    return op.type == "SOFTMAX"


def int8_sum(subgraph, op) -> bool:
    return op.type == "SUM"


# LiteRT's reference kernels and TFLM disagree on these; we follow TFLM (checked above).
# Per-channel FULLY_CONNECTED: LiteRT rounds the requantization once, TFLM twice.
# RELU6 with different input/output quantization: TFLM clamps without requantizing.
# SOFTMAX: LiteRT uses an exp lookup table, TFLM gemmlowp fixed-point exp.
# SUM: LiteRT's int8 SUM differs from TFLM's QuantizedMeanOrSum on every value here.
LITERT_DIVERGENCES = (per_channel_fully_connected, requantizing_relu6, int8_softmax, int8_sum)


@pytest.mark.parametrize("name", FIXTURES)
def test_every_op_equals_litert_reference_given_equal_inputs(name):
    runs = runs_for(name)
    subgraph = runs.graph.main
    compared = 0
    for index, op in enumerate(subgraph.operators):
        readers = [key for key in op.inputs if key in runs.litert]
        if any(not np.array_equal(runs.ours[key], runs.litert[key]) for key in readers):
            continue
        if any(diverges(subgraph, op) for diverges in LITERT_DIVERGENCES):
            continue
        compared += 1
        for key in op.outputs:
            assert np.array_equal(runs.ours[key], runs.litert[key]), \
                f"{name}: {subgraph.op_label(index)}: " \
                f"{mismatch_text(ours=runs.ours[key], other=runs.litert[key])}"
    print(f"{name}: {compared} of {len(subgraph.operators)} ops compared with LiteRT")
    assert compared > 0


# ---- executor API --------------------------------------------------------------------

def small_graph():
    return read_model_bytes(data=fixture_bytes("conv_chain.tflite"))


def test_chunked_batches_equal_one_batch():
    graph = small_graph()
    inputs = random_inputs(graph=graph, samples=5, seed=3)
    whole = run_graph(graph=graph, inputs=inputs)
    chunked = run_graph(graph=graph, inputs=inputs, batch_size=2)
    assert all(np.array_equal(a, b) for a, b in zip(whole, chunked))


def test_inputs_without_the_models_batch_axis_are_accepted():
    graph = small_graph()
    (x,) = random_inputs(graph=graph, samples=2, seed=4)
    assert np.array_equal(run_graph(graph=graph, inputs=[x])[0],
                          run_graph(graph=graph, inputs=[x[:, 0]])[0])


def test_observer_sees_every_op_once_with_its_outputs():
    graph = small_graph()
    seen = []
    run_graph(graph=graph, inputs=random_inputs(graph=graph, samples=2, seed=5),
              observer=lambda index, op, values: seen.append((index, op, sorted(values))))
    assert [i for i, _, _ in seen] == list(range(len(graph.main.operators)))
    assert all(keys == sorted(op.outputs) for _, op, keys in seen)


@pytest.mark.parametrize("change, message", [
    (lambda x: [x.astype(np.int16)], "dtype int16"),
    (lambda x: [x[:, :, :-1]], "shape"),
    (lambda x: [x, x], "2 arrays"),
])
def test_bad_inputs_raise_typed_errors(change, message):
    graph = small_graph()
    (x,) = random_inputs(graph=graph, samples=1, seed=6)
    with pytest.raises(CalibrationDataError, match=message):
        run_graph(graph=graph, inputs=change(x))


def test_unknown_op_is_named_in_the_error():
    graph = small_graph()
    graph.main.operators[2].opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM,
                                            custom="QMCU_UNKNOWN")
    label = graph.main.op_label(2)
    with pytest.raises(UnsupportedOpError, match=label.split(" ->")[0]) as err:
        run_graph(graph=graph, inputs=random_inputs(graph=graph, samples=1, seed=7))
    assert "QMCU_UNKNOWN" in str(err.value)


def test_custom_kernels_hook_dispatches_on_custom_code():
    graph = small_graph()
    inputs = random_inputs(graph=graph, samples=2, seed=8)
    expected = run_graph(graph=graph, inputs=inputs)
    index = next(i for i, op in enumerate(graph.main.operators) if op.type == "CONV_2D")
    graph.main.operators[index].opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM,
                                                custom="QMCU_TEST_CONV")
    got = run_graph(graph=graph, inputs=inputs, custom_kernels={"QMCU_TEST_CONV": conv.conv_2d})
    assert np.array_equal(got[0], expected[0])


# ---- INT4 weights (TFLM runs them as packed CONV_2D weights) -------------------------

def pack_int4(values: np.ndarray) -> bytes:
    flat = values.astype(np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    low = flat[0::2].astype(np.uint8) & 0x0F
    high = (flat[1::2].astype(np.uint8) & 0x0F) << 4
    return (low | high).astype(np.uint8).tobytes()


def test_int4_unpacking_by_hand():
    packed = np.array([0x21, 0xF8 - 256, 0x07], dtype=np.int8)
    assert unpack_int4(packed=packed, shape=(5,)).tolist() == [1, 2, -8, -1, 7]


def test_int4_conv_weights_equal_tflite_micro():
    graph = small_graph()
    for op in graph.main.operators:
        if op.type == "CONV_2D":
            tensor = graph.main.tensors[op.inputs[1]]
            clipped = np.clip(tensor.array() // 16, -8, 7)
            tensor.buffer = Buffer(data=pack_int4(clipped))
            tensor.dtype = schema.TensorType.INT4
    data = write_model_bytes(graph=graph)
    graph = read_model_bytes(data=data)
    inputs = random_inputs(graph=graph, samples=2, seed=9)
    ours = run_graph(graph=graph, inputs=inputs)
    tflm = run_tflm(model_bytes=data, inputs=inputs, num_outputs=len(ours)).outputs
    assert all(np.array_equal(a, b.reshape(a.shape)) for a, b in zip(ours, tflm))


# ---- formulas ------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=16),
       st.integers(0, (1 << 31) - 1), st.integers(-31, 7))
def test_fast_requantization_equals_reference(values, multiplier, shift):
    x = np.array(values, dtype=np.int64)
    assert np.array_equal(multiply_by_quantized_multiplier_fast(x, multiplier, shift),
                          multiply_by_quantized_multiplier(x, multiplier, shift))


def test_fast_requantization_per_channel_with_ties():
    x = np.arange(-4096, 4096, dtype=np.int64)[:, None]
    multipliers = np.array([1 << 30, (1 << 30) + 1, (1 << 31) - 1, 0])
    shifts = np.array([-3, 0, 2, -1])
    assert np.array_equal(multiply_by_quantized_multiplier_fast(x, multipliers, shifts),
                          multiply_by_quantized_multiplier(x, multipliers, shifts))


def test_mean_multiplier_by_hand():
    # 9 elements: k = floor(log2 9) = 3; (2**30 << 3) // 9 = 954437176.
    assert mean_multiplier(multiplier=1 << 30, shift=0, count=9) == (954437176, -3)
    # 2**40 elements: k is capped at 32.
    assert mean_multiplier(multiplier=1 << 30, shift=5, count=1 << 40) == ((1 << 62) >> 40, -27)
    # k is capped at 31 + shift.
    assert mean_multiplier(multiplier=1 << 30, shift=-30, count=16) == ((1 << 31) // 16, -31)


def test_average_rounds_half_away_from_zero():
    total = np.array([5, -5, 4, -4, 0, 5, -5, 4, -4])
    count = np.array([2, 2, 2, 2, 2, 3, 3, 3, 3])
    assert rounded_average(total=total, count=count).tolist() == [3, -3, 2, -2, 0, 2, -2, 1, -1]


@pytest.mark.parametrize("begin, end, stride, masks, expected", [
    (1, 8, 2, (False, False, False), [1, 3, 5, 7]),
    (-9, 11, 1, (False, False, False), [2, 3, 4, 5, 6, 7, 8, 9, 10]),
    (0, 0, 1, (True, True, False), list(range(11))),
    (-1, 0, -3, (False, False, False), [10, 7, 4, 1]),
    (3, 0, -1, (False, True, False), [3, 2, 1, 0]),
    (-2, 99, 1, (False, False, True), [9]),
    (50, 99, 1, (False, False, False), []),
])
def test_strided_slice_indices_by_hand(begin, end, stride, masks, expected):
    begin_masked, end_masked, shrink = masks
    got = strided_indices(dim=11, begin=begin, end=end, stride=stride, begin_masked=begin_masked,
                          end_masked=end_masked, shrink=shrink)
    assert got.tolist() == expected


# ---- QMCU_* custom ops through the executor (8-bit: must equal the builtin ops) ------

def act_range_by_hand(*, activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for NONE and RELU (conv_chain's cases)."""
    assert activation in (0, 1)
    return (max(-128, zero_point) if activation == 1 else -128), 127


def qmcu_geometry(*, options, in_shape, kernel: tuple[int, int], dilation=(1, 1)):
    from tflite_quantmcu.qmcu_options import Geometry, same_padding
    pads = []
    for size, k, stride, d in zip(in_shape[1:3], kernel, (options.strideH, options.strideW),
                                  dilation):
        pads += (list(same_padding(size=size, kernel=k, stride=stride, dilation=d)[1:])
                 if options.padding == schema.Padding.SAME else [0, 0])
    return Geometry(stride_h=options.strideH, stride_w=options.strideW, dilation_h=dilation[0],
                    dilation_w=dilation[1],
                    padding="SAME" if options.padding == schema.Padding.SAME else "VALID",
                    pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])


def qmcu_conv_like(*, subgraph, op):
    """An 8-bit QMCU_CONV_2D / QMCU_DEPTHWISE_CONV_2D doing what `op` does."""
    from tflite_quantmcu.ir.graph import Quantization, Tensor
    from tflite_quantmcu.qmcu_options import Conv2DOptions, DepthwiseConv2DOptions, encode_options
    from tflite_quantmcu.reference.requantize import quantize_multiplier
    x, w, out = (subgraph.tensors[k] for k in (op.inputs[0], op.inputs[1], op.outputs[0]))
    s_in, s_out = x.quantization.scale[0], out.quantization.scale[0]
    pairs = [quantize_multiplier(s_in * s_w / s_out) for s_w in w.quantization.scale]
    requant = np.array([[m for m, _ in pairs], [s for _, s in pairs]], dtype=np.int32)
    key = subgraph.add_tensor(tensor=Tensor(name=f"{out.name}/requant", shape=requant.shape,
                                            dtype=schema.TensorType.INT32,
                                            buffer=Buffer(data=requant.tobytes()),
                                            quantization=Quantization()))
    o = op.options
    lo, hi = act_range_by_hand(activation=o.fusedActivationFunction, scale=s_out,
                               zero_point=out.quantization.zero_point[0])
    common = dict(in_bits=8, out_bits=8, w_bits=8, in_zero_point=x.quantization.zero_point[0],
                  out_zero_point=out.quantization.zero_point[0], in_shape=tuple(x.shape),
                  filter_shape=tuple(w.shape), out_shape=tuple(out.shape), act_min=lo,
                  act_max=hi, geometry=qmcu_geometry(options=o, in_shape=x.shape,
                                                     kernel=tuple(w.shape[1:3]),
                                                     dilation=(o.dilationHFactor,
                                                               o.dilationWFactor)))
    if op.type == "CONV_2D":
        name, options = "QMCU_CONV_2D", Conv2DOptions(**common)
    else:
        name = "QMCU_DEPTHWISE_CONV_2D"
        options = DepthwiseConv2DOptions(**common, depth_multiplier=o.depthMultiplier or 1)
    op.opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM, custom=name)
    op.inputs = list(op.inputs[:3]) + [key]
    op.options_type, op.options = 0, None
    op.custom_options = encode_options(options=options)


def qmcu_add(*, subgraph, op):
    """An 8-bit QMCU_ADD with TFLM's ADD multipliers (double arithmetic, left shift 20)."""
    from tflite_quantmcu.qmcu_options import AddOptions, encode_options
    from tflite_quantmcu.reference.requantize import quantize_multiplier
    a, b, out = (subgraph.tensors[k] for k in (op.inputs[0], op.inputs[1], op.outputs[0]))
    sa, sb, so = a.quantization.scale[0], b.quantization.scale[0], out.quantization.scale[0]
    twice = 2 * max(sa, sb)
    (m1, s1), (m2, s2), (mo, so_) = (quantize_multiplier(r) for r in
                                     (sa / twice, sb / twice, twice / ((1 << 20) * so)))
    lo, hi = act_range_by_hand(activation=op.options.fusedActivationFunction, scale=so,
                               zero_point=out.quantization.zero_point[0])
    options = AddOptions(in1_bits=8, in2_bits=8, out_bits=8,
                         in1_zero_point=a.quantization.zero_point[0],
                         in2_zero_point=b.quantization.zero_point[0],
                         out_zero_point=out.quantization.zero_point[0], in1_multiplier=m1,
                         in1_shift=s1, in2_multiplier=m2, in2_shift=s2, out_multiplier=mo,
                         out_shift=so_, act_min=lo, act_max=hi, shape=tuple(out.shape))
    op.opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM, custom="QMCU_ADD")
    op.options_type, op.options = 0, None
    op.custom_options = encode_options(options=options)


def qmcu_average_pool(*, subgraph, op):
    """An 8-bit QMCU_AVERAGE_POOL_2D without rescaling."""
    from tflite_quantmcu.qmcu_options import AveragePool2DOptions, encode_options
    x, out = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]
    o = op.options
    lo, hi = act_range_by_hand(activation=o.fusedActivationFunction,
                               scale=out.quantization.scale[0],
                               zero_point=out.quantization.zero_point[0])
    options = AveragePool2DOptions(
        in_bits=8, out_bits=8, in_zero_point=x.quantization.zero_point[0],
        out_zero_point=out.quantization.zero_point[0], in_shape=tuple(x.shape),
        out_shape=tuple(out.shape), filter_h=o.filterHeight, filter_w=o.filterWidth,
        act_min=lo, act_max=hi,
        geometry=qmcu_geometry(options=o, in_shape=x.shape, kernel=(o.filterHeight,
                                                                     o.filterWidth)))
    op.opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM, custom="QMCU_AVERAGE_POOL_2D")
    op.options_type, op.options = 0, None
    op.custom_options = encode_options(options=options)


def test_8bit_qmcu_ops_in_the_executor_equal_the_builtin_ops():
    data = fixture_bytes("conv_chain.tflite")
    graph = read_model_bytes(data=data)
    inputs = random_inputs(graph=graph, samples=3, seed=10)
    builtin: dict[str, np.ndarray] = {}
    run_graph(graph=graph, inputs=inputs, observer=lambda i, op, values: builtin.update(values))
    replace = {"CONV_2D": qmcu_conv_like, "DEPTHWISE_CONV_2D": qmcu_conv_like,
               "ADD": qmcu_add, "AVERAGE_POOL_2D": qmcu_average_pool}
    subgraph = graph.main
    replaced = 0
    for op in subgraph.operators:
        if op.type in replace:
            replace[op.type](subgraph=subgraph, op=op)
            replaced += 1
    assert replaced == 9
    custom: dict[str, np.ndarray] = {}
    outputs = run_graph(graph=graph, inputs=inputs,
                        observer=lambda i, op, values: custom.update(values))
    for index, op in enumerate(subgraph.operators):
        key = op.outputs[0]
        assert np.array_equal(custom[key], builtin[key]), subgraph.op_label(index)
    tflm = run_tflm(model_bytes=data, inputs=inputs, num_outputs=1).outputs[0]
    assert np.array_equal(outputs[0], tflm.reshape(outputs[0].shape))


def test_quantize_inputs_equals_litert_quantize_op():
    """Quantizing floats for an int8 input equals LiteRT's QUANTIZE op on the same floats."""
    from tflite_quantmcu.reference.model_inputs import quantize_input
    runs = runs_for("ops/ops_float_io.tflite")
    subgraph = runs.graph.main
    op = subgraph.operators[0]
    assert op.type == "QUANTIZE"
    got = quantize_input(tensor=subgraph.tensors[op.outputs[0]], values=runs.inputs[0])
    assert np.array_equal(got, runs.litert[op.outputs[0]])


def test_quantize_inputs_rejects_non_float_data():
    from tflite_quantmcu.reference.model_inputs import quantize_inputs
    graph = small_graph()
    with pytest.raises(CalibrationDataError, match="finite float"):
        quantize_inputs(graph=graph, values=[np.full((1, 40, 48, 3), np.nan, np.float32)])


def test_packed_4bit_tensors_fold_samples_like_single_calls():
    """QMCU_PACK -> 4-bit packed tensor -> QMCU_UNPACK over 3 samples equals per-sample calls."""
    from tflite_quantmcu.ir.graph import Operator, Quantization, Tensor
    from tflite_quantmcu.qmcu_options import RequantOptions, encode_options, subbyte_quant_params
    from tflite_quantmcu.reference import qmcu_kernels
    from tflite_quantmcu.reference.requantize import quantize_multiplier
    graph = small_graph()
    subgraph = graph.main
    source = subgraph.tensors[subgraph.operators[0].outputs[0]]
    shape = tuple(source.shape)
    s8, zp8 = source.quantization.scale[0], source.quantization.zero_point[0]
    s4, zp4 = subbyte_quant_params(scale8=s8, zero_point8=zp8, bits=4)
    pack = RequantOptions(in_bits=8, out_bits=4, in_zero_point=zp8, out_zero_point=zp4,
                          multiplier=quantize_multiplier(s8 / s4)[0],
                          shift=quantize_multiplier(s8 / s4)[1], shape=shape)
    unpack = RequantOptions(in_bits=4, out_bits=8, in_zero_point=zp4, out_zero_point=zp8,
                            multiplier=quantize_multiplier(s4 / s8)[0],
                            shift=quantize_multiplier(s4 / s8)[1], shape=shape)
    packed = subgraph.add_tensor(tensor=Tensor(name="packed4", shape=shape[:3] + (shape[3] // 2,),
                                               dtype=schema.TensorType.UINT8,
                                               quantization=Quantization()))
    restored = subgraph.add_tensor(tensor=Tensor(name="restored8", shape=shape,
                                                 dtype=schema.TensorType.INT8,
                                                 quantization=source.quantization))
    custom = schema.BuiltinOperator.CUSTOM
    subgraph.operators[1:1] = [
        Operator(opcode=OpCode(builtin=custom, custom="QMCU_PACK"),
                 inputs=[subgraph.operators[0].outputs[0]], outputs=[packed],
                 custom_options=encode_options(options=pack)),
        Operator(opcode=OpCode(builtin=custom, custom="QMCU_UNPACK"), inputs=[packed],
                 outputs=[restored], custom_options=encode_options(options=unpack))]
    subgraph.outputs = subgraph.outputs + [packed, restored]
    inputs = random_inputs(graph=graph, samples=3, seed=11)
    seen: dict[str, np.ndarray] = {}
    _, got_packed, got_restored = run_graph(graph=graph, inputs=inputs,
                                            observer=lambda i, op, v: seen.update(v))
    for sample in range(3):
        x = seen[subgraph.operators[0].outputs[0]][sample]
        one_packed = qmcu_kernels.pack(input=x, options=pack)
        assert np.array_equal(got_packed[sample], one_packed)
        assert np.array_equal(got_restored[sample],
                              qmcu_kernels.unpack(input=one_packed, options=unpack))


def _stored_activations(*, rng, shape, bits):
    from tflite_quantmcu.qmcu_options import act_range, pack_bits
    lo, hi = act_range(bits=bits)
    return pack_bits(values=rng.integers(lo, hi + 1, size=shape), bits=bits)


def _stored_weights(*, rng, shape, bits):
    from tflite_quantmcu.qmcu_options import pack_bits, qrange
    lo, hi = qrange(bits=bits, signed=True)
    values = rng.integers(max(lo, -127), hi + 1, size=shape)
    return pack_bits(values=values, bits=bits).view(np.int8) if bits < 8 else values.astype(np.int8)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_fast_qmcu_conv_like_equals_qmcu_kernels(data):
    """The executor's QMCU conv/depthwise path == reference qmcu_kernels, any widths/geometry."""
    from tflite_quantmcu.qmcu_options import (Conv2DOptions, DepthwiseConv2DOptions, Geometry,
                                              act_range, conv_out_size, same_padding)
    from tflite_quantmcu.reference import qmcu_kernels
    from tflite_quantmcu.reference.qmcu_adapters import fast_conv_like
    draw = data.draw
    depthwise = draw(st.booleans())
    in_bits, out_bits, w_bits = (draw(st.sampled_from((8, 4, 2))) for _ in range(3))
    n, height, width = draw(st.integers(1, 2)), draw(st.integers(3, 9)), draw(st.integers(3, 9))
    c_in = 4 * draw(st.integers(1, 3))
    multiplier = draw(st.integers(1, 2)) if depthwise else 1
    c_out = c_in * multiplier if depthwise else 4 * draw(st.integers(1, 3))
    kh, kw, sh, sw, dh, dw = (draw(st.integers(1, hi)) for hi in (3, 3, 2, 2, 2, 2))
    padding = draw(st.sampled_from(("SAME", "VALID", "EXPLICIT")))
    pads = []
    for size, k, s, d in ((height, kh, sh, dh), (width, kw, sw, dw)):
        if padding == "SAME":
            pads += list(same_padding(size=size, kernel=k, stride=s, dilation=d)[1:])
        elif padding == "EXPLICIT":
            pads += [draw(st.integers(0, 2)), draw(st.integers(0, 2))]
        else:
            pads += [0, 0]
    outs = [conv_out_size(size=size, kernel=k, stride=s, dilation=d, pad_before=b, pad_after=a)
            for size, k, s, d, b, a in ((height, kh, sh, dh, pads[0], pads[1]),
                                        (width, kw, sw, dw, pads[2], pads[3]))]
    if min(outs) < 1:
        return
    in_lo, in_hi = act_range(bits=in_bits)
    out_lo, out_hi = act_range(bits=out_bits)
    act_min = draw(st.integers(out_lo, out_hi))
    geometry = Geometry(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, padding=padding,
                        pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])
    filter_shape = (1, kh, kw, c_out) if depthwise else (c_out, kh, kw, c_in)
    common = dict(in_bits=in_bits, out_bits=out_bits, w_bits=w_bits,
                  in_zero_point=draw(st.integers(in_lo, in_hi)),
                  out_zero_point=draw(st.integers(out_lo, out_hi)),
                  in_shape=(n, height, width, c_in), filter_shape=filter_shape,
                  out_shape=(n, outs[0], outs[1], c_out), act_min=act_min,
                  act_max=draw(st.integers(act_min, out_hi)), geometry=geometry)
    options = (DepthwiseConv2DOptions(**common, depth_multiplier=multiplier) if depthwise
               else Conv2DOptions(**common))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = _stored_activations(rng=rng, shape=(n, height, width, c_in), bits=in_bits)
    weights = _stored_weights(rng=rng, shape=filter_shape, bits=w_bits)
    bias = rng.integers(-5000, 5000, size=c_out).astype(np.int32) if draw(st.booleans()) else None
    requant = np.stack([rng.integers(1 << 30, 1 << 31, size=c_out),
                        rng.integers(-14, 1, size=c_out)]).astype(np.int32)
    reference = qmcu_kernels.depthwise_conv_2d if depthwise else qmcu_kernels.conv_2d
    expected = reference(input=x, filter=weights, bias=bias, requant=requant, options=options)
    got = fast_conv_like(input=x, filter=weights, bias=bias, requant=requant, options=options,
                         depthwise=depthwise)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
