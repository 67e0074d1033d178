"""Configuration and result of patch planning (frozen, JSON-serialisable).

`PatchOptions` says what the user wants (budget, MAC cap, forced split/grid);
`PatchPlan` is what the planner decided and why, with every candidate it
evaluated so a bench can draw the peak-vs-overhead front. A plan is data: the
rewrite (`apply_patch_plan`) needs only `split_op`, `row_bounds`,
`col_bounds` and `in_place` from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from tflite_quantmcu.errors import BudgetError, ConfigError
from tflite_quantmcu.patches.receptive_field import Interval, Region


@dataclass(frozen=True)
class PatchOptions:
    """What the planner may do.

    sram_budget: bytes of arena the model must fit in (None: just minimise).
    max_mac_overhead: cap on redundant MACs as a fraction of the model's MACs
        (0.1 = at most +10 %), None for no cap.
    split: force the last op of the patch stage (op index, or the key or name
        of its output tensor); grid: force (rows, cols). Either may be given alone.
    max_grid: largest rows and cols the automatic search tries.
    in_place: write row strips of the stage output in place through TFLM's
        offline memory plan: None = when it lowers the peak, True/False = always/never.
    max_file_growth: cap on the growth of the written .tflite file as a fraction
        of the original (per-patch ops and tensors cost about 200 bytes each;
        weights are shared, not copied), None for no cap.
    target: TFLite Micro build whose whole arena (head + tail) the budget and the
        objective count (`tflm_tail.TARGETS`).
    objective: 'min-macs' (default): the plan that fits the budget with the fewest
        extra MACs (without a budget: as min-memory); 'min-memory': the lowest total;
        'min-latency': the plan that fits with the fewest predicted Cortex-M4 instructions
        (`analysis.latency`, builtin ops on CMSIS-NN; without a budget: as min-memory).
    form: 'builtin' (per-patch builtin ops, runs on any TFLite Micro), 'stage-op' (the
        whole stage as one QMCU_PATCH_STAGE custom op: op data once per layer, one
        scratch buffer, in-place depthwise), or 'auto' (both searched, the lower total
        arena on `target` wins; builtin where the stage has a layer the op lacks).
    """

    sram_budget: int | None = None
    max_mac_overhead: float | None = None
    split: int | str | None = None
    grid: tuple[int, int] | None = None
    max_grid: int = 8
    in_place: bool | None = None
    max_file_growth: float | None = 0.05
    target: str = "cortex-m"
    objective: str = "min-macs"
    form: str = "builtin"

    def __post_init__(self) -> None:
        for name in ("max_mac_overhead", "max_file_growth"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float))
                                          and math.isfinite(value) and value >= 0):
                raise ConfigError(f"patch options: {name} (--{name.replace('_', '-')}) must "
                                  f"be a finite fraction >= 0, got {value!r}")


PATCH_FORMS = ("auto", "builtin", "stage-op")


@dataclass(frozen=True)
class PatchCandidate:
    """One evaluated (split, grid): its peak (exact or an estimate) and MAC overhead."""

    split_op: int
    split_tensor: str
    grid: tuple[int, int]
    peak_bytes: int
    mac_overhead: float
    exact: bool
    in_place: bool = False
    file_growth: float | None = None
    total_bytes: int | None = None
    form: str = "builtin"

    def to_json(self) -> dict:
        return {"split_op": self.split_op, "split_tensor": self.split_tensor,
                "grid": list(self.grid), "peak_bytes": self.peak_bytes,
                "total_bytes": self.total_bytes,
                "mac_overhead": self.mac_overhead, "exact": self.exact,
                "in_place": self.in_place, "file_growth": self.file_growth,
                "form": self.form}

    @classmethod
    def from_json(cls, data: dict) -> PatchCandidate:
        return cls(split_op=data["split_op"], split_tensor=data["split_tensor"],
                   grid=tuple(data["grid"]), peak_bytes=data["peak_bytes"],
                   mac_overhead=data["mac_overhead"], exact=data["exact"],
                   in_place=data["in_place"], file_growth=data["file_growth"],
                   total_bytes=data.get("total_bytes"), form=data.get("form", "builtin"))


def pareto_front(candidates: tuple[PatchCandidate, ...] | list[PatchCandidate]
                 ) -> list[PatchCandidate]:
    """Non-dominated candidates, by rising MAC overhead: each has a lower peak than
    every candidate with less (or equal) overhead before it."""
    ordered = sorted(candidates, key=lambda c: (c.mac_overhead, c.peak_bytes))
    front: list[PatchCandidate] = []
    for candidate in ordered:
        if not front or candidate.peak_bytes < front[-1].peak_bytes:
            front.append(candidate)
    return front


@dataclass(frozen=True)
class PatchPlan:
    """The chosen split and grid (or layer-based with a `reason`) and their figures.

    regions: (tensor key, per-patch regions in row-major patch order) for every
    feature map of the stage, stage input and output included; a region is
    [row_start, row_stop, col_start, col_stop) of the full tensor.
    peak_tensors: names of the tensors (and scratch buffers) live at the peak of
    the returned plan. MACs count the whole model. `*_peak` are arena heads,
    `*_total` whole arenas (head + tail) on `target`. form: 'builtin' or 'stage-op'
    (`in_place` then means in-place layers inside the op's buffer plan).
    """

    split_op: int | None
    split_tensor: str | None
    input_tensor: str | None
    grid: tuple[int, int]
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    in_place: bool
    layer_based_peak: int
    patch_based_peak: int
    macs_layer: int
    macs_patch: int
    peak_tensors: tuple[str, ...]
    layer_based_total: int = 0
    patch_based_total: int = 0
    target: str = "cortex-m"
    file_growth: float = 0.0
    regions: tuple[tuple[str, tuple[Region, ...]], ...] = ()
    reason: str | None = None
    notes: tuple[str, ...] = ()
    candidates: tuple[PatchCandidate, ...] = field(default=(), repr=False)
    form: str = "builtin"

    @property
    def is_patched(self) -> bool:
        return self.split_op is not None and self.grid != (1, 1)

    @property
    def peak_bytes(self) -> int:
        """Peak of the model this plan produces (layer-based when not patched)."""
        return self.patch_based_peak if self.is_patched else self.layer_based_peak

    @property
    def total_bytes(self) -> int:
        """Whole arena of the model this plan produces, on `target`."""
        return self.patch_based_total if self.is_patched else self.layer_based_total

    @property
    def redundant_macs(self) -> int:
        return self.macs_patch - self.macs_layer

    @property
    def mac_overhead(self) -> float:
        return self.redundant_macs / self.macs_layer if self.macs_layer else 0.0

    def to_json(self) -> dict:
        return {
            "split_op": self.split_op, "split_tensor": self.split_tensor,
            "input_tensor": self.input_tensor, "grid": list(self.grid),
            "row_bounds": list(self.row_bounds), "col_bounds": list(self.col_bounds),
            "in_place": self.in_place, "layer_based_peak": self.layer_based_peak,
            "patch_based_peak": self.patch_based_peak,
            "layer_based_total": self.layer_based_total,
            "patch_based_total": self.patch_based_total, "target": self.target,
            "macs_layer": self.macs_layer,
            "macs_patch": self.macs_patch, "redundant_macs": self.redundant_macs,
            "file_growth": self.file_growth,
            "mac_overhead": self.mac_overhead, "peak_tensors": list(self.peak_tensors),
            "regions": {key: [r.to_json() for r in regions] for key, regions in self.regions},
            "reason": self.reason, "notes": list(self.notes),
            "candidates": [c.to_json() for c in self.candidates], "form": self.form,
        }

    @classmethod
    def from_json(cls, data: dict) -> PatchPlan:
        """The plan `to_json` wrote (e.g. edited by a user) for `apply_patch_plan` to replay."""
        regions = tuple((key, tuple(_region(r) for r in rows))
                        for key, rows in data.get("regions", {}).items())
        return cls(split_op=data["split_op"], split_tensor=data["split_tensor"],
                   input_tensor=data["input_tensor"], grid=tuple(data["grid"]),
                   row_bounds=tuple(data["row_bounds"]), col_bounds=tuple(data["col_bounds"]),
                   in_place=data["in_place"], layer_based_peak=data["layer_based_peak"],
                   patch_based_peak=data["patch_based_peak"], macs_layer=data["macs_layer"],
                   macs_patch=data["macs_patch"], peak_tensors=tuple(data["peak_tensors"]),
                   layer_based_total=data.get("layer_based_total", 0),
                   patch_based_total=data.get("patch_based_total", 0),
                   target=data.get("target", "cortex-m"),
                   file_growth=data.get("file_growth", 0.0), regions=regions,
                   reason=data.get("reason"), notes=tuple(data.get("notes", ())),
                   form=data.get("form", "builtin"),
                   candidates=tuple(PatchCandidate.from_json(c)
                                    for c in data.get("candidates", ())))


def _region(values: list[int]) -> Region:
    return Region(Interval(values[0], values[1]), Interval(values[2], values[3]))


class PatchBudgetError(BudgetError):
    """The SRAM budget cannot be met; carries the best achievable total and its tensors."""

    def __init__(self, message: str, *, best_peak: int, peak_tensors: tuple[str, ...],
                 budget: int) -> None:
        super().__init__(message)
        self.best_peak = best_peak
        self.peak_tensors = peak_tensors
        self.budget = budget
