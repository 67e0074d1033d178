"""``--policy rl``: a reinforcement-learning search of weight and activation widths in
{8, 4, 2} per layer under the RAM and flash budgets (the MCU variant of HAQ, seed 002).

**Agent.** A per-layer softmax policy (tabular logits, one decision per cuttable filter
and one per sub-byte-capable activation map, ``layer_budgets.layer_problem``) trained
with REINFORCE and a moving-average reward baseline, in numpy. Why not HAQ's DDPG: a
DDPG actor-critic needs hundreds of episodes to fit its critic, while one reward here
costs seconds (the reference executor on the held-out split) and the search must end in
minutes on 2 cores; with ~40 discrete decisions of 3 choices a tabular policy gradient
learns from tens of episodes and is exactly reproducible from its seed.

**Constraint** (as in the paper: the action is lowered until the budget holds). After
sampling, while the graph the plan produces exceeds the whole-arena budget, the latest
activation map live at the arena's peak is lowered one step (a map elsewhere cannot
lower the peak; HAQ's plain "last layers first" would cut every later map before the
early, large ones); while the file exceeds ``--flash``, filters are lowered one step
each in turn from the last layer backwards. The figures are the real ones (``measure``). If
everything is at its narrowest and a budget still fails, :class:`BudgetError` names the
best figures reached.

**Reward.** Top-1 on the held-out split (the last ``holdout`` samples of the
calibration data) when it has labels, else agreement of the top class with the int8
model's; rewards of equal plans are cached. The result is the best-reward plan seen
(ties: fewer BitOPs, then the earlier episode). Same seed, data and options -> same
plan. ``time_limit_s`` stops the search early (then the plan depends on the machine's
speed; the result says so).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from tflite_quantmcu.errors import BudgetError, ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.layer_budgets import (Figures, LayerProblem, describe, fits,
                                                 layer_problem, measure)
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.rusci_policy import SeedPolicyResult
from tflite_quantmcu.reference.executor import run_graph

CHOICES = (8, 4, 2)
PRIOR_LOGITS = (2.0, 0.5, -1.5)  # the first episodes favour 8 bits (probabilities .80/.18/.02)


@dataclass(frozen=True)
class RlOptions:
    """episodes, seed, learning rate, baseline decay, held-out samples, time limit."""

    episodes: int = 30
    seed: int = 0
    learning_rate: float = 0.5
    baseline_decay: float = 0.8
    holdout: int = 128
    time_limit_s: float = 600.0

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.holdout < 1 or self.time_limit_s <= 0:
            raise ConfigError(f"RL options: episodes ({self.episodes}) and holdout "
                              f"({self.holdout}) must be >= 1, time limit > 0")
        if not 0.0 <= self.baseline_decay < 1.0 or self.learning_rate <= 0:
            raise ConfigError("RL options: baseline_decay in [0, 1) and learning_rate > 0")

    def to_dict(self) -> dict:
        return {"episodes": self.episodes, "seed": self.seed,
                "learning_rate": self.learning_rate, "baseline_decay": self.baseline_decay,
                "holdout": self.holdout, "time_limit_s": self.time_limit_s}


@dataclass(frozen=True)
class Decision:
    key: str
    kind: str          # "weight" or "activation"
    widths: tuple[int, ...]


def decisions(*, problem: LayerProblem) -> tuple[Decision, ...]:
    """Every choice the agent makes, in layer order (filters, then maps)."""
    found = [Decision(key=k, kind="weight", widths=problem.weight_widths[k])
             for k in problem.weight_keys if len(problem.weight_widths[k]) > 1]
    found += [Decision(key=k, kind="activation", widths=problem.act_widths[k])
              for k in problem.act_keys if len(problem.act_widths[k]) > 1]
    return tuple(found)


def enforce(*, graph: Graph, choices: tuple[Decision, ...], bits: Mapping[str, int],
            sram_budget: int, flash_budget: int | None,
            target: str) -> tuple[dict[str, int], Figures]:
    """Lower widths until both budgets hold: for the arena, one step for the latest map
    live at the peak that can still go lower (any map, last layer first, when none of
    those can); for flash, one step each filter in turn from the last layer backwards."""
    bits = dict(bits)
    _, figures = measure(graph=graph, bits=bits, target=target)
    acts = [d for d in reversed(choices) if d.kind == "activation"]
    while figures.arena_total > sram_budget:
        lowerable = [d for d in acts if any(b < bits[d.key] for b in d.widths)]
        at_peak = [d for d in lowerable if d.key in figures.peak_keys]
        if not lowerable:
            break
        d = (at_peak or lowerable)[0]
        bits[d.key] = max(b for b in d.widths if b < bits[d.key])
        _, figures = measure(graph=graph, bits=bits, target=target)
    filters = [d for d in reversed(choices) if d.kind == "weight"]
    while flash_budget is not None and figures.flash_bytes > flash_budget:
        lowered = False
        for d in filters:
            smaller = [b for b in d.widths if b < bits[d.key]]
            if not smaller or figures.flash_bytes <= flash_budget:
                continue
            bits[d.key] = max(smaller)
            lowered = True
            _, figures = measure(graph=graph, bits=bits, target=target)
        if not lowered:
            break
    if not fits(figures=figures, sram_budget=sram_budget, flash_budget=flash_budget):
        reached = describe(figures=figures, sram_budget=sram_budget, flash_budget=flash_budget)
        raise BudgetError(f"--policy rl: the budgets cannot be met with every width at its "
                          f"narrowest; best reached: {reached}")
    return bits, figures


class _Reward:
    """Top-1 (or agreement with int8) on the held-out inputs, cached per plan."""

    def __init__(self, *, graph: Graph, x: np.ndarray, y: np.ndarray | None) -> None:
        self.x = x
        self.y = y if y is not None else self._top(graph=graph)
        self.cache: dict[tuple, float] = {}

    def _top(self, *, graph: Graph) -> np.ndarray:
        out = run_graph(graph=graph, inputs=[self.x])[0]
        return np.argmax(out.reshape(out.shape[0], -1), axis=1)

    def __call__(self, *, key: tuple, graph: Graph) -> float:
        if key not in self.cache:
            self.cache[key] = float(np.mean(self._top(graph=graph) == self.y))
        return self.cache[key]


def search_rl(*, graph: Graph, x: np.ndarray, y: np.ndarray | None, sram_budget: int,
              flash_budget: int | None, target: str, options: RlOptions = RlOptions(),
              progress: bool = False) -> SeedPolicyResult:
    """The RL search (module doc); ``x``/``y``: the held-out model inputs and labels."""
    start = time.perf_counter()
    choices = decisions(problem=layer_problem(graph=graph))
    reward = _Reward(graph=graph, x=x, y=y)
    rng = np.random.default_rng(options.seed)
    logits = np.tile(np.asarray(PRIOR_LOGITS, dtype=np.float64), (len(choices), 1))
    masks = np.array([[b in d.widths for b in CHOICES] for d in choices], dtype=bool) \
        .reshape(len(choices), len(CHOICES))
    baseline, best, episodes = None, None, 0
    bar = tqdm(total=options.episodes, desc="rl search", unit="episode", file=sys.stderr,
               disable=not progress, leave=False)
    for episode in range(options.episodes):
        if time.perf_counter() - start > options.time_limit_s:
            break
        probs = _softmax(logits=logits, masks=masks)
        picks = [int(rng.choice(len(CHOICES), p=p)) for p in probs]
        sampled = {d.key: CHOICES[i] for d, i in zip(choices, picks)}
        bits, figures = enforce(graph=graph, choices=choices, bits=sampled,
                                sram_budget=sram_budget, flash_budget=flash_budget,
                                target=target)
        key = tuple(bits[d.key] for d in choices)
        converted, _ = measure(graph=graph, bits=bits, target=target)
        value = reward(key=key, graph=converted)
        taken = [CHOICES.index(bits[d.key]) for d in choices]
        baseline = value if baseline is None else \
            options.baseline_decay * baseline + (1 - options.baseline_decay) * value
        advantage = value - baseline
        grad = -probs
        grad[np.arange(len(choices)), taken] += 1.0
        logits += options.learning_rate * advantage * grad * masks
        rank = (value, -figures.bitops, -episode)
        if best is None or rank > best[0]:
            best = (rank, bits, figures, value)
        episodes += 1
        bar.update(1)
        bar.set_postfix(reward=f"{value:.3f}", best=f"{best[3]:.3f}")
    bar.close()
    _, bits, figures, value = best
    plan = BitwidthPlan(policy="rl", options=options.to_dict(),
                        bits={k: v for k, v in bits.items()
                              if v != 8 or any(d.key == k and d.kind == "weight"
                                               for d in choices)})
    return SeedPolicyResult(plan=plan, figures=figures,
                            search_time_s=time.perf_counter() - start, rounds=episodes,
                            details={"episodes": episodes, "best_reward": value,
                                     "reward": "top-1" if y is not None else "agreement",
                                     "holdout_samples": int(x.shape[0]),
                                     "stopped_by_time_limit": episodes < options.episodes})


def _softmax(*, logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
    z = np.where(masks, logits, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(masks, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)
