"""A plan for a requested BitOPs ratio: lower feature-map and weight widths until BitOPs fall.

    plan = plan_for_bitops_ratio(patched=patched_graph, start=vdqs_plan, ratio=2.2)

BitOPs (``analysis.costs.op_bitops``) are MACs x weight bits x bits of the activation the
op reads. A conv-like op that reads a zero-point PAD reads, once the plan is applied, the
PAD's input (``apply_bitwidths`` folds the PAD when that map is sub-byte), so the plan's
count (:func:`plan_bitops`) follows such PADs; it equals the count of the applied graph's
own ops (``QMCU_*`` options included; tested). Lowering a map from b to b' bits saves
``(b - b') x sum(MACs x weight bits)`` over the ops that read it; lowering a filter
(``weights=True``; the cuttable filters of ``weight_cuts.weight_candidates``, re-quantized
per output channel by ``weight_cuts`` when the plan is applied) saves ``(b - b') x
sum(MACs x input bits)`` over the ops that read it.

Starting from `start` (e.g. the VDQS plan; its other keys and ranges are kept), the
greedy step lowers, among the maps and filters whose next narrower width is allowed
(8 -> 4 -> 2: ``subbyte_candidates`` for maps, ``weight_candidates`` for filters), the
one that saves the most BitOPs now (the savings are recomputed after every step, as a
map's saving depends on its readers' filter widths and vice versa; ties: maps before
filters, then the first key in sorted order; with ``four_bits_first`` every 8 -> 4 step
that is still allowed comes before any 4 -> 2 step, which spreads 4 bits over many
tensors instead of putting the largest ones at 2 bits), until ``reference / BitOPs >= ratio``,
where `reference` is the patched int8 graph's BitOPs. Widths only go down, so every SRAM
bound the start plan met still holds (filters live in flash and only shrink). A ratio the
candidates cannot reach is a ConfigError that names the best ratio reachable.

Filter cuts are recorded in the plan's :class:`~tflite_quantmcu.quant.plan.WeightRecord`
(``flash_limit`` 0: no flash limit; ``flash_bytes``: the filters' bytes at their final
widths plus ``other_bytes``, both from the start's record if it had one; one
``TraversalStep`` of pass ``bitops`` per cut with the filters' bytes before/after).

Meant as the starting point of quantization-aware fine-tuning
(``tflite_quantmcu.keras.finetune``), where accuracy is recovered by training;
post-training, the same plan loses more (docs/qat.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from tflite_quantmcu.analysis.costs import op_macs, weight_bits
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.apply_bitwidths import (filter_candidates, mac_sources,
                                                   subbyte_candidates)
from tflite_quantmcu.quant.plan import BitwidthPlan, TraversalStep, WeightRecord

NARROWER = {8: 4, 4: 2}


@dataclass(frozen=True)
class _MacOp:
    """One op with MACs: what it reads (after PAD folding) and its filter."""

    macs: int
    source: str
    filter: str | None
    filter_bits: int
    source_bits: int


def _mac_ops(*, graph: Graph) -> list[_MacOp]:
    sub = graph.main
    sources = mac_sources(graph=graph)
    out = []
    for index, op in enumerate(sub.operators):
        macs = op_macs(subgraph=sub, op=op)
        if not macs or index not in sources:
            continue
        w_key = op.inputs[1] if len(op.inputs) > 1 else None
        out.append(_MacOp(macs=macs, source=sources[index], filter=w_key,
                          filter_bits=weight_bits(subgraph=sub, op=op),
                          source_bits=sub.tensors[sources[index]].bits))
    return out


def _bitops(*, ops: list[_MacOp], bits) -> int:
    return sum(o.macs * bits.get(o.filter, o.filter_bits) * bits.get(o.source, o.source_bits)
               for o in ops)


def plan_bitops(*, graph: Graph, bits) -> int:
    """BitOPs of the main subgraph once a plan with these widths (maps and filters) is
    applied: MACs x filter bits x bits of the map each op reads (PADs folded)."""
    return _bitops(ops=_mac_ops(graph=graph), bits=bits)


def plan_for_bitops_ratio(*, patched: Graph, start: BitwidthPlan | None, ratio: float,
                          weights: bool = True, four_bits_first: bool = False) -> BitwidthPlan:
    """The plan of the module docstring (policy of `start`, option ``bitops_ratio``)."""
    if not ratio >= 1.0:
        raise ConfigError(f"bitops ratio: expected a number >= 1, got {ratio!r}")
    ops = _mac_ops(graph=patched)
    reference = _bitops(ops=ops, bits={})
    bits = {} if start is None else dict(start.bits)
    maps = subbyte_candidates(graph=patched)
    filters = filter_candidates(graph=patched) if weights else {}
    movable = [(0, k, maps[k]) for k in sorted({o.source for o in ops}) if k in maps] + \
        [(1, k, filters[k]) for k in sorted(filters)]
    first_bits = {key: bits.get(key, 8) for kind, key, _ in movable if kind == 1}
    current = _bitops(ops=ops, bits=bits)
    cuts = []
    while reference / current < ratio:
        best = None
        floor = 4 if four_bits_first and _any_move(movable=movable, bits=bits, floor=4) else 2
        for kind, key, allowed in movable:
            width = bits.get(key, 8)
            narrower = NARROWER.get(width)
            if narrower is None or narrower not in allowed or narrower < floor:
                continue
            saving = current - _bitops(ops=ops, bits={**bits, key: narrower})
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, kind, key, narrower)
        if best is None:
            raise ConfigError(f"bitops ratio {ratio:g} cannot be reached: every map and "
                              f"{'filter' if weights else '(weights not lowered) filter'} "
                              f"that a MAC op reads is at its narrowest width, ratio "
                              f"{reference / current:.3f}")
        saving, kind, key, narrower = best
        if kind == 1:
            cuts.append((key, bits.get(key, 8), narrower))
        bits[key] = narrower
        current -= saving
    ranges = {} if start is None else {k: r for k, r in start.ranges.items()
                                      if bits.get(k) == r.bits}
    options = {} if start is None else dict(start.options)
    record = None if start is None else start.weights
    if cuts:
        record = _weight_record(graph=patched, start=record, first_bits=first_bits, bits=bits,
                                cuts=cuts)
    return BitwidthPlan(policy="bitops-target" if start is None else start.policy,
                        options={**options, "bitops_ratio": ratio}, bits=bits, ranges=ranges,
                        branches=() if start is None else start.branches, weights=record)


def _any_move(*, movable, bits, floor: int) -> bool:
    """Whether some map or filter may still be lowered to a width >= `floor`."""
    return any(NARROWER.get(bits.get(key, 8), 0) >= floor and
               NARROWER[bits.get(key, 8)] in allowed for _, key, allowed in movable)


def _filter_bytes(*, graph: Graph, key: str, bits: int) -> int:
    tensor = graph.main.tensors[key]
    return (tensor.num_elements * bits + 7) // 8


def _weight_record(*, graph: Graph, start: WeightRecord | None, first_bits, bits,
                   cuts) -> WeightRecord:
    """The start's weight record (if any) with the cuts of this search appended."""
    keys = list(start.keys) if start is not None else []
    initial = list(start.initial_bits) if start is not None else []
    for key in sorted(first_bits):
        if key not in keys and bits.get(key, 8) != first_bits[key]:
            keys.append(key)
            initial.append(first_bits[key])
    other = start.other_bytes if start is not None else 0
    widths = {k: first_bits.get(k, 8) for k in keys}
    if start is not None:
        widths.update(zip(start.keys, start.final_bits))
    total = sum(_filter_bytes(graph=graph, key=k, bits=widths[k]) for k in keys)
    log = list(start.log) if start is not None else []
    for step, (key, old, new) in enumerate(cuts):
        after = total - _filter_bytes(graph=graph, key=key, bits=old) + \
            _filter_bytes(graph=graph, key=key, bits=new)
        log.append(TraversalStep(pass_name="bitops", round=step, pair=(key,), key=key,
                                 from_bits=old, to_bits=new, bytes_before=other + total,
                                 bytes_after=other + after))
        total = after
    return WeightRecord(flash_limit=start.flash_limit if start is not None else 0,
                        other_bytes=other, keys=tuple(keys), initial_bits=tuple(initial),
                        final_bits=tuple(bits.get(k, 8) for k in keys),
                        flash_bytes=other + total, log=tuple(log))
