"""Tests of the quantization policies: statistics, VDPC, VDQS (Algorithm 1) and Rusci et al.

Expected values are computed by hand (entropies as log2 expressions, BitOPs fractions,
byte sums) or directly with numpy on the raw data; the sub-byte requantization is
checked against the QMCU_PACK reference kernel.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tflite_quantmcu import qmcu_options as qo
from tflite_quantmcu.errors import BudgetError, CalibrationDataError, ConfigError
from tflite_quantmcu.quant.plan import BitwidthPlan, merge_plans
from tflite_quantmcu.quant.rusci import (RusciOptions, WeightSpec, cut_weights,
                                         rusci_bitwidths)
from tflite_quantmcu.quant.statistics import MAX_PAIRS, NUM_CODES, StatisticsCollector
from tflite_quantmcu.quant.traversal import PairProblem, resolve_pairs
from tflite_quantmcu.quant.vdpc import (PatchClasses, VdpcOptions, classify_patches,
                                        outlier_patch_names, outlier_z)
from tflite_quantmcu.quant.vdqs import (BranchSpec, ConsumerCost, FeatureMapSpec, VdqsOptions,
                                        allowed_candidates, branch_memory_limit,
                                        feature_map_entropy, feature_map_from_statistics,
                                        requantized_levels, score_branch, search_bitwidths)
from tflite_quantmcu.reference import qmcu_kernels as qk
from tflite_quantmcu.reference.requantize import quantize_multiplier


def grid_regions(*, height: int, width: int, rows: int, cols: int) -> dict:
    ph, pw = height // rows, width // cols
    return {f"p{r}{c}": (r * ph, (r + 1) * ph, c * pw, (c + 1) * pw)
            for r in range(rows) for c in range(cols)}


# ---------------------------------------------------------------- statistics
def collect(*, batches, regions, scale=0.1, zero_point=3, key="t"):
    collector = StatisticsCollector()
    for batch in batches:
        collector.update(key=key, values=batch, scale=scale, zero_point=zero_point,
                         regions=regions)
    return collector, collector.finish()[key]


def test_statistics_equal_direct_numpy():
    rng = np.random.default_rng(1)
    batches = [rng.integers(-128, 128, size=(n, 12, 10, 3)).astype(np.int8) for n in (5, 1, 7)]
    data = np.concatenate(batches)
    regions = {"a": (0, 6, 0, 5), "b": (4, 12, 3, 10)}
    _, stats = collect(batches=batches, regions=regions)
    assert stats.num_samples == 13 and stats.sample_shape == (12, 10, 3)
    assert list(stats.histogram) == np.bincount(data.ravel().astype(int) + 128,
                                                minlength=256).tolist()
    reals = 0.1 * (data.astype(np.float64) - 3)
    mean, std = stats.mean_std()
    assert mean == pytest.approx(reals.mean(), rel=1e-12, abs=1e-12)
    assert std == pytest.approx(reals.std(), rel=1e-12)
    for name, (y0, y1, x0, x1) in regions.items():
        block = data[:, y0:y1, x0:x1, :].astype(int)
        region = stats.region(name)
        assert list(region.histogram) == np.bincount(block.ravel() + 128, minlength=256).tolist()
        for low, high in ((-100, 100), (-127, 126), (-128, 127), (0, 0), (50, 60)):
            outside = (block < low) | (block > high)
            assert region.count_outside(low_code=low, high_code=high) == int(outside.sum())
            assert region.samples_outside(low_code=low, high_code=high) == \
                int(outside.reshape(13, -1).any(axis=1).sum())


def test_statistics_memory_is_constant_in_samples():
    regions = grid_regions(height=16, width=16, rows=2, cols=2)
    rng = np.random.default_rng(2)

    def batch(n):  # every region of every sample reaches both ends of the int8 range
        return np.clip(rng.normal(0, 300, size=(n, 16, 16, 4)), -128, 127).astype(np.int8)

    collector = StatisticsCollector()
    sizes = []
    for step in range(40):
        collector.update(key="t", values=batch(8), scale=1.0, zero_point=0, regions=regions)
        sizes.append(collector.nbytes)
    assert len(set(sizes)) == 1
    bound = NUM_CODES * 8 + len(regions) * (NUM_CODES * 8 + MAX_PAIRS * 12)
    assert sizes[-1] <= bound
    stats = collector.finish()["t"]
    assert stats.num_samples == 320
    assert stats.region("p00").extremes == ((-128, 127, 320),)


def test_statistics_reject_bad_input():
    collector = StatisticsCollector()
    with pytest.raises(CalibrationDataError, match="int8"):
        collector.update(key="t", values=np.zeros((1, 4, 4, 1), np.float32), scale=1.0,
                         zero_point=0)
    with pytest.raises(ConfigError, match="region 'r'"):
        collector.update(key="t", values=np.zeros((1, 4, 4, 1), np.int8), scale=1.0,
                         zero_point=0, regions={"r": (0, 5, 0, 4)})
    collector.update(key="t", values=np.zeros((1, 4, 4, 1), np.int8), scale=1.0, zero_point=0)
    with pytest.raises(ConfigError, match="differs from the first"):
        collector.update(key="t", values=np.zeros((1, 4, 4, 1), np.int8), scale=0.5,
                         zero_point=0)


# ---------------------------------------------------------------- VDPC
def test_outlier_z_is_the_central_mass_quantile():
    assert outlier_z(phi=0.96) == pytest.approx(2.0537489, abs=1e-6)  # Phi^-1(0.98), tables
    assert outlier_z(phi=0.6826894921) == pytest.approx(1.0, abs=1e-8)
    assert VdpcOptions().z == outlier_z(phi=0.96)


def planted_gaussian(*, planted: dict, samples=16, seed=3):
    """N(0, 1) values, scale 0.05; in each planted region 10% of the values set to +-6."""
    rng = np.random.default_rng(seed)
    real = rng.normal(0.0, 1.0, size=(samples, 48, 48, 4))
    for (y0, y1, x0, x1) in planted.values():
        block = real[:, y0:y1, x0:x1, :]
        mask = rng.random(block.shape) < 0.10
        block[mask] = 6.0 * np.sign(rng.normal(size=int(mask.sum())))
    return np.clip(np.round(real / 0.05), -128, 127).astype(np.int8)


def test_vdpc_finds_exactly_the_planted_patches():
    regions = grid_regions(height=48, width=48, rows=4, cols=4)
    planted = {k: regions[k] for k in ("p01", "p23")}
    codes = planted_gaussian(planted=planted)
    _, stats = collect(batches=[codes[:9], codes[9:]], regions=regions, scale=0.05, zero_point=0)
    classes = classify_patches(statistics=stats)
    assert set(classes.outlier_patches) == {"p01", "p23"}
    assert classes.class_counts == {"outlier": 2, "non_outlier": 14}
    # counts against numpy on the real values
    reals = 0.05 * codes.astype(np.float64)
    mu, sigma = reals.mean(), reals.std()
    assert classes.mu == pytest.approx(mu, abs=1e-12)
    assert classes.sigma == pytest.approx(sigma, rel=1e-12)
    is_outlier = np.abs(reals - mu) > outlier_z(phi=0.96) * sigma
    assert classes.map_outliers == int(is_outlier.sum())
    for patch in classes.patches:
        y0, y1, x0, x1 = patch.bounds
        block = is_outlier[:, y0:y1, x0:x1, :]
        assert patch.outliers == int(block.sum())
        assert patch.samples_with_outlier == int(block.reshape(16, -1).any(axis=1).sum())


def test_vdpc_density_rule_and_literal_rule():
    regions = grid_regions(height=48, width=48, rows=2, cols=2)
    codes = planted_gaussian(planted={})
    _, stats = collect(batches=[codes], regions=regions, scale=0.05, zero_point=0)
    default = classify_patches(statistics=stats)
    assert VdpcOptions().min_density_ratio == 1.0
    for patch in default.patches:   # above-average outlier density <=> outlier-class
        assert patch.density_ratio == pytest.approx(
            patch.outlier_fraction / (default.map_outliers / default.map_values))
        assert patch.outlier_class == (patch.density_ratio >= 1.0 and patch.outliers >= 1)
    assert classify_patches(statistics=stats,
                            options=VdpcOptions(min_density_ratio=2.0)).outlier_patches == ()
    literal = classify_patches(statistics=stats,
                               options=VdpcOptions(min_density_ratio=0.0, min_outliers=1))
    assert len(literal.outlier_patches) == 4   # every patch of N(0, 1) data has outliers


def test_vdpc_min_sample_fraction_uses_per_sample_counts():
    rng = np.random.default_rng(4)
    regions = grid_regions(height=48, width=48, rows=4, cols=4)
    codes = rng.integers(-2, 3, size=(16, 48, 48, 4)).astype(np.int8)
    codes[:8, 0, 0:10, 0:2] = 100        # p00: 20 values in each of 8 samples
    codes[5, 36:46, 36:44, 0] = 100      # p33: 80 values in 1 sample
    _, stats = collect(batches=[codes], regions=regions, scale=1.0, zero_point=0)
    default = classify_patches(statistics=stats)
    assert set(default.outlier_patches) == {"p00", "p33"}
    by_name = {p.name: p for p in default.patches}
    assert by_name["p00"].samples_with_outlier == 8 and by_name["p33"].samples_with_outlier == 1
    assert by_name["p00"].outliers == 160 and by_name["p33"].outliers == 80
    strict = classify_patches(statistics=stats, options=VdpcOptions(min_sample_fraction=0.25))
    assert strict.outlier_patches == ("p00",)
    assert outlier_patch_names(classes=[strict, default]) == {"p00", "p33"}


def test_patch_classes_json_round_trip():
    regions = grid_regions(height=48, width=48, rows=2, cols=2)
    _, stats = collect(batches=[planted_gaussian(planted={"x": regions["p10"]}, samples=4)],
                       regions=regions, scale=0.05, zero_point=0)
    classes = classify_patches(statistics=stats)
    assert classes.outlier_patches == ("p10",)
    assert PatchClasses.from_json(classes.to_json()) == classes


def test_vdpc_options_are_checked():
    with pytest.raises(ConfigError, match="phi"):
        VdpcOptions(phi=1.0)
    with pytest.raises(ConfigError, match="min_outliers"):
        VdpcOptions(min_outliers=0)


# ---------------------------------------------------------------- VDQS scores
def histogram_of(values_0_255, count=10):
    """Histogram for scale 1, zero point -128: real value x has code x - 128 (index x)."""
    hist = [0] * 256
    for x in values_0_255:
        hist[x] += count
    return tuple(hist)


def two_map_branch(*, limit=10_000, outlier_class=False):
    a = FeatureMapSpec(key="A", shape=(1, 8, 8, 8), histogram=histogram_of([0, 17, 34, 51]),
                       scale=1.0, zero_point=-128, consumers=(ConsumerCost(macs=100),))
    b = FeatureMapSpec(key="B", shape=(1, 8, 8, 16), histogram=histogram_of([0, 85, 170, 255]),
                       scale=1.0, zero_point=-128,
                       consumers=(ConsumerCost(macs=25, weight_bits=4),
                                  ConsumerCost(macs=25, weight_bits=12)))
    return BranchSpec(name="br", feature_maps=(a, b), memory_limit=limit,
                      outlier_class=outlier_class)


def pack_kernel_levels(*, scale, zero_point, bits):
    """The b-bit level of every int8 code as the QMCU_PACK reference kernel computes it."""
    codes = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 1, 256)
    scale_b, zp_b = qo.subbyte_quant_params(scale8=scale, zero_point8=zero_point, bits=bits)
    mult, shift = quantize_multiplier(float(np.float32(scale)) / scale_b)
    opts = qo.RequantOptions(in_bits=8, out_bits=bits, in_zero_point=zero_point,
                             out_zero_point=zp_b, multiplier=mult, shift=shift,
                             shape=(1, 1, 1, 256))
    packed = qk.pack(input=codes, options=opts)
    return qo.unpack_bits(packed=packed, bits=bits, channels=256).reshape(-1)


def test_requantized_levels_equal_the_pack_kernel():
    for scale, zp in ((1.0, -128), (0.0235, 5), (0.1, 127)):
        for bits in (4, 2):
            np.testing.assert_array_equal(
                requantized_levels(scale=scale, zero_point=zp, bits=bits),
                pack_kernel_levels(scale=scale, zero_point=zp, bits=bits))


def test_scores_by_hand():
    # A: values {0, 17, 34, 51}, uniform. 4 bits (scale 17): levels 0,1,2,3 -> H = 2.
    # 2 bits (scale 85): 0, 0.2, 0.4, 0.6 -> levels 0,0,0,1 -> H = H(3/4, 1/4).
    # B: values {0, 85, 170, 255}: 4 and 2 bits keep 4 levels -> H = 2 at every width.
    h2 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    # BitOPs per activation bit: A 100 * 8 = 800, B 25 * 4 + 25 * 12 = 400; B_total = 8 * 1200
    total = 8 * 1200
    expected = {
        ("A", 8): (2.0, 0.0, 0.0), ("A", 4): (2.0, 0.0, 800 * 4 / total),
        ("A", 2): (h2, (2 - h2) / 2.0, 800 * 6 / total),
        ("B", 8): (2.0, 0.0, 0.0), ("B", 4): (2.0, 0.0, 400 * 4 / total),
        ("B", 2): (2.0, 0.0, 400 * 6 / total),
    }
    # every level lands in its own bin for any k >= 4 here, so the default k = 16 and
    # k = 256 give the same values
    scored = score_branch(branch=two_map_branch())
    assert scored == score_branch(branch=two_map_branch(), options=VdqsOptions(bins=256))
    assert scored.last_entropy == pytest.approx(2.0)
    for key, row in zip("AB", scored.scores):
        assert [s.bits for s in row] == [8, 4, 2]
        for s in row:
            entropy, omega, phi = expected[(key, s.bits)]
            assert s.entropy == pytest.approx(entropy, abs=1e-12)
            assert s.omega == pytest.approx(omega, abs=1e-12)
            assert s.phi == pytest.approx(phi, abs=1e-12)
            assert s.score == pytest.approx(-0.6 * omega + 0.4 * phi, abs=1e-12)
    # S(A): 8 -> 0, 4 -> 0.1333, 2 -> -0.1566 ; S(B): 8 -> 0, 4 -> 0.0667, 2 -> 0.1
    assert scored.orders == ((4, 8, 2), (2, 4, 8))
    plan = search_bitwidths(branch=two_map_branch())
    assert dict(plan.bits) == {"A": 4, "B": 2} and plan.branches[0].log == ()


def test_lambda_moves_the_ranking():
    accuracy_only = score_branch(branch=two_map_branch(), options=VdqsOptions(lam=1.0))
    assert accuracy_only.orders == ((8, 4, 2), (8, 4, 2))   # ties go to the wider width
    bitops_only = score_branch(branch=two_map_branch(), options=VdqsOptions(lam=0.0))
    assert bitops_only.orders == ((2, 4, 8), (2, 4, 8))


def test_entropy_bins():
    a = two_map_branch().feature_maps[0]
    # 8 bits: levels 0, 17, 34, 51 over the range [0, 51]; 2 bins: (q * 2) // 52 -> 0,0,1,1
    assert feature_map_entropy(feature_map=a, bits=8, bins=2) == pytest.approx(1.0)
    assert feature_map_entropy(feature_map=a, bits=8, bins=256) == pytest.approx(2.0)
    # all 256 codes once: 8 bits -> 16 bins of 16 codes (H = 4) or 256 bins (H = 8);
    # 4 bits: 16 levels, each its own bin for k = 16 and 256 -> the entropy of the levels
    flat = FeatureMapSpec(key="u", shape=(1, 1, 1, 256), histogram=(1,) * 256, scale=1.0,
                          zero_point=-128)
    p = np.bincount(pack_kernel_levels(scale=1.0, zero_point=-128, bits=4)) / 256
    h4 = float(-(p * np.log2(p)).sum())
    assert 3.97 < h4 < 4.0
    assert feature_map_entropy(feature_map=flat, bits=8, bins=16) == pytest.approx(4.0)
    assert feature_map_entropy(feature_map=flat, bits=8, bins=256) == pytest.approx(8.0)
    for bins in (16, 256):
        assert feature_map_entropy(feature_map=flat, bits=4, bins=bins) == pytest.approx(h4)
    assert VdqsOptions().bins == 24


def test_candidates_respect_packing():
    spec = FeatureMapSpec(key="m", shape=(1, 2, 2, 6), histogram=histogram_of([1]), scale=1.0,
                          zero_point=0)
    assert allowed_candidates(feature_map=spec, options=VdqsOptions()) == (8, 4)
    odd = FeatureMapSpec(key="m", shape=(1, 2, 2, 3), histogram=histogram_of([1]), scale=1.0,
                         zero_point=0, candidates=(4, 2))
    assert allowed_candidates(feature_map=odd, options=VdqsOptions()) == (8,)
    assert allowed_candidates(feature_map=spec, options=VdqsOptions(),
                              outlier_class=True) == (8,)


# ---------------------------------------------------------------- Algorithm 1
def problem(*, sizes8, limit, orders=None):
    """Maps whose bytes at b bits are sizes8 * b / 8."""
    orders = orders or [(8, 4, 2)] * len(sizes8)
    return PairProblem(name="br", keys=tuple(f"m{i}" for i in range(len(sizes8))),
                       orders=tuple(tuple(o) for o in orders),
                       sizes=tuple({b: s * b // 8 for b in (8, 4, 2)} for s in sizes8),
                       limit=limit)


def test_algorithm1_forward_pass_only():
    # (0,1): 100 + 400 > 350, latter larger -> m1 to 4 (200): 300 ok
    # (1,2): 200 + 200 > 350, latter as large -> m2 to 4 (100): 300 ok
    bits, log = resolve_pairs(problem=problem(sizes8=[100, 400, 200], limit=350))
    assert bits == (8, 4, 4)
    assert [(s.pass_name, s.key, s.from_bits, s.to_bits) for s in log] == [
        ("forward", "m1", 8, 4), ("forward", "m2", 8, 4)]
    assert [(s.bytes_before, s.bytes_after) for s in log] == [(500, 300), (400, 300)]


def test_algorithm1_backward_pass_needed():
    # (0,1): 400 + 100 > 350 and the former is larger: forward leaves it, backward cuts m0
    bits, log = resolve_pairs(problem=problem(sizes8=[400, 100], limit=350))
    assert bits == (4, 8)
    assert [(s.pass_name, s.pair, s.key, s.to_bits) for s in log] == [
        ("backward", ("m0", "m1"), "m0", 4)]


def test_algorithm1_backward_pass_runs_from_the_end():
    # bytes at 8/4/2 bits: m0 400/200/100, m1 200/100/50, m2 800/400/200; M = 300
    # forward: (0,1) former larger -> skip; (1,2): m2 8 -> 4 -> 2 (200 + 200, still > 300)
    # backward from the end: (1,2): m1 -> 4 (100 + 200 = 300); then (0,1): 400 + 100 -> m0 to 4.
    # (Visiting (0,1) first would cut m0 twice, to 2 bits, before m1 shrinks.)
    bits, log = resolve_pairs(problem=problem(sizes8=[400, 200, 800], limit=300))
    assert bits == (4, 4, 2)
    assert [(s.pass_name, s.key, s.to_bits) for s in log] == [
        ("forward", "m2", 4), ("forward", "m2", 2), ("backward", "m1", 4), ("backward", "m0", 4)]


def test_algorithm1_goes_down_the_score_order_skipping_wider_widths():
    # m1 prefers 4, then 8, then 2: a change goes 4 -> 2 (8 cannot help Eq. 7)
    bits, log = resolve_pairs(problem=problem(sizes8=[100, 800], limit=320,
                                              orders=[(8, 4, 2), (4, 8, 2)]))
    assert bits == (8, 2)
    assert [(s.from_bits, s.to_bits) for s in log] == [(4, 2)]


def test_algorithm1_fallback_when_the_larger_map_cannot_shrink():
    # m0 may only be 8-bit (1000 B); the passes only cut the larger map, so the fallback
    # cuts m1: 1000 + 400 -> 1000 + 200
    bits, log = resolve_pairs(problem=problem(sizes8=[1000, 400], limit=1200,
                                              orders=[(8,), (8, 4, 2)]))
    assert bits == (8, 4)
    assert [(s.pass_name, s.key) for s in log] == [("fallback", "m1")]


@settings(max_examples=200, deadline=None)
@given(sizes8=st.lists(st.integers(1, 64).map(lambda n: 8 * n), min_size=2, max_size=6),
       orders=st.lists(st.permutations((8, 4, 2)), min_size=6, max_size=6),
       limit=st.integers(1, 1024))
def test_algorithm1_result_satisfies_eq7_or_is_infeasible(sizes8, orders, limit):
    p = problem(sizes8=sizes8, limit=limit, orders=orders[:len(sizes8)])
    narrow = [s * 2 // 8 for s in sizes8]
    if any(a + b > limit for a, b in zip(narrow, narrow[1:])):
        with pytest.raises(BudgetError):
            resolve_pairs(problem=p)
        return
    bits, log = resolve_pairs(problem=p)
    mem = [size[b] for size, b in zip(p.sizes, bits)]
    assert all(a + b <= limit for a, b in zip(mem, mem[1:]))
    for i, order in enumerate(p.orders):   # a map only ever moves down its order, to fewer bytes
        assert bits[i] in order and mem[i] <= p.sizes[i][order[0]]
    assert all(step.bytes_after < step.bytes_before for step in log)


def test_infeasible_budget_names_the_pair_and_bytes():
    with pytest.raises(BudgetError, match=r"'m1' and 'm2' need 100 \+ 250 = 350 bytes.*M = 300"):
        resolve_pairs(problem=problem(sizes8=[100, 400, 1000], limit=300))
    with pytest.raises(BudgetError, match="'A' and 'B' need 128 \\+ 256 = 384"):
        search_bitwidths(branch=two_map_branch(limit=383))


def test_search_with_a_limit_cuts_through_the_backward_pass():
    # initial A=4 (256 B), B=2 (256 B) = 512 > 400. Forward: B is already narrowest.
    # Backward: A moves down its order (4, 8, 2) to 2 (skipping 8): 128 + 256 = 384.
    plan = search_bitwidths(branch=two_map_branch(limit=400))
    assert dict(plan.bits) == {"A": 2, "B": 2}
    record = plan.branches[0]
    assert record.initial_bits == (4, 2) and record.final_bits == (2, 2)
    assert [(s.pass_name, s.key, s.from_bits, s.to_bits, s.bytes_before, s.bytes_after)
            for s in record.log] == [("backward", "A", 4, 2, 512, 384)]


def test_outlier_class_branch_stays_8_bit():
    plan = search_bitwidths(branch=two_map_branch(outlier_class=True))
    assert dict(plan.bits) == {"A": 8, "B": 8}
    with pytest.raises(BudgetError, match="512 \\+ 1024"):
        search_bitwidths(branch=two_map_branch(limit=1500, outlier_class=True))


def test_plan_is_deterministic_and_round_trips():
    first = search_bitwidths(branch=two_map_branch(limit=400)).to_json()
    second = search_bitwidths(branch=two_map_branch(limit=400)).to_json()
    assert first == second
    plan = BitwidthPlan.from_json(first)
    assert plan == search_bitwidths(branch=two_map_branch(limit=400))
    assert plan.to_json() == first
    with pytest.raises(ConfigError, match="bit widths"):
        BitwidthPlan.from_json(first.replace('"A": 2', '"A": 3'))
    with pytest.raises(ConfigError, match="JSON"):
        BitwidthPlan.from_json("{not json")


def test_merge_plans():
    one = search_bitwidths(branch=two_map_branch())
    other = BitwidthPlan(policy="vdqs", options=one.options, bits={"A": 8, "C": 2})
    with pytest.raises(ConfigError, match="'A' planned at 4 and 8"):
        merge_plans(plans=[one, other])
    merged = merge_plans(plans=[one, BitwidthPlan(policy="vdqs", options=one.options,
                                                  bits={"C": 2})])
    assert dict(merged.bits) == {"A": 4, "B": 2, "C": 2}


def test_branch_memory_limit():
    assert branch_memory_limit(sram_bytes=256_000, resident_bytes=100_000) == 156_000
    with pytest.raises(BudgetError, match="256000"):
        branch_memory_limit(sram_bytes=256_000, resident_bytes=256_000)


def test_feature_map_from_region_statistics():
    regions = grid_regions(height=8, width=8, rows=1, cols=2)
    rng = np.random.default_rng(5)
    codes = rng.integers(-128, 128, size=(3, 8, 8, 4)).astype(np.int8)
    _, stats = collect(batches=[codes], regions=regions, scale=0.5, zero_point=-3)
    spec = feature_map_from_statistics(key="t_p01", shape=(1, 8, 4, 4), statistics=stats,
                                       region="p01")
    assert spec.histogram == stats.region("p01").histogram
    assert (spec.scale, spec.zero_point) == (0.5, -3)
    expected = np.bincount(codes[:, :, 4:, :].ravel().astype(int) + 128, minlength=256)
    p = expected[expected > 0] / expected.sum()
    assert feature_map_entropy(feature_map=spec, bits=8, bins=256) == \
        pytest.approx(float(-(p * np.log2(p)).sum()))


# ---------------------------------------------------------------- Rusci et al.
def sized_map(key, elements):
    return FeatureMapSpec(key=key, shape=(1, 1, elements // 4, 4), histogram=histogram_of([1]),
                          scale=1.0, zero_point=0)


def test_rusci_activations_forward_cuts_the_wider_output():
    # node 0: 300 + 600 > 500, output wider: 600 -> 300 (still 600 > 500) -> 150: 450
    branch = BranchSpec(name="b", feature_maps=(sized_map("x", 300), sized_map("y", 600),
                                                sized_map("z", 200)), memory_limit=500)
    plan = rusci_bitwidths(branches=(branch,))
    assert dict(plan.bits) == {"x": 8, "y": 2, "z": 8}
    assert [(s.pass_name, s.key, s.to_bits) for s in plan.branches[0].log] == [
        ("forward", "y", 4), ("forward", "y", 2)]
    assert BitwidthPlan.from_json(plan.to_json()) == plan
    assert plan.to_json() == rusci_bitwidths(branches=(branch,)).to_json()


def test_rusci_activations_backward_cuts_the_wider_input():
    branch = BranchSpec(name="b", feature_maps=(sized_map("x", 600), sized_map("y", 200)),
                        memory_limit=500)
    plan = rusci_bitwidths(branches=(branch,))
    assert dict(plan.bits) == {"x": 4, "y": 8}
    assert [s.pass_name for s in plan.branches[0].log] == ["backward"]
    with pytest.raises(BudgetError, match="150 \\+ 50 = 200"):
        rusci_bitwidths(branches=(BranchSpec(name="b", memory_limit=199,
                                             feature_maps=branch.feature_maps),))


def test_rusci_weights_cut_the_earliest_within_eps():
    # shares 22/15/13/50 %: cut w3 (largest). Then 2200/1500/1300/2500 of 7500:
    # 29.3/20/17.3/33.3 %: w0 and w3 are within 5 points of 33.3; the earliest, w0, is cut.
    weights = tuple(WeightSpec(key=f"w{i}", shape=(1, 1, 1, n))
                    for i, n in enumerate((2200, 1500, 1300, 5000)))
    record = cut_weights(weights=weights, flash_limit=7000)
    assert record.final_bits == (4, 8, 8, 4)
    assert [(s.key, s.bytes_before, s.bytes_after) for s in record.log] == [
        ("w3", 10000, 7500), ("w0", 7500, 6400)]
    assert record.flash_bytes == 6400
    plan = rusci_bitwidths(weights=weights, flash_limit=7000, flash_other_bytes=0)
    assert dict(plan.bits) == {"w0": 4, "w1": 8, "w2": 8, "w3": 4}
    assert BitwidthPlan.from_json(plan.to_json()) == plan
    # with eps = 0 the largest share is cut: w3 again (2500 -> 1250): 6250
    narrow = cut_weights(weights=weights, flash_limit=7000, options=RusciOptions(eps=0.0))
    assert narrow.final_bits == (8, 8, 8, 2)


def test_rusci_weights_budget_error():
    weights = (WeightSpec(key="w", shape=(1, 1, 1, 4000)),)
    with pytest.raises(BudgetError, match="1000 bytes.*plus 100 other bytes = 1100"):
        cut_weights(weights=weights, flash_limit=1099, flash_other_bytes=100)
    assert cut_weights(weights=weights, flash_limit=1100, flash_other_bytes=100).final_bits == (2,)
