"""QuantMCU inside QMCU_PATCH_STAGE (version-2 options): per-patch 8/4/2-bit maps run inside the
one op, bit for bit what the builtin form's per-patch QMCU_* ops compute for the same plan (the
reference executor is the oracle of both), on fixtures, the synthetic stage and hypothesis-drawn
conv stacks; the options' versions; the convert pipeline's quantmcu + stage-op path.
(The C kernel against the numpy reference on these options: test_stage_op_host.py.)"""
from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fixture_models import TESTDATA, fixture_path, random_inputs
from test_patches_property import _build, _flatten, _valid_splits, layers
from testdata.synthetic_models import Conv, Pool
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.branches import PATCH_MAP_KEY
from tflite_quantmcu.patches.rewrite import build_patched_graph
from tflite_quantmcu.patches.stage import make_stage, split_bounds
from tflite_quantmcu.patches.stage_op import apply_stage_op, stage_op_problem
from tflite_quantmcu.pipeline import PIPELINE, Conversion, ConvertOptions
from tflite_quantmcu.qmcu_stage_options import (STAGE_OP, decode_stage_options,
                                                encode_stage_options)
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.reference.executor import run_graph

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cases_module():
    path = ROOT / "cmixnn_bridge" / "test" / "cortexm" / "qmcu_stage_cases.py"
    spec = importlib.util.spec_from_file_location("qmcu_stage_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CASES = _cases_module()


def _graph(name):
    if name is None:
        return _CASES.synthetic()
    if name == "synthetic-pad":
        return _CASES.synthetic_pad()
    path = fixture_path(name)
    if not path.exists():
        pytest.skip(f"{path} is absent (testdata/make_fixtures.py generates it)")
    return read_model_file(path=path)


def _both_forms(graph, *, split, grid, in_place, plan_of):
    """(builtin form with the plan's QMCU_* ops, stage op with the plan inside, plan)."""
    stage = make_stage(subgraph=graph.main, split=split)
    shape = graph.main.tensors[stage.output_key].shape
    rows = split_bounds(size=shape[1], parts=grid[0])
    cols = split_bounds(size=shape[2], parts=grid[1])
    builtin = build_patched_graph(graph=graph, stage=stage, row_bounds=rows, col_bounds=cols,
                                  in_place=in_place)
    plan = plan_of(builtin)
    per_patch_ops = apply_bitwidth_plan(graph=builtin, plan=plan)
    staged = apply_stage_op(graph=graph, stage=stage, row_bounds=rows, col_bounds=cols,
                            in_place=in_place, bitwidths=plan)
    return per_patch_ops, staged, plan


def _assert_same(a, b, *, graph, samples=2, seed=0):
    inputs = random_inputs(graph=graph, samples=samples, seed=seed)
    for x, y in zip(run_graph(graph=a, inputs=inputs), run_graph(graph=b, inputs=inputs)):
        np.testing.assert_array_equal(y, x)


def _stage_options(graph):
    op = graph.main.operators[0]
    assert op.opcode.custom == STAGE_OP
    return decode_stage_options(data=op.custom_options)


def _uniform(bits):
    def plan_of(builtin):
        allowed = subbyte_candidates(graph=builtin)
        return BitwidthPlan(policy=f"uniform{bits}", options={}, bits={
            k: bits for k, widths in allowed.items() if PATCH_MAP_KEY.match(k) and bits in widths})
    return plan_of


MNV2 = "mobilenetv2_w035_r144.tflite"
CASES = [(MNV2, 9, (3, 3), True), (MNV2, 16, (2, 5), True), (MNV2, 9, (2, 2), False),
         ("resnet8_cifar.tflite", 3, (2, 2), True), ("mobilenetv1_w025_r96.tflite", 5, (3, 3), True),
         ("fashion_mnv2_r96_int8.tflite", 11, (2, 3), True), (None, 6, (3, 2), True),
         (None, 4, (2, 3), False), ("synthetic-pad", 7, (3, 2), True),
         ("synthetic-pad", 3, (2, 3), False)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_mixed_per_patch_widths_equal_the_per_patch_qmcu_ops(case, seed):
    """Every patch its own widths (8/4/2) and ranges: the stage op with version-2 options
    computes what the builtin form's per-patch QMCU ops compute, bit for bit."""
    name, split, grid, in_place = case
    graph = _graph(name)
    per_patch, staged, plan = _both_forms(
        graph, split=split, grid=grid, in_place=in_place,
        plan_of=lambda b: _CASES.mixed_widths(builtin=b, seed=seed))
    assert any(v < 8 for v in plan.bits.values())
    options = _stage_options(staged)
    assert options.version == 2 and any(t.is_subbyte for t in options.tensors)
    # no per-patch QMCU op: the stage is one op, the rest of the graph is the original's
    assert len(staged.main.operators) == len(graph.main.operators) - split
    _assert_same(per_patch, staged, graph=graph, seed=seed)


@pytest.mark.parametrize("bits", [4, 2])
def test_sub_byte_maps_shrink_the_scratch_and_the_total(bits):
    graph = _graph(MNV2)
    _, int8, _ = _both_forms(graph, split=9, grid=(3, 3), in_place=True,
                             plan_of=lambda b: BitwidthPlan(policy="int8", options={}, bits={}))
    per_patch, staged, _ = _both_forms(graph, split=9, grid=(3, 3), in_place=True,
                                       plan_of=_uniform(bits))
    assert _stage_options(int8).version == 1
    assert _stage_options(staged).scratch_bytes < _stage_options(int8).scratch_bytes
    assert arena_bytes(graph=staged).total < arena_bytes(graph=int8).total
    _assert_same(per_patch, staged, graph=graph)


def _packable(spec):
    """The spec with channel counts that pack at 2 bits (input 4, conv filters x 4)."""
    layers = tuple(dataclasses.replace(x, filters=4 * x.filters)
                   if isinstance(x, Conv) and x.filters > 0 else x for x in spec.layers)
    return dataclasses.replace(spec, input_shape=spec.input_shape[:2] + (4,), layers=layers)


def _mostly_packable(blocks) -> bool:
    """At most one max pool (it keeps the maps around it int8)."""
    flat = [x for block in blocks for x in block]
    return sum(isinstance(x, Pool) and x.kind == "MAX" for x in flat) <= 1


@st.composite
def _subbyte_stacks(draw):
    shape = (draw(st.integers(6, 22)), draw(st.integers(6, 22)), 4)
    blocks = draw(st.lists(layers(), min_size=2, max_size=4).filter(_mostly_packable))
    spec = _packable(_flatten(shape=shape, blocks=blocks, seed=draw(st.integers(0, 2**16)),
                              float_input=False))
    graph = _build(spec)
    splits = [s for s in _valid_splits(graph) if s >= 1     # a stage with inner maps
              and stage_op_problem(subgraph=graph.main,
                                   stage=make_stage(subgraph=graph.main, split=s)) is None]
    assume(splits)
    split = draw(st.sampled_from(splits))
    out = graph.main.tensors[graph.main.operators[split].outputs[0]].shape
    grid = (draw(st.integers(1, min(out[1], 4))), draw(st.integers(1, min(out[2], 4))))
    assume(grid != (1, 1))
    return spec, graph, split, grid, draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                 HealthCheck.too_slow])
@given(case=_subbyte_stacks())
def test_generated_conv_stacks_with_sub_byte_patches(case):
    """Kernels 1-7, strides, dilation, residual ADD, pools, PADs, random per-patch widths."""
    spec, graph, split, grid, in_place, seed = case
    try:
        per_patch, staged, _ = _both_forms(
            graph, split=split, grid=grid, in_place=in_place,
            plan_of=lambda b: _CASES.mixed_widths(builtin=b, seed=seed, keep8=0.15))
    except ConfigError as error:            # a part that reads no pixel: not a usable grid
        assume("reads no pixel" not in str(error))
        raise
    event(f"version {_stage_options(staged).version}")
    _assert_same(per_patch, staged, graph=graph, seed=spec.seed)


def test_versions_round_trip_and_bad_maps_are_refused():
    graph = _graph(MNV2)
    _, staged, _ = _both_forms(graph, split=9, grid=(2, 2), in_place=True,
                               plan_of=lambda b: _CASES.mixed_widths(builtin=b, seed=3))
    options = _stage_options(staged)
    assert decode_stage_options(data=encode_stage_options(options=options)) == options
    int8 = dataclasses.replace(
        options, tensors=tuple(dataclasses.replace(t, patch_bits=(), patch_zero_points=())
                               for t in options.tensors),
        layers=tuple(dataclasses.replace(x, variants=(), patch_variants=(), variant_data=-1)
                     for x in options.layers))
    assert int8.version == 1
    assert decode_stage_options(data=encode_stage_options(options=int8)) == int8
    sub = next(t for t in options.tensors if t.is_subbyte)
    k = options.tensors.index(sub)
    for bad, words in [((3,) * options.patches, "bits 3"),
                       (tuple(8 for _ in sub.patch_bits[:-1]), "entries")]:
        with pytest.raises(ValueError, match=words):
            dataclasses.replace(options, tensors=options.tensors[:k] + (dataclasses.replace(
                sub, patch_bits=bad),) + options.tensors[k + 1:])
    first = dataclasses.replace(options.tensors[0], patch_bits=(4,) * options.patches,
                                patch_zero_points=(0,) * options.patches)
    with pytest.raises(ValueError, match="stay int8"):
        dataclasses.replace(options, tensors=(first,) + options.tensors[1:])
    # a version-1 map may not carry per-patch tables
    from flatbuffers import flexbuffers
    raw = flexbuffers.Loads(encode_stage_options(options=options))
    raw["version"] = 1
    with pytest.raises(ValueError, match="version 2"):
        decode_stage_options(data=bytes(flexbuffers.Dumps(raw)))


def test_plan_keys_outside_the_stage_are_refused():
    graph = _graph(MNV2)
    stage = make_stage(subgraph=graph.main, split=9)
    plan = BitwidthPlan(policy="x", options={}, bits={"p5_0/3": 4})
    with pytest.raises(ConfigError, match="p5_0/3"):
        apply_stage_op(graph=graph, stage=stage, row_bounds=(0, 9, 18), col_bounds=(0, 18),
                       bitwidths=plan)


# ---- the convert pipeline ------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    sys.path.insert(0, str(TESTDATA))
    import fashion_mnist
    folder = tmp_path_factory.mktemp("calib")
    with np.load(TESTDATA / "fashion_mnist_calib.npz") as raw:
        x = fashion_mnist.to_model_input(images=raw["x"][:40])
    np.savez(folder / "calib.npz", x=x)
    return folder / "calib.npz"


def _run(options: ConvertOptions) -> Conversion:
    conv = Conversion(options=options)
    for step in PIPELINE:
        step(conv)
    return conv


def test_quantmcu_with_the_stage_op_form_runs_sub_byte_branches_inside(calibration):
    model = fixture_path("fashion_mnv2_r96_int8.tflite")
    conv = _run(ConvertOptions(model_path=model, out_dir=None, sram_budget=256 * 1024,
                               calibration=calibration, patch_form="stage-op",
                               objective="min-memory", measure_tflm=False))
    assert conv.patch_plan.form == "stage-op"
    ops = conv.converted.main.operators
    assert ops[0].opcode.custom == STAGE_OP
    assert not any(PATCH_MAP_KEY.match(k) for op in ops for k in op.outputs)
    options = _stage_options(conv.converted)
    stage_keys = {k for k, b in conv.bitwidth_plan.bits.items() if PATCH_MAP_KEY.match(k)}
    assert any(conv.bitwidth_plan.bits[k] < 8 for k in stage_keys)
    assert options.version == 2 and any(t.is_subbyte for t in options.tensors)
    assert conv.final.arena.total <= conv.patched_analysis.arena.total
    # the same plan in the builtin form (per-patch QMCU ops) computes the same outputs
    builtin = apply_bitwidth_plan(graph=conv.search_graph, plan=conv.bitwidth_plan)
    _assert_same(builtin, conv.converted, graph=conv.graph)


def test_cli_replays_a_plan_in_the_stage_op_form(calibration, tmp_path):
    model = fixture_path("fashion_mnv2_r96_int8.tflite")
    common = [sys.executable, "-m", "tflite_quantmcu.cli", "convert", str(model), "--sram",
              "256KB", "--no-tflm", "--patch-form", "stage-op", "--objective", "min-memory"]
    first = subprocess.run(common + ["--out", str(tmp_path / "a"), "--calibration",
                                     str(calibration)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    plan = tmp_path / "a" / "fashion_mnv2_r96_int8.bitwidth_plan.json"
    again = subprocess.run(common + ["--out", str(tmp_path / "b"), "--plan", str(plan)],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    name = "fashion_mnv2_r96_int8.quantmcu.tflite"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    header = (tmp_path / "b" / "fashion_mnv2_r96_int8_op_resolver.h").read_text()
    assert 'AddCustom("QMCU_PATCH_STAGE"' in header
