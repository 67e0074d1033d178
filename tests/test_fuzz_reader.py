"""Structure-aware fuzzing in CI: every mutated model loads and analyses, or fails typed.

Hypothesis drives the mutation engine of model_mutations.py (its `Random` is drawn by
hypothesis, so failures shrink and replay; the profile in conftest.py derandomizes the
run). Each input goes through read + validation, the int8 check and analysis; one in
fifty also through convert, whose output must load and run in LiteRT. The 100,000-input
run with hang and crash detection is bench/fuzz_reader.py (docs/robustness.md).
"""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_harness import run_input
from model_mutations import mutated_model

EXAMPLES = 2000
CONVERT_EVERY = 50
_ALLOWED = ("ok", "typed")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rng=st.randoms(use_true_random=False), convert_pick=st.integers(0, CONVERT_EVERY - 1))
def test_mutated_models_load_or_fail_typed(rng: random.Random, convert_pick: int):
    seed, data, applied = mutated_model(rng=rng)
    outcome = run_input(data=data, sram_budget=seed.sram_budget, do_convert=convert_pick == 0)
    assert outcome.kind in _ALLOWED, (
        f"{seed.name} with {applied}: {outcome.label}\n{outcome.detail}")


def test_the_mutations_reach_every_outcome_class():
    """The fuzzer is only worth something if its inputs are both accepted and refused."""
    kinds = set()
    for i in range(300):
        seed, data, _ = mutated_model(rng=random.Random(i))
        outcome = run_input(data=data, sram_budget=seed.sram_budget, do_convert=False)
        kinds.add(outcome.label)
    assert "ok" in kinds
    assert {"typed:InvalidModelError", "typed:UnsupportedModelError"} <= kinds
