"""`report.json`: the figures of a conversion, as plain data.

Everything here is deterministic except the fields ending in `_time_s`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tflite_quantmcu.convert import Conversion


def conversion_report(*, conv: Conversion) -> dict:
    opts = conv.options
    plan = conv.patch_plan
    patched = conv.final
    return {
        "model": opts.model_path.name,
        "policy": opts.policy,
        "budgets": {"sram_bytes": opts.sram_budget, "flash_bytes": opts.flash_budget},
        "peak_sram_bytes": {"layer_based": conv.layer_based.peak_sram_bytes,
                            "patch_based": patched.peak_sram_bytes,
                            "final": patched.peak_sram_bytes},
        "peak_tensors": {"layer_based": list(conv.layer_based.peak_tensors),
                         "final": list(patched.peak_tensors)},
        "macs": {"layer_based": conv.layer_based.macs, "patch_based": patched.macs},
        "bitops": {"layer_based": conv.layer_based.bitops, "patch_based": patched.bitops,
                   "final": patched.bitops},
        "flash_bytes": {"original": len(conv.original_bytes), "final": len(conv.model_bytes)},
        "tflm_arena_head_bytes": dict(conv.tflm_heads),
        "patch_plan": plan.to_json(),
        "planner_time_s": round(conv.planner_time_s, 3),
        "notes": list(conv.notes),
    }
