"""--bitops-ratio: the plan lowers widths until the written model's BitOPs (counted from the
QMCU ops' own options in the file) are the requested ratio below patch-int8."""
from __future__ import annotations

import numpy as np
import pytest

from fixture_models import TESTDATA, fixture_path
from tflite_quantmcu import api
from tflite_quantmcu.analysis.model_analysis import analyze_model
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.bitops_target import plan_bitops, plan_for_bitops_ratio

BUNDLED = fixture_path("fashion_mnv2_r96_int8.tflite")


@pytest.fixture(scope="module")
def calibration():
    import sys
    sys.path.insert(0, str(TESTDATA))
    import fashion_mnist
    x = np.load(TESTDATA / "fashion_mnist_calib.npz")["x"][:16]
    return fashion_mnist.to_model_input(images=x)


def test_written_model_reaches_the_ratio(calibration):
    result = api.convert(BUNDLED, sram="256KB", calibration=calibration, bitops_ratio=1.8,
                         max_accuracy_drop=None, measure_tflm=False)
    written = analyze_model(graph=read_model_bytes(data=result.model_bytes))
    patched = analyze_model(graph=result.conversion.patched)
    assert patched.bitops / written.bitops >= 1.8
    assert result.plan.options["bitops_ratio"] == 1.8
    # the plan's own count (builtin ops of the patched graph, plan widths, PADs folded)
    # equals the written model's (QMCU ops counted from their options)
    estimate = plan_bitops(graph=result.conversion.patched, bits=result.plan.bits)
    assert written.bitops == estimate


@pytest.fixture(scope="module")
def patched():
    return api.convert(BUNDLED, sram="256KB", policy="patch-int8", verify=False,
                       measure_tflm=False).conversion.patched


def _narrowest_ratio(*, graph, weights: bool) -> float:
    """reference / BitOPs with every map and (if `weights`) filter at its narrowest width,
    counted on the applied graph (independent of the greedy search)."""
    from tflite_quantmcu.quant.apply_bitwidths import filter_candidates, subbyte_candidates
    bits = {k: min(w) for k, w in subbyte_candidates(graph=graph).items() if min(w) < 8}
    if weights:
        bits.update({k: min(w) for k, w in filter_candidates(graph=graph).items()})
    applied = apply_bitwidth_plan(graph=graph, plan=BitwidthPlan(policy="t", options={},
                                                                  bits=bits))
    return analyze_model(graph=graph).bitops / analyze_model(graph=applied).bitops


def test_unreachable_ratio_names_the_best(patched):
    best = _narrowest_ratio(graph=patched, weights=True)
    acts = _narrowest_ratio(graph=patched, weights=False)
    assert acts < 2.2 + 0.2 < best   # weight cuts make 2.2x reachable
    with pytest.raises(ConfigError, match=rf"cannot be reached.*ratio {best:.3f}"):
        plan_for_bitops_ratio(patched=patched, start=None, ratio=best + 0.01)
    with pytest.raises(ConfigError, match=rf"cannot be reached.*ratio {acts:.3f}"):
        plan_for_bitops_ratio(patched=patched, start=None, ratio=acts + 0.01, weights=False)
    with pytest.raises(ConfigError, match=">= 1"):
        plan_for_bitops_ratio(patched=patched, start=None, ratio=0.5)


@pytest.mark.parametrize("ratio,first", [(1.6, False), (2.2, False), (2.2, True), (2.5, True)])
def test_weight_cuts_reach_the_ratio_on_the_applied_graph(patched, ratio, first):
    plan = plan_for_bitops_ratio(patched=patched, start=None, ratio=ratio,
                                 four_bits_first=first)
    applied = read_model_bytes(data=write_model_bytes(
        graph=apply_bitwidth_plan(graph=patched, plan=plan), inline_buffers=True))
    written = analyze_model(graph=applied).bitops
    reference = analyze_model(graph=patched).bitops
    assert written == plan_bitops(graph=patched, bits=plan.bits)
    assert reference / written >= ratio
    cut = {k: b for k, b in plan.bits.items() if patched.main.tensors[k].is_constant}
    assert cut and plan.weights is not None
    assert dict(zip(plan.weights.keys, plan.weights.final_bits)) == cut
    if first:   # every 4-bit step was allowed before a 2-bit one: none needed at these ratios
        assert 2 not in plan.bits.values()
    # every cut filter is a packed QMCU filter of that width in the written model
    sub = applied.main
    widths = {}
    for op in sub.operators:
        if op.type in ("QMCU_CONV_2D", "QMCU_DEPTHWISE_CONV_2D"):
            opts = decode_options(op=op.type, data=op.custom_options)
            widths[op.inputs[1]] = opts.w_bits
    assert {k: widths[k] for k in cut} == cut

