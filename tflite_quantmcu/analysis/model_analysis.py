"""Per-layer and total figures of a model: the `analyze` command's content."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from tflite_quantmcu.analysis.costs import op_bitops, op_macs
from tflite_quantmcu.analysis.memory import MemoryPlan, plan_memory, tensor_bytes
from tflite_quantmcu.analysis.tflm_scratch import cmsis_nn_scratch_requests, scratch_requests
from tflite_quantmcu.analysis.tflm_tail import (CMSIS_NN, DEFAULT_TARGET, REFERENCE, arena_tail,
                                                target_named)
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.writer import write_model_bytes


@dataclass(frozen=True)
class LayerFigures:
    """One op of the main subgraph."""

    index: int
    op: str
    output: str
    output_shape: tuple[int, ...]
    output_bytes: int
    macs: int
    bitops: int
    live_bytes: int
    arena_end_bytes: int


@dataclass(frozen=True)
class ArenaBytes:
    """What TFLite Micro's arena must hold on `target`: head (planned activations and
    kernel scratch) + tail (persistent data, `tflm_tail`). `lower_bound` when some op's
    scratch or persistent data is not modelled (`unmodelled` names those ops).

    A target may be built with several kernel sets (cortex-m: TFLM's reference kernels
    and its CMSIS-NN kernels, which allocate other OpData and request other scratch).
    Each build's arena is computed whole (its own head plan and tail); `head`, `tail` and
    `tail_parts` are those of the build with the largest total, named by `kernels`, so
    `total` is an arena that allocates with every build; `build_totals` gives each one.
    """

    target: str
    head: int
    tail: int
    tail_parts: Mapping[str, int]
    unmodelled: tuple[str, ...] = ()
    kernels: str = REFERENCE
    build_totals: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.head + self.tail

    @property
    def lower_bound(self) -> bool:
        return bool(self.unmodelled)

    def to_json(self) -> dict:
        return {"head": self.head, "tail": self.tail, "total": self.total,
                "lower_bound": self.lower_bound, "kernels": self.kernels,
                "by_kernels": dict(self.build_totals)}


_SCRATCH_MODELS = {REFERENCE: scratch_requests, CMSIS_NN: cmsis_nn_scratch_requests}


def arena_bytes(*, graph: Graph, target: str = DEFAULT_TARGET,
                memory: MemoryPlan | None = None,
                bitwidths: Mapping[str, int] | None = None) -> ArenaBytes:
    """Head + tail of the main subgraph's arena on `target` (the firmware's arena size):
    the largest over the target's kernel sets (`ArenaBytes`).

    memory: the reference kernels' head plan, if already made (with `bitwidths`).
    """
    return arena_and_plan(graph=graph, target=target, memory=memory, bitwidths=bitwidths)[0]


def arena_and_plan(*, graph: Graph, target: str = DEFAULT_TARGET,
                   memory: MemoryPlan | None = None,
                   bitwidths: Mapping[str, int] | None = None) -> tuple[ArenaBytes, MemoryPlan]:
    """`arena_bytes` and the head plan of the build it reports."""
    spec = target_named(target)
    sub = graph.main
    reference = [scratch_requests(subgraph=sub, op=op) for op in sub.operators]
    builds = []
    for kernels in spec.kernel_sets:
        model = _SCRATCH_MODELS[kernels]
        requests = reference if kernels == REFERENCE else \
            [model(subgraph=sub, op=op) for op in sub.operators]
        if memory is not None and requests == reference:
            plan = memory
        else:
            plan = plan_memory(graph=graph, bitwidths=bitwidths, scratch=model)
        if kernels == REFERENCE:
            memory = plan
        tail = arena_tail(graph=graph, target=spec, kernels=kernels,
                          scratch_requests=sum(len(r) for r in requests if r))
        unmodelled = {sub.operators[i].type for i in plan.unmodelled_ops}
        builds.append((plan.peak_bytes + tail.bytes, kernels, plan, tail,
                       unmodelled | set(tail.unmodelled_ops)))
    totals = {kernels: total for total, kernels, *_ in builds}
    unmodelled = set().union(*(b[4] for b in builds))
    _, kernels, plan, tail, _ = max(builds, key=lambda b: b[0])
    arena = ArenaBytes(target=target, head=plan.peak_bytes, tail=tail.bytes,
                       tail_parts=dict(tail.parts), unmodelled=tuple(sorted(unmodelled)),
                       kernels=kernels, build_totals=totals)
    return arena, plan


@dataclass(frozen=True)
class ModelAnalysis:
    """Totals plus the layers; `peak_tensors` are the buffers live at the peak op.

    `peak_sram_bytes` is the arena head (activations and scratch) only, and the layers'
    figures come from the same head plan: that of the build `arena.kernels`; the memory a
    firmware needs is `arena.total`.
    """

    arena: ArenaBytes
    peak_sram_bytes: int
    peak_op: int
    peak_tensors: tuple[str, ...]
    flash_bytes: int
    weight_bytes: int
    macs: int
    bitops: int
    layers: tuple[LayerFigures, ...]
    unmodelled_scratch_ops: tuple[str, ...]

    def to_json(self) -> dict:
        data = asdict(self)
        del data["arena"]
        data = {"target": self.arena.target, "arena_bytes": self.arena.to_json(),
                "arena_tail_parts": dict(self.arena.tail_parts),
                "arena_unmodelled_ops": list(self.arena.unmodelled), **data}
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data


def analyze_model(*, graph: Graph, bitwidths: Mapping[str, int] | None = None,
                  target: str = DEFAULT_TARGET) -> ModelAnalysis:
    """Figures of the main subgraph; `bitwidths` overrides activation/weight bits per tensor."""
    sub = graph.main
    arena, plan = arena_and_plan(graph=graph, target=target, bitwidths=bitwidths)
    layers = tuple(_layer(graph=graph, plan=plan, index=i, bitwidths=bitwidths)
                   for i in range(len(sub.operators)))
    peak_op = plan.peak_op()
    weights = {id(t.buffer): len(t.buffer.data) for t in sub.tensors.values() if t.is_constant}
    return ModelAnalysis(
        arena=arena,
        peak_sram_bytes=plan.peak_bytes,
        peak_op=peak_op,
        peak_tensors=tuple(sub.tensors[b.key].name if b.key in sub.tensors else b.key
                           for b in plan.live_during_op(peak_op)),
        flash_bytes=len(write_model_bytes(graph=graph, inline_buffers=True)),
        weight_bytes=sum(weights.values()),
        macs=sum(layer.macs for layer in layers),
        bitops=sum(layer.bitops for layer in layers),
        layers=layers,
        unmodelled_scratch_ops=tuple(sub.op_label(i) for i in plan.unmodelled_ops),
    )


def _layer(*, graph: Graph, plan: MemoryPlan, index: int,
           bitwidths: Mapping[str, int] | None) -> LayerFigures:
    sub = graph.main
    op = sub.operators[index]
    out_key = op.outputs[0]
    out = sub.tensors[out_key]
    live = plan.live_during_op(index)
    return LayerFigures(
        index=index,
        op=op.type,
        output=out.name,
        output_shape=tuple(out.shape),
        output_bytes=tensor_bytes(tensor=out, bits=(bitwidths or {}).get(out_key)),
        macs=op_macs(subgraph=sub, op=op),
        bitops=op_bitops(subgraph=sub, op=op, bitwidths=bitwidths),
        live_bytes=sum(b.size for b in live),
        arena_end_bytes=max((plan.offsets[b.key] + b.size for b in live), default=0),
    )
