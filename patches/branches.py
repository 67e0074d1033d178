"""The dataflow branches of a patched graph: per patch, its feature maps in order.

``apply_patch_plan`` writes the output of stage op ``k`` for patch (i, j) to the tensor
keyed ``p{i}_{j}/{k}`` (``k`` = the op's index in the *original* graph); helper
tensors it adds on the way carry a suffix (``p0_1/2p0``: the border PAD in front of op
2, ``p0_0/4s0``: a STRIDED_SLICE of an input of op 4) and are not feature maps of
their own. A branch (QuantMCU's "dataflow branch following a patch") is the ordered
list of one patch's feature maps, with where each lives in the patched graph.

Consumers are listed as the patched graph has them, plus ``compute_consumers``:
the ops that finally read the map's values once PAD/PADV2/STRIDED_SLICE helpers are
looked through (the conv behind a border PAD), which is what BitOPs are charged to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph, Subgraph
from tflite_quantmcu.patches.plan import PatchPlan
from tflite_quantmcu.patches.receptive_field import Region

PATCH_MAP_KEY = re.compile(r"^p(\d+)_(\d+)/(\d+)$")
PASS_THROUGH_OPS = frozenset({"PAD", "PADV2", "STRIDED_SLICE"})


@dataclass(frozen=True)
class PatchFeatureMap:
    """One feature map of one patch branch.

    original_key: the full tensor in the original graph; patched_key: this patch's
    part of it in the patched graph; region: which rows/cols of the original tensor it
    holds; op_index: the original op producing it; producer: the op producing it in
    the patched graph; consumers: patched ops reading it directly; compute_consumers:
    patched ops reading its values through PAD/STRIDED_SLICE helpers (or directly).
    """

    original_key: str
    patched_key: str
    region: Region
    op_index: int
    producer: int
    consumers: tuple[int, ...]
    compute_consumers: tuple[int, ...]


@dataclass(frozen=True)
class PatchBranch:
    """Patch (row, col) -- named ``p{row}_{col}`` like its tensors -- and its feature maps
    in execution order."""

    name: str
    row: int
    col: int
    feature_maps: tuple[PatchFeatureMap, ...]

    @property
    def patched_keys(self) -> tuple[str, ...]:
        return tuple(m.patched_key for m in self.feature_maps)


def patch_branches(*, graph: Graph, patched_graph: Graph,
                   plan: PatchPlan) -> tuple[PatchBranch, ...]:
    """The branches of ``apply_patch_plan(graph=graph, plan=plan)``, patches row-major.

    ``graph`` (the original) tells which tensor op ``k`` wrote; an unpatched plan has
    no branches.
    """
    if not plan.is_patched:
        return ()
    sub = patched_graph.main
    regions = dict(plan.regions)
    producers = sub.producers()
    consumers = sub.consumers()
    cols = len(plan.col_bounds) - 1
    found: dict[tuple[int, int], list[PatchFeatureMap]] = {}
    for key in sub.tensors:
        match = PATCH_MAP_KEY.match(key)
        if match is None:
            continue
        row, col, op_index = (int(v) for v in match.groups())
        original_key = _original_output(graph=graph, op_index=op_index, key=key)
        region = _patch_region(regions=regions, key=original_key, index=row * cols + col)
        found.setdefault((row, col), []).append(PatchFeatureMap(
            original_key=original_key, patched_key=key, region=region, op_index=op_index,
            producer=_producer(producers=producers, key=key),
            consumers=tuple(consumers.get(key, ())),
            compute_consumers=_compute_consumers(subgraph=sub, key=key, consumers=consumers)))
    _check_complete(found=found, plan=plan)
    return tuple(PatchBranch(name=f"p{r}_{c}", row=r, col=c,
                             feature_maps=tuple(sorted(maps, key=lambda m: m.producer)))
                 for (r, c), maps in sorted(found.items()))


def _original_output(*, graph: Graph, op_index: int, key: str) -> str:
    ops = graph.main.operators
    if op_index >= len(ops):
        raise ConfigError(f"patched tensor {key!r} names op {op_index}, the original graph has "
                          f"{len(ops)} ops: the patched graph was made from another model")
    return ops[op_index].outputs[0]


def _patch_region(*, regions: dict, key: str, index: int) -> Region:
    parts = regions.get(key)
    if parts is None or index >= len(parts):
        raise ConfigError(f"patch plan has no region {index} for tensor {key!r}: the patched "
                          "graph was made with another plan")
    return parts[index]


def _producer(*, producers: dict[str, int], key: str) -> int:
    if key not in producers:
        raise ConfigError(f"patched tensor {key!r} is produced by no op")
    return producers[key]


def _compute_consumers(*, subgraph: Subgraph, key: str,
                       consumers: dict[str, list[int]]) -> tuple[int, ...]:
    """Readers of ``key``'s values, looking through PAD/PADV2/STRIDED_SLICE helpers that
    are not feature maps themselves."""
    result: list[int] = []
    pending = list(consumers.get(key, ()))
    while pending:
        index = pending.pop(0)
        op = subgraph.operators[index]
        out = op.outputs[0]
        if op.type in PASS_THROUGH_OPS and op.inputs[0] is not None and \
                PATCH_MAP_KEY.match(out) is None and out not in subgraph.outputs:
            pending.extend(consumers.get(out, ()))
        elif index not in result:
            result.append(index)
    return tuple(sorted(result))


def _check_complete(*, found: dict, plan: PatchPlan) -> None:
    rows, cols = len(plan.row_bounds) - 1, len(plan.col_bounds) - 1
    expected = {(r, c) for r in range(rows) for c in range(cols)}
    if set(found) != expected:
        raise ConfigError(f"patched graph has per-patch tensors for patches {sorted(found)}, "
                          f"the plan's {rows}x{cols} grid needs {sorted(expected)}")
