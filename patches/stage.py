"""The patch stage: ops 0..split of the main subgraph, computed patch by patch.

A split op index `s` is valid when
- every op 0..s has a spatial map (`receptive_field.unsupported_reason`),
- the ops read exactly one non-constant tensor they do not produce (the
  stage input, a subgraph input) and nothing after op s reads it,
- the only tensor produced in the stage that is used after it (or is a graph
  output) is op s's output, the stage output.
Rows and columns are independent, so the regions of a grid are computed per
axis: part i of the rows x part j of the columns is patch (i, j).
"""
from __future__ import annotations

from dataclasses import dataclass

from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.ir.graph import Subgraph
from tflite_quantmcu.patches.receptive_field import (Interval, OpSpatialMap, Region,
                                                     spatial_map, unsupported_reason)

ROWS_AXIS = 1
COLS_AXIS = 2


@dataclass(frozen=True)
class Stage:
    """Ops 0..split (their spatial maps), the tensor they read and the one they leave."""

    split: int
    input_key: str
    output_key: str
    maps: tuple[OpSpatialMap, ...]

    @property
    def op_indices(self) -> range:
        return range(self.split + 1)


def supported_prefix(*, subgraph: Subgraph) -> tuple[list[OpSpatialMap], str | None]:
    """Spatial maps of the longest supported op prefix, and why it stops (None: all ops)."""
    maps = []
    for index in range(len(subgraph.operators)):
        reason = unsupported_reason(subgraph=subgraph, index=index)
        if reason is not None:
            return maps, f"{subgraph.op_label(index)}: {reason}"
        maps.append(spatial_map(subgraph=subgraph, index=index))
    return maps, None


def stage_problem(*, subgraph: Subgraph, split: int) -> str | None:
    """Why ops 0..split cannot form a patch stage (None when they can)."""
    produced: set[str] = set()
    external: set[str] = set()
    for op in subgraph.operators[:split + 1]:
        for key in op.inputs:
            if key is not None and key not in produced and not subgraph.tensors[key].is_constant:
                external.add(key)
        produced.update(op.outputs)
    if len(external) != 1 or next(iter(external)) not in subgraph.inputs:
        names = sorted(subgraph.tensors[k].name for k in external)
        return f"the stage must read exactly one model input, it reads {names}"
    output_key = subgraph.operators[split].outputs[0]
    later = {key for op in subgraph.operators[split + 1:] for key in op.inputs if key}
    leaving = sorted((produced | external) & (later | set(subgraph.outputs)) - {output_key})
    if leaving:
        names = [subgraph.tensors[k].name for k in leaving]
        return f"tensors {names} are used after {subgraph.op_label(split)}"
    return None


def make_stage(*, subgraph: Subgraph, split: int,
               maps: list[OpSpatialMap] | None = None) -> Stage:
    """The stage ending at op `split`; `UnsupportedOpError` naming the op that prevents it."""
    if not 0 <= split < len(subgraph.operators):
        raise UnsupportedOpError(
            f"split op index {split} out of range: the model has {len(subgraph.operators)} ops")
    if maps is None or len(maps) <= split:
        maps = [spatial_map(subgraph=subgraph, index=i) for i in range(split + 1)]
    problem = stage_problem(subgraph=subgraph, split=split)
    if problem is not None:
        raise UnsupportedOpError(f"cannot end the patch stage at {subgraph.op_label(split)}: "
                                 f"{problem}")
    external = next(key for key in subgraph.operators[0].inputs
                    if key is not None and not subgraph.tensors[key].is_constant)
    return Stage(split=split, input_key=external,
                 output_key=subgraph.operators[split].outputs[0], maps=tuple(maps[:split + 1]))


def split_bounds(*, size: int, parts: int) -> tuple[int, ...]:
    """Boundaries of `parts` near-equal parts of [0, size)."""
    return tuple(k * size // parts for k in range(parts + 1))


def axis_intervals(*, subgraph: Subgraph, stage: Stage, axis: int,
                   bounds: tuple[int, ...]) -> list[dict[str, Interval]]:
    """Per part of the stage output along `axis`: clipped interval of every stage tensor."""
    return [_walk_axis(subgraph=subgraph, stage=stage, axis=axis, out=Interval(a, b))
            for a, b in zip(bounds[:-1], bounds[1:])]


def _walk_axis(*, subgraph: Subgraph, stage: Stage, axis: int,
               out: Interval) -> dict[str, Interval]:
    intervals: dict[str, Interval] = {stage.output_key: out}
    for smap in reversed(stage.maps):
        op = subgraph.operators[smap.op_index]
        have = intervals.get(op.outputs[0])
        if have is None:
            continue
        for m in smap.inputs:
            key = op.inputs[m.position]
            window = m.rows if axis == ROWS_AXIS else m.cols
            need = window.needed(have).clip(size=subgraph.tensors[key].shape[axis])
            intervals[key] = need.union(intervals.get(key))
    return intervals


def empty_part(*, subgraph: Subgraph, parts: list[dict[str, Interval]]) -> str | None:
    """Why a part reads no pixel of some stage tensor (a PAD wider than the part), or None."""
    for index, part in enumerate(parts):
        for key, interval in part.items():
            if interval.size == 0:
                return (f"part {index} ({part[next(iter(part))]}) of the stage output reads "
                        f"no pixel of {subgraph.tensors[key].name!r}")
    return None


def patch_regions(*, rows: list[dict[str, Interval]],
                  cols: list[dict[str, Interval]]) -> list[dict[str, Region]]:
    """Row-major list of patches: tensor key -> region."""
    return [{key: Region(r[key], c[key]) for key in r if key in c} for r in rows for c in cols]
