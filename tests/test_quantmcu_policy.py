"""QuantMCU policy: patch branches of a real rewrite, the search, VDPC, M, uniform plans.

References: branch mapping is checked against the values the patched graph
computes (each per-patch tensor must equal its region of the original tensor,
bit for bit); M against the sizes of the tensors it must include; the plan only
against properties (determinism, keys, allowed widths, outlier branches at 8).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from testdata.synthetic_models import Conv, DepthwiseConv, Mean, ModelSpec, Residual, \
    build_int8_graph
from tflite_quantmcu.analysis.memory import tensor_bytes
from tflite_quantmcu.analysis.model_analysis import analyze_model
from tflite_quantmcu.errors import BudgetError, ConfigError
from tflite_quantmcu.patches.branches import patch_branches
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.quantmcu_policy import (QuantMCUOptions, collect_patch_statistics,
                                                   search_quantmcu, tail_branch, tail_map_keys,
                                                   uniform_plan)
from tflite_quantmcu.reference.executor import run_graph

SPEC = ModelSpec(input_shape=(24, 20, 3), seed=11, layers=(
    Conv(filters=8, stride=(2, 2)),
    Conv(filters=16, kernel=(1, 1)),
    DepthwiseConv(),
    Conv(filters=8, kernel=(1, 1), activation="NONE"),
    Residual(source=0),
    Conv(filters=16, kernel=(1, 1)),
    DepthwiseConv(stride=(2, 2)),
    Conv(filters=16, kernel=(1, 1)),
    Mean(),
))
SPLIT = 6
ALLOWED = (8, 4, 2)


@pytest.fixture(scope="module")
def model():
    graph = build_int8_graph(spec=SPEC)
    plan = plan_patches(graph=graph, options=PatchOptions(split=SPLIT, grid=(2, 2),
                                                          max_file_growth=None))
    patched = apply_patch_plan(graph=graph, plan=plan)
    return graph, plan, patched


def all_allowed(patched) -> dict:
    return {key: ALLOWED for key in patched.main.tensors}


def calibration(*, samples: int = 24, seed: int = 0, planted: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-20, 20, size=(samples, 24, 20, 3)).astype(np.int8)
    if planted:
        x[:, :4, :4, :] = 127    # a bright corner: outliers in patch (0, 0) only
    return [x[:12], x[12:]]


def test_branches_map_every_patch_tensor_to_its_region(model):
    graph, plan, patched = model
    branches = patch_branches(graph=graph, patched_graph=patched, plan=plan)
    assert [b.name for b in branches] == ["p0_0", "p0_1", "p1_0", "p1_1"]
    stage_keys = [graph.main.operators[i].outputs[0] for i in range(SPLIT + 1)]
    x = calibration()[0]
    original, per_patch = {}, {}
    run_graph(graph=graph, inputs=[x],
              observer=lambda i, op, out: original.update(out))
    run_graph(graph=patched, inputs=[x],
              observer=lambda i, op, out: per_patch.update(out))
    for branch in branches:
        assert [m.original_key for m in branch.feature_maps] == stage_keys
        assert [m.op_index for m in branch.feature_maps] == list(range(SPLIT + 1))
        for m in branch.feature_maps:
            assert m.patched_key == f"{branch.name}/{m.op_index}"
            op = patched.main.operators[m.producer]
            assert op.outputs == [m.patched_key]
            assert op.type == graph.main.operators[m.op_index].type
            assert all(m.patched_key in patched.main.operators[c].inputs for c in m.consumers)
            r = m.region
            full = original[m.original_key].reshape((x.shape[0],) +
                                                    graph.main.tensors[m.original_key].shape[1:])
            got = per_patch[m.patched_key].reshape(x.shape[0], r.rows.size, r.cols.size, -1)
            np.testing.assert_array_equal(got, full[:, r.rows.start:r.rows.stop,
                                                    r.cols.start:r.cols.stop])


def test_compute_consumers_look_through_pads(model):
    graph, plan, patched = model
    sub = patched.main
    for branch in patch_branches(graph=graph, patched_graph=patched, plan=plan):
        for m in branch.feature_maps:
            types = {sub.operators[c].type for c in m.compute_consumers}
            assert not types & {"PAD", "PADV2", "STRIDED_SLICE"}
            assert types <= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION"}


def test_unpatched_plan_has_no_branches(model):
    graph, _, _ = model
    plan = plan_patches(graph=graph, options=PatchOptions(split=SPLIT, grid=(1, 1),
                                                          max_file_growth=None))
    patched = apply_patch_plan(graph=graph, plan=plan)
    assert patch_branches(graph=graph, patched_graph=patched, plan=plan) == ()


def search(model, *, options=QuantMCUOptions(), budget=None, planted=False, allowed=None):
    graph, plan, patched = model
    return search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched,
                           calibration=calibration(planted=planted), sram_budget=budget,
                           options=options, allowed=allowed or all_allowed(patched))


def test_search_is_deterministic_with_existing_keys_and_allowed_widths(model):
    _, _, patched = model
    allowed = {k: ((8, 4) if k.endswith("/2") else ALLOWED) for k in patched.main.tensors}
    first = search(model, budget=64 * 1024, allowed=allowed)
    second = search(model, budget=64 * 1024, allowed=allowed)
    assert first.plan.to_json() == second.plan.to_json()
    assert first.outlier_branches == second.outlier_branches
    bits = first.plan.bits
    assert len(bits) == 4 * (SPLIT + 1) + len(first.tail_keys)
    for key, b in bits.items():
        assert key in patched.main.tensors
        assert b in allowed[key]
    json.dumps(first.to_dict())
    assert first.num_samples == 24


def test_planted_outlier_patch_stays_8_bit(model):
    result = search(model, planted=True, options=QuantMCUOptions(lam=0.0))
    assert "p0_0" in result.outlier_branches
    assert all(b == 8 for k, b in result.plan.bits.items() if k.startswith("p0_0/"))
    first = result.patch_classes[0]
    flagged = {p.name: p for p in first.patches}["p0_0"]
    assert flagged.outlier_class and flagged.density_ratio > 1.0
    no_vdpc = search(model, planted=True, options=QuantMCUOptions(lam=0.0, use_vdpc=False))
    assert no_vdpc.outlier_branches == ()
    assert any(b < 8 for k, b in no_vdpc.plan.bits.items() if k.startswith("p0_0/"))


def test_lambda_zero_cuts_every_map_read_by_a_weighted_op(model):
    """lam = 0: S = Phi only, so every map with MACs downstream takes its narrowest width."""
    graph, plan, patched = model
    result = search(model, options=QuantMCUOptions(lam=0.0, use_vdpc=False))
    for branch in patch_branches(graph=graph, patched_graph=patched, plan=plan):
        for m in branch.feature_maps:
            weighted = any(patched.main.operators[c].type in ("CONV_2D", "DEPTHWISE_CONV_2D")
                           for c in m.compute_consumers)
            channels = patched.main.tensors[m.patched_key].shape[-1]
            expected = 2 if weighted and channels % 4 == 0 else 8
            assert result.plan.bits[m.patched_key] == expected, m.patched_key


def test_memory_limit_is_budget_minus_resident_bytes(model):
    graph, plan, _ = model
    budget = 64 * 1024
    result = search(model, budget=budget)
    image = tensor_bytes(tensor=graph.main.tensors[graph.main.inputs[0]])
    output = graph.main.tensors[plan.split_tensor].shape
    first_strip = plan.row_bounds[1] * output[2] * output[3]
    limits = {limit.branch: limit for limit in result.branch_limits}
    assert limits["p0_0"].resident_bytes >= image          # the image is read by every patch
    assert limits["p1_1"].resident_bytes >= first_strip    # row 0 is finished and kept
    for limit in result.branch_limits:
        assert limit.memory_limit == budget - limit.resident_bytes
    # a budget the 8-bit patched graph meets leaves every 8-bit pair inside M
    search(model, budget=plan.patch_based_peak, options=QuantMCUOptions(candidates=(8,)))
    with pytest.raises(BudgetError):
        search(model, budget=image)


def test_uniform4_plan(model):
    graph, plan, patched = model
    allowed = {k: ((8,) if k.endswith("/3") else ALLOWED) for k in patched.main.tensors}
    result = uniform_plan(graph=graph, patch_plan=plan, patched_graph=patched, bits=4,
                          allowed=allowed)
    assert result.policy == "uniform4"
    assert {k: b for k, b in result.bits.items()} == \
        {f"p{i}_{j}/{k}": (8 if k == 3 else 4) for i in range(2) for j in range(2)
         for k in range(SPLIT + 1)}


def test_statistics_need_a_patched_plan(model):
    graph, _, _ = model
    plan = plan_patches(graph=graph, options=PatchOptions(split=SPLIT, grid=(1, 1),
                                                          max_file_growth=None))
    with pytest.raises(ConfigError, match="patched plan"):
        collect_patch_statistics(graph=graph, patch_plan=plan, calibration=calibration())


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        QuantMCUOptions(phi=1.5)
    with pytest.raises(ConfigError):
        QuantMCUOptions(classify_on="middle")
    with pytest.raises(ConfigError):
        QuantMCUOptions(candidates=(8, 3))


def test_plan_from_subbyte_candidates_applies_and_cuts_bitops(model):
    """Without an override the search asks the graph pass which widths each map may take;
    the plan it returns must apply, run, and lower the whole model's BitOPs."""
    graph, plan, patched = model
    result = search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched,
                             calibration=calibration(), sram_budget=None,
                             options=QuantMCUOptions(lam=0.0, use_vdpc=False))
    allowed = subbyte_candidates(graph=patched)
    assert all(b in allowed[k] for k, b in result.plan.bits.items())
    assert any(b < 8 for b in result.plan.bits.values())
    final = apply_bitwidth_plan(graph=patched, plan=result.plan)
    assert analyze_model(graph=final).bitops < analyze_model(graph=patched).bitops
    x = calibration()[0]
    assert run_graph(graph=final, inputs=[x])[0].shape[0] == x.shape[0]


# -- the tail: the layer-based ops after the patch stage ------------------------------------
TAIL_SPEC = ModelSpec(input_shape=(24, 20, 3), seed=5, layers=(
    Conv(filters=8, stride=(2, 2)),
    DepthwiseConv(),
    Conv(filters=8, kernel=(1, 1)),
    Conv(filters=16, kernel=(1, 1)),                # the tail starts here (split = 2)
    DepthwiseConv(stride=(2, 2)),
    Conv(filters=8, kernel=(1, 1), activation="NONE"),
    Conv(filters=16, kernel=(1, 1)),
    DepthwiseConv(),
    Conv(filters=8, kernel=(1, 1), activation="NONE"),
    Residual(source=5),
    Conv(filters=16, kernel=(1, 1)),
    Mean(),
))
TAIL_SPLIT = 2


@pytest.fixture(scope="module")
def tail_model():
    graph = build_int8_graph(spec=TAIL_SPEC)
    plan = plan_patches(graph=graph, options=PatchOptions(split=TAIL_SPLIT, grid=(2, 2),
                                                          max_file_growth=None))
    patched = apply_patch_plan(graph=graph, plan=plan)
    return graph, plan, patched


def tail_search(model, **changes):
    graph, plan, patched = model
    options = QuantMCUOptions(**{"lam": 0.0, "use_vdpc": False, **changes})
    return search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched,
                           calibration=calibration(), sram_budget=None, options=options)


def test_tail_maps_are_the_original_outputs_after_the_split(tail_model):
    graph, plan, patched = tail_model
    expected = [op.outputs[0] for op in graph.main.operators[TAIL_SPLIT + 1:]]
    tail = tail_branch(graph=graph, patch_plan=plan, patched_graph=patched)
    assert tail.name == "tail" and list(tail.keys) == expected
    for m in tail.feature_maps:
        assert patched.main.operators[m.producer].outputs == [m.key]
        assert all(m.key in patched.main.operators[c].inputs for c in m.compute_consumers)


def test_tail_statistics_are_histograms_of_the_whole_graph_run(tail_model):
    graph, plan, _ = tail_model
    batches = calibration()
    stats = collect_patch_statistics(graph=graph, patch_plan=plan, calibration=batches)
    values = {}
    for batch in batches:
        run_graph(graph=graph, inputs=[batch],
                  observer=lambda i, op, out: [values.setdefault(k, []).append(v)
                                               for k, v in out.items()])
    for key in tail_map_keys(graph=graph, patch_plan=plan):
        codes = np.concatenate([v.reshape(-1) for v in values[key]]).astype(np.int64)
        assert stats[key].histogram == tuple(np.bincount(codes + 128, minlength=256))
        assert stats[key].num_samples == 24 and stats[key].regions == ()
    stage_only = collect_patch_statistics(graph=graph, patch_plan=plan, calibration=batches,
                                          tail=False)
    assert not set(tail_map_keys(graph=graph, patch_plan=plan)) & set(stage_only)
    with pytest.raises(ConfigError, match="tail"):
        search_quantmcu(graph=graph, patch_plan=plan, patched_graph=tail_model[2],
                        calibration=None, sram_budget=None, statistics=stage_only)


def test_tail_plan_is_deterministic_allowed_applies_and_cuts_bitops(tail_model):
    graph, plan, patched = tail_model
    first, second = tail_search(tail_model), tail_search(tail_model)
    assert first.plan.to_json() == second.plan.to_json()
    tail_keys = tail_map_keys(graph=graph, patch_plan=plan)
    assert first.tail_keys == tail_keys
    assert [b.name for b in first.plan.branches][-1] == "tail"
    assert first.to_dict()["tail"] == {"searched": True, "feature_maps": len(tail_keys)}
    allowed = subbyte_candidates(graph=patched)
    for key in tail_keys:
        assert key in patched.main.tensors and first.plan.bits[key] in allowed[key]
    assert any(first.plan.bits[k] < 8 for k in tail_keys)
    stage_only = tail_search(tail_model, search_tail=False)
    assert not set(tail_keys) & set(stage_only.plan.bits)
    final = apply_bitwidth_plan(graph=patched, plan=first.plan)
    without_tail = apply_bitwidth_plan(graph=patched, plan=stage_only.plan)
    assert analyze_model(graph=final).bitops < analyze_model(graph=without_tail).bitops
    x = calibration()[0]
    assert run_graph(graph=final, inputs=[x])[0].shape == run_graph(graph=graph,
                                                                    inputs=[x])[0].shape


def test_tail_memory_limit_counts_the_stage_output(tail_model):
    graph, plan, patched = tail_model
    budget = 64 * 1024
    result = search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched,
                             calibration=calibration(), sram_budget=budget,
                             options=QuantMCUOptions(lam=0.0, use_vdpc=False))
    limit = {b.branch: b for b in result.branch_limits}["tail"]
    stage_out = tensor_bytes(tensor=graph.main.tensors[plan.split_tensor])
    assert limit.resident_bytes >= stage_out      # read by the first tail op
    assert limit.memory_limit == budget - limit.resident_bytes


def test_uniform_plan_with_tail(tail_model):
    graph, plan, patched = tail_model
    allowed = subbyte_candidates(graph=patched)
    result = uniform_plan(graph=graph, patch_plan=plan, patched_graph=patched, bits=4,
                          tail=True)
    for key in tail_map_keys(graph=graph, patch_plan=plan):
        assert result.bits[key] == (4 if 4 in allowed[key] else 8)
    stage_only = uniform_plan(graph=graph, patch_plan=plan, patched_graph=patched, bits=4)
    assert set(result.bits) - set(stage_only.bits) == set(tail_map_keys(graph=graph,
                                                                        patch_plan=plan))
