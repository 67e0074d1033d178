"""`report.json`: the figures of a conversion, as plain data.

Everything here is deterministic except the fields ending in `_time_s`.
Figures: `layer_based` is the input model, `patch_based` the all-int8 patched
model, `final` the written model (sub-byte feature maps under --policy quantmcu).
`arena_bytes` are TFLite Micro's whole arena (head + tail) on `target`; `fits`
says whether the final arena fits the SRAM budget (and, if given, the file the flash).
`memory_fit` (quantmcu): the total arena of the int8 patch plan (`int8_total`), of the best
int8 plan of any candidate (`patch_int8_total`) and of the final plan, the moves that lowered
maps for memory, every buffer live at the final peak with its width, bytes and reason
(`bitops`: VDQS's pick; `memory`: lowered to fit), and the patch candidates screened.
`final_layers` are the per-op figures of the written model; the planner's candidates
are in patch_candidates.json beside it.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from tflite_quantmcu import __version__

if TYPE_CHECKING:
    from tflite_quantmcu.pipeline import Conversion


def conversion_report(*, conv: Conversion) -> dict:
    opts = conv.options
    plan = conv.patch_plan
    patched = conv.patched_analysis
    final = conv.final
    report = {
        "tool": {"name": "tflite-quantmcu", "version": __version__},
        "model": opts.model_path.name,
        "output_model": conv.model_file,
        "policy": opts.policy,
        "budgets": {"sram_bytes": opts.sram_budget, "flash_bytes": opts.flash_budget},
        "target": opts.target,
        "fits": _fits(conv=conv),
        "arena_bytes": {"layer_based": conv.layer_based.arena.to_json(),
                        "patch_based": patched.arena.to_json(),
                        "final": final.arena.to_json()},
        "arena_unmodelled_ops": list(final.arena.unmodelled),
        "peak_tensors": {"layer_based": list(conv.layer_based.peak_tensors),
                         "final": list(final.peak_tensors)},
        "macs": {"layer_based": conv.layer_based.macs, "patch_based": patched.macs,
                 "final": final.macs},
        "bitops": {"layer_based": conv.layer_based.bitops, "patch_based": patched.bitops,
                   "final": final.bitops},
        "flash_bytes": {"original": len(conv.original_bytes), "final": len(conv.model_bytes)},
        "predicted_instructions": conv.latency,
        "tflm_wheel_arena_bytes": dict(conv.tflm_arenas),
        "patch_plan": {k: v for k, v in plan.to_json().items() if k != "candidates"},
        "patch_candidates": f"{len(plan.candidates)} candidates in patch_candidates.json",
        "final_layers": [asdict(layer) for layer in final.layers],
        "planner_time_s": round(conv.planner_time_s, 3),
        "notes": list(conv.notes),
    }
    if conv.bitwidth_plan is not None:
        report["bitwidths"] = dict(sorted(conv.bitwidth_plan.bits.items()))
    if conv.search is not None:
        search = conv.search.to_dict()
        report["patch_classes"] = {key: search[key] for key in
                                   ("patch_classes", "branch_classes", "class_counts")}
        report["tail"] = search.get("tail")
        report["branch_limits"] = search["branch_limits"]
        report["calibration_samples"] = search["num_samples"]
        report["holdout_samples"] = sum(int(b.x.shape[0]) for b in conv.heldout)
        report["statistics_time_s"] = round(search["statistics_time_s"], 3)
        report["search_time_s"] = round(search["search_time_s"], 3)
    if conv.memory_fit is not None:   # quantmcu: int8 plan vs final, maps at the peak
        report["memory_fit"] = {**conv.memory_fit, "binds": conv.memory_binds,
                                "reasons": dict(sorted(conv.bitwidth_plan.reasons.items())),
                                "screened_candidates": list(conv.joint_candidates)}
    if getattr(conv, "seed_search", None) is not None:
        report["seed_search"] = conv.seed_search.to_dict()
        report["search_time_s"] = round(conv.seed_search.search_time_s, 3)
    if conv.accuracy:
        report["accuracy"] = dict(conv.accuracy)
    if conv.bitwidth_plan is not None and conv.bitwidth_plan.guard is not None:
        report["accuracy_guard"] = dict(conv.bitwidth_plan.guard)
    if conv.accuracy_drop is not None:
        report["accuracy_drop"] = dict(conv.accuracy_drop)
    if conv.bitwidth_plan is not None and conv.bitwidth_plan.ranges:
        report["subbyte_ranges"] = {k: r.to_dict()
                                    for k, r in sorted(conv.bitwidth_plan.ranges.items())}
    if opts.input_normalization is not None:   # --input-mean/--input-std
        report["input_normalization"] = opts.input_normalization.to_dict()
    return report


def _fits(*, conv: Conversion) -> bool:
    opts = conv.options
    fits_sram = conv.final.arena.total <= opts.sram_budget
    fits_flash = opts.flash_budget is None or len(conv.model_bytes) <= opts.flash_budget
    return fits_sram and fits_flash
