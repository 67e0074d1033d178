"""Property: any supported small int8 conv stack, any valid split and grid, gives the
original outputs bit for bit after the patch rewrite (LiteRT reference kernels; a few
examples also in TFLite Micro, whose arena head must equal the planner's peak)."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from testdata.synthetic_models import (Conv, DepthwiseConv, ModelSpec, Pad, Pool, Residual,
                                       build_int8_graph)
from tflite_quantmcu.analysis.memory import plan_memory
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.patches.stage import stage_problem, supported_prefix
from tflite_quantmcu.runtimes.litert import run_litert
from tflite_quantmcu.runtimes.tflm import run_tflm

kernels = st.tuples(st.integers(1, 7), st.integers(1, 7))
pool_sizes = st.tuples(st.integers(1, 3), st.integers(1, 3))
strides = st.tuples(st.integers(1, 2), st.integers(1, 2))
paddings = st.sampled_from(["SAME", "VALID"])
activations = st.sampled_from(["RELU6", "NONE", "RELU"])


@st.composite
def windows(draw):
    """Kernel, stride, dilation (dilation only with stride 1, as TFLite requires)."""
    stride = draw(strides)
    dilation = tuple(draw(st.integers(1, 2)) if s == 1 else 1 for s in stride)
    return draw(kernels), stride, dilation


@st.composite
def layers(draw):
    kind = draw(st.sampled_from(["conv", "dw", "maxpool", "avgpool", "pad", "residual"]))
    if kind in ("conv", "dw"):
        kernel, stride, dilation = draw(windows())
        common = dict(kernel=kernel, stride=stride, dilation=dilation, padding=draw(paddings),
                      activation=draw(activations))
        if kind == "conv":
            return [Conv(filters=draw(st.integers(1, 6)), **common)]
        return [DepthwiseConv(multiplier=draw(st.integers(1, 2)), **common)]
    if kind == "maxpool":
        return [Pool(kind="MAX", size=draw(pool_sizes),
                     stride=draw(strides), padding=draw(paddings))]
    if kind == "avgpool":
        return [Pool(kind="AVG", size=draw(pool_sizes),
                     stride=draw(strides), padding=draw(paddings))]
    if kind == "pad":
        return [Pad(*draw(st.tuples(*[st.integers(0, 2)] * 4)))]
    kernel = draw(kernels)
    return ["residual", DepthwiseConv(kernel=kernel, activation=draw(activations)),
            Conv(filters=-1, kernel=(1, 1), activation="NONE")]


@st.composite
def model_specs(draw):
    shape = (draw(st.integers(6, 22)), draw(st.integers(6, 22)), draw(st.integers(1, 4)))
    blocks = draw(st.lists(layers(), min_size=1, max_size=4))
    return _flatten(shape=shape, blocks=blocks, seed=draw(st.integers(0, 2**16)),
                    float_input=draw(st.booleans()))


def _flatten(*, shape, blocks, seed, float_input) -> ModelSpec:
    """Residual blocks: depthwise (SAME, stride 1), 1x1 conv back to the channels, ADD."""
    layers_out: list = []
    for block in blocks:
        if block[0] != "residual":
            layers_out += block
            continue
        source = len(layers_out) - 1
        _, depthwise, _ = block
        layers_out += [depthwise, ("project", source), Residual(source=source)]
    return ModelSpec(input_shape=shape, layers=tuple(_resolve(layers_out, shape)), seed=seed,
                     float_input=float_input)


def _resolve(layers_out, shape):
    """Replaces ('project', source) by a 1x1 conv back to the source's channel count."""
    channels = {-1: shape[2]}
    resolved = []
    for index, layer in enumerate(layers_out):
        if isinstance(layer, tuple):
            layer = Conv(filters=channels[layer[1]], kernel=(1, 1), activation="NONE")
        resolved.append(layer)
        channels[index] = _channels_after(layer, channels[index - 1])
    return resolved


def _channels_after(layer, before: int) -> int:
    if isinstance(layer, Conv):
        return layer.filters
    if isinstance(layer, DepthwiseConv):
        return before * layer.multiplier
    return before


def _build(spec):
    try:
        return build_int8_graph(spec=spec)
    except ValueError:       # a layer leaves no output pixel for this input size
        assume(False)
        raise


def _valid_splits(graph) -> list[int]:
    maps, _ = supported_prefix(subgraph=graph.main)
    return [s for s in range(len(maps)) if stage_problem(subgraph=graph.main, split=s) is None]


def _random_inputs(graph, samples: int, seed: int):
    tensor = graph.main.tensors[graph.main.inputs[0]]
    rng = np.random.default_rng(seed)
    shape = (samples, *tensor.shape)
    if tensor.type_name == "FLOAT32":
        return [rng.uniform(-2.2, 2.2, size=shape).astype(np.float32)]
    return [rng.integers(-128, 128, size=shape, dtype=np.int8)]


def _draw_plan(data, graph):
    splits = _valid_splits(graph)
    assume(splits)
    split = data.draw(st.sampled_from(splits), label="split")
    out = graph.main.tensors[graph.main.operators[split].outputs[0]].shape
    rows = data.draw(st.integers(1, min(out[1], 5)), label="rows")
    cols = data.draw(st.integers(1, min(out[2], 5)), label="cols")
    assume((rows, cols) != (1, 1))
    options = PatchOptions(split=split, grid=(rows, cols), max_file_growth=None,
                           in_place=data.draw(st.sampled_from([None, True, False])))
    try:
        return plan_patches(graph=graph, options=options)
    except ConfigError as error:   # a PAD wider than a patch: that grid cannot be used
        assume("reads no pixel" not in str(error))
        raise


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                 HealthCheck.too_slow])
@given(spec=model_specs(), data=st.data())
def test_rewrite_is_bit_exact_in_litert(spec, data):
    graph = _build(spec)
    plan = _draw_plan(data, graph)
    patched = apply_patch_plan(graph=graph, plan=plan)
    inputs = _random_inputs(graph, samples=2, seed=spec.seed)
    original = run_litert(model_bytes=write_model_bytes(graph=graph), inputs=inputs)
    rewritten = run_litert(model_bytes=write_model_bytes(graph=patched), inputs=inputs)
    for before, after in zip(original, rewritten):
        np.testing.assert_array_equal(after, before)
    assert plan_memory(graph=patched, scratch=scratch_requests).peak_bytes == plan.patch_based_peak


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                HealthCheck.too_slow])
@given(spec=model_specs(), data=st.data())
def test_rewrite_is_bit_exact_in_tflm_and_peak_matches(spec, data):
    graph = _build(spec)
    plan = _draw_plan(data, graph)
    patched = apply_patch_plan(graph=graph, plan=plan)
    inputs = _random_inputs(graph, samples=2, seed=spec.seed)
    original = run_tflm(model_bytes=write_model_bytes(graph=graph), inputs=inputs, num_outputs=1)
    rewritten = run_tflm(model_bytes=write_model_bytes(graph=patched), inputs=inputs,
                         num_outputs=1)
    np.testing.assert_array_equal(rewritten.outputs[0], original.outputs[0])
    assert rewritten.arena.head == plan.patch_based_peak
