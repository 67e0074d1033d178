"""The convert pipeline's entry to the layer-based seed policies (``rusci``, ``rl``).

Both papers quantize the layer-based network, so under these policies the patch
planner keeps layers (:func:`layer_based_plan`) and the budgets are met by bit widths
alone. ``options`` is the pipeline's ``ConvertOptions`` (read by attribute).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.patches.plan import PatchOptions, PatchPlan
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.quant.calibration_data import data_batches
from tflite_quantmcu.quant.rl_policy import search_rl
from tflite_quantmcu.quant.rusci_policy import SeedPolicyResult, search_rusci

LAYER_POLICIES = ("rusci", "rl")
_NO_BUDGET = 1 << 62


def layer_based_plan(*, graph: Graph, options) -> PatchPlan:
    """The planner's layer-based plan (no patches), with the reason."""
    plan = plan_patches(graph=graph, options=PatchOptions(sram_budget=_NO_BUDGET,
                                                          target=options.target))
    return dataclasses.replace(plan, reason=f"--policy {options.policy} keeps the model "
                               "layer-based (its paper cuts bit widths, not patches)")


def holdout_split(*, graph: Graph, source, holdout: int,
                  limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The last ``holdout`` samples of the calibration data (and their labels, if all
    batches have them)."""
    xs, ys = [], []
    for batch in data_batches(source=source, graph=graph, limit=limit, progress=False):
        xs.append(batch.x)
        ys.append(batch.y)
    if not xs:
        raise ConfigError(f"calibration data {source}: no samples for the RL reward")
    x = np.concatenate(xs)[-holdout:]
    y = None if any(v is None for v in ys) else np.concatenate(ys)[-holdout:]
    return x, y


def search_seed_policy(*, graph: Graph, options) -> SeedPolicyResult:
    """rusci or rl on the (layer-based) graph under the options' budgets."""
    if options.policy == "rusci":
        return search_rusci(graph=graph, sram_budget=options.sram_budget,
                            flash_budget=options.flash_budget, target=options.target)
    if options.calibration is None:
        raise ConfigError("--policy rl needs --calibration FILE (its reward is top-1 on a "
                          "held-out split of it, or agreement with the int8 model without "
                          "labels)")
    x, y = holdout_split(graph=graph, source=str(options.calibration),
                         holdout=options.rl.holdout, limit=options.calibration_limit)
    return search_rl(graph=graph, x=x, y=y, sram_budget=options.sram_budget,
                     flash_budget=options.flash_budget, target=options.target,
                     options=options.rl, progress=options.progress)
