"""The stage-op patch form (one QMCU_PATCH_STAGE op): bit-exact against the original model in
the reference executor (fixtures and hypothesis-drawn conv stacks), its buffer plan checked by
running the reference on the planned scratch bytes, its whole-arena figures, the planner's
form choice and the CLI option."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixture_models import fixture_path, random_inputs
from test_patches_property import _build, _valid_splits, model_specs
from tflite_quantmcu.analysis.memory import plan_memory
from tflite_quantmcu.analysis.model_analysis import analyze_model, arena_bytes
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.analysis.tflm_tail import TARGETS, arena_tail
from tflite_quantmcu.errors import ConfigError, UnsupportedOpError
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.plan import PatchOptions, PatchPlan
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.patches.stage import make_stage, split_bounds
from tflite_quantmcu.patches.stage_op import apply_stage_op, stage_op_problem
from tflite_quantmcu.qmcu_stage_options import (STAGE_OP, decode_stage_options,
                                                encode_stage_options, stage_pool_words)
from tflite_quantmcu.reference.executor import run_graph

FIXTURES = ["mobilenetv2_w035_r144.tflite", "mobilenetv1_w025_r96.tflite",
            "resnet8_cifar.tflite", "fashion_mnv2_r96_int8.tflite",
            "mobilenetv2_w100_r224.tflite", "conv_chain.tflite"]


def _load(name: str):
    path = fixture_path(name)
    if not path.exists():
        pytest.skip(f"{path} is absent (testdata/make_fixtures.py generates it)")
    return read_model_file(path=path)


def _stage_op(graph, *, split: int, grid: tuple[int, int], in_place: bool = True):
    stage = make_stage(subgraph=graph.main, split=split)
    shape = graph.main.tensors[stage.output_key].shape
    return apply_stage_op(graph=graph, stage=stage, in_place=in_place,
                          row_bounds=split_bounds(size=shape[1], parts=grid[0]),
                          col_bounds=split_bounds(size=shape[2], parts=grid[1]))


def _options(graph):
    op = graph.main.operators[0]
    assert op.opcode.custom == STAGE_OP
    return decode_stage_options(data=op.custom_options)


def _assert_same_outputs(graph, patched, *, samples: int = 2, seed: int = 0) -> None:
    inputs = random_inputs(graph=graph, samples=samples, seed=seed)
    for before, after in zip(run_graph(graph=graph, inputs=inputs),
                             run_graph(graph=patched, inputs=inputs)):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_stage_op_plan_is_bit_exact(name):
    graph = _load(name)
    plan = plan_patches(graph=graph, options=PatchOptions(form="stage-op", objective="min-memory",
                                                          max_file_growth=None))
    if not plan.is_patched:
        plan = plan_patches(graph=graph, options=PatchOptions(
            form="stage-op", split=plan.candidates[0].split_op if plan.candidates else 0,
            grid=(2, 2)))
    assert plan.is_patched and plan.form == "stage-op", plan.reason
    patched = apply_patch_plan(graph=graph, plan=plan)
    assert [op.opcode.custom for op in patched.main.operators[:1]] == [STAGE_OP]
    _assert_same_outputs(graph, patched)
    assert arena_bytes(graph=patched).total == plan.patch_based_total
    # The stage op's MACs (from its options) are the planner's: layers plus halo recompute.
    assert analyze_model(graph=patched).macs == plan.macs_patch == \
        analyze_model(graph=graph).macs + plan.redundant_macs


@pytest.mark.parametrize("grid", [(3, 3), (4, 1), (1, 4), (2, 5)])
@pytest.mark.parametrize("in_place", [True, False])
def test_mobilenetv2_blocks_bit_exact_for_grids(grid, in_place):
    graph = _load("mobilenetv2_w035_r144.tflite")
    for split in (9, 16):        # after a residual block; two residual blocks deep
        patched = _stage_op(graph, split=split, grid=grid, in_place=in_place)
        _assert_same_outputs(graph, patched)


@st.composite
def _stage_plans(draw):
    spec = draw(model_specs())
    assume(not spec.float_input)
    graph = _build(spec)
    splits = [s for s in _valid_splits(graph)
              if stage_op_problem(subgraph=graph.main,
                                  stage=make_stage(subgraph=graph.main, split=s)) is None]
    assume(splits)
    split = draw(st.sampled_from(splits))
    out = graph.main.tensors[graph.main.operators[split].outputs[0]].shape
    grid = (draw(st.integers(1, min(out[1], 5))), draw(st.integers(1, min(out[2], 5))))
    assume(grid != (1, 1))
    return spec, graph, split, grid, draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                 HealthCheck.too_slow])
@given(case=_stage_plans())
def test_generated_conv_stacks_are_bit_exact(case):
    """Kernels 1-7, strides, dilation, residual ADD, max/average pools (SAME and VALID)."""
    spec, graph, split, grid, in_place = case
    try:
        patched = _stage_op(graph, split=split, grid=grid, in_place=in_place)
    except ConfigError as error:            # a part that reads no pixel: not a usable grid
        assume("reads no pixel" not in str(error))
        raise
    _assert_same_outputs(graph, patched, seed=spec.seed)


def test_the_reference_catches_a_broken_buffer_plan():
    """Put a depthwise output on top of its input with no gap: rows still to be read are
    overwritten, and the reference (which runs on the planned bytes) no longer matches."""
    graph = _load("mobilenetv2_w035_r144.tflite")
    patched = _stage_op(graph, split=9, grid=(3, 3))
    options = _options(patched)
    n, layer = next((n, l) for n, l in enumerate(options.layers)
                    if l.kind == "DEPTHWISE_CONV_2D" and l.stride == (1, 1))
    src = options.tensors[layer.inputs[0]]
    tensors = list(options.tensors)
    tensors[layer.output] = dataclasses.replace(tensors[layer.output], offset=src.offset)
    broken = dataclasses.replace(options, tensors=tuple(tensors))
    patched.main.operators[0].custom_options = encode_stage_options(options=broken)
    inputs = random_inputs(graph=graph, samples=2, seed=1)
    before = run_graph(graph=graph, inputs=inputs)[0]
    after = run_graph(graph=patched, inputs=inputs)[0]
    assert not np.array_equal(before, after), f"layer {n} overwrote rows it still reads"


def test_in_place_layers_shrink_the_scratch():
    graph = _load("mobilenetv2_w035_r144.tflite")
    with_in_place = _options(_stage_op(graph, split=9, grid=(3, 3), in_place=True))
    without = _options(_stage_op(graph, split=9, grid=(3, 3), in_place=False))
    assert with_in_place.scratch_bytes < without.scratch_bytes
    assert with_in_place.output_gap >= 0 and without.output_gap == -1


def test_options_round_trip_and_reject_bad_maps():
    graph = _load("mobilenetv2_w035_r144.tflite")
    options = _options(_stage_op(graph, split=9, grid=(2, 3)))
    assert decode_stage_options(data=encode_stage_options(options=options)) == options
    bad_layer = dataclasses.replace(options.layers[1], inputs=(7,))
    with pytest.raises(ValueError, match="not a DAG"):
        dataclasses.replace(options, layers=(options.layers[0], bad_layer) + options.layers[2:])
    with pytest.raises(ValueError, match="version-1"):
        decode_stage_options(data=encode_stage_options(options=options)[:-8] + b"\0" * 8)


def test_arena_model_counts_one_scratch_and_one_persistent_block():
    graph = _load("mobilenetv2_w035_r144.tflite")
    patched = _stage_op(graph, split=9, grid=(3, 3))
    options = _options(patched)
    op = patched.main.operators[0]
    assert scratch_requests(subgraph=patched.main, op=op) == [options.scratch_bytes]
    memory = plan_memory(graph=patched, scratch=scratch_requests)
    assert any(b.key.startswith("scratch:#0") and b.size >= options.scratch_bytes
               for b in memory.buffers)
    rest = dataclasses.replace(patched, subgraphs=[dataclasses.replace(
        patched.main, operators=patched.main.operators[1:])])
    for name, target in TARGETS.items():
        block = target.sizes["QmcuStageData"][0] + 4 * stage_pool_words(options=options)
        with_op = arena_tail(graph=patched, target=target, scratch_requests=1).parts["op_data"]
        without = arena_tail(graph=rest, target=target).parts["op_data"]
        assert abs(with_op - without - block) < 16, name   # 16-byte alignment of the tail


def test_stage_op_form_lowers_the_total_and_auto_picks_the_lower():
    graph = _load("mobilenetv2_w035_r144.tflite")
    common = dict(objective="min-memory", max_file_growth=None)
    builtin = plan_patches(graph=graph, options=PatchOptions(form="builtin", **common))
    stage = plan_patches(graph=graph, options=PatchOptions(form="stage-op", **common))
    auto = plan_patches(graph=graph, options=PatchOptions(form="auto", **common))
    assert stage.total_bytes < builtin.total_bytes < builtin.layer_based_total
    assert auto.total_bytes == min(stage.total_bytes, builtin.total_bytes)
    assert auto.form == ("stage-op" if stage.total_bytes < builtin.total_bytes else "builtin")
    assert PatchPlan.from_json(json.loads(json.dumps(auto.to_json()))).form == auto.form


def test_forced_stage_op_on_an_unsupported_stage_says_why():
    graph = _load("mobilenetv1_w025_r96_float_io.tflite")
    stage = make_stage(subgraph=graph.main, split=2)
    assert "not int8" in stage_op_problem(subgraph=graph.main, stage=stage)
    with pytest.raises(UnsupportedOpError, match="stage-op"):
        apply_stage_op(graph=graph, stage=stage, row_bounds=(0, 24, 48), col_bounds=(0, 48))
    plan = plan_patches(graph=graph, options=PatchOptions(form="stage-op"))
    assert not plan.is_patched and "QMCU_PATCH_STAGE" in plan.reason


def _convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert",
                           *map(str, args)], capture_output=True, text=True, check=False)


def test_cli_patch_form_stage_op(tmp_path):
    model = fixture_path("mobilenetv2_w035_r144.tflite")
    proc = _convert(model, "--out", tmp_path, "--sram", "256KB", "--policy", "patch-int8",
                    "--patch-form", "stage-op", "--no-tflm")
    assert proc.returncode == 0, proc.stderr
    header = (tmp_path / "mobilenetv2_w035_r144_op_resolver.h").read_text()
    assert 'AddCustom("QMCU_PATCH_STAGE", tflite::Register_QMCU_PATCH_STAGE())' in header
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["patch_plan"]["form"] == "stage-op"
    converted = read_model_file(path=tmp_path / "mobilenetv2_w035_r144.patch-int8.tflite")
    _assert_same_outputs(read_model_file(path=model), converted)
