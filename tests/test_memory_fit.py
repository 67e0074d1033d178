"""QuantMCU where memory binds (memory_fit, joint_search, the fit_arena step).

Every figure is checked against an independent source: the arena of the written model read
back from its file (`arena_bytes`, the TFLM-exact planner), the packed arrays the reference
executor produces, byte counts recomputed here from logical shapes.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from testdata.synthetic_models import (Conv, DepthwiseConv, Mean, ModelSpec, Pool, Residual,
                                       build_int8_graph)
from tflite_quantmcu.analysis.memory import ARENA_ALIGNMENT, plan_memory
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.errors import BudgetError
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import PatchBudgetError, PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.patches.stage_op import PATCH_NAMESPACE
from tflite_quantmcu.qmcu_stage_options import STAGE_OP
from tflite_quantmcu.quant.memory_fit import (FitOptions, FitProblem, MemoryFitError,
                                              convert_plan, eligible_maps, fit_to_budget,
                                              memory_path)
from tflite_quantmcu.quant.joint_search import candidate_plans, search_graph
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import QuantMCUOptions
from tflite_quantmcu.quant.ranges import full_range
from tflite_quantmcu.reference.executor import run_graph

SPEC = ModelSpec(input_shape=(32, 32, 3), seed=5, layers=(
    Conv(filters=8, stride=(2, 2)),                     # 0: stage
    Conv(filters=32, kernel=(1, 1)),                    # 1
    DepthwiseConv(),                                    # 2
    Conv(filters=8, kernel=(1, 1), activation="NONE"),  # 3
    Residual(source=0),                                 # 4: ADD, the stage output
    Conv(filters=32, kernel=(1, 1)),                    # 5: tail (conv output)
    DepthwiseConv(),                                    # 6: depthwise output
    Conv(filters=8, kernel=(1, 1), activation="NONE"),  # 7
    Residual(source=4),                                 # 8: ADD output
    Pool(kind="AVG", size=(2, 2), stride=(1, 1), padding="SAME"),  # 9: average-pool output
    DepthwiseConv(stride=(2, 2)),                       # 10
    Conv(filters=16, kernel=(1, 1)),                    # 11
    Mean(),
))
SPLIT = 4


@pytest.fixture(scope="module")
def model():
    graph = build_int8_graph(spec=SPEC)
    plan = plan_patches(graph=graph, options=PatchOptions(split=SPLIT, grid=(2, 2),
                                                          max_file_growth=None))
    return graph, plan, apply_patch_plan(graph=graph, plan=plan)


def full_ranges(patched) -> dict:
    tensors = patched.main.tensors
    return {(key, bits): full_range(scale8=tensors[key].quantization.scale[0],
                                    zero_point8=tensors[key].quantization.zero_point[0],
                                    bits=bits)
            for key, widths in subbyte_candidates(graph=patched).items()
            for bits in widths if bits < 8}


def problem(model, *, outliers=(), drop=None) -> FitProblem:
    graph, plan, patched = model
    return FitProblem(graph=graph, patch_plan=plan, patched_graph=patched,
                      ranges=full_ranges(patched), outlier_branches=outliers,
                      cost=lambda key, bits, subbyte: {4: 1.0, 2: 4.0}[bits], drop=drop)


def int8_plan() -> BitwidthPlan:
    return BitwidthPlan(policy="quantmcu", options={}, bits={})


def total_of(patched, plan) -> int:
    """The total arena of the plan applied, from the written file read back."""
    data = write_model_bytes(graph=apply_bitwidth_plan(graph=patched, plan=plan))
    return arena_bytes(graph=read_model_bytes(data=data, source="fit"), target="cortex-m").total


# -- packed byte accounting -----------------------------------------------------------------
def test_packed_bytes_of_every_subbyte_map_kind(model):
    """Conv, depthwise, ADD and average-pool outputs, inside the patch stage and after it, at
    4 and 2 bits: the arena buffer of each is its packed byte count (rows x ceil(C x b / 8),
    16-byte aligned), and the reference executor's array of it holds exactly those bytes."""
    graph, plan, patched = model
    sub = patched.main
    producers = sub.producers()
    maps = {k for k, widths in subbyte_candidates(graph=patched).items() if 2 in widths}
    kinds = {(sub.operators[producers[k]].type, "/" in k) for k in maps}
    assert {("CONV_2D", True), ("DEPTHWISE_CONV_2D", True), ("CONV_2D", False),
            ("DEPTHWISE_CONV_2D", False), ("ADD", False), ("AVERAGE_POOL_2D", False)} <= kinds
    x = np.random.default_rng(0).integers(-128, 128, size=(3, 32, 32, 3)).astype(np.int8)
    for bits in (4, 2):
        converted = apply_bitwidth_plan(graph=patched, plan=BitwidthPlan(
            policy="x", options={}, bits={k: bits for k in maps}))
        memory = plan_memory(graph=converted, scratch=scratch_requests)
        sizes = {b.key: b.size for b in memory.buffers}
        arrays = {}
        run_graph(graph=converted, inputs=[x],
                  observer=lambda _i, _op, produced: arrays.update(produced))
        for key in maps:
            shape = sub.tensors[key].shape            # logical int8 shape
            rows = int(np.prod(shape[:-1]))
            packed = rows * -(-shape[-1] * bits // 8)
            aligned = -(-packed // ARENA_ALIGNMENT) * ARENA_ALIGNMENT
            assert sizes[key] == aligned, (key, bits)
            assert arrays[key].dtype == np.uint8 and arrays[key].nbytes == 3 * packed, key


# -- the greedy path --------------------------------------------------------------------------
def test_outlier_branches_stay_8_bit(model):
    """With branch p1_0 outlier-class, no path step touches its maps; without it, they are
    lowered (the same budget-0 path to the floor)."""
    fit = FitOptions(budget=0)
    free = memory_path(problem=problem(model), options=fit, start=int8_plan())
    kept = memory_path(problem=problem(model, outliers=("p1_0",)), options=fit,
                       start=int8_plan())
    assert any(s.key.startswith("p1_0/") for s in free.steps)
    assert kept.steps and not any(s.key.startswith("p1_0/") for s in kept.steps)
    assert not any(k.startswith("p1_0/")
                   for k in eligible_maps(problem=problem(model, outliers=("p1_0",)),
                                          options=fit))


def test_path_totals_are_the_arena_of_each_plan(model):
    """Each step's total equals the arena of its plan, written and read back; steps go one
    width down at a time and only within the allowed widths."""
    _, _, patched = model
    path = memory_path(problem=problem(model), options=FitOptions(budget=0), start=int8_plan())
    allowed = subbyte_candidates(graph=patched)
    assert len(path.steps) >= 3
    for moves in (0, 1, len(path.steps) // 2, len(path.steps)):
        plan = path.plan_after(moves=moves, ranges=full_ranges(patched))
        assert path.totals[moves] == total_of(patched, plan)
    for step in path.steps:
        assert step.to_bits in allowed[step.key] and step.to_bits < step.from_bits
    assert path.totals[-1] < path.totals[0]


# -- the bound and the error -------------------------------------------------------------------
def test_fit_takes_the_first_fitting_plan_and_records_memory_reasons(model):
    _, _, patched = model
    floor = memory_path(problem=problem(model), options=FitOptions(budget=0), start=int8_plan())
    budget = floor.totals[2]   # needs at least two moves
    fitted = fit_to_budget(problem=problem(model), options=FitOptions(budget=budget),
                           plan=int8_plan(), int8_total=floor.totals[0])
    assert total_of(patched, fitted.plan) == fitted.record["final_total"] <= budget
    lowered = [k for k, b in fitted.plan.bits.items() if b < 8]
    assert lowered and all(fitted.plan.reasons[k] == "memory" for k in lowered)
    peak = fitted.record["peak_maps"]
    assert sum(m["bytes"] for m in peak if m["bits"] is not None) > 0
    for m in peak:
        if m["bits"] is not None and m["bits"] < 8:
            assert fitted.plan.bits[m["key"]] == m["bits"]


def test_budget_error_names_both_policies_the_bound_and_the_maps(model):
    """A drop that grows with every lowered bit and a bound no lowered map holds: the error
    gives patch-int8's figure, the quantmcu total within the bound (this plan all int8) and at
    any accuracy (the path's floor), and names the first map the budget would cut."""

    def drop(plan):
        return sum(8 - b for b in plan.bits.values()) / 4.0

    floor = memory_path(problem=problem(model), options=FitOptions(budget=0), start=int8_plan())
    budget = min(floor.totals[1:])
    with pytest.raises(MemoryFitError) as err:
        fit_to_budget(problem=problem(model, drop=drop),
                      options=FitOptions(budget=budget, max_drop_pts=0.5),
                      plan=int8_plan(), int8_total=floor.totals[0], patch_int8_total=123456)
    message = str(err.value)
    assert f"SRAM budget {budget} B cannot be met on cortex-m within --max-accuracy-drop 0.5 pt" \
        in message
    assert "patch-int8 reaches 123456 B (no accuracy loss)" in message
    assert f"quantmcu reaches {floor.totals[0]} B within" in message
    assert f"and {min(floor.totals)} B at any accuracy" in message
    assert f"it would have to cut: {floor.steps[0].key} 8->" in message
    assert isinstance(err.value, BudgetError)


def test_budget_error_takes_the_smaller_totals_of_both_paths(model):
    """A VDQS plan that already lowers maps off the int8 path, and a drop that charges only
    peak maps the int8 path would move: the VDQS path reaches a smaller total within the bound
    than the int8 path, the int8 path a smaller floor; the error reports the smaller of each
    (a message from one path alone would hide the other's figure)."""
    _, _, patched = model
    fit = FitOptions(budget=0)
    int8_path = memory_path(problem=problem(model), options=fit, start=int8_plan())
    moved = {s.key for s in int8_path.steps}
    others = sorted(k for k, widths in subbyte_candidates(graph=patched).items()
                    if k not in moved and 2 in widths)
    start = BitwidthPlan(policy="quantmcu", options={}, bits={k: 2 for k in others})
    vdqs_path = memory_path(problem=problem(model), options=fit, start=start)
    assert vdqs_path.totals[0] < int8_path.totals[0]   # the case this test is about

    def drop(plan):
        return float(sum(1 for k, b in plan.bits.items() if b < 8 and k in moved))

    budget = min(min(int8_path.totals), min(vdqs_path.totals)) + 1
    with pytest.raises(MemoryFitError) as err:
        fit_to_budget(problem=problem(model, drop=drop),
                      options=FitOptions(budget=budget, max_drop_pts=0.5),
                      plan=start, int8_total=int8_path.totals[0])
    message = str(err.value)
    within = min(vdqs_path.totals[0], int8_path.totals[0])
    assert f"quantmcu reaches {within} B within" in message
    at_all = min(min(int8_path.totals), min(vdqs_path.totals))
    assert f"and {at_all} B at any accuracy" in message


def test_unreachable_budget_says_what_stays_int8(model):
    floor = memory_path(problem=problem(model), options=FitOptions(budget=0), start=int8_plan())
    with pytest.raises(MemoryFitError, match=f"at any accuracy; even with every map live at "
                                             f"the peak at its lowest width the total is "
                                             f"{min(floor.totals)} B"):
        fit_to_budget(problem=problem(model), options=FitOptions(budget=1, max_drop_pts=None),
                      plan=int8_plan(), int8_total=floor.totals[0])


# -- the convert pipeline ----------------------------------------------------------------------
def convert(model, tmp_path, *, policy, budget, **changes):
    graph = model[0]
    x = np.random.default_rng(1).integers(-128, 128, size=(64, 32, 32, 3)).astype(np.int8)
    np.savez(tmp_path / "calib.npz", x=x)
    options = ConvertOptions(
        model_path=tmp_path / "m.tflite", model_bytes=write_model_bytes(graph=graph),
        out_dir=None, sram_budget=budget, policy=policy, verify=False, measure_tflm=False,
        calibration=tmp_path / "calib.npz", max_file_growth=None,
        # lam 1 with fine bins: VDQS keeps 8 bits, so only the memory fit lowers maps
        quantmcu=QuantMCUOptions(candidates=(8, 4), use_vdpc=False, lam=1.0, bins=256),
        **changes)
    return run_pipeline(options=options)


def test_int8_cannot_fit_but_4_bit_peak_maps_can(model, tmp_path):
    graph = model[0]
    best = plan_patches(graph=graph, options=PatchOptions(objective="min-memory",
                                                          max_file_growth=None))
    budget = best.total_bytes - 1
    with pytest.raises(PatchBudgetError):
        plan_patches(graph=graph, options=PatchOptions(sram_budget=budget, max_file_growth=None))
    with pytest.raises(BudgetError):
        convert(model, tmp_path, policy="patch-int8", budget=budget)
    # --patch-form builtin: that form only (unset, the stage-op form's int8 plans fit here)
    conv = convert(model, tmp_path, policy="quantmcu", budget=budget, max_accuracy_drop=None,
                   patch_form="builtin")
    data = write_model_bytes(graph=conv.converted, inline_buffers=True)
    written = arena_bytes(graph=read_model_bytes(data=data, source="fit"), target="cortex-m")
    assert written.total == conv.final.arena.total == conv.memory_fit["final_total"] <= budget
    assert conv.memory_binds and conv.memory_fit["patch_int8_total"] == best.total_bytes
    subbyte = {k: b for k, b in conv.bitwidth_plan.bits.items() if b < 8}
    assert subbyte and set(subbyte.values()) == {4}
    assert set(conv.bitwidth_plan.reasons) == set(subbyte)
    # the plan with every memory map back at 8 bits does not fit: memory made it fit
    memory = [k for k, r in conv.bitwidth_plan.reasons.items() if r == "memory"]
    assert memory
    back = dataclasses.replace(conv.bitwidth_plan,
                               bits={**conv.bitwidth_plan.bits, **{k: 8 for k in memory}},
                               ranges={k: r for k, r in conv.bitwidth_plan.ranges.items()
                                       if k not in memory}, reasons={})
    assert total_of(conv.patched, back) > budget


def test_cli_budget_error_is_one_line_exit_2_and_writes_nothing(model, tmp_path):
    graph = model[0]
    (tmp_path / "m.tflite").write_bytes(write_model_bytes(graph=graph))
    x = np.random.default_rng(1).integers(-128, 128, size=(32, 32, 32, 3)).astype(np.int8)
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert",
                           str(tmp_path / "m.tflite"), "--sram", "1000", "--no-tflm",
                           "--no-verify", "--max-file-growth", "10", "--calibration",
                           str(tmp_path / "calib.npz"),
                           "--out", str(out)], capture_output=True, text=True, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert "SRAM budget 1000 B cannot be met on cortex-m within --max-accuracy-drop 1 pt: " \
           "patch-int8 reaches" in errors[0]
    assert "at any accuracy" in errors[0] and "would have to cut" in errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_vdqs_plan_that_fits_still_meets_the_int8_path(model, tmp_path):
    """Where memory binds, a VDQS plan that already fits --sram is not taken as found: the
    int8 path's first fitting plan is judged too, and the smaller held-out drop wins."""
    graph = model[0]
    best = plan_patches(graph=graph, options=PatchOptions(objective="min-memory",
                                                          max_file_growth=None))
    x = np.random.default_rng(1).integers(-128, 128, size=(64, 32, 32, 3)).astype(np.int8)
    np.savez(tmp_path / "calib.npz", x=x)
    conv = run_pipeline(options=ConvertOptions(
        model_path=tmp_path / "m.tflite", model_bytes=write_model_bytes(graph=graph),
        out_dir=None, sram_budget=best.total_bytes - 1, policy="quantmcu", verify=False,
        measure_tflm=False, calibration=tmp_path / "calib.npz", max_file_growth=None,
        max_accuracy_drop=100.0,   # every plan holds it: the choice is by drop alone
        patch_form="builtin",      # the builtin form only (stage-op int8 plans fit here)
        quantmcu=QuantMCUOptions(candidates=(8, 4), use_vdpc=False, lam=0.0)))
    vdqs, int8 = conv.memory_fit["paths"]
    assert conv.memory_binds and vdqs["start"] == "vdqs" and vdqs["fits_at_moves"] == 0
    assert int8["start"] == "int8" and int8["fits_at_moves"] > 0
    assert conv.memory_fit["drop_pts"] == min(vdqs["drop_pts"], int8["drop_pts"])
    assert conv.final.arena.total <= best.total_bytes - 1


def test_joint_candidates_keep_the_file_growth_cap(model):
    """A forced split and grid skip the planner's caps; the joint search's candidates still
    keep the user's file-growth cap."""
    graph = model[0]
    free = PatchOptions(objective="min-memory", max_file_growth=None)
    first = plan_patches(graph=graph, options=free)
    uncapped = candidate_plans(graph=graph, first=first, options=free)
    growths = sorted(p.file_growth for p in uncapped)
    cap = growths[len(growths) // 2]
    capped = candidate_plans(graph=graph, first=first,
                             options=dataclasses.replace(free, max_file_growth=cap))
    assert growths[-1] > cap
    assert capped and all(p.file_growth <= cap for p in capped)
    assert [(p.split_op, p.grid) for p in capped] == \
        [(p.split_op, p.grid) for p in uncapped if p.file_growth <= cap]


# -- the stage-op form -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def staged_model(model):
    """The same stage as one QMCU_PATCH_STAGE op; the search names its maps in the builtin
    form (p{i}_{j}/{k}), as the convert pipeline does."""
    graph, _, _ = model
    plan = plan_patches(graph=graph, options=PatchOptions(split=SPLIT, grid=(2, 2),
                                                          max_file_growth=None, form="stage-op"))
    assert plan.form == "stage-op" and plan.is_patched
    return graph, plan, search_graph(graph=graph, plan=plan)


def written_total(graph) -> int:
    data = write_model_bytes(graph=graph)
    return arena_bytes(graph=read_model_bytes(data=data, source="fit"), target="cortex-m").total


def test_stage_op_path_totals_are_the_written_models_arena(staged_model):
    """In the stage-op form each step's total is the arena of the stage-op model it gives,
    written and read back; a stage map's parts move together (one slot per map, as large as
    its widest part), tail maps alone; the model has one QMCU_PATCH_STAGE op and computes
    what the builtin form with the same widths computes, bit for bit."""
    graph, plan, patched = staged_model
    fit_problem = problem(staged_model)
    path = memory_path(problem=fit_problem, options=FitOptions(budget=0), start=int8_plan())
    eligible = eligible_maps(problem=fit_problem, options=FitOptions(budget=0))
    stage_steps = [s for s in path.steps if PATCH_NAMESPACE.match(s.key)]
    assert stage_steps and any(not PATCH_NAMESPACE.match(s.key) for s in path.steps)
    for step in stage_steps:
        suffix = step.key.split("/", 1)[1]
        parts = {k for k in eligible if PATCH_NAMESPACE.match(k) and k.split("/", 1)[1] == suffix}
        assert set((step.key,) + step.also) == parts and len(parts) == 4
    assert all(not s.also for s in path.steps if not PATCH_NAMESPACE.match(s.key))
    ranges = full_ranges(patched)
    x = np.random.default_rng(2).integers(-128, 128, size=(2, 32, 32, 3)).astype(np.int8)
    for moves in (0, 1, len(path.steps) // 2, len(path.steps)):
        bits_plan = path.plan_after(moves=moves, ranges=ranges)
        staged = convert_plan(graph=graph, patch_plan=plan, patched_graph=patched,
                              plan=bits_plan)
        assert [op.opcode.custom for op in staged.main.operators].count(STAGE_OP) == 1
        assert path.totals[moves] == written_total(staged)
        builtin = apply_bitwidth_plan(graph=patched, plan=bits_plan)
        assert np.array_equal(run_graph(graph=staged, inputs=[x])[0],
                              run_graph(graph=builtin, inputs=[x])[0])
    assert path.totals[-1] < path.totals[0]


def test_stage_op_outlier_parts_stay_8_bit(staged_model):
    """An outlier-class branch keeps its parts of every stage map at 8 bits in the stage-op
    form too: no step (nor a part moved with it) touches them."""
    path = memory_path(problem=problem(staged_model, outliers=("p1_0",)),
                       options=FitOptions(budget=0), start=int8_plan())
    moved = [k for s in path.steps for k in (s.key,) + s.also]
    assert any(PATCH_NAMESPACE.match(k) for k in moved)
    assert not any(k.startswith("p1_0/") for k in moved)


def test_stage_op_candidates_keep_the_caps(model):
    """The joint search's stage-op candidates are stage-op plans within the user's caps."""
    graph = model[0]
    free = PatchOptions(objective="min-memory", max_file_growth=None)
    first = plan_patches(graph=graph, options=free)
    uncapped = candidate_plans(graph=graph, first=first, options=free, form="stage-op")
    assert uncapped and all(p.form == "stage-op" and p.is_patched for p in uncapped)
    macs = sorted(p.mac_overhead for p in uncapped)
    cap = macs[len(macs) // 2]
    capped = candidate_plans(graph=graph, first=first, form="stage-op",
                             options=dataclasses.replace(free, max_mac_overhead=cap))
    assert macs[-1] > cap and capped and all(p.mac_overhead <= cap for p in capped)


def test_memory_binds_searches_the_stage_op_form(model, tmp_path):
    """Below every int8 plan of both forms, `convert --policy quantmcu` screens the stage-op
    candidates too (--patch-form stage-op: those only); the model it writes has one
    QMCU_PATCH_STAGE op, its arena read back from the file fits the budget, and patch-int8's
    figure is the lowest int8 total over the candidates of both forms (a +10 % MAC cap for
    both: without it this small model's int8 stage-op plans reach its sub-byte floor)."""
    graph = model[0]
    free = PatchOptions(objective="min-memory", max_file_growth=None, max_mac_overhead=0.1)
    first = plan_patches(graph=graph, options=free)
    int8_lowest = min(p.total_bytes for form in ("builtin", "stage-op")
                      for p in [plan_patches(graph=graph, options=dataclasses.replace(
                          free, form=form)),
                          *candidate_plans(graph=graph, first=first, options=free, form=form)])
    budget = int8_lowest - 1
    for form in (None, "stage-op"):   # unset: both forms; here the stage-op form is lowest
        conv = convert(model, tmp_path, policy="quantmcu", budget=budget, max_accuracy_drop=None,
                       patch_form=form, max_mac_overhead=0.1)
        written = arena_bytes(graph=read_model_bytes(data=write_model_bytes(
            graph=conv.converted, inline_buffers=True), source="fit"), target="cortex-m")
        assert conv.memory_binds and written.total == conv.final.arena.total <= budget
        assert conv.memory_fit["patch_int8_total"] == int8_lowest
        assert conv.memory_fit["final_total"] == written.total
        assert conv.patch_plan.form == "stage-op"
        assert [op.opcode.custom for op in conv.converted.main.operators].count(STAGE_OP) == 1
        assert any(b < 8 for b in conv.bitwidth_plan.bits.values())
