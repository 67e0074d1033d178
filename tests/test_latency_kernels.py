"""`--kernels` and the latency model: the QMCU-kernel rewrite of int8 layers is bit-exact with
the builtin graph (numpy reference executor), bad choices are typed errors (CLI exit 2), and
the predicted instructions follow the table's formula. No test asserts an instruction count
of any kernel: those are bench figures (bench/latency_table.py)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from fixture_models import fixture_path, random_inputs
from tflite_quantmcu.analysis.latency import (CostLine, LatencyTable, load_latency_table,
                                              op_cost, predict_instructions)
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, qmcu_form_ops
from tflite_quantmcu.quant.kernel_choice import KERNEL_CHOICES, plan_kernels
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.reference.executor import run_graph

BUNDLED = fixture_path("fashion_mnv2_r96_int8.tflite")
MNV2 = fixture_path("mobilenetv2_w035_r144.tflite")
EMPTY = BitwidthPlan(policy="patch-int8", options={}, bits={})


def _qmcu_ops(graph) -> int:
    return sum(op.type.startswith("QMCU_") for op in graph.main.operators)


@pytest.fixture(scope="module")
def patched():
    graph = read_model_file(path=BUNDLED)
    plan = plan_patches(graph=graph, options=PatchOptions(sram_budget=256 * 1024))
    assert plan.is_patched
    return graph, apply_patch_plan(graph=graph, plan=plan)


@pytest.mark.parametrize("mode", ["qmcu", "fastest"])
@pytest.mark.parametrize("which", ["layer-based", "patched"])
def test_qmcu_kernel_rewrite_is_bit_exact(patched, mode, which):
    """Every int8 layer the choice moves to a QMCU op computes what the builtin op computes:
    same outputs as the builtin graph in the reference executor (random inputs)."""
    graph = patched[0] if which == "layer-based" else patched[1]
    kernel_plan = plan_kernels(graph=graph, mode=mode, table=load_latency_table())
    assert kernel_plan.outputs   # the test is void if nothing moved
    rewritten = apply_bitwidth_plan(graph=graph, plan=EMPTY, custom_outputs=kernel_plan.outputs)
    assert _qmcu_ops(rewritten) == len(kernel_plan.outputs)
    inputs = random_inputs(graph=graph, samples=3, seed=11)
    for want, got in zip(run_graph(graph=graph, inputs=inputs),
                         run_graph(graph=rewritten, inputs=inputs)):
        np.testing.assert_array_equal(got, want)


def test_qmcu_choice_takes_every_layer_with_a_form(patched):
    graph = patched[1]
    kernel_plan = plan_kernels(graph=graph, mode="qmcu", table=load_latency_table())
    assert kernel_plan.outputs == {graph.main.operators[i].outputs[0]
                                   for i in qmcu_form_ops(graph=graph)}
    assert plan_kernels(graph=graph, mode="builtin", table=load_latency_table()).outputs == set()


def test_fastest_follows_the_table(patched):
    """With a table where every QMCU line is dearer than the builtin one, fastest keeps builtin
    ops; with the opposite, it takes every layer that has a measured 8-bit QMCU line."""
    graph = patched[0]
    table = load_latency_table()
    dear = {k: (CostLine(per_call=1e12) if k.startswith("qmcu") else v)
            for k, v in table.lines.items()}
    cheap = {k: (CostLine() if k.startswith("qmcu") else v) for k, v in table.lines.items()}
    assert not plan_kernels(graph=graph, mode="fastest",
                            table=dataclasses.replace(table, lines=dear)).outputs
    taken = plan_kernels(graph=graph, mode="fastest", table=dataclasses.replace(table, lines=cheap))
    kinds = {op.type for op in graph.main.operators if op.outputs[0] in taken.outputs}
    assert kinds == {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"}


def test_prediction_is_the_sum_of_the_table_lines():
    """Each op costs its line's rates times its work (MACs, outputs, inputs, output pixels,
    output channels) plus the interpreter's per-op cost; ops without a line the fallback
    rate per element; the total is their sum (checked with a made-up table)."""
    graph = read_model_file(path=MNV2)
    lines = {"builtin CONV_2D 1x1": CostLine(per_mac=2.0, per_output=3.0, per_input=5.0,
                                             per_row=11.0, per_channel=13.0, per_call=17.0)}
    table = LatencyTable(target="cortex-m4", lines=lines, per_op=7.0, fallback_per_output=0.5)
    estimate = predict_instructions(graph=graph, table=table)
    sub = graph.main
    want = 0.0
    for i, op in enumerate(sub.operators):
        out = sub.tensors[op.outputs[0]]
        if op.type == "CONV_2D" and sub.tensors[op.inputs[1]].shape[1:3] == (1, 1):
            _, h, w, c_out = out.shape
            c_in = sub.tensors[op.inputs[1]].shape[3]
            want += (2.0 * h * w * c_out * c_in + 3.0 * h * w * c_out
                     + 5.0 * sub.tensors[op.inputs[0]].num_elements + 11.0 * h * w
                     + 13.0 * c_out + 17.0)
        elif op.type != "RESHAPE":
            read = sum(sub.tensors[k].num_elements for k in op.inputs
                       if k is not None and not sub.tensors[k].is_constant)
            want += 0.5 * max(out.num_elements, read)
        want += 7.0
        assert op_cost(subgraph=sub, index=i, table=table).op == op.type
    assert estimate.total == int(round(want))
    assert "DEPTHWISE_CONV_2D" in estimate.unmodelled


def test_latency_table_target_is_checked():
    with pytest.raises(ConfigError, match="cortex-m4"):
        load_latency_table(target="cortex-m7")


def test_api_rejects_an_unknown_kernel_choice():
    with pytest.raises(ConfigError, match="--kernels: expected one of builtin, qmcu, fastest"):
        ConvertOptions(model_path=BUNDLED, out_dir=None, sram_budget=1, kernels="cmsis")


def test_cli_rejects_an_unknown_kernel_choice(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert", str(BUNDLED),
                           "--out", str(out), "--sram", "256KB", "--policy", "patch-int8",
                           "--kernels", "cmsis"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "--kernels" in proc.stderr and "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.fixture(scope="module")
def converted_qmcu():
    options = ConvertOptions(model_path=BUNDLED, out_dir=None, sram_budget=256 * 1024,
                             policy="patch-int8", kernels="qmcu", measure_tflm=False)
    return run_pipeline(options=options)


def test_convert_with_qmcu_kernels_is_bit_exact(converted_qmcu):
    conv = converted_qmcu
    assert _qmcu_ops(conv.converted) == len(conv.kernel_plan.outputs) > 0
    inputs = random_inputs(graph=conv.graph, samples=2, seed=5)
    for want, got in zip(run_graph(graph=conv.graph, inputs=inputs),
                         run_graph(graph=conv.converted, inputs=inputs)):
        np.testing.assert_array_equal(got, want)


def test_report_gives_predicted_instructions_for_every_model_and_choice(converted_qmcu):
    from tflite_quantmcu.report import conversion_report

    report = json.loads(json.dumps(conversion_report(conv=converted_qmcu)))
    latency = report["predicted_instructions"]
    table = load_latency_table()
    for name, graph in (("layer_based", converted_qmcu.graph),
                        ("patch_based", converted_qmcu.patched),
                        ("final", converted_qmcu.converted)):
        assert latency[name]["instructions"] == predict_instructions(graph=graph,
                                                                     table=table).total
    choices = latency["kernels"]["choices"]
    assert sorted(choices) == sorted(KERNEL_CHOICES) and latency["kernels"]["chosen"] == "qmcu"
    assert choices["qmcu"]["instructions"] == latency["final"]["instructions"]
    assert choices["builtin"]["instructions"] == latency["patch_based"]["instructions"]
    assert choices["qmcu"]["arena_total_bytes"] == report["arena_bytes"]["final"]["total"]


@pytest.mark.parametrize("form", ["builtin", "auto"])
def test_min_latency_objective_picks_the_fewest_predicted_instructions(form):
    """Among fitting plans, min-latency's has no more predicted instructions than min-macs's
    or min-memory's, and it fits the budget."""
    graph = read_model_file(path=BUNDLED)
    table = load_latency_table()
    predicted = {}
    for objective in ("min-latency", "min-macs", "min-memory"):
        plan = plan_patches(graph=graph, options=PatchOptions(
            sram_budget=256 * 1024, objective=objective, form=form))
        assert plan.is_patched and plan.total_bytes <= 256 * 1024
        predicted[objective] = predict_instructions(
            graph=apply_patch_plan(graph=graph, plan=plan), table=table).total
    assert predicted["min-latency"] <= min(predicted["min-macs"], predicted["min-memory"])
