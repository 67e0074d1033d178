"""The PNG figures beside report.md: memory per layer, bit widths per branch, the patch grid.

Drawn with matplotlib's object API (no pyplot, no global backend switch); PNG metadata
is left out so the same conversion gives the same bytes with the same matplotlib.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tflite_quantmcu.analysis.model_analysis import ModelAnalysis
    from tflite_quantmcu.pipeline import Conversion
    from tflite_quantmcu.patches.plan import PatchPlan
    from tflite_quantmcu.quant.plan import BitwidthPlan

BIT_COLOURS = {8: "#4c72b0", 4: "#dd8452", 2: "#c44e52"}


def report_figures(*, conv: Conversion) -> dict[str, bytes]:
    """File name -> PNG bytes for the figures this conversion has."""
    figures = {"memory_per_layer.png": memory_per_layer_png(
        before=conv.layer_based, after=conv.final, budget=conv.options.sram_budget)}
    if conv.patch_plan.is_patched:
        shape = tuple(conv.graph.main.tensors[conv.patch_plan.input_tensor].shape)
        figures["patch_grid.png"] = patch_grid_png(plan=conv.patch_plan, input_shape=shape)
    if conv.bitwidth_plan is not None and conv.bitwidth_plan.branches:
        figures["bitwidths.png"] = bitwidths_png(plan=conv.bitwidth_plan)
    return figures


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def memory_per_layer_png(*, before: ModelAnalysis, after: ModelAnalysis, budget: int) -> bytes:
    """Arena head in use after each op (bars) and the whole arena (line), before and after."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.subplots(2, 1)
    for ax, analysis, title in ((axes[0], before, "input model (layer-based)"),
                                (axes[1], after, "converted model")):
        ends = [layer.arena_end_bytes / 1024 for layer in analysis.layers]
        ax.bar(range(len(ends)), ends, width=1.0, color="#4c72b0",
               label="arena head in use at op (KiB)")
        ax.axhline(analysis.arena.total / 1024, color="#55a868",
                   label=f"whole arena {analysis.arena.total / 1024:.1f} KiB (head + tail)")
        ax.axhline(budget / 1024, color="#c44e52", linestyle="--",
                   label=f"SRAM budget {budget / 1024:.1f} KiB")
        ax.set_title(title)
        ax.set_xlabel("op index")
        ax.set_ylabel("KiB")
        ax.legend(loc="upper right", fontsize="small")
    return _png(figure)


def patch_grid_png(*, plan: PatchPlan, input_shape: tuple[int, ...]) -> bytes:
    """The input of the patch stage with each patch's input region (halos overlap)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = input_shape[1], input_shape[2]
    figure = Figure(figsize=(5, 5 * height / max(width, 1) + 0.6), layout="constrained")
    ax = figure.subplots()
    regions = dict(plan.regions).get(plan.input_tensor, ())
    for k, region in enumerate(regions):
        colour = f"C{k % 10}"
        ax.add_patch(Rectangle((region.cols.start, region.rows.start), region.cols.size,
                               region.rows.size, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(region.cols.start + 1, region.rows.start + 1, str(k), color=colour,
                va="top", fontsize="small")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_title(f"{plan.grid[0]}x{plan.grid[1]} patches over the {height}x{width} input "
                 f"of the patch stage")
    return _png(figure)


def bitwidths_png(*, plan: BitwidthPlan) -> bytes:
    """One row per branch, one cell per feature map, coloured by its bit width."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = plan.branches
    columns = max(len(branch.final_bits) for branch in rows)
    figure = Figure(figsize=(max(4.0, 0.5 * columns + 3), 0.3 * len(rows) + 1.5),
                    layout="constrained")
    ax = figure.subplots()
    for r, branch in enumerate(rows):
        for c, bits in enumerate(branch.final_bits):
            ax.add_patch(_cell(r=r, c=c, colour=BIT_COLOURS[bits]))
    ax.set_xlim(0, columns)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([r + 0.5 for r in range(len(rows))],
                  [f"{b.name}{' (outlier)' if b.outlier_class else ''}" for b in rows],
                  fontsize="x-small")
    ax.set_xticks([c + 0.5 for c in range(columns)], [str(c) for c in range(columns)])
    ax.set_xlabel("feature map in the branch (input side first)")
    ax.legend(handles=[Patch(color=BIT_COLOURS[b], label=f"{b}-bit") for b in (8, 4, 2)],
              loc="upper right", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title("feature-map bit widths per branch")
    return _png(figure)


def _cell(*, r: int, c: int, colour: str):
    from matplotlib.patches import Rectangle

    return Rectangle((c, r), 1, 1, facecolor=colour, edgecolor="white")
