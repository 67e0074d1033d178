"""The accuracy guard on the bundled model with real (committed) calibration images.

A plan with one planted harmful map (a ReLU6 map squeezed into a range of two int8 codes)
and one benign map: the guard must measure the drop exactly (recomputed here by running the
converted graph in the reference executor and comparing with the labels), find the harmful
map costliest, raise it back to 8 bits, and keep the benign map when that alone holds the
bound. Also: the calibration hold-out split.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from fixture_models import TESTDATA
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.quant.accuracy_guard import (GuardOptions, HeldOut, drop_points, guard_plan,
                                                  raised, top1)
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.calibration_data import Batch, calibration_batches
from tflite_quantmcu.quant.calibration_split import split_holdout
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import tail_map_keys
from tflite_quantmcu.quant.ranges import full_range, range_from_codes
from tflite_quantmcu.reference.executor import run_graph

sys.path.insert(0, str(TESTDATA))
import fashion_mnist  # noqa: E402

MODEL = TESTDATA / "fashion_mnv2_r96_int8.tflite"
SAMPLES = 64
BOUND = 5.0


@pytest.fixture(scope="module")
def setup():
    graph = read_model_file(path=MODEL)
    plan = plan_patches(graph=graph, options=PatchOptions(sram_budget=256 * 1024))
    patched = apply_patch_plan(graph=graph, plan=plan)
    with np.load(TESTDATA / "fashion_mnist_calib.npz") as raw:
        x = fashion_mnist.to_model_input(images=raw["x"][-SAMPLES:])
        y = raw["y"][-SAMPLES:].astype(np.int64)
    codes = np.concatenate(list(calibration_batches(source=x, graph=graph, progress=False)))
    return graph, plan, patched, HeldOut(x=codes, y=y)


def _planted_plan(graph, patched, plan) -> tuple[BitwidthPlan, str, str]:
    allowed = subbyte_candidates(graph=patched)
    relu6 = [k for k in tail_map_keys(graph=graph, patch_plan=plan)
             if "relu6" in k.lower() and 4 in allowed.get(k, ())]
    harmful, benign = relu6[0], relu6[-1]
    q = graph.main.tensors[harmful].quantization
    zp8 = int(q.zero_point[0])
    crushed = range_from_codes(scale8=float(q.scale[0]), zero_point8=zp8, bits=4, low_code=zp8,
                               high_code=zp8 + 1, rule="planted")
    qb = graph.main.tensors[benign].quantization
    kept = full_range(scale8=float(qb.scale[0]), zero_point8=int(qb.zero_point[0]), bits=4)
    return BitwidthPlan(policy="test", options={}, bits={harmful: 4, benign: 4},
                        ranges={harmful: crushed, benign: kept}), harmful, benign


def _drop(*, graph, patched, plan, heldout) -> float:
    int8 = top1(run_graph(graph=graph, inputs=[heldout.x])[0])
    final = top1(run_graph(graph=apply_bitwidth_plan(graph=patched, plan=plan),
                           inputs=[heldout.x])[0])
    return 100.0 * (np.mean(int8 == heldout.y) - np.mean(final == heldout.y))


def test_guard_raises_the_planted_harmful_map(setup):
    graph, plan, patched, heldout = setup
    planted, harmful, benign = _planted_plan(graph, patched, plan)
    before = _drop(graph=graph, patched=patched, plan=planted, heldout=heldout)
    assert before > BOUND, f"the planted map must hurt ({before:.2f} pt)"
    result = guard_plan(graph=graph, patch_plan=plan, patched_graph=patched, plan=planted,
                        heldout=heldout, options=GuardOptions(max_drop_pts=BOUND))
    record = result.record
    assert record["drop_before_pts"] == pytest.approx(before)
    assert record["raised"][0] == harmful and result.plan.bits[harmful] == 8
    assert harmful not in result.plan.ranges
    assert record["costs"][harmful] > record["costs"][benign]
    after = _drop(graph=graph, patched=patched, plan=result.plan, heldout=heldout)
    assert record["drop_pts"] == pytest.approx(after) and after <= BOUND and record["held"]
    only_harmful = _drop(graph=graph, patched=patched,
                         plan=raised(plan=planted, keys=[harmful]), heldout=heldout)
    if only_harmful <= BOUND:
        assert record["raised"] == [harmful] and result.plan.bits[benign] == 4
    assert result.plan.guard == record and record["samples"] == SAMPLES


def test_guard_keeps_a_plan_within_the_bound_and_without_labels_uses_agreement(setup):
    graph, plan, patched, heldout = setup
    planted, harmful, benign = _planted_plan(graph, patched, plan)
    safe = raised(plan=planted, keys=[harmful])
    unlabelled = HeldOut(x=heldout.x, y=None)
    result = guard_plan(graph=graph, patch_plan=plan, patched_graph=patched, plan=safe,
                        heldout=unlabelled, options=GuardOptions(max_drop_pts=100.0))
    assert result.record["raised"] == [] and result.plan.bits == safe.bits
    assert "agreement" in result.record["metric"]
    int8 = top1(run_graph(graph=graph, inputs=[heldout.x])[0])
    final = top1(run_graph(graph=apply_bitwidth_plan(graph=patched, plan=safe),
                           inputs=[heldout.x])[0])
    assert result.record["drop_pts"] == pytest.approx(100.0 * np.mean(final != int8))


def test_drop_points_definitions():
    pred, int8 = np.array([0, 1, 2, 3]), np.array([0, 1, 1, 3])
    assert drop_points(pred=pred, int8_pred=int8, labels=None) == 25.0
    assert drop_points(pred=pred, int8_pred=int8, labels=np.array([0, 1, 1, 0])) == 25.0


def test_losses_only_drop_does_not_net_out_gains():
    """Two samples lost, one gained: the net drop is 1 of 4, the losses-only drop 2 of 4."""
    labels = np.array([0, 1, 2, 3])
    int8, pred = np.array([0, 1, 2, 0]), np.array([1, 0, 2, 3])
    assert drop_points(pred=pred, int8_pred=int8, labels=labels) == 25.0
    assert drop_points(pred=pred, int8_pred=int8, labels=labels, losses_only=True) == 50.0
    assert drop_points(pred=pred, int8_pred=int8, labels=None, losses_only=True) == 75.0


def test_holdout_split_takes_every_second_sample_and_caps():
    batches = [Batch(x=np.arange(i, i + 5).reshape(5, 1), y=np.arange(i, i + 5))
               for i in range(0, 15, 5)]
    fit, held = split_holdout(batches=iter(batches), every=2, max_holdout=4)
    fit_x = np.concatenate(list(fit)).reshape(-1)
    held_x = np.concatenate([b.x for b in held]).reshape(-1)
    assert held_x.tolist() == [1, 3, 5, 7]
    assert np.concatenate([b.y for b in held]).tolist() == [1, 3, 5, 7]
    assert sorted(fit_x.tolist() + held_x.tolist()) == list(range(15))


def test_descent_lowers_the_cheap_maps_and_not_the_harmful_one(setup):
    """Descent from an all-int8 plan: the crushed (harmful) map costs most per BitOP, so it is
    last in line; with bound BOUND it stays at 8 bits, the benign map is lowered when it holds
    the bound alone; every reported drop equals a direct single-threaded measurement; with
    an unreachable-to-break bound everything is lowered; with ``descend=False`` nothing."""
    graph, plan, patched, heldout = setup
    planted, harmful, benign = _planted_plan(graph, patched, plan)
    start = BitwidthPlan(policy="test", options={}, bits={})
    lowerable = dict(planted.ranges)
    result = guard_plan(graph=graph, patch_plan=plan, patched_graph=patched, plan=start,
                        heldout=heldout, options=GuardOptions(max_drop_pts=BOUND),
                        lowerable=lowerable)
    record = result.record
    assert record["raised"] == [] and harmful not in record["lowered"]
    assert result.plan.bits.get(harmful, 8) == 8
    after = _drop(graph=graph, patched=patched, plan=result.plan, heldout=heldout)
    assert record["drop_pts"] == pytest.approx(after) and after <= BOUND
    benign_only = BitwidthPlan(policy="test", options={}, bits={benign: 4},
                               ranges={benign: lowerable[benign]})
    if _drop(graph=graph, patched=patched, plan=benign_only, heldout=heldout) <= BOUND:
        assert record["lowered"] == [benign] and result.plan.ranges[benign] == lowerable[benign]
    everything = guard_plan(graph=graph, patch_plan=plan, patched_graph=patched, plan=start,
                            heldout=heldout, options=GuardOptions(max_drop_pts=100.0),
                            lowerable=lowerable)
    assert sorted(everything.record["lowered"]) == sorted(lowerable)
    assert dict(everything.plan.ranges) == lowerable
    off = guard_plan(graph=graph, patch_plan=plan, patched_graph=patched, plan=start,
                     heldout=heldout, options=GuardOptions(max_drop_pts=100.0, descend=False,
                                                           workers=1), lowerable=lowerable)
    assert off.record["lowered"] == [] and off.plan.bits == {}
