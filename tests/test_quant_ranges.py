"""Sub-byte ranges: the rules on hand-made histograms, the per-map choice, plan data.

Oracles: histograms whose optimum is known by construction (an interval that represents
every occupied code exactly), numpy's inverted-CDF quantiles, exact fractions for the
(scale, zero point) formulas, ``subbyte_quant_params`` for the full range, brute force over
every interval for the MSE search, and the numpy reference executor for the converted graph.
"""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from testdata.synthetic_models import Conv, DepthwiseConv, Mean, ModelSpec, build_int8_graph
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.qmcu_options import subbyte_quant_params
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.range_selection import OutputSimulator, fake_quantized
from tflite_quantmcu.quant.ranges import (RangeOptions, choose_range, full_range, int8_lookup,
                                          levels, mse_codes, percentile_codes,
                                          quantization_mse, range_from_codes, rule_range)
from tflite_quantmcu.reference.executor import run_graph

CODES = np.arange(-128, 128)


def histogram(counts: dict[int, int]) -> list[int]:
    out = [0] * 256
    for code, n in counts.items():
        out[code + 128] = n
    return out


@pytest.mark.parametrize("seed", range(20))
def test_full_rule_is_the_whole_int8_range(seed):
    rng = np.random.default_rng(seed)
    scale8, zp8 = float(np.float32(rng.uniform(1e-3, 0.5))), int(rng.integers(-128, 128))
    for bits in (4, 2):
        got = full_range(scale8=scale8, zero_point8=zp8, bits=bits)
        assert (got.scale, got.zero_point) == subbyte_quant_params(scale8=scale8,
                                                                   zero_point8=zp8, bits=bits)


def test_range_from_codes_follows_the_formula_in_exact_fractions():
    scale8 = float(np.float32(0.05))
    for low, high, zp8, bits in ((-128, -100, -128, 4), (-20, 31, 0, 4), (-5, 90, -5, 2),
                                 (-60, 7, 3, 2)):
        got = range_from_codes(scale8=scale8, zero_point8=zp8, bits=bits, low_code=low,
                               high_code=high, rule="test")
        levels_ = 2 ** bits - 1
        assert got.scale == float(np.float32(scale8 * (high - low) / levels_))
        exact = Fraction(zp8 - low) * levels_ / (high - low)
        assert got.zero_point == min(int(exact + Fraction(1, 2)), levels_)


def test_mse_rule_finds_the_exact_interval_one_sided():
    # ReLU-like map (zero point -128): 16 occupied codes that a 4-bit range [zp, zp + 15]
    # represents exactly, plus one far outlier: that range is the unique optimum.
    counts = {c: 100_000 for c in range(-128, -112)}
    counts[127] = 1
    low, high = mse_codes(histogram=histogram(counts), zero_point8=-128, bits=4)
    assert (low, high) == (-128, -113)


def test_mse_rule_finds_the_exact_interval_two_sided():
    counts = {c: 100_000 + 7 * (c % 5) for c in range(-7, 9)}
    counts.update({-128: 1, 127: 1})
    assert mse_codes(histogram=histogram(counts), zero_point8=0, bits=4) == (-7, 8)


def test_mse_rule_matches_brute_force_over_every_interval():
    rng = np.random.default_rng(5)
    values = np.clip(np.round(rng.laplace(loc=-60, scale=9, size=20000)), -128, 127).astype(int)
    counts = np.bincount(values + 128, minlength=256)
    zp8, scale8 = -60, 0.02
    low, high = mse_codes(histogram=counts, zero_point8=zp8, bits=4)
    got = quantization_mse(histogram=counts, scale8=scale8, zero_point8=zp8,
                           subbyte=range_from_codes(scale8=scale8, zero_point8=zp8, bits=4,
                                                    low_code=low, high_code=high, rule="mse"))
    best = min(quantization_mse(histogram=counts, scale8=scale8, zero_point8=zp8,
                                subbyte=range_from_codes(scale8=scale8, zero_point8=zp8, bits=4,
                                                         low_code=lo, high_code=hi, rule="x"))
               for lo in range(values.min(), zp8 + 1) for hi in range(zp8 + 1, values.max() + 1))
    full = quantization_mse(histogram=counts, scale8=scale8, zero_point8=zp8,
                            subbyte=full_range(scale8=scale8, zero_point8=zp8, bits=4))
    assert got <= best * 1.02, (got, best)
    assert got < full / 4


@pytest.mark.parametrize("one_sided", [True, False])
def test_percentile_rule_takes_the_inverted_cdf_quantiles(one_sided):
    rng = np.random.default_rng(1)
    if one_sided:
        values = np.clip(np.round(rng.exponential(12, size=30011)) - 128, -128, 127)
        zp8 = -128
    else:
        values = np.clip(np.round(rng.normal(3, 20, size=30011)), -128, 127)
        zp8 = 0
    counts = np.bincount(values.astype(int) + 128, minlength=256)
    mass = 0.99
    low, high = percentile_codes(histogram=counts, zero_point8=zp8, mass=mass)
    if one_sided:
        want_low = zp8
        want_high = np.quantile(values, mass, method="inverted_cdf")
    else:
        want_low = np.quantile(values, (1 - mass) / 2, method="inverted_cdf")
        want_high = np.quantile(values, 1 - (1 - mass) / 2, method="inverted_cdf")
    assert (low, high) == (min(int(want_low), zp8), max(int(want_high), zp8))
    assert rule_range(rule="percentile", histogram=counts, scale8=0.1, zero_point8=zp8, bits=4,
                      options=RangeOptions(percentile_mass=mass)).high_code == high


def test_levels_and_lookup_round_trip_codes_inside_the_range():
    scale8, zp8 = float(np.float32(0.03)), -128
    subbyte = range_from_codes(scale8=scale8, zero_point8=zp8, bits=4, low_code=-128,
                               high_code=-98, rule="t")           # 30 codes over 15 steps
    level = levels(scale8=scale8, zero_point8=zp8, bits=4, subbyte=subbyte)
    assert level[0] == 0 and level[-98 + 128] == 15 and level[-1] == 15
    back = int8_lookup(scale8=scale8, zero_point8=zp8, subbyte=subbyte)
    inside = np.arange(-128, -97)
    assert np.all(back[inside + 128] % 2 == 0)                   # every other code survives
    assert np.all(np.abs(back[inside + 128].astype(int) - inside) <= 1)
    assert np.all(back[-97 + 128:] == -98)                       # clipped at the top


def test_choice_prefers_the_wider_rule_when_held_out_values_exceed_the_clip():
    fit = histogram({c: 100 for c in range(-128, -100)})
    held = histogram({**{c: 100 for c in range(-128, -100)}, **{c: 60 for c in range(0, 127)}})
    args = dict(scale8=0.05, zero_point8=-128, bits=4)
    on_fit = choose_range(fit_histogram=fit, check_histogram=None, **args)
    on_held = choose_range(fit_histogram=fit, check_histogram=held, **args)
    assert on_fit.chosen.rule in ("mse", "percentile") and on_fit.errors["full"] > \
        on_fit.errors[on_fit.chosen.rule]
    assert on_held.chosen.rule == "full"
    assert on_held.errors["full"] == min(on_held.errors.values())


def test_single_rule_options_and_bad_rules():
    only = choose_range(fit_histogram=histogram({-128: 5, -120: 5}), check_histogram=None,
                        scale8=0.1, zero_point8=-128, bits=2, options=RangeOptions(rules=("full",)))
    assert only.chosen.rule == "full"
    with pytest.raises(ConfigError, match="range rules"):
        RangeOptions(rules=("kl",))


# -- plan data ----------------------------------------------------------------------------------
SPEC = ModelSpec(input_shape=(10, 10, 3), seed=11, layers=(
    Conv(filters=8, kernel=(3, 3)),
    DepthwiseConv(kernel=(3, 3)),
    Conv(filters=8, kernel=(1, 1)),
    Mean(),
))


@pytest.fixture(scope="module")
def small():
    graph = build_int8_graph(spec=SPEC)
    capable = [k for k, w in subbyte_candidates(graph=graph).items() if 4 in w]
    assert capable, "the small model has a sub-byte capable map"
    x = np.random.default_rng(0).integers(-128, 128, size=(16, 10, 10, 3)).astype(np.int8)
    return graph, capable[0], x


def _clipped_plan(graph, key) -> BitwidthPlan:
    q = graph.main.tensors[key].quantization
    scale8, zp8 = float(q.scale[0]), int(q.zero_point[0])
    subbyte = range_from_codes(scale8=scale8, zero_point8=zp8, bits=4, low_code=zp8,
                               high_code=min(zp8 + 60, 127), rule="mse")
    return BitwidthPlan(policy="test", options={}, bits={key: 4}, ranges={key: subbyte})


def test_plan_json_round_trip_with_ranges_is_byte_identical(small):
    graph, key, _ = small
    plan = _clipped_plan(graph, key)
    text = plan.to_json()
    again = BitwidthPlan.from_json(text)
    assert again == plan and again.to_json() == text
    assert json.loads(text)["ranges"][key]["rule"] == "mse"
    from tflite_quantmcu.ir.writer import write_model_bytes
    assert write_model_bytes(graph=apply_bitwidth_plan(graph=graph, plan=again)) == \
        write_model_bytes(graph=apply_bitwidth_plan(graph=graph, plan=plan))


def test_old_plan_without_ranges_loads_and_means_the_full_range(small):
    graph, key, _ = small
    old = BitwidthPlan.from_json(json.dumps({"version": 1, "policy": "x", "options": {},
                                             "bits": {key: 4}}))
    assert old.ranges == {} and old.version == 1
    q = graph.main.tensors[key].quantization
    full = full_range(scale8=float(q.scale[0]), zero_point8=int(q.zero_point[0]), bits=4)
    explicit = BitwidthPlan(policy="x", options={}, bits={key: 4}, ranges={key: full})
    a = apply_bitwidth_plan(graph=graph, plan=old).main.tensors[key].quantization
    b = apply_bitwidth_plan(graph=graph, plan=explicit).main.tensors[key].quantization
    assert (a.scale, a.zero_point) == (b.scale, b.zero_point) == ((full.scale,),
                                                                  (full.zero_point,))


def test_range_for_a_width_the_plan_does_not_give_is_rejected(small):
    graph, key, _ = small
    plan = _clipped_plan(graph, key)
    with pytest.raises(ConfigError, match="range"):
        BitwidthPlan(policy="t", options={}, bits={key: 8}, ranges=plan.ranges)
    with pytest.raises(ConfigError, match="version"):
        BitwidthPlan.from_json(json.dumps({"version": 7, "policy": "x", "bits": {}}))


def test_converted_graph_quantizes_the_map_with_the_planned_range(small):
    graph, key, x = small
    plan = _clipped_plan(graph, key)
    subbyte = plan.ranges[key]
    converted = apply_bitwidth_plan(graph=graph, plan=plan)
    tensor = converted.main.tensors[key]
    assert tensor.quantization.scale == (subbyte.scale,)
    assert tensor.quantization.zero_point == (subbyte.zero_point,)
    seen = {}

    def grab(_i, _op, produced, into):
        if key in produced:
            into[key] = produced[key]

    run_graph(graph=graph, inputs=[x], observer=lambda i, o, p: grab(i, o, p, seen))
    int8_codes = seen.pop(key)
    run_graph(graph=converted, inputs=[x], observer=lambda i, o, p: grab(i, o, p, seen))
    from tflite_quantmcu.qmcu_options import unpack_bits
    sub = unpack_bits(packed=seen[key], bits=4, channels=int(int8_codes.shape[-1]))
    q8 = graph.main.tensors[key].quantization
    real8 = float(q8.scale[0]) * (int8_codes.astype(float) - int(q8.zero_point[0]))
    real4 = subbyte.scale * (sub.reshape(real8.shape).astype(float) - subbyte.zero_point)
    top = subbyte.scale * (15 - subbyte.zero_point)
    inside = real8 <= top
    assert inside.any() and (~inside).any(), "the clip must bite on some values"
    # one rounding to int8 and one to 4 bits apart: within half a 4-bit step plus an int8 step
    assert np.abs(real4 - real8)[inside].max() <= subbyte.scale / 2 + float(q8.scale[0]) + 1e-9
    assert np.allclose(real4[~inside], top)


def test_simulator_resumes_exactly_and_identity_edit_costs_nothing(small):
    graph, key, x = small
    simulator = OutputSimulator(graph=graph, x=x)
    identity = np.arange(-128, 128).astype(np.int8)
    assert simulator.cost(tensor=key, edits=[(None, identity)]) == 0.0
    crush = np.full(256, -128, dtype=np.int8)
    assert simulator.cost(tensor=key, edits=[(None, crush)]) > 0.0
    region = fake_quantized(values=np.zeros((2, 1, 4, 4, 3), dtype=np.int8) + 5,
                            edits=[((1, 3, 0, 2), crush)])
    assert (region[:, 0, 1:3, 0:2] == -128).all() and (region[:, 0, 0] == 5).all()
