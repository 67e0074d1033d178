"""Weight cuts, --policy rusci and --policy rl on small synthetic int8 graphs (seconds).

Oracles: the int8 filter's float values (scale choice), the packing rule of
docs/qmcu_ops.md (round trip), the written file (flash), an independent replay of
Rusci's rules over the logged steps, the C kernels (bit-exact QMCU ops with cut
filters), and a second run of the RL search (determinism).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qmcu_c_oracle import compare_qmcu_ops
from test_cmixnn_host import kernels  # noqa: F401  (kernels is a fixture)
from testdata import fashion_mnist
from testdata.synthetic_models import Conv, DepthwiseConv, Mean, ModelSpec, build_int8_graph
from tflite_quantmcu.errors import BudgetError
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file
from tflite_quantmcu.quant.calibration_data import calibration_batches
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.quant.layer_budgets import layer_problem, measure
from tflite_quantmcu.quant.rl_policy import RlOptions, decisions, enforce, search_rl
from tflite_quantmcu.quant.rusci import RusciOptions
from tflite_quantmcu.quant.rusci_policy import search_rusci
from tflite_quantmcu.quant.weight_cuts import cut_filter, packed_filter, unpacked_filter
from tflite_quantmcu.reference.executor import run_graph

SPEC = ModelSpec(input_shape=(12, 12, 16), seed=3, layers=(
    Conv(filters=48, kernel=(3, 3)), DepthwiseConv(kernel=(3, 3)), Conv(filters=96, kernel=(1, 1)),
    Conv(filters=64, kernel=(1, 1), stride=(2, 2)), Mean()))
SHAPE = (12, 12, 16)
ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite"
TEST300 = ROOT / "testdata" / "fashion_mnist_test300.npz"


@pytest.fixture(scope="module")
def graph():
    return build_int8_graph(spec=SPEC)


def _budgets(graph):
    """SRAM between the int8 arena and the arena with every cuttable map at 4 bits; flash
    = the int8 file minus 30 % of the filter bytes."""
    problem = layer_problem(graph=graph)
    _, int8 = measure(graph=graph, bits={}, target="cortex-m")
    _, at4 = measure(graph=graph, bits={k: 4 for k in problem.act_keys
                                        if 4 in problem.act_widths[k]}, target="cortex-m")
    assert at4.arena_total < int8.arena_total
    filters = sum(graph.main.tensors[k].num_elements for k in problem.weight_keys)
    return (int8.arena_total + at4.arena_total) // 2, int8.flash_bytes - int(0.3 * filters)


def _int8_filter(seed: int, shape):
    rng = np.random.default_rng(seed)
    return rng.integers(-127, 128, size=shape).astype(np.int8), \
        rng.uniform(0.001, 0.02, size=shape[0]).astype(np.float32)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("axis", [0, 3])
def test_weight_packing_round_trip(graph, bits, axis):
    values, scales = _int8_filter(bits + axis, (8, 3, 3, 16) if axis == 0 else (1, 3, 3, 8))
    if axis == 3:
        scales = scales[:8] if scales.size >= 8 else np.resize(scales, 8)
    cut = cut_filter(key="w", values=values, scales=scales, axis=axis, bits=bits)
    qmax = (1 << (bits - 1)) - 1
    assert cut.values.shape == values.shape and np.abs(cut.values).max() <= qmax
    tensor = next(t for t in graph.main.tensors.values() if t.is_constant)
    packed = packed_filter(tensor=tensor, cut=cut, axis=axis, details=None)
    assert packed.shape[-1] == values.shape[-1] * bits // 8
    assert len(packed.buffer.data) == values.size * bits // 8
    back = unpacked_filter(tensor=packed, bits=bits, logical_shape=values.shape)
    np.testing.assert_array_equal(back, cut.values)
    # scale choice: never worse than plain max-abs scaling (alpha = 1 is in the grid)
    real = np.moveaxis(values.astype(np.float64), axis, 0) * np.asarray(
        np.broadcast_to(scales, (values.shape[axis],)), np.float64).reshape(-1, 1, 1, 1)
    plain = np.abs(real).reshape(real.shape[0], -1).max(axis=1) / qmax
    q_plain = np.clip(np.sign(real / plain.reshape(-1, 1, 1, 1)) * np.floor(
        np.abs(real / plain.reshape(-1, 1, 1, 1)) + 0.5), -qmax, qmax)
    err_plain = np.linalg.norm(q_plain * plain.reshape(-1, 1, 1, 1) - real) / np.linalg.norm(real)
    assert cut.rel_rmse <= err_plain + 1e-9


def test_weight_cut_flash_accounting_and_file_round_trip(graph):
    problem = layer_problem(graph=graph)
    bits = {k: 4 for k in problem.weight_keys if 4 in problem.weight_widths[k]}
    assert bits, "the synthetic graph has cuttable filters"
    converted, figures = measure(graph=graph, bits=bits, target="cortex-m")
    data = write_model_bytes(graph=converted)
    assert figures.flash_bytes == len(data)
    for key in bits:   # the filter is stored packed: half its int8 bytes
        assert len(converted.main.tensors[key].buffer.data) == \
            graph.main.tensors[key].num_elements // 2
    constants = {id(t.buffer): len(t.buffer.data) for t in converted.main.tensors.values()
                 if t.is_constant}
    assert figures.flash_bytes > sum(constants.values())
    again = read_model_bytes(data=data)
    for key in bits:
        assert again.main.tensors[key].buffer.data == converted.main.tensors[key].buffer.data
    x = np.random.default_rng(0).integers(-128, 128, size=(3,) + SHAPE).astype(np.int8)
    np.testing.assert_array_equal(run_graph(graph=again, inputs=[x])[0],
                                  run_graph(graph=converted, inputs=[x])[0])


def _replay_weights(*, record, shapes, eps):
    """Rule [M1] replayed independently over the log: each cut is the earliest weight
    whose share is within eps of the largest cuttable share, one step down."""
    bits = dict(zip(record.keys, record.initial_bits))

    def size(key, b):
        shape = shapes[key]
        return int(np.prod(shape[:-1])) * (shape[-1] * b // 8)

    for step in record.log:
        total = sum(size(k, b) for k, b in bits.items())
        cuttable = [k for k in record.keys if bits[k] > 2]
        shares = {k: size(k, bits[k]) / total for k in cuttable}
        largest = max(shares.values())
        expected = next(k for k in record.keys if k in shares and shares[k] >= largest - eps)
        assert step.key == expected and step.from_bits == bits[expected]
        assert step.to_bits == {8: 4, 4: 2}[bits[expected]]
        bits[expected] = step.to_bits
    assert tuple(bits[k] for k in record.keys) == record.final_bits


def test_rusci_rule_steps_and_budgets(graph):
    _, int8 = measure(graph=graph, bits={}, target="cortex-m")
    problem = layer_problem(graph=graph)
    sram, flash = _budgets(graph)
    result = search_rusci(graph=graph, sram_budget=sram, flash_budget=flash, target="cortex-m")
    assert result.figures.arena_total <= sram and result.figures.flash_bytes <= flash
    _, again = measure(graph=graph, bits=result.plan.bits, target="cortex-m")
    assert again == result.figures
    record = result.plan.branches[0]
    bits = dict(zip(record.keys, record.initial_bits))
    for step in record.log:   # rule [M2]: every step narrows one map of the pair
        assert step.key in step.pair and step.to_bits < bits[step.key] and step.bytes_after < \
            step.bytes_before
        bits[step.key] = step.to_bits
    assert tuple(bits[k] for k in record.keys) == record.final_bits
    assert any(b < 8 for b in record.final_bits)
    _replay_weights(record=result.plan.weights, shapes=problem.weight_shapes,
                    eps=RusciOptions().eps)
    assert result.plan.weights.log, "the flash budget needed weight cuts"
    with pytest.raises(BudgetError, match="best reached|narrowest"):
        search_rusci(graph=graph, sram_budget=sram, flash_budget=int8.flash_bytes // 4,
                     target="cortex-m")


def _convs_equal_c_kernels(*, converted, x, kernels) -> int:  # noqa: F811
    """Every QMCU op of ``converted`` run by the C library on the inputs the reference
    executor gave it must reproduce the executor's output bytes; returns how many convs
    have a cut filter."""
    found = compare_qmcu_ops(graph=converted, x=x, kernels=kernels)
    assert found.all_equal, f"C differs from the executor: {found.mismatches[:5]}"
    return found.cut_filters


def test_rusci_cut_convs_equal_c_kernels(graph, kernels):  # noqa: F811
    sram, flash = _budgets(graph)
    result = search_rusci(graph=graph, sram_budget=sram, flash_budget=flash, target="cortex-m")
    converted, _ = measure(graph=graph, bits=result.plan.bits, target="cortex-m")
    x = np.random.default_rng(1).integers(-128, 128, size=(1,) + SHAPE).astype(np.int8)
    assert _convs_equal_c_kernels(converted=converted, x=x, kernels=kernels) >= 1


def test_bundled_model_rusci_at_60_percent_flash(kernels):  # noqa: F811
    """The bundled model at 256 KB and 60 % flash (bench/policies.py): fits, and its QMCU
    convs (cut filters included) equal the C kernels on a real test image."""
    model = read_model_file(path=BUNDLED)
    problem = layer_problem(graph=model)
    _, int8 = measure(graph=model, bits={}, target="cortex-m")
    filters = sum(model.main.tensors[k].num_elements for k in problem.weight_keys)
    sram, flash = 256 * 1024, int8.flash_bytes - int(0.4 * filters)
    result = search_rusci(graph=model, sram_budget=sram, flash_budget=flash, target="cortex-m")
    assert result.figures.arena_total <= sram and result.figures.flash_bytes <= flash
    converted, _ = measure(graph=model, bits=result.plan.bits, target="cortex-m")
    images = fashion_mnist.to_model_input(images=np.load(TEST300)["x"][:1])
    x = next(iter(calibration_batches(source=images, graph=model, progress=False)))
    assert _convs_equal_c_kernels(converted=converted, x=x, kernels=kernels) >= 5


def test_rl_enforces_budgets_and_is_deterministic(graph):
    problem = layer_problem(graph=graph)
    sram, flash = _budgets(graph)
    x = np.random.default_rng(2).integers(-128, 128, size=(16,) + SHAPE).astype(np.int8)
    options = RlOptions(episodes=4, seed=7, holdout=16)
    runs = [search_rl(graph=graph, x=x, y=None, sram_budget=sram, flash_budget=flash,
                      target="cortex-m", options=options) for _ in range(2)]
    assert runs[0].plan.bits == runs[1].plan.bits
    for run in runs:
        assert run.figures.arena_total <= sram and run.figures.flash_bytes <= flash
        assert run.details["reward"] == "agreement" and 0.0 <= run.details["best_reward"] <= 1.0
    choices = decisions(problem=problem)
    eight = {d.key: 8 for d in choices}
    bits, figures = enforce(graph=graph, choices=choices, bits=eight, sram_budget=sram,
                            flash_budget=flash, target="cortex-m")
    assert figures.arena_total <= sram and figures.flash_bytes <= flash
    lowered = [d.key for d in choices if bits[d.key] < 8 and d.kind == "weight"]
    weights = [d.key for d in choices if d.kind == "weight"]
    assert lowered and lowered == weights[len(weights) - len(lowered):] or \
        all(bits[k] < 8 for k in weights), "filters are lowered from the last layer back"
    with pytest.raises(BudgetError, match="best reached"):
        enforce(graph=graph, choices=choices, bits=eight, sram_budget=1000,
                flash_budget=None, target="cortex-m")


def _flash60(graph) -> int:
    """The int8 file minus 40 % of the cuttable filters' bytes (bench/policies.py's 60 %)."""
    problem = layer_problem(graph=graph)
    _, int8 = measure(graph=graph, bits={}, target="cortex-m")
    filters = sum(graph.main.tensors[k].num_elements for k in problem.weight_keys)
    return int8.flash_bytes - int(0.4 * filters)


@pytest.mark.parametrize("policy", ["rusci", "rl"])
def test_policies_at_60_percent_flash_fit_and_equal_c_kernels(graph, kernels, policy):  # noqa: F811
    """At 60 % flash both seed policies fit, and every QMCU op of their models (cut filters,
    packed maps, PACK/UNPACK, ADD) run by the C library equals the reference executor."""
    sram, flash = _budgets(graph)[0], _flash60(graph)
    if policy == "rusci":
        result = search_rusci(graph=graph, sram_budget=sram, flash_budget=flash,
                              target="cortex-m")
    else:
        x = np.random.default_rng(4).integers(-128, 128, size=(8,) + SHAPE).astype(np.int8)
        result = search_rl(graph=graph, x=x, y=None, sram_budget=sram, flash_budget=flash,
                           target="cortex-m", options=RlOptions(episodes=3, seed=1, holdout=8))
    converted, figures = measure(graph=graph, bits=result.plan.bits, target="cortex-m")
    assert figures.arena_total <= sram and figures.flash_bytes <= flash
    assert any(b < 8 for b in result.plan.bits.values())
    x = np.random.default_rng(5).integers(-128, 128, size=(2,) + SHAPE).astype(np.int8)
    found = compare_qmcu_ops(graph=converted, x=x, kernels=kernels)
    assert found.all_equal, f"C differs from the executor: {found.mismatches[:5]}"
    assert found.cut_filters >= 1, found.summary()


def _cli(*args) -> "subprocess.CompletedProcess":
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert",
                           *map(str, args), "--no-tflm"], capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("policy", ["rusci", "rl"])
def test_cli_policies_fit_replay_and_fail_typed(graph, tmp_path, policy):
    import json
    model = tmp_path / "tiny.tflite"
    model.write_bytes(write_model_bytes(graph=graph))
    calib = tmp_path / "calib.npz"
    x = np.random.default_rng(4).integers(-128, 128, size=(24,) + SHAPE).astype(np.int8)
    np.savez(calib, x=x)
    sram, flash = _budgets(graph)
    outs = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        proc = _cli(model, "--out", out, "--sram", sram, "--flash", flash, "--policy", policy,
                    "--calibration", calib, "--rl-episodes", 3)
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    report = json.loads((outs[0] / "report.json").read_text())
    assert report["fits"] is True and report["arena_bytes"]["final"]["total"] <= sram
    assert report["flash_bytes"]["final"] <= flash
    assert report["seed_search"]["policy"] == policy
    assert (outs[0] / f"tiny.{policy}.tflite").read_bytes() == \
        (outs[1] / f"tiny.{policy}.tflite").read_bytes(), "same seed, same model"
    plan = json.loads((outs[0] / "tiny.bitwidth_plan.json").read_text())
    assert any(v < 8 for k, v in plan["bits"].items() if k.endswith("/w"))
    bad = tmp_path / "bad"
    proc = _cli(model, "--out", bad, "--sram", sram, "--flash", flash // 4, "--policy", policy,
                "--calibration", calib, "--rl-episodes", 2)
    assert proc.returncode == 2 and "best reached" in proc.stderr and "Traceback" not in \
        proc.stderr
    assert not bad.exists()
