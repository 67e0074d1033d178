"""`report.md`: the conversion explained for a person, beside report.json and the PNGs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tflite_quantmcu.sizes import format_size

if TYPE_CHECKING:
    from tflite_quantmcu.pipeline import Conversion

NAME_WIDTH = 48


def short_name(name: str, *, width: int = NAME_WIDTH) -> str:
    """Long fused tensor names shortened in the middle: 'head...tail'."""
    if len(name) <= width:
        return name
    keep = (width - 3) // 2
    return f"{name[:keep]}...{name[-(width - 3 - keep):]}"


def percent(value: float) -> str:
    """A signed percentage with one decimal: '+2.2 %', '-0.4 %'."""
    return f"{value * 100:+.1f} %"


def conversion_markdown(*, conv: Conversion, figures: tuple[str, ...]) -> str:
    opts = conv.options
    before, after = conv.layer_based.arena, conv.final.arena
    verdict = "fits" if _fits(conv) else "does NOT fit"
    lines = [
        f"# {conv.model_file}",
        "",
        f"Converted from `{opts.model_path.name}` with policy `{opts.policy}` for "
        f"{opts.target}: the model {verdict} the budget.",
        "",
        "| | input model | converted |",
        "|---|---:|---:|",
        f"| whole arena (head + tail) | {_bytes(before.total)} | {_bytes(after.total)} |",
        f"| arena head (activations, scratch) | {_bytes(before.head)} | {_bytes(after.head)} |",
        f"| arena tail (persistent op data) | {_bytes(before.tail)} | {_bytes(after.tail)} |",
        f"| SRAM budget | | {_bytes(opts.sram_budget)} |",
        f"| model file (flash) | {_bytes(len(conv.original_bytes))} | "
        f"{_bytes(len(conv.model_bytes))} |",
        f"| MACs | {conv.layer_based.macs:,} | {conv.final.macs:,} |",
        f"| BitOPs | {conv.layer_based.bitops:,} | {conv.final.bitops:,} |",
        "",
    ] + _latency_line(conv)
    if after.lower_bound:
        lines += [f"The arena is a lower bound: what {', '.join(after.unmodelled)} allocate "
                  "is not modelled; measure `arena_used_bytes()` once.", ""]
    lines += _patch_section(conv) + _bitwidth_section(conv) + _memory_section(conv)
    lines += _accuracy_section(conv)
    lines += [f"![{name}]({name})" for name in figures]
    if figures:
        lines.append("")
    lines += [f"- {note}" for note in conv.notes]
    return "\n".join(lines).rstrip() + "\n"


def _latency_line(conv: Conversion) -> list[str]:
    """One line: predicted Cortex-M4 instructions per inference (latency model)."""
    latency = conv.latency
    if latency is None:
        return []
    mega = {k: latency[k]["instructions"] / 1e6 for k in ("layer_based", "patch_based", "final")}
    choices = latency["kernels"]["choices"]
    return [f"Predicted instructions per inference on {latency['target']} (TFLite Micro + "
            f"CMSIS-NN, latency model): layer-based {mega['layer_based']:.1f} M, patch-based "
            f"{mega['patch_based']:.1f} M, converted {mega['final']:.1f} M (`--kernels "
            f"{latency['kernels']['chosen']}`; "
            + ", ".join(f"{mode}: {c['instructions'] / 1e6:.1f} M, arena "
                        f"{c['arena_total_bytes']:,} B" for mode, c in choices.items())
            + ").", ""]


def _bytes(value: int) -> str:
    return f"{value:,} B ({format_size(value)})"


def _fits(conv: Conversion) -> bool:
    flash = conv.options.flash_budget
    return conv.final.arena.total <= conv.options.sram_budget and \
        (flash is None or len(conv.model_bytes) <= flash)


def _patch_section(conv: Conversion) -> list[str]:
    plan = conv.patch_plan
    if not plan.is_patched:
        return ["## Patches", "", f"None: {plan.reason or 'the layer-based model is kept'}.", ""]
    return [
        "## Patches",
        "",
        f"Ops #0..#{plan.split_op} (up to `{short_name(plan.split_tensor)}`) run patch by "
        f"patch on a {plan.grid[0]}x{plan.grid[1]} grid; overlapping halos recompute "
        f"{plan.redundant_macs:,} MACs ({percent(plan.mac_overhead)}). The rest runs layer by "
        "layer.",
        "",
    ]


def _bitwidth_section(conv: Conversion) -> list[str]:
    plan = conv.bitwidth_plan
    if plan is None:
        return []
    counts = {b: sum(1 for v in plan.bits.values() if v == b) for b in (8, 4, 2)}
    lines = ["## Feature-map bit widths", "",
             f"{counts[8]} maps at 8 bits, {counts[4]} at 4, {counts[2]} at 2 "
             f"(policy `{plan.policy}`)."]
    if conv.search is not None:
        classes = conv.search.to_dict()["class_counts"]
        lines.append(f"VDPC found {classes['outlier']} branches with outliers (kept 8-bit) and "
                     f"{classes['non_outlier']} without; VDQS searched "
                     f"{conv.search.search_time_s:.2f} s.")
    return lines + [""]


def _memory_section(conv: Conversion) -> list[str]:
    fit = conv.memory_fit
    if fit is None:
        return []
    lines = ["## Memory at the peak", "",
             f"Whole arena on {fit['target']}: this patch plan all int8 "
             f"{_bytes(fit['int8_total'])}, best int8 patch plan "
             f"{_bytes(fit['patch_int8_total'])}, final {_bytes(conv.final.arena.total)}; "
             f"{len(fit['moves'])} map(s) lowered for memory.", "",
             "| buffer live at the peak | bits | bytes | why |", "|---|---:|---:|---|"]
    lines += [f"| `{short_name(m['name'])}` | {m['bits'] if m['bits'] is not None else '-'} | "
              f"{m['bytes']:,} | {m['reason'] or ('int8' if m['bits'] == 8 else '-')} |"
              for m in fit["peak_maps"]]
    return lines + [""]


def _accuracy_section(conv: Conversion) -> list[str]:
    if not conv.accuracy:
        return []
    int8, final = conv.accuracy["int8"], conv.accuracy["final"]
    return ["## Accuracy", "",
            f"Top-1 on `{conv.options.eval_data.name}`: int8 {int8 * 100:.2f} %, converted "
            f"{final * 100:.2f} % ({(final - int8) * 100:+.2f} pt).", ""]
