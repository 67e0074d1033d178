"""`--objective min-latency` for QuantMCU: VDQS and the accuracy guard weigh predicted
Cortex-M4 instructions (quant/instruction_savings.py) instead of BitOPs.

The savings model is checked against the latency model's own prediction of converted graphs
(built here through the public pieces: apply_bitwidth_plan, plan_kernels,
predict_instructions); VDQS's ranking against hand-made branches; the convert pipeline end to
end on the digits model. No test asserts an instruction count of a kernel (bench figures)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fixture_models import fixture_path
from test_quant_policies import histogram_of
from tflite_quantmcu.analysis.latency import load_latency_table, predict_instructions
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.instruction_savings import instruction_savings
from tflite_quantmcu.quant.kernel_choice import plan_kernels
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import QuantMCUOptions, search_quantmcu
from tflite_quantmcu.quant.ranges import full_range
from tflite_quantmcu.quant.vdqs import (BranchSpec, ConsumerCost, FeatureMapSpec, VdqsOptions,
                                        options_from_dict, score_branch, search_bitwidths)

BUNDLED = fixture_path("fashion_mnv2_r96_int8.tflite")
DIGITS = fixture_path("digits_mnv1_w025_r64_int8.tflite")


@pytest.fixture(scope="module")
def patched():
    graph = read_model_file(path=BUNDLED)
    plan = plan_patches(graph=graph, options=PatchOptions(sram_budget=256 * 1024))
    assert plan.is_patched
    return graph, plan, apply_patch_plan(graph=graph, plan=plan)


def _one_map_plan(*, graph, key: str, bits: int) -> BitwidthPlan:
    quant = graph.main.tensors[key].quantization
    return BitwidthPlan(policy="t", options={}, bits={key: bits}, ranges={
        key: full_range(scale8=quant.scale[0], zero_point8=quant.zero_point[0], bits=bits)})


@pytest.mark.parametrize("kernels", ["builtin", "fastest"])
def test_savings_are_the_predicted_difference_of_converted_graphs(patched, kernels):
    """saved(key, b) = prediction of the int8 conversion - prediction of the conversion with
    that map alone at b bits, both under the kernel choice; every map the graph allows."""
    graph = patched[2]
    table = load_latency_table()
    savings = instruction_savings(graph=graph, table=table, kernels=kernels)
    custom = plan_kernels(graph=graph, mode=kernels, table=table).outputs
    empty = BitwidthPlan(policy="t", options={}, bits={})
    base = predict_instructions(graph=apply_bitwidth_plan(graph=graph, plan=empty,
                                                          custom_outputs=custom), table=table)
    allowed = {k: v for k, v in subbyte_candidates(graph=graph).items() if 4 in v}
    assert len(allowed) > 10
    signs = set()
    for key, widths in sorted(allowed.items())[:12]:
        for bits in (b for b in widths if b < 8):
            converted = apply_bitwidth_plan(graph=graph, plan=_one_map_plan(
                graph=graph, key=key, bits=bits), custom_outputs=custom)
            want = base.total - predict_instructions(graph=converted, table=table).total
            assert savings.saved(key=key, bits=bits) == want
            signs.add(want > 0)
    assert savings.saved(key=sorted(allowed)[0], bits=8) == 0.0
    if kernels == "builtin":
        # int8 layers run CMSIS-NN: a sub-byte map moves its neighbours to QMCU kernels,
        # which the measured table has faster on every conv shape of this model
        assert signs == {True}
    with pytest.raises(ConfigError, match="no tensor"):
        savings.saved(key="no such map", bits=4)


def test_branch_total_counts_each_touching_op_once(patched):
    graph = patched[2]
    savings = instruction_savings(graph=graph, table=load_latency_table(), kernels="builtin")
    sub = graph.main
    producers, readers = sub.producers(), sub.consumers()
    key = next(k for k, v in sorted(subbyte_candidates(graph=graph).items()) if 4 in v)
    ops = {producers[key], *readers[key]}
    ops |= {j for i in list(ops) if sub.operators[i].type == "PAD"
            for j in readers[sub.operators[i].outputs[0]]}
    want = sum(savings.int8_costs[i] for i in ops)
    assert savings.total(keys=[key]) == pytest.approx(want)
    assert savings.total(keys=[key, key]) == savings.total(keys=[key])


def _branch(saved_a: float, saved_b: float) -> BranchSpec:
    """Two maps with identical statistics and BitOPs, differing only in instructions saved."""
    maps = tuple(FeatureMapSpec(key=k, shape=(1, 8, 8, 8), histogram=histogram_of([0, 85, 170,
                                                                                      255]),
                                scale=1.0, zero_point=-128, consumers=(ConsumerCost(macs=100),),
                                instructions_saved=((4, s), (2, s)))
                 for k, s in (("A", saved_a), ("B", saved_b)))
    return BranchSpec(name="br", feature_maps=maps, memory_limit=10_000, instructions=1000.0)


def test_vdqs_instructions_measure_keeps_slower_maps_at_8_bits():
    """Same entropy and BitOPs: BitOPs put both maps below 8 bits; instructions put the map
    whose sub-byte kernels are slower (negative saving) at 8 and the faster one below; a
    memory limit that needs the slower map smaller still moves it down."""
    branch = _branch(saved_a=400.0, saved_b=-400.0)
    by_bitops = search_bitwidths(branch=branch, options=VdqsOptions(lam=0.6, bins=16))
    assert by_bitops.bits["A"] < 8 and by_bitops.bits["B"] < 8
    options = VdqsOptions(lam=0.6, bins=16, measure="instructions")
    by_insns = search_bitwidths(branch=branch, options=options)
    assert by_insns.bits["A"] < 8 and by_insns.bits["B"] == 8
    scored = score_branch(branch=branch, options=options)
    phi = {(m, s.bits): s.phi for m, row in zip("AB", scored.scores) for s in row}
    assert phi[("A", 4)] == pytest.approx(0.4) and phi[("B", 4)] == pytest.approx(-0.4)
    assert options_from_dict(by_insns.options) == options
    scored_b = score_branch(branch=branch, options=options).orders[1]
    assert scored_b[0] == 8
    tight = dataclasses.replace(branch, memory_limit=branch.feature_maps[0].bytes_at(4)
                                + branch.feature_maps[1].bytes_at(4))
    assert search_bitwidths(branch=tight, options=options).bits["B"] < 8


def test_vdqs_instructions_measure_needs_the_savings():
    plain = FeatureMapSpec(key="A", shape=(1, 8, 8, 8), histogram=histogram_of([0, 85]),
                           scale=1.0, zero_point=-128)
    branch = BranchSpec(name="br", feature_maps=(plain, dataclasses.replace(plain, key="B")),
                        memory_limit=10_000, instructions=1.0)
    with pytest.raises(ConfigError, match="saved instructions at 4 bits"):
        score_branch(branch=branch, options=VdqsOptions(measure="instructions"))
    with pytest.raises(ConfigError, match="measure"):
        VdqsOptions(measure="cycles")


def test_search_refuses_the_instructions_measure_without_a_model(patched):
    graph, plan, patched_graph = patched
    x = np.random.default_rng(0).integers(-128, 128, size=(4, 96, 96, 3)).astype(np.int8)
    with pytest.raises(ConfigError, match="needs the latency model"):
        search_quantmcu(graph=graph, patch_plan=plan, patched_graph=patched_graph,
                        calibration=[x], sram_budget=None,
                        options=QuantMCUOptions(measure="instructions", search_tail=False))


@pytest.fixture(scope="module")
def digits_calibration(tmp_path_factory):
    from testdata import digits_mnist
    with np.load(digits_mnist.ensure_generated()["calib"]) as raw:
        x = raw["x"][:96]
    path = tmp_path_factory.mktemp("digits") / "calib.npz"
    np.savez(path, x=x)
    return path


def _convert(*, calibration, objective: str, kernels: str):
    return run_pipeline(options=ConvertOptions(
        model_path=DIGITS, out_dir=None, sram_budget=256 * 1024, policy="quantmcu",
        calibration=calibration, measure_tflm=False, verify=False, patch_grid=(2, 2),
        split_after=4, objective=objective, kernels=kernels))


@pytest.mark.parametrize("kernels", ["builtin", "fastest"])
def test_convert_min_latency_weighs_instructions(digits_calibration, kernels):
    """The objective reaches VDQS (plan options; no width predicted slower is picked) and the
    guard (its descent lowers only maps that save predicted instructions); min-macs keeps the
    paper's BitOPs."""
    conv = _convert(calibration=digits_calibration, objective="min-latency", kernels=kernels)
    assert conv.bitwidth_plan.options["measure"] == "instructions"
    assert conv.savings is not None and conv.savings.kernels == kernels
    # memory does not bind at 256 KB: every sub-byte map (VDQS's or the guard's descent's)
    # is one the latency model predicts faster
    subbyte = {k: b for k, b in conv.bitwidth_plan.bits.items() if b < 8}
    assert subbyte
    for key, bits in subbyte.items():
        assert conv.savings.saved(key=key, bits=bits) > 0, key
    plain = _convert(calibration=digits_calibration, objective="min-macs", kernels=kernels)
    assert plain.bitwidth_plan.options["measure"] == "bitops" and plain.savings is None


def test_min_latency_defaults_to_the_fastest_kernels():
    """--kernels left out: fastest under min-latency, builtin otherwise; a given choice wins."""
    def mode(**changes):
        return ConvertOptions(model_path=DIGITS, out_dir=None, sram_budget=1, **changes).kernel_mode
    assert mode(objective="min-latency") == "fastest"
    assert mode(objective="min-latency", kernels="builtin") == "builtin"
    assert mode() == "builtin" and mode(objective="min-memory") == "builtin"
    assert mode(kernels="qmcu") == "qmcu"
    with pytest.raises(ConfigError, match="--kernels"):
        mode(kernels="cmsis")
