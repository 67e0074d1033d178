"""The whole arena (head + tail) against TFLite Micro itself.

The tflite-micro wheel is a 64-bit host build with a recording allocator: our
`host64` target must give its `Arena allocation head/tail/total` exactly, on every
fixture and on patch-int8 rewrites of them (which multiply the per-op tail).
The `cortex-m` tables were checked once against a 32-bit TFLite Micro build
(README, "Memory"); CI has no such build.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fixture_models import TESTDATA, all_fixture_names, fixture_path
from tflite_quantmcu.analysis.model_analysis import analyze_model, arena_bytes
from tflite_quantmcu.analysis.tflm_tail import TARGETS, arena_tail
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.runtimes.tflm import measure_arena

OP_FIXTURES = sorted(p.name for p in (TESTDATA / "ops").glob("*.tflite"))


def _path(name: str) -> Path:
    path = TESTDATA / "ops" / name if name in OP_FIXTURES else fixture_path(name)
    if not path.exists():
        pytest.skip(f"{path} not generated (run `python3 testdata/make_fixtures.py`)")
    return path


def _assert_matches_wheel(graph, model_bytes: bytes) -> None:
    ours = arena_bytes(graph=graph, target="host64")
    tflm = measure_arena(model_bytes=model_bytes)
    assert ours.unmodelled == ()
    assert (ours.head, ours.tail, ours.total) == (tflm.head, tflm.tail, tflm.total), \
        dict(ours.tail_parts)


@pytest.mark.parametrize("name", all_fixture_names() + OP_FIXTURES)
def test_host64_total_equals_the_wheel(name):
    path = _path(name)
    _assert_matches_wheel(read_model_file(path=path), path.read_bytes())


@pytest.mark.parametrize("name,grid", [(n, g) for n in all_fixture_names()
                                       for g in (None, (2, 2), (3, 1))])
def test_host64_total_equals_the_wheel_after_patch_rewrite(name, grid):
    graph = read_model_file(path=_path(name))
    options = PatchOptions(grid=grid, max_file_growth=None, objective="min-memory")
    plan = plan_patches(graph=graph, options=options)
    exact = [c for c in plan.candidates if c.exact]
    if not plan.is_patched and exact:
        # the planner keeps layer-based when patches do not pay; force its best candidate
        best = min(exact, key=lambda c: c.total_bytes)
        plan = plan_patches(graph=graph, options=PatchOptions(
            split=best.split_op, grid=best.grid, max_file_growth=None))
    if not plan.is_patched:
        pytest.skip(f"{name}: no patch candidate with grid {grid} ({plan.reason})")
    patched = apply_patch_plan(graph=graph, plan=plan)
    _assert_matches_wheel(patched, write_model_bytes(graph=patched))


def test_cortex_m_tail_is_smaller_than_host64_and_counts_every_op():
    graph = read_model_file(path=_path("conv_chain.tflite"))
    small = arena_tail(graph=graph, target=TARGETS["cortex-m"])
    large = arena_tail(graph=graph, target=TARGETS["host64"])
    assert 0 < small.bytes < large.bytes
    assert small.parts["nodes"] == 32 * len(graph.main.operators)
    assert small.parts["eval_tensors"] == 12 * len(graph.main.tensors)


def test_unknown_op_makes_the_total_a_lower_bound():
    graph = read_model_file(path=_path("conv_chain.tflite"))
    graph.main.operators[0].opcode = type(graph.main.operators[0].opcode)(
        builtin=32, custom="SOME_VENDOR_OP")
    result = analyze_model(graph=graph)
    assert result.arena.lower_bound
    assert "SOME_VENDOR_OP" in result.arena.unmodelled


def test_unknown_target_is_a_config_error():
    graph = read_model_file(path=_path("conv_chain.tflite"))
    with pytest.raises(ConfigError, match="cortex-m"):
        arena_bytes(graph=graph, target="riscv")
