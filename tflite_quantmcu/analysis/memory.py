"""Tensor lifetimes and the peak SRAM of a subgraph, planned like TFLite Micro.

TFLite Micro's greedy planner (the default of its MicroAllocator) places every
non-persistent buffer (activations and kernel scratch) in one arena:
- a tensor lives from the op that writes it (graph inputs: op 0) to the last
  op that reads it (graph outputs: the last op); a scratch buffer lives for
  its op only;
- sizes are rounded up to 16 bytes;
- buffers with an offline offset (`OfflineMemoryAllocation` metadata) are
  placed first, at their offsets;
- the rest go largest first (ties: later tensors first), each at the lowest offset
  where it does not overlap any already placed buffer whose lifetime overlaps.
The arena head is the highest end offset. `plan_memory` reproduces this so
our figure can be compared with the `Arena allocation head` that TFLM prints.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.ir.graph import Graph, Subgraph, Tensor

ARENA_ALIGNMENT = 16
OFFLINE_PLAN_METADATA = "OfflineMemoryAllocation"


def align(size: int, alignment: int = ARENA_ALIGNMENT) -> int:
    return (size + alignment - 1) // alignment * alignment


def tensor_bytes(*, tensor: Tensor, bits: int | None = None) -> int:
    """Bytes a tensor occupies; sub-byte tensors are packed along the last axis."""
    bits = tensor.bits if bits is None else bits
    if bits >= 8 or not tensor.shape:
        return (tensor.num_elements * bits + 7) // 8
    channels = tensor.shape[-1]
    rows = tensor.num_elements // channels if channels else 0
    return rows * ((channels * bits + 7) // 8)


@dataclass(frozen=True)
class BufferLife:
    """One arena buffer: a tensor (key) or an op's scratch ('scratch:#i')."""

    key: str
    size: int
    first: int
    last: int
    offline_offset: int | None = None


@dataclass(frozen=True)
class MemoryPlan:
    """Placement of every arena buffer and the peak it implies."""

    buffers: tuple[BufferLife, ...]
    offsets: Mapping[str, int]
    peak_bytes: int
    unmodelled_ops: tuple[int, ...] = ()

    def live_during_op(self, index: int) -> list[BufferLife]:
        """Buffers live while op `index` runs (its scope is index + 1)."""
        return [b for b in self.buffers if b.first <= index + 1 <= b.last]

    def arena_end_during_op(self, index: int) -> int:
        return max((self.offsets[b.key] + b.size for b in self.live_during_op(index)), default=0)

    def peak_op(self) -> int:
        """The op whose live buffers reach furthest into the arena (first such op)."""
        num_ops = max((b.last for b in self.buffers), default=1)
        ends = [self.arena_end_during_op(i) for i in range(num_ops)]
        return int(np.argmax(ends)) if ends else 0


ScratchModel = Callable[..., "list[int] | None"]


def tensor_lifetimes(*, subgraph: Subgraph, sizes: Mapping[str, int]) -> list[BufferLife]:
    """Lifetimes of the arena tensors of a subgraph, in tensor order.

    Steps count like TFLM's allocation scopes: 0 is "before the first op"
    (graph inputs are created there), op i runs at step i + 1.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for key in subgraph.inputs:
        first.setdefault(key, 0)
        last[key] = 0
    for i, op in enumerate(subgraph.operators):
        for key in op.outputs:
            first.setdefault(key, i + 1)
        for key in [k for k in op.inputs if k is not None] + op.outputs:
            last[key] = i + 1
    for key in subgraph.outputs:
        first.setdefault(key, len(subgraph.operators))
        last[key] = len(subgraph.operators)
    lives = []
    for key, tensor in subgraph.tensors.items():
        if key not in first or tensor.is_constant or tensor.is_variable or sizes[key] == 0:
            continue
        lives.append(BufferLife(key=key, size=align(sizes[key]), first=first[key], last=last[key]))
    return lives


def plan_memory(*, graph: Graph, subgraph_index: int = 0,
                bitwidths: Mapping[str, int] | None = None,
                scratch: ScratchModel | None = None) -> MemoryPlan:
    """Plans the arena of one subgraph the way TFLM's greedy planner does."""
    subgraph = graph.subgraphs[subgraph_index]
    bitwidths = bitwidths or {}
    sizes = {key: tensor_bytes(tensor=t, bits=bitwidths.get(key))
             for key, t in subgraph.tensors.items()}
    lives = tensor_lifetimes(subgraph=subgraph, sizes=sizes)
    offline = offline_offsets(graph=graph, subgraph_index=subgraph_index)
    lives = [BufferLife(b.key, b.size, b.first, b.last, offline.get(b.key)) for b in lives]
    unmodelled = []
    for i, op in enumerate(subgraph.operators if scratch is not None else []):
        requests = scratch(subgraph=subgraph, op=op)
        if requests is None:
            unmodelled.append(i)
            continue
        lives += [BufferLife(key=f"scratch:#{i}.{j}", size=align(need), first=i + 1, last=i + 1)
                  for j, need in enumerate(requests) if need > 0]
    offsets = _greedy_offsets(lives)
    peak = max((offsets[b.key] + b.size for b in lives), default=0)
    return MemoryPlan(buffers=tuple(lives), offsets=offsets, peak_bytes=peak,
                      unmodelled_ops=tuple(unmodelled))


def _greedy_offsets(lives: list[BufferLife]) -> dict[str, int]:
    placed: list[tuple[int, BufferLife]] = []
    offsets: dict[str, int] = {}
    for buf in (b for b in lives if b.offline_offset is not None):
        offsets[buf.key] = buf.offline_offset
        placed.append((buf.offline_offset, buf))
    # TFLM lists online buffers last-added first, then bubble-sorts by size
    # (stable, descending): equal sizes are placed in reverse tensor order.
    online = [b for b in lives if b.offline_offset is None][::-1]
    for buf in sorted(online, key=lambda b: -b.size):
        offset = _first_fit(buf=buf, placed=placed)
        offsets[buf.key] = offset
        placed.append((offset, buf))
    return offsets


def _first_fit(*, buf: BufferLife, placed: list[tuple[int, BufferLife]]) -> int:
    overlapping = sorted(((off, other) for off, other in placed
                          if other.first <= buf.last and buf.first <= other.last),
                         key=lambda item: item[0])
    candidate = 0
    for off, other in overlapping:
        if off - candidate >= buf.size:
            break
        candidate = max(candidate, off + other.size)
    return candidate


def offline_offsets(*, graph: Graph, subgraph_index: int) -> dict[str, int]:
    """Tensor key -> arena offset from the `OfflineMemoryAllocation` metadata, if any."""
    entry = next((m for m in graph.metadata if m.name == OFFLINE_PLAN_METADATA), None)
    if entry is None:
        return {}
    values = np.frombuffer(entry.buffer.data, dtype="<i4")
    start = 3 + sum(len(s.tensors) for s in graph.subgraphs[:subgraph_index])
    keys = list(graph.subgraphs[subgraph_index].tensors)
    chunk = values[start:start + len(keys)]
    return {key: int(off) for key, off in zip(keys, chunk) if off >= 0}
