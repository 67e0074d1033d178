"""QuantMCU where memory binds: lower the feature maps live at the arena peak to 4 or 2 bits
until the whole arena (head + tail, ``arena_bytes`` on the target) fits the SRAM budget.

    fit = fit_to_budget(problem=FitProblem(...), options=FitOptions(budget=160 * 1024))
    fit.plan          # one BitwidthPlan; fit.plan.reasons: key -> "bitops" | "memory"
    fit.record        # JSON-ready: int8 total, final total, every step, the maps at the peak

The search (:func:`memory_path`) is greedy and exact: starting from a plan, each step converts
the patched graph with the plan (``apply_bitwidth_plan``: packed tensors, QMCU ops, folded
zero-point PADs) and plans its arena like TFLite Micro; the candidate moves are the eligible
maps live at a peak op (every op whose live buffers reach the arena head; or feeding a PAD
whose output is), one step down (8 -> 4, 4 -> 2)
within the map's candidates; each move is evaluated exactly (total arena after it) and the one
with the smallest accuracy cost per byte of total saved is taken (moves that save no total
bytes, which fragmentation can cause, are taken only when no move does, by cost per byte of
the map itself). When no peak move lowers the total, every other eligible map is tried too: a map
turned sub-byte also turns its producer and readers into QMCU ops, whose requantization is a
constant in flash instead of TFLM's per-channel arrays in the arena tail, so a map away from
the peak can lower the total. The path ends when the total fits or no move is left.

**Stage-op form** (``patch_plan.form == "stage-op"``): the plan is applied in that form
(:func:`convert_plan`: the stage maps' widths inside ``QMCU_PATCH_STAGE``, format version 2;
the maps after it as QMCU ops); the maps keep their builtin-form names ``p{i}_{j}/{k}``. The
op keeps one scratch slot per stage map, as large as the map's widest patch part, so when the
op's scratch is live at the peak a move lowers all eligible parts of one stage map together
(``PathStep.also``); outlier-branch parts stay 8-bit and keep their slot at 8-bit size.

**Eligible maps**: those ``subbyte_candidates`` allows (producer and readers have a QMCU form:
inside the patch stage and after it), never a map of a VDPC outlier-class branch (those stay
8-bit, as the paper says) and never one whose width the options exclude.

**Accuracy cost** of a map at b bits: the mean squared difference of the int8 model's output
codes when that map alone is quantized to b bits with its chosen range (the range selection's
range, :mod:`range_selection`), simulated in the int8 graph on the first held-out calibration
samples (:class:`range_selection.OutputSimulator`; a patch map only in its patch region). This
is the measured form of VDQS's accuracy term: at the default k = 16 bins VDQS's entropy term is
about 0 for every 4-bit map, so it cannot rank maps against each other.

**Bound** (:func:`fit_to_budget`): two paths run, one from the (guarded) VDQS plan and one from
the all-int8 plan (memory maps only); the first fitting plan of each is judged exactly on the
held-out samples (:mod:`accuracy_guard`; the convert pipeline uses its stricter judge there:
with labels, the share of samples the int8 model gets right and the plan wrong, gains not
netted out). Of those within the bound the smaller drop wins, then fewer BitOPs. If neither
holds the bound, a :class:`MemoryFitError` states, for patch-int8 and for quantmcu (the smaller
over both paths), the smallest total within the bound and at all, and which maps the budget would
need cut.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.analysis.memory import plan_memory, tensor_bytes
from tflite_quantmcu.analysis.model_analysis import analyze_model, arena_bytes
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.errors import BudgetError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.patches.plan import PatchPlan
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.patches.stage_op import PATCH_NAMESPACE
from tflite_quantmcu.qmcu_stage_options import STAGE_OP
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.range_selection import OutputSimulator
from tflite_quantmcu.quant.ranges import SubbyteRange, full_range, int8_lookup

MEMORY, BITOPS = "memory", "bitops"


class MemoryFitError(BudgetError):
    """No plan fits the total-arena budget within the accuracy bound (the message says what
    each policy reaches and which maps it would have to cut)."""


@dataclass(frozen=True)
class FitOptions:
    """budget: bytes of total arena on ``target``; max_drop_pts: the accuracy bound (None: not
    checked); candidates: widths a map may take."""

    budget: int
    target: str = "cortex-m"
    max_drop_pts: float | None = 1.0
    candidates: tuple[int, ...] = (8, 4, 2)


@dataclass(frozen=True)
class FitProblem:
    """What the search needs: the int8 graph, its patch plan and patched graph, the ranges per
    (key, bits) (the range selection's), the outlier-class branch names, and the held-out
    samples' costs and drop (``cost``: key, bits, range -> accuracy cost; ``drop``: plan ->
    top-1 drop in points, None when no held-out sample exists)."""

    graph: Graph
    patch_plan: PatchPlan
    patched_graph: Graph
    ranges: Mapping[tuple[str, int], SubbyteRange]
    outlier_branches: tuple[str, ...]
    cost: Callable[[str, int, SubbyteRange], float]
    drop: Callable[[BitwidthPlan], float] | None = None


@dataclass(frozen=True)
class PathStep:
    """One move of the path: the map, its widths, the total arena after it, its cost;
    ``also``: the other patches' parts of the same stage map moved with it (stage-op form)."""

    key: str
    from_bits: int
    to_bits: int
    total: int
    cost: float
    also: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MemoryPath:
    """A start plan and the moves made from it; ``totals[i]``: total after i moves."""

    start: BitwidthPlan
    start_total: int
    steps: tuple[PathStep, ...]

    @property
    def totals(self) -> tuple[int, ...]:
        return (self.start_total,) + tuple(s.total for s in self.steps)

    def plan_after(self, *, moves: int, ranges: Mapping[tuple[str, int], SubbyteRange]
                   ) -> BitwidthPlan:
        bits = dict(self.start.bits)
        plan_ranges = dict(self.start.ranges)
        reasons = dict(self.start.reasons)
        for step in self.steps[:moves]:
            for key in (step.key,) + step.also:
                bits[key] = step.to_bits
                plan_ranges[key] = ranges[(key, step.to_bits)]
                reasons[key] = MEMORY
        return dataclasses.replace(self.start, bits=bits, ranges=plan_ranges, reasons=reasons)

    def first_fitting(self, *, budget: int) -> int | None:
        return next((i for i, t in enumerate(self.totals) if t <= budget), None)


@dataclass(frozen=True)
class FitResult:
    plan: BitwidthPlan
    record: dict


def converted_total(*, patched_graph: Graph, plan: BitwidthPlan, target: str) -> int:
    """Total arena of the patched graph (builtin form) with the plan applied."""
    return arena_bytes(graph=apply_bitwidth_plan(graph=patched_graph, plan=plan),
                       target=target).total


def convert_plan(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph,
                 plan: BitwidthPlan) -> Graph:
    """The model the plan gives in the patch plan's form. ``patched_graph`` is the builtin
    form (its per-patch keys ``p{i}_{j}/{k}`` name the stage maps in both forms); in the
    stage-op form the stage maps' widths go inside ``QMCU_PATCH_STAGE`` (format version 2)
    and the other maps become QMCU ops as in the builtin form."""
    if patch_plan.form != "stage-op" or not patch_plan.is_patched:
        return apply_bitwidth_plan(graph=patched_graph, plan=plan)
    stage_keys = {k for k in plan.bits if PATCH_NAMESPACE.match(k)}
    staged = apply_patch_plan(graph=graph, plan=patch_plan,
                              bitwidths=plan if stage_keys else None)
    rest = dataclasses.replace(plan, bits={k: v for k, v in plan.bits.items()
                                           if k not in stage_keys},
                               ranges={k: v for k, v in plan.ranges.items()
                                       if k not in stage_keys})
    return apply_bitwidth_plan(graph=staged, plan=rest)


def problem_graph(*, problem: FitProblem, plan: BitwidthPlan) -> Graph:
    """The problem's model with the plan applied, in its patch plan's form."""
    return convert_plan(graph=problem.graph, patch_plan=problem.patch_plan,
                        patched_graph=problem.patched_graph, plan=plan)


def problem_total(*, problem: FitProblem, plan: BitwidthPlan, target: str) -> int:
    """Total arena of :func:`problem_graph` on ``target``."""
    return arena_bytes(graph=problem_graph(problem=problem, plan=plan), target=target).total


def eligible_maps(*, problem: FitProblem, options: FitOptions) -> dict[str, tuple[int, ...]]:
    """Map key -> widths it may take (descending, 8 first): QMCU-covered maps outside the
    outlier-class branches, with a range for every sub-byte width."""
    outlier_prefixes = tuple(f"{name}/" for name in problem.outlier_branches)
    out = {}
    for key, allowed in subbyte_candidates(graph=problem.patched_graph).items():
        if key.startswith(outlier_prefixes):
            continue
        widths = tuple(b for b in sorted(set(allowed) | {8}, reverse=True)
                       if b in options.candidates and (b == 8 or (key, b) in problem.ranges))
        if len(widths) > 1:
            out[key] = widths
    return out


def memory_path(*, problem: FitProblem, options: FitOptions, start: BitwidthPlan) -> MemoryPath:
    """The greedy path from ``start`` (module doc)."""
    eligible = eligible_maps(problem=problem, options=options)
    pads = _pad_sources(graph=problem.patched_graph)
    groups = _stage_groups(problem=problem, eligible=eligible)
    plan, steps = start, []
    converted = problem_graph(problem=problem, plan=plan)
    total = arena_bytes(graph=converted, target=options.target).total
    start_total = total
    while total > options.budget:
        moves = _peak_moves(converted=converted, plan=plan, eligible=eligible, pads=pads,
                            groups=groups)
        best = _best_move(problem=problem, options=options, plan=plan, moves=moves, total=total)
        if best is None or best[2] >= total:
            others = [m for m in _all_moves(plan=plan, eligible=eligible, groups=groups)
                      if m not in moves]
            wider = _best_move(problem=problem, options=options, plan=plan, moves=others,
                               total=total)
            if wider is not None and wider[2] < total:
                best = wider
        if best is None:
            break
        (key, also), bits, new_total, cost, plan = best
        steps.append(PathStep(key=key, from_bits=int(plan_bits(start, steps, key)),
                              to_bits=bits, total=new_total, cost=cost, also=also))
        converted = problem_graph(problem=problem, plan=plan)
        total = new_total
    return MemoryPath(start=start, start_total=start_total, steps=tuple(steps))


def plan_bits(start: BitwidthPlan, steps: list[PathStep], key: str) -> int:
    """The width of ``key`` before the move being recorded (start plan, then earlier steps)."""
    bits = start.bits.get(key, 8)
    for step in steps:
        if key in (step.key,) + step.also:
            bits = step.to_bits
    return bits


def _pad_sources(*, graph: Graph) -> dict[str, str]:
    """PAD output key -> the map it pads (a folded PAD vanishes when its map goes sub-byte)."""
    sub = graph.main
    return {op.outputs[0]: op.inputs[0] for op in sub.operators if op.type == "PAD"}


def _stage_groups(*, problem: FitProblem,
                  eligible: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str, ...]]:
    """Stage-op form: stage map (the ``k`` of ``p{i}_{j}/{k}``) -> its eligible per-patch keys.
    The stage op keeps one slot per map, as large as the largest patch part at its width, so
    a slot shrinks only when every patch's part does: a move lowers them together. Empty in
    the builtin form (each per-patch map is its own arena buffer)."""
    if problem.patch_plan.form != "stage-op" or not problem.patch_plan.is_patched:
        return {}
    groups: dict[str, list[str]] = {}
    for key in eligible:
        if PATCH_NAMESPACE.match(key):
            groups.setdefault(key.split("/", 1)[1], []).append(key)
    return {name: tuple(sorted(keys)) for name, keys in groups.items()}


Move = tuple[tuple[str, tuple[str, ...]], int]   # ((key, also), to_bits)


def _group_move(*, keys: tuple[str, ...], plan: BitwidthPlan,
                eligible: Mapping[str, tuple[int, ...]]) -> Move | None:
    """The move of a stage map's widest parts one step down (all its parts share widths)."""
    widest = max(plan.bits.get(k, 8) for k in keys)
    members = tuple(k for k in keys if plan.bits.get(k, 8) == widest)
    lower = [b for b in eligible[members[0]] if b < widest]
    return ((members[0], members[1:]), lower[0]) if lower else None


def _peak_moves(*, converted: Graph, plan: BitwidthPlan, eligible: Mapping[str, tuple[int, ...]],
                pads: Mapping[str, str], groups: Mapping[str, tuple[str, ...]] | None = None
                ) -> list[Move]:
    """Moves of the eligible maps live at a peak op of the converted graph (every op whose
    live buffers reach the arena's end: with TFLM's placement a map below the buffer that
    ends highest can hold it up); in the stage-op form, when the stage op's scratch is live
    there, every stage map's move (:func:`_stage_groups`)."""
    live = peak_keys(graph=converted)
    keys = dict.fromkeys(pads.get(k, k) for k in live)
    moves: list[Move] = []
    for key in keys:
        widths = eligible.get(key, ())
        lower = [b for b in widths if b < plan.bits.get(key, 8)]
        if lower:
            moves.append(((key, ()), lower[0]))
    if groups and _stage_scratch_live(converted=converted, live=live):
        moves += [m for m in (_group_move(keys=g, plan=plan, eligible=eligible)
                              for g in groups.values()) if m is not None]
    return moves


def _stage_scratch_live(*, converted: Graph, live: list[str]) -> bool:
    """Whether a scratch buffer of the stage op (QMCU_PATCH_STAGE) is among ``live``."""
    ops = converted.main.operators
    stage = {f"scratch:#{i}." for i, op in enumerate(ops)
             if op.opcode.custom == STAGE_OP}
    return any(k.startswith(tuple(stage)) for k in live) if stage else False


def _all_moves(*, plan: BitwidthPlan, eligible: Mapping[str, tuple[int, ...]],
               groups: Mapping[str, tuple[str, ...]] | None = None) -> list[Move]:
    """Moves of every eligible map not yet at its lowest width (stage maps of the stage-op
    form as groups)."""
    grouped = {k for g in (groups or {}).values() for k in g}
    moves: list[Move] = []
    for key, widths in eligible.items():
        if key in grouped:
            continue
        lower = [b for b in widths if b < plan.bits.get(key, 8)]
        if lower:
            moves.append(((key, ()), lower[0]))
    moves += [m for m in (_group_move(keys=g, plan=plan, eligible=eligible)
                          for g in (groups or {}).values()) if m is not None]
    return moves


def peak_keys(*, graph: Graph) -> list[str]:
    """Keys of the buffers live at any op whose live buffers reach the arena head."""
    memory = plan_memory(graph=graph, scratch=scratch_requests)
    num_ops = len(graph.main.operators)
    ends = [memory.arena_end_during_op(i) for i in range(num_ops)]
    keys = [b.key for i in range(num_ops) if ends[i] == memory.peak_bytes
            for b in memory.live_during_op(i)]
    return list(dict.fromkeys(keys))


def _best_move(*, problem: FitProblem, options: FitOptions, plan: BitwidthPlan,
               moves: list[Move], total: int):
    """The move with the smallest cost per byte of total saved (module doc), or None."""
    tensors = problem.patched_graph.main.tensors
    ranked = []
    for (key, also), bits in moves:
        members = (key,) + also
        new_bits, new_ranges, cost, own = dict(plan.bits), dict(plan.ranges), 0.0, 0
        reasons = dict(plan.reasons)
        for k in members:
            subbyte = problem.ranges[(k, bits)]
            old = plan.bits.get(k, 8)
            new_bits[k], new_ranges[k], reasons[k] = bits, subbyte, MEMORY
            cost += problem.cost(k, bits, subbyte) - (
                0.0 if old == 8 else problem.cost(k, old, problem.ranges[(k, old)]))
            own += tensor_bytes(tensor=tensors[k], bits=old) - tensor_bytes(tensor=tensors[k],
                                                                           bits=bits)
        moved = dataclasses.replace(plan, bits=new_bits, ranges=new_ranges, reasons=reasons)
        new_total = problem_total(problem=problem, plan=moved, target=options.target)
        saved = total - new_total
        ranked.append(((0 if saved > 0 else 1, max(cost, 0.0) / max(saved if saved > 0 else own,
                                                                    1), key),
                       ((key, also), bits, new_total, cost, moved)))
    return min(ranked)[1] if ranked else None


def fit_to_budget(*, problem: FitProblem, options: FitOptions, plan: BitwidthPlan,
                  int8_total: int, patch_int8_total: int | None = None) -> FitResult:
    """The plan that fits ``options.budget`` (module doc); raises MemoryFitError.
    ``int8_total``: this patch plan all int8; ``patch_int8_total``: the lowest total of any
    int8 patch plan (patch-int8's best; default ``int8_total``)."""
    patch_int8_total = int8_total if patch_int8_total is None else patch_int8_total
    plan = dataclasses.replace(plan, reasons={k: BITOPS for k, b in plan.bits.items() if b < 8})
    paths = [memory_path(problem=problem, options=options, start=plan)]
    if any(b < 8 for b in plan.bits.values()):
        int8 = dataclasses.replace(plan, bits={k: 8 for k in plan.bits}, ranges={}, reasons={})
        paths.append(memory_path(problem=problem, options=options, start=int8))
    found = [f for f in (_within_bound(problem=problem, options=options, path=p)
                         for p in paths) if f is not None]
    if not found:
        raise MemoryFitError(_failure_message(problem=problem, options=options,
                                              paths=paths, int8_total=patch_int8_total))
    path, moves, drop = min(found, key=lambda f: (f[2] or 0.0, _bitops(problem=problem, path=f[0],
                                                                       moves=f[1])))
    final = path.plan_after(moves=moves, ranges=problem.ranges)
    record = fit_record(problem=problem, options=options, path=path, moves=moves,
                        plan=final, int8_total=int8_total, drop=drop,
                        patch_int8_total=patch_int8_total)
    record["paths"] = [{"start": "vdqs" if i == 0 and len(paths) > 1 else "int8",
                        "fits_at_moves": p.first_fitting(budget=options.budget),
                        "drop_pts": next((f[2] for f in found if f[0] is p), None)}
                       for i, p in enumerate(paths)]
    return FitResult(plan=final, record=record)


def _bitops(*, problem: FitProblem, path: MemoryPath, moves: int) -> int:
    plan = path.plan_after(moves=moves, ranges=problem.ranges)
    return analyze_model(graph=problem_graph(problem=problem, plan=plan)).bitops


def _within_bound(*, problem: FitProblem, options: FitOptions, path: MemoryPath):
    """(path, moves, drop) of the path's first fitting plan if its drop holds the bound."""
    first = path.first_fitting(budget=options.budget)
    if first is None:
        return None
    if options.max_drop_pts is None or problem.drop is None:
        return path, first, None
    drop = problem.drop(path.plan_after(moves=first, ranges=problem.ranges))
    return (path, first, drop) if drop <= options.max_drop_pts else None


def smallest_within_bound(*, problem: FitProblem, options: FitOptions,
                          path: MemoryPath) -> tuple[int, int]:
    """(moves, total) of the smallest total on the path whose drop holds the bound: the
    longest prefix that holds it, by bisection (drops grow along the path)."""
    if options.max_drop_pts is None or problem.drop is None:
        moves = int(np.argmin(path.totals))
        return moves, path.totals[moves]
    low, high = 0, len(path.steps)
    if problem.drop(path.plan_after(moves=high, ranges=problem.ranges)) <= options.max_drop_pts:
        low = high
    while high - low > 1:
        middle = (low + high) // 2
        plan = path.plan_after(moves=middle, ranges=problem.ranges)
        if problem.drop(plan) <= options.max_drop_pts:
            low = middle
        else:
            high = middle
    moves = int(np.argmin(path.totals[:low + 1]))
    return moves, path.totals[moves]


def _failure_message(*, problem: FitProblem, options: FitOptions, paths: list[MemoryPath],
                     int8_total: int) -> str:
    """The budget error: quantmcu's smallest totals over every path (from the VDQS plan and
    from int8); the reason and the maps to cut come from the path with the smallest total
    within the bound."""
    names = problem.patched_graph.main.tensors
    bests = [(smallest_within_bound(problem=problem, options=options, path=p), i)
             for i, p in enumerate(paths)]
    (within_moves, within), best = min(bests, key=lambda b: (b[0][1], b[1]))
    path = paths[best]
    at_all = min(min(p.totals) for p in paths)
    first = path.first_fitting(budget=options.budget)
    bound = "" if options.max_drop_pts is None else \
        f" within --max-accuracy-drop {options.max_drop_pts:g} pt"
    if first is None:
        why = ("even with every map live at the peak at its lowest width the total is "
               f"{min(path.totals)} B; the maps left at the peak cannot go below 8 bits "
               "(graph inputs, patch outputs, ops without a QMCU form, or VDPC outlier branches)")
        cut = path.steps
    else:
        why = (f"the first plan that fits lowers {first} map(s) and loses more than "
               f"{options.max_drop_pts:g} pt on the held-out calibration samples")
        cut = path.steps[within_moves:first]
    listed = ", ".join(f"{_name(names, s.key)} {s.from_bits}->{s.to_bits} bits" for s in cut[:8])
    more = f" (+{len(cut) - 8} more)" if len(cut) > 8 else ""
    return (f"SRAM budget {options.budget} B cannot be met on {options.target}{bound}: "
            f"patch-int8 reaches {int8_total} B (no accuracy loss); quantmcu reaches "
            f"{within} B{bound} and {at_all} B at any accuracy; {why}; it would have to cut: "
            f"{listed or 'no map'}{more}")


def _name(tensors, key: str) -> str:
    """A map as a message names it: its tensor name up to the first ';' (converter names
    list every fused op)."""
    return (tensors[key].name if key in tensors else key).split(";")[0]


def fit_record(*, problem: FitProblem, options: FitOptions, path: MemoryPath, moves: int,
               plan: BitwidthPlan, int8_total: int, drop: float | None,
               patch_int8_total: int | None = None) -> dict:
    """JSON-ready: budget, int8 vs final total, the steps taken, the maps at the final peak."""
    converted = problem_graph(problem=problem, plan=plan)
    return {"budget": options.budget, "target": options.target, "int8_total": int8_total,
            "patch_int8_total": int8_total if patch_int8_total is None else patch_int8_total,
            "final_total": path.totals[moves], "moves": [s.to_dict() for s in path.steps[:moves]],
            "drop_pts": drop, "peak_maps": peak_maps(converted=converted, plan=plan)}


def peak_maps(*, converted: Graph, plan: BitwidthPlan) -> list[dict]:
    """Every buffer live at the converted graph's peak op: key, name, width, arena bytes and why
    it has that width (int8 maps: ``None``)."""
    memory = plan_memory(graph=converted, scratch=scratch_requests)
    tensors = converted.main.tensors
    out = []
    for b in sorted(memory.live_during_op(memory.peak_op()), key=lambda b: memory.offsets[b.key]):
        bits = plan.bits.get(b.key, 8) if b.key in tensors else None
        out.append({"key": b.key, "name": tensors[b.key].name if b.key in tensors else b.key,
                    "bits": bits, "bytes": b.size, "reason": plan.reasons.get(b.key)})
    return out


def simulated_cost(*, graph: Graph, locations: Mapping, x: np.ndarray
                   ) -> Callable[[str, int, SubbyteRange], float]:
    """A cached accuracy cost (module doc) on the held-out codes ``x``."""
    simulator: list[OutputSimulator] = []
    cache: dict[tuple[str, int], float] = {}

    def cost(key: str, bits: int, subbyte: SubbyteRange | None) -> float:
        if bits == 8:
            return 0.0
        if (key, bits) not in cache:
            if not simulator:
                simulator.append(OutputSimulator(graph=graph, x=x))
            original, region = locations[key]
            quant = graph.main.tensors[original].quantization
            scale8, zp8 = float(quant.scale[0]), int(quant.zero_point[0])
            subbyte = subbyte or full_range(scale8=scale8, zero_point8=zp8, bits=bits)
            lut = int8_lookup(scale8=scale8, zero_point8=zp8, subbyte=subbyte)
            cache[(key, bits)] = simulator[0].cost(tensor=original, edits=[(region, lut)])
        return cache[(key, bits)]
    return cost


__all__ = ["BITOPS", "MEMORY", "FitOptions", "FitProblem", "FitResult", "MemoryFitError",
           "MemoryPath", "converted_total", "eligible_maps", "fit_to_budget", "memory_path",
           "peak_maps", "simulated_cost", "smallest_within_bound"]
