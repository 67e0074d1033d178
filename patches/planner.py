"""Choose the split op and the grid of the patch stage.

Search (automatic plan):
1. candidate splits: every op s whose ops 0..s form a valid stage
   (`stage.stage_problem`) inside the longest supported op prefix;
   candidate grids: rows x cols in 1..max_grid each (not 1 x 1), no more parts
   than the stage output has rows/cols;
2. every (split, grid) gets exact MACs (per-axis intervals: the MACs of patch
   (i, j) are rows_i x cols_j x MACs per output pixel) and an analytic peak
   estimate: max(stage input + finished outputs + one patch's working set,
   the final reassembly, the live bytes of the ops after the split);
3. candidates over the MAC cap or (estimated) file-growth cap are dropped; the
   best few by estimate are rewritten and their whole arena computed exactly:
   head from `plan_memory(..., scratch=scratch_requests)` (TFLM's greedy plan),
   tail from `tflm_tail` for the target (every patch op has its own op data),
   with and without the in-place offline plan for row strips; then a few cheaper
   ones (fewer MACs) estimated within 15 % of the best total or within the budget;
   the written file of the winner is checked against the growth cap;
4. objective min-macs with a budget: the fitting plan with the fewest MACs (ties:
   lower total); min-latency with a budget: the fitting plan with the fewest predicted
   Cortex-M4 instructions (`analysis.latency`; ties: lower total); otherwise (min-memory,
   or no budget) the lowest total (ties: fewer MACs). A plan whose total is not below the layer-based total is never returned:
   the model stays layer-based and the plan says why.
Forms (`PatchOptions.form`): 'builtin' runs steps 2-4 on the flat builtin rewrite;
'stage-op' on the QMCU_PATCH_STAGE rewrite (`stage_op.py`; ranked by input + output +
half a patch's working set, the in-place buffer plan's usual share; exact: the rewritten
graph's head (one scratch request) and tail (one persistent block)); 'auto' does both
and the lower total wins. Stages with a layer the op lacks have no stage-op candidate.
If the layer-based model already fits the budget it is kept (nothing forced). If
even the best plan exceeds the budget, a `PatchBudgetError` (a `BudgetError`) gives
the best total and the tensors live at its peak.
A forced split and/or grid restricts the search to them; a forced split and
grid is returned even when it does not lower the total or exceeds the MAC or
file-growth caps (`notes` say so).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tflite_quantmcu.analysis.costs import op_macs
from tflite_quantmcu.analysis.latency import load_latency_table, predict_instructions
from tflite_quantmcu.analysis.memory import MemoryPlan, align, plan_memory, tensor_bytes
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph, Subgraph
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import (PATCH_FORMS, PatchBudgetError, PatchCandidate,
                                          PatchOptions, PatchPlan)
from tflite_quantmcu.patches.receptive_field import Interval, Region
from tflite_quantmcu.patches.rewrite import MAX_CONCAT_INPUTS, build_patched_graph
from tflite_quantmcu.patches.stage import (COLS_AXIS, ROWS_AXIS, Stage, axis_intervals,
                                           empty_part, make_stage, split_bounds, stage_problem,
                                           supported_prefix)
from tflite_quantmcu.patches.stage_op import apply_stage_op, stage_op_problem

EXACT_EVALUATIONS = 8
STAGE_OP_EVALUATIONS = 16  # the stage-op estimate ignores in-place layers: look wider
ESTIMATE_SLACK = 0.15  # cheaper candidates re-checked when estimated within 15 % of the best
BYTES_PER_ADDED_OP = 165  # an added op and its output tensor in the flatbuffer (measured 164-197)


@dataclass(frozen=True)
class _Axis:
    """One axis of a stage cut into parts, with what scoring needs from it."""

    bounds: tuple[int, ...]
    intervals: tuple[dict[str, Interval], ...]
    largest: dict[str, int]       # tensor key -> largest part size
    total: dict[str, int]         # tensor key -> sum of part sizes (computed rows/cols)
    slices: dict[tuple[int, int], int]  # (op, input position) -> parts needing a slice
    pads: dict[tuple[int, int], int]    # (op, input position) -> parts needing border padding


@dataclass(frozen=True)
class _StageFacts:
    """Per stage: bytes per pixel of its tensors and, per op, what dies after it."""

    per_pixel: dict[str, int]
    steps: tuple[tuple[str, tuple[str, ...]], ...]  # (output key, keys last read by the op)


@dataclass(frozen=True)
class _Layout:
    """A stage with a grid."""

    stage: Stage
    grid: tuple[int, int]
    rows: _Axis
    cols: _Axis
    facts: _StageFacts


@dataclass(frozen=True)
class _Scored:
    layout: _Layout
    macs: int
    estimate: int
    added_ops: int
    stage_estimate: int = 0


OBJECTIVES = ("min-macs", "min-memory", "min-latency")


@dataclass(frozen=True)
class _Exact:
    layout: _Layout
    macs: int
    in_place: bool
    memory: MemoryPlan
    graph: Graph
    total: int
    form: str = "builtin"


@dataclass(frozen=True)
class _Baseline:
    """The layer-based model: its head plan, whole arena and MACs."""

    memory: MemoryPlan
    total: int
    macs: int


def plan_patches(*, graph: Graph, options: PatchOptions = PatchOptions()) -> PatchPlan:
    """The patch plan the objective asks for (see the module doc for the search)."""
    if options.objective not in OBJECTIVES:
        raise ConfigError(f"objective {options.objective!r}: expected one of "
                          f"{', '.join(OBJECTIVES)}")
    if options.form not in PATCH_FORMS:
        raise ConfigError(f"patch form {options.form!r}: expected one of {', '.join(PATCH_FORMS)}")
    subgraph = graph.main
    layer = plan_memory(graph=graph, scratch=scratch_requests)
    macs_layer = sum(op_macs(subgraph=subgraph, op=op) for op in subgraph.operators)
    base = _Baseline(memory=layer, macs=macs_layer,
                     total=arena_bytes(graph=graph, target=options.target, memory=layer).total)
    forced = options.split is not None or options.grid is not None
    budget = options.sram_budget
    if budget is not None and base.total <= budget and not forced:
        return _layer_plan(graph=graph, base=base, target=options.target, reason=(
            f"the layer-based model already fits: its arena needs {base.total} B "
            f"({options.target}), the budget is {budget} B"))
    return _search(graph=graph, base=base, options=options)


def _search(*, graph: Graph, base: _Baseline, options: PatchOptions) -> PatchPlan:
    subgraph = graph.main
    layer, macs_layer = base.memory, base.macs
    original_size = len(write_model_bytes(graph=graph, inline_buffers=True))
    stages, why_none = _candidate_stages(subgraph=subgraph, options=options)
    stages = _stages_for_grid(subgraph=subgraph, stages=stages, options=options)
    tail = _live_bytes_from(layer=layer, num_ops=len(subgraph.operators))
    scored = [_score(subgraph=subgraph, layout=layout, tail=tail, macs_layer=macs_layer)
              for stage in stages for layout in _layouts(subgraph=subgraph, stage=stage,
                                                         options=options)]
    forced = options.split is not None and options.grid is not None
    capped = dataclasses.replace(options, max_mac_overhead=None,
                                 max_file_growth=None) if forced else options
    within_cap = [s for s in scored if _within_cap(s.macs, macs_layer, capped)]
    allowed = [s for s in within_cap if _likely_within_growth(s, original_size, capped)]
    per_op_tail = (base.total - layer.peak_bytes) / max(1, len(subgraph.operators))
    exact = []
    if options.form in ("builtin", "auto"):
        exact += _evaluate_best(graph=graph, scored=allowed, options=options,
                                per_op_tail=per_op_tail)
    if options.form in ("stage-op", "auto"):
        exact += _evaluate_stage_ops(graph=graph, scored=within_cap, options=options)
    if options.form == "stage-op" and not exact and scored:
        why_none = why_none or _stage_op_reason(graph=graph, scored=scored)
        allowed = []
    best, growth = _best_within_growth(exact=exact, original_size=original_size,
                                       options=capped)
    candidates = _candidate_records(scored=scored, exact=exact, macs_layer=macs_layer)
    plan = _decide(graph=graph, best=best, growth=growth, base=base, target=options.target,
                   candidates=candidates, forced=forced, why_none=why_none,
                   dropped=len(scored) - len(allowed if options.form == "builtin"
                                             else within_cap))
    if forced and plan.is_patched:
        plan = dataclasses.replace(plan, notes=plan.notes + _cap_notes(plan=plan,
                                                                       options=options))
    _check_budget(plan=plan, options=options)
    return plan


# -- candidates ------------------------------------------------------------------------------
def _candidate_stages(*, subgraph: Subgraph,
                      options: PatchOptions) -> tuple[list[Stage], str | None]:
    if options.split is not None:
        split = _resolve_split(subgraph=subgraph, split=options.split)
        return [make_stage(subgraph=subgraph, split=split)], None
    maps, stop = supported_prefix(subgraph=subgraph)
    stages = [make_stage(subgraph=subgraph, split=s, maps=maps) for s in range(len(maps))
              if stage_problem(subgraph=subgraph, split=s) is None]
    reason = None if stages else (f"no op can end a patch stage; the supported prefix stops at "
                                  f"{stop}" if stop else "no op can end a patch stage")
    return stages, reason


def _stages_for_grid(*, subgraph: Subgraph, stages: list[Stage],
                     options: PatchOptions) -> list[Stage]:
    """With a forced grid but a searched split, the stages whose output can take the grid
    (late stages can be smaller than it); all of them when none can, so `_grids` says why."""
    if options.grid is None or options.split is not None:
        return stages
    limit = MAX_CONCAT_INPUTS
    fitting = [stage for stage in stages
               if options.grid[0] <= min(subgraph.tensors[stage.output_key].shape[1], limit)
               and options.grid[1] <= min(subgraph.tensors[stage.output_key].shape[2], limit)]
    return fitting or stages


def _resolve_split(*, subgraph: Subgraph, split: int | str) -> int:
    if isinstance(split, int):
        if not 0 <= split < len(subgraph.operators):
            raise ConfigError(f"split op index {split} out of range: the model has "
                              f"{len(subgraph.operators)} ops")
        return split
    for index, op in enumerate(subgraph.operators):
        if split in op.outputs or split == subgraph.tensors[op.outputs[0]].name:
            return index
    raise ConfigError(f"split {split!r}: no op writes a tensor with that key or name")


def _layouts(*, subgraph: Subgraph, stage: Stage, options: PatchOptions) -> list[_Layout]:
    shape = subgraph.tensors[stage.output_key].shape
    grids = _grids(options=options, rows=shape[1], cols=shape[2])
    row_parts = sorted({r for r, _ in grids})
    col_parts = sorted({c for _, c in grids})
    rows = {n: _axis(subgraph=subgraph, stage=stage, axis=ROWS_AXIS, parts=n) for n in row_parts}
    cols = {n: _axis(subgraph=subgraph, stage=stage, axis=COLS_AXIS, parts=n) for n in col_parts}
    facts = _stage_facts(subgraph=subgraph, stage=stage)
    layouts = [_Layout(stage, (r, c), rows[r], cols[c], facts) for r, c in grids
               if rows[r] is not None and cols[c] is not None]
    if options.grid is not None and not layouts:
        axis = rows[grids[0][0]] is None and ROWS_AXIS or COLS_AXIS
        problem = empty_part(subgraph=subgraph, parts=list(axis_intervals(
            subgraph=subgraph, stage=stage, axis=axis,
            bounds=split_bounds(size=subgraph.tensors[stage.output_key].shape[axis],
                                parts=options.grid[axis - 1]))))
        raise ConfigError(f"grid {options.grid[0]}x{options.grid[1]} cannot cut the stage "
                          f"ending at {subgraph.op_label(stage.split)}: {problem}")
    return layouts


def _stage_facts(*, subgraph: Subgraph, stage: Stage) -> _StageFacts:
    last_use: dict[str, int] = {}
    for index in stage.op_indices:
        for key in subgraph.operators[index].inputs:
            if key is not None:
                last_use[key] = index
    per_pixel = {}
    steps = []
    for index in stage.op_indices:
        op = subgraph.operators[index]
        for key in [k for k in op.inputs if k is not None] + op.outputs:
            tensor = subgraph.tensors[key]
            if not tensor.is_constant:
                per_pixel[key] = tensor_bytes(tensor=tensor) // (tensor.shape[1] * tensor.shape[2])
        dying = tuple(k for k in op.inputs if k is not None and last_use[k] == index)
        steps.append((op.outputs[0], dying))
    return _StageFacts(per_pixel=per_pixel, steps=tuple(steps))


def _grids(*, options: PatchOptions, rows: int, cols: int) -> list[tuple[int, int]]:
    if options.grid is not None:
        r, c = options.grid
        if not (1 <= r <= min(rows, MAX_CONCAT_INPUTS) and 1 <= c <= min(cols, MAX_CONCAT_INPUTS)):
            raise ConfigError(f"grid {r}x{c}: rows must be in 1..{min(rows, MAX_CONCAT_INPUTS)} "
                              f"and cols in 1..{min(cols, MAX_CONCAT_INPUTS)} for a "
                              f"{rows}x{cols} stage output")
        return [(r, c)]
    limit = min(options.max_grid, MAX_CONCAT_INPUTS)
    return [(r, c) for r in range(1, min(limit, rows) + 1)
            for c in range(1, min(limit, cols) + 1) if (r, c) != (1, 1)]


def _axis(*, subgraph: Subgraph, stage: Stage, axis: int, parts: int) -> _Axis | None:
    """The axis cut into `parts`; None when a part would read no pixel of some tensor."""
    size = subgraph.tensors[stage.output_key].shape[axis]
    bounds = split_bounds(size=size, parts=parts)
    intervals = tuple(axis_intervals(subgraph=subgraph, stage=stage, axis=axis, bounds=bounds))
    if empty_part(subgraph=subgraph, parts=list(intervals)) is not None:
        return None
    keys = intervals[0].keys()
    largest = {k: max(part[k].size for part in intervals) for k in keys}
    total = {k: sum(part[k].size for part in intervals) for k in keys}
    slices, pads = {}, {}
    for smap in stage.maps:
        op = subgraph.operators[smap.op_index]
        for m in smap.inputs:
            key = op.inputs[m.position]
            window = m.rows if axis == ROWS_AXIS else m.cols
            flags = [_extra_ops(window=window, out=part[op.outputs[0]], have=part[key],
                                size=subgraph.tensors[key].shape[axis],
                                full=key == stage.input_key) for part in intervals]
            slices[smap.op_index, m.position] = sum(f[0] for f in flags)
            pads[smap.op_index, m.position] = sum(f[1] for f in flags)
    return _Axis(bounds, intervals, largest, total, slices, pads)


def _extra_ops(*, window, out: Interval, have: Interval, size: int,
               full: bool) -> tuple[bool, bool]:
    """(needs a slice, needs a border pad) along one axis for one part."""
    need = window.needed(out)
    clipped = need.clip(size=size)
    available = Interval(0, size) if full else have
    return clipped != available, need != clipped


# -- MACs, added ops and the analytic peak estimate -----------------------------------------
def _live_bytes_from(*, layer: MemoryPlan, num_ops: int) -> list[int]:
    """Entry i: the most bytes live during any op >= i of the original model."""
    live = [0] * (num_ops + 1)
    for buf in layer.buffers:
        for step in range(max(buf.first, 1), min(buf.last, num_ops) + 1):
            live[step - 1] += buf.size
    for i in range(num_ops - 1, -1, -1):
        live[i] = max(live[i], live[i + 1])
    return live


def _score(*, subgraph: Subgraph, layout: _Layout, tail: list[int],
           macs_layer: int) -> _Scored:
    return _Scored(layout=layout, macs=_patch_macs(subgraph=subgraph, layout=layout,
                                                   macs_layer=macs_layer),
                   estimate=_estimate_peak(subgraph=subgraph, layout=layout, tail=tail),
                   added_ops=_added_ops(subgraph=subgraph, layout=layout),
                   stage_estimate=_estimate_stage_op(subgraph=subgraph, layout=layout,
                                                     tail=tail))


def _added_ops(*, subgraph: Subgraph, layout: _Layout) -> int:
    """Ops the rewrite adds: per patch the stage ops, slices and border pads, + concats."""
    rows, cols = layout.grid
    patches = rows * cols
    added = (rows if cols > 1 else 0) + (1 if rows > 1 else 0) - len(layout.stage.op_indices)
    for smap in layout.stage.maps:
        added += patches
        for m in smap.inputs:
            for table in ("slices", "pads"):
                row_count = getattr(layout.rows, table)[smap.op_index, m.position]
                col_count = getattr(layout.cols, table)[smap.op_index, m.position]
                added += patches - (rows - row_count) * (cols - col_count)
    return added


def _patch_macs(*, subgraph: Subgraph, layout: _Layout, macs_layer: int) -> int:
    extra = 0
    for index in layout.stage.op_indices:
        op = subgraph.operators[index]
        macs = op_macs(subgraph=subgraph, op=op)
        if not macs:
            continue
        key = op.outputs[0]
        shape = subgraph.tensors[key].shape
        computed = layout.rows.total[key] * layout.cols.total[key]
        extra += macs * computed // (shape[1] * shape[2]) - macs
    return macs_layer + extra


def _estimate_peak(*, subgraph: Subgraph, layout: _Layout, tail: list[int]) -> int:
    stage = layout.stage
    out_bytes = align(tensor_bytes(tensor=subgraph.tensors[stage.output_key]))
    in_bytes = align(tensor_bytes(tensor=subgraph.tensors[stage.input_key]))
    patches = layout.grid[0] * layout.grid[1]
    working = _patch_working_set(layout=layout)
    during = in_bytes + out_bytes * (patches - 1) // patches + working
    reassembly = out_bytes if layout.grid[0] > 1 else 2 * out_bytes
    return max(during, reassembly, tail[stage.split + 1])


def _estimate_stage_op(*, subgraph: Subgraph, layout: _Layout, tail: list[int]) -> int:
    """Head of the stage-op form: input + output + one patch's working set (no in-place)."""
    stage = layout.stage
    out_bytes = align(tensor_bytes(tensor=subgraph.tensors[stage.output_key]))
    in_bytes = align(tensor_bytes(tensor=subgraph.tensors[stage.input_key]))
    return max(in_bytes + out_bytes + _patch_working_set(layout=layout) // 2,
               tail[stage.split + 1])


def _patch_working_set(*, layout: _Layout) -> int:
    """Largest live bytes inside one patch (largest part on each axis)."""
    facts = layout.facts
    rows, cols = layout.rows.largest, layout.cols.largest
    live: dict[str, int] = {}
    worst = 0
    for output, dying in facts.steps:
        produced = align(facts.per_pixel[output] * rows[output] * cols[output])
        worst = max(worst, sum(live.values()) + 2 * produced)
        live[output] = produced
        for key in dying:
            live.pop(key, None)
    return worst


def _within_cap(macs: int, macs_layer: int, options: PatchOptions) -> bool:
    if options.max_mac_overhead is None or not macs_layer:
        return True
    return (macs - macs_layer) / macs_layer <= options.max_mac_overhead + 1e-12


# -- exact evaluation -----------------------------------------------------------------------
def _evaluate_best(*, graph: Graph, scored: list[_Scored], options: PatchOptions,
                   per_op_tail: float) -> list[_Exact]:
    """Exact peaks (the rewritten graph, planned like TFLM) of the best candidates by estimate,
    then of cheaper candidates (fewer MACs) whose estimate is near the best exact peak."""
    # head estimate + the tail the added ops bring (the model's mean tail per op)
    ranked = sorted(scored, key=lambda s: (s.estimate + s.added_ops * per_op_tail,
                                           s.macs))[:EXACT_EVALUATIONS]
    results = [_evaluate(graph=graph, item=item, in_place=in_place, target=options.target)
               for item in ranked
               for in_place in _in_place_choices(layout=item.layout, options=options)]
    if not results:
        return results
    best = min(results, key=lambda e: (e.total, e.macs))
    near = max(best.total * (1 + ESTIMATE_SLACK), options.sram_budget or 0)
    cheaper = sorted((s for s in scored if s.macs < best.macs and s.estimate <= near
                      and s not in ranked), key=lambda s: (s.macs, s.estimate))
    results += [_evaluate(graph=graph, item=item, in_place=in_place, target=options.target)
                for item in cheaper[:EXACT_EVALUATIONS]
                for in_place in _in_place_choices(layout=item.layout, options=options)]
    return results


def _evaluate_stage_ops(*, graph: Graph, scored: list[_Scored],
                        options: PatchOptions) -> list[_Exact]:
    """Exact totals of the stage-op form for the best candidates by its estimate, then of
    cheaper ones (fewer MACs) near the best total or within the budget."""
    problems: dict[int, str | None] = {}
    usable = []
    for item in scored:
        stage = item.layout.stage
        if stage.split not in problems:
            problems[stage.split] = stage_op_problem(subgraph=graph.main, stage=stage)
        if problems[stage.split] is None:
            usable.append(item)
    ranked = sorted(usable, key=lambda s: (s.stage_estimate, s.macs))[:STAGE_OP_EVALUATIONS]
    results = [_evaluate_stage_op(graph=graph, item=item, target=options.target)
               for item in ranked]
    if not results:
        return results
    best = min(results, key=lambda e: (e.total, e.macs))
    near = max(best.total * (1 + ESTIMATE_SLACK), options.sram_budget or 0)
    cheaper = sorted((s for s in usable if s.macs < best.macs and s.stage_estimate <= near
                      and s not in ranked), key=lambda s: (s.macs, s.stage_estimate))
    return results + [_evaluate_stage_op(graph=graph, item=item, target=options.target)
                      for item in cheaper[:EXACT_EVALUATIONS]]


def _evaluate_stage_op(*, graph: Graph, item: _Scored, target: str) -> _Exact:
    patched = apply_stage_op(graph=graph, stage=item.layout.stage,
                             row_bounds=item.layout.rows.bounds,
                             col_bounds=item.layout.cols.bounds, in_place=True)
    memory = plan_memory(graph=patched, scratch=scratch_requests)
    total = arena_bytes(graph=patched, target=target, memory=memory).total
    return _Exact(item.layout, item.macs, True, memory, patched, total, form="stage-op")


def _stage_op_reason(*, graph: Graph, scored: list[_Scored]) -> str:
    """Why no candidate has a stage-op form (the first stage's problem)."""
    for item in scored:
        problem = stage_op_problem(subgraph=graph.main, stage=item.layout.stage)
        if problem is not None:
            return f"no stage can be one QMCU_PATCH_STAGE op: {problem}"
    return "no stage-op candidate is within the MAC overhead cap"


def _evaluate(*, graph: Graph, item: _Scored, in_place: bool, target: str) -> _Exact:
    patched = build_patched_graph(graph=graph, stage=item.layout.stage,
                                  row_bounds=item.layout.rows.bounds,
                                  col_bounds=item.layout.cols.bounds, in_place=in_place)
    memory = plan_memory(graph=patched, scratch=scratch_requests)
    total = arena_bytes(graph=patched, target=target, memory=memory).total
    return _Exact(item.layout, item.macs, in_place, memory, patched, total)


def _preference(*, exact: list[_Exact], options: PatchOptions) -> list[_Exact]:
    """Candidates in the order the objective prefers them."""
    budget = options.sram_budget
    if options.objective == "min-latency" and budget is not None:
        table = load_latency_table()
        instructions = {id(e): predict_instructions(graph=e.graph, table=table).total
                        for e in exact if e.total <= budget}
        fitting = sorted((e for e in exact if e.total <= budget),
                         key=lambda e: (instructions[id(e)], e.total))
        rest = sorted((e for e in exact if e.total > budget), key=lambda e: (e.total, e.macs))
        return fitting + rest
    if options.objective == "min-macs" and budget is not None:
        fitting = sorted((e for e in exact if e.total <= budget), key=lambda e: (e.macs, e.total))
        rest = sorted((e for e in exact if e.total > budget), key=lambda e: (e.total, e.macs))
        return fitting + rest
    return sorted(exact, key=lambda e: (e.total, e.macs))


def _best_within_growth(*, exact: list[_Exact], original_size: int,
                        options: PatchOptions) -> tuple[_Exact | None, float]:
    """The preferred candidate whose written file is within the growth cap."""
    for item in _preference(exact=exact, options=options):
        size = len(write_model_bytes(graph=item.graph, inline_buffers=True))
        growth = (size - original_size) / original_size
        if options.max_file_growth is None or growth <= options.max_file_growth:
            return item, growth
    return None, 0.0


def _likely_within_growth(item: _Scored, original_size: int, options: PatchOptions) -> bool:
    if options.max_file_growth is None:
        return True
    return item.added_ops * BYTES_PER_ADDED_OP <= options.max_file_growth * original_size


def _in_place_choices(*, layout: _Layout, options: PatchOptions) -> tuple[bool, ...]:
    if layout.grid[0] == 1:
        return (False,)
    if options.in_place is None:
        return (False, True)
    return (options.in_place,)


def _candidate_records(*, scored: list[_Scored], exact: list[_Exact],
                       macs_layer: int) -> tuple[PatchCandidate, ...]:
    def overhead(macs: int) -> float:
        return (macs - macs_layer) / macs_layer if macs_layer else 0.0

    measured = {(e.layout.stage.split, e.layout.grid) for e in exact}
    records = [PatchCandidate(e.layout.stage.split, e.layout.stage.output_key, e.layout.grid,
                              e.memory.peak_bytes, overhead(e.macs), True, e.in_place,
                              total_bytes=e.total, form=e.form)
               for e in exact]
    records += [PatchCandidate(s.layout.stage.split, s.layout.stage.output_key, s.layout.grid,
                               s.estimate, overhead(s.macs), False)
                for s in scored if (s.layout.stage.split, s.layout.grid) not in measured]
    return tuple(records)


# -- the decision ---------------------------------------------------------------------------
def _decide(*, graph: Graph, best: _Exact | None, growth: float, base: _Baseline,
            target: str, candidates: tuple[PatchCandidate, ...], forced: bool,
            why_none: str | None, dropped: int) -> PatchPlan:
    if best is None:
        reason = why_none or (
            f"all {dropped} candidates exceed the MAC overhead cap or the file growth cap "
            f"(each patch op adds about {BYTES_PER_ADDED_OP} bytes to the file)" if dropped
            else "no evaluated candidate is within the file growth cap")
        return _layer_plan(graph=graph, base=base, target=target, reason=reason,
                           candidates=candidates)
    if best.total >= base.total and not forced:
        reason = (f"patching does not lower the arena: the best candidate ({best.form}, split "
                  f"{graph.main.op_label(best.layout.stage.split)}, grid "
                  f"{best.layout.grid[0]}x{best.layout.grid[1]}) needs {best.total} B "
                  f"({target}, head {best.memory.peak_bytes} B), layer-based needs "
                  f"{base.total} B (head {base.memory.peak_bytes} B)")
        return _layer_plan(graph=graph, base=base, target=target, reason=reason,
                           candidates=candidates)
    notes = ()
    if best.total >= base.total:
        notes = (f"forced plan: its arena {best.total} B is not below the "
                 f"layer-based {base.total} B",)
    return _patched_plan(best=best, growth=growth, base=base, target=target,
                         candidates=candidates, notes=notes)


def _cap_notes(*, plan: PatchPlan, options: PatchOptions) -> tuple[str, ...]:
    """A forced plan is kept even over the caps; say which ones it exceeds."""
    notes = []
    if options.max_mac_overhead is not None and plan.mac_overhead > options.max_mac_overhead:
        notes.append(f"forced plan: MAC overhead {100 * plan.mac_overhead:.1f} % exceeds the "
                     f"cap {100 * options.max_mac_overhead:.1f} %")
    if options.max_file_growth is not None and plan.file_growth > options.max_file_growth:
        notes.append(f"forced plan: file growth {100 * plan.file_growth:.1f} % exceeds the "
                     f"cap {100 * options.max_file_growth:.1f} %")
    return tuple(notes)


def _layer_plan(*, graph: Graph, base: _Baseline, target: str, reason: str,
                candidates: tuple[PatchCandidate, ...] = ()) -> PatchPlan:
    layer = base.memory
    return PatchPlan(split_op=None, split_tensor=None, input_tensor=None, grid=(1, 1),
                     row_bounds=(), col_bounds=(), in_place=False,
                     layer_based_peak=layer.peak_bytes, patch_based_peak=layer.peak_bytes,
                     layer_based_total=base.total, patch_based_total=base.total,
                     target=target, macs_layer=base.macs, macs_patch=base.macs,
                     peak_tensors=peak_tensors(subgraph=graph.main, memory=layer),
                     reason=reason, candidates=candidates)


def _patched_plan(*, best: _Exact, growth: float, base: _Baseline, target: str,
                  candidates: tuple[PatchCandidate, ...], notes: tuple[str, ...]) -> PatchPlan:
    layout = best.layout
    rows, cols = layout.rows.intervals, layout.cols.intervals
    regions = tuple((key, tuple(Region(r[key], c[key]) for r in rows for c in cols))
                    for key in rows[0])
    return PatchPlan(split_op=layout.stage.split, split_tensor=layout.stage.output_key,
                     input_tensor=layout.stage.input_key, grid=layout.grid,
                     row_bounds=layout.rows.bounds, col_bounds=layout.cols.bounds,
                     in_place=best.in_place, layer_based_peak=base.memory.peak_bytes,
                     patch_based_peak=best.memory.peak_bytes,
                     layer_based_total=base.total, patch_based_total=best.total,
                     target=target, macs_layer=base.macs,
                     macs_patch=best.macs, file_growth=growth,
                     peak_tensors=peak_tensors(subgraph=best.graph.main, memory=best.memory),
                     regions=regions, notes=notes, candidates=candidates, form=best.form)


def peak_tensors(*, subgraph: Subgraph, memory: MemoryPlan) -> tuple[str, ...]:
    """Names of the buffers live at the step where the arena reaches its peak."""
    live = sorted(memory.live_during_op(memory.peak_op()), key=lambda b: memory.offsets[b.key])
    return tuple(subgraph.tensors[b.key].name if b.key in subgraph.tensors else b.key
                 for b in live)


def _check_budget(*, plan: PatchPlan, options: PatchOptions) -> None:
    budget = options.sram_budget
    if budget is None or plan.total_bytes <= budget:
        return
    best = min(plan.total_bytes, plan.layer_based_total)
    head = plan.peak_bytes if plan.total_bytes <= plan.layer_based_total \
        else plan.layer_based_peak
    raise PatchBudgetError(
        f"SRAM budget {budget} B cannot be met: the best achievable arena is {best} B on "
        f"{options.target} (head {head} B + tail {best - head} B; {_describe(plan)}"
        f"{_caps(options)}); live at the peak: {', '.join(plan.peak_tensors)}",
        best_peak=best, peak_tensors=plan.peak_tensors, budget=budget)


def _caps(options: PatchOptions) -> str:
    caps = []
    if options.max_mac_overhead is not None:
        caps.append(f"MAC overhead cap {100 * options.max_mac_overhead:.0f} %")
    if options.max_file_growth is not None:
        caps.append(f"file growth cap {100 * options.max_file_growth:.0f} %")
    if options.split is not None or options.grid is not None:
        caps.append("forced split/grid")
    return f"; within the {' and '.join(caps)}" if caps else ""


def _describe(plan: PatchPlan) -> str:
    if plan.is_patched:
        return (f"{plan.form} patch stage up to op #{plan.split_op}, grid "
                f"{plan.grid[0]}x{plan.grid[1]}, "
                f"+{100 * plan.mac_overhead:.1f} % MACs")
    return f"layer-based; {plan.reason}"

