"""Per-map choice of the sub-byte range rule by the model's output error on held-out samples.

    simulator = OutputSimulator(graph=g, x=heldout_codes[:32])
    simulator.cost(tensor=key, edits=[(region_or_None, lookup), ...])   # mean squared error

**Criterion.** For each feature map and sub-byte width b, every rule of
``RangeOptions.rules`` fits an interval on the *fit* calibration samples (``ranges``); the
rule kept is the one whose b-bit map, alone in an otherwise int8 model, moves the model's
first output least: mean over held-out calibration samples and outputs of the squared
difference of int8 output codes against the int8 model (ties: the earlier rule, the wider
one). Why the model output and not the map's own quantization error: the own error is
what the ``mse`` rule minimises, so on the fit samples it always picks ``mse``, and on
held-out samples it still did on the bundled model, where ``mse`` cost 2.3 points at uniform
4 bits and ``percentile`` 1.2 (docs/quantmcu_accuracy.md): clipping a few large values costs
more accuracy than its share of the squared error says.

**Simulation.** The map's b-bit round trip is applied to its int8 codes inside the int8
graph (``ranges.int8_lookup``; a patch-branch map only in its branch's region), and the
executor resumes at the op after the map's producer from values cached in one int8 run. A
patch-stage layer's branch maps (regions of one tensor) are judged together, so they share
the rule (each keeps its own interval, fitted on its region). The simulation rounds twice
(to int8, then to b bits), where the converted graph requantizes once; it ranks rules, the
accuracy guard measures the converted graph exactly.

Cost: one partial run per (layer, width, rule) on ``samples`` held-out samples; widths not
in ``simulate_bits`` (by default 2 bits, which VDQS rarely picks and the guard removes
when costly) are chosen by their own quantization error on the held-out histograms
(``ranges.choose_range``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.ranges import RangeOptions, SubbyteRange, choose_range, int8_lookup, \
    rule_range
from tflite_quantmcu.quant.statistics import TensorStatistics
from tflite_quantmcu.reference.blas_threads import limited_blas_threads
from tflite_quantmcu.reference.executor import resume_samples, run_graph
from tflite_quantmcu.reference.registry import DEFAULT_CUSTOM_KERNELS, kernel_for

Region = tuple[int, int, int, int]
SELECT_SAMPLES = 32
SIMULATE_BITS = (4,)


class OutputSimulator:
    """The int8 graph run once on ``x`` with every activation kept, then resumed per edit."""

    def __init__(self, *, graph: Graph, x: np.ndarray) -> None:
        self.subgraph = sub = graph.main
        shape = tuple(sub.tensors[sub.inputs[0]].shape)
        self.cache: dict[str, np.ndarray] = {sub.inputs[0]: x.reshape((x.shape[0],) + shape)}

        def keep(_index, _op, produced):
            self.cache.update(produced)

        self.reference = run_graph(graph=graph, inputs=[x], observer=keep,
                                   batch_size=None)[0].astype(np.float64)
        self.kernels = [kernel_for(subgraph=sub, index=i, custom_kernels=DEFAULT_CUSTOM_KERNELS)
                        for i in range(len(sub.operators))]
        self.producers = sub.producers()
        self.order = {key: self.producers.get(key, -1) for key in self.cache}

    def cost(self, *, tensor: str, edits: Sequence[tuple[Region | None, np.ndarray]]) -> float:
        """Output MSE (int8 codes) with ``tensor``'s codes passed through each lookup table in
        its region (None: the whole tensor)."""
        start = self.producers[tensor]
        values = {k: v for k, v in self.cache.items() if self.order[k] <= start}
        values[tensor] = fake_quantized(values=values[tensor], edits=edits)
        with limited_blas_threads(threads=1):
            out = resume_samples(subgraph=self.subgraph, kernels=self.kernels, values=values,
                                 start=start + 1)[0]
        return float(np.mean((out.astype(np.float64) - self.reference) ** 2))


def fake_quantized(*, values: np.ndarray,
                   edits: Sequence[tuple[Region | None, np.ndarray]]) -> np.ndarray:
    """A copy of int8 ``values`` (samples first, NHWC last) with each lookup table applied in
    its region."""
    out = values.copy()
    view = out.reshape((out.shape[0],) + tuple(out.shape[-3:])) if out.ndim >= 4 else out
    for region, lut in edits:
        if region is None:
            view[...] = lut[view.astype(np.int16) + 128]
            continue
        y0, y1, x0, x1 = region
        block = view[:, y0:y1, x0:x1, :]
        view[:, y0:y1, x0:x1, :] = lut[block.astype(np.int16) + 128]
    return out


@dataclass(frozen=True)
class MapSite:
    """Where a planned feature map lives in the int8 graph: its patched key, the original
    tensor, the statistics region name and bounds (None: whole tensor), its widths."""

    key: str
    tensor: str
    region_name: str | None
    region: Region | None
    candidates: tuple[int, ...]


@dataclass(frozen=True)
class Selection:
    """Chosen range per (key, bits), and the simulated cost of every (key, bits, rule) judged
    by simulation (the cost of a layer, shared by its branch maps)."""

    ranges: Mapping[tuple[str, int], SubbyteRange]
    costs: Mapping[tuple[str, int, str], float]

    def cost(self, *, key: str, bits: int) -> float | None:
        chosen = self.ranges.get((key, bits))
        return None if chosen is None else self.costs.get((key, bits, chosen.rule))


def select_ranges(*, sites: Iterable[MapSite], statistics: Mapping[str, TensorStatistics],
                  check_statistics: Mapping[str, TensorStatistics] | None,
                  simulator: OutputSimulator | None, options: RangeOptions,
                  simulate_bits: tuple[int, ...] = SIMULATE_BITS) -> Selection:
    """The rule per map and width (module doc); without a simulator, by held-out own error."""
    sites = list(sites)
    ranges: dict[tuple[str, int], SubbyteRange] = {}
    costs: dict[tuple[str, int, str], float] = {}
    for bits in sorted({b for s in sites for b in s.candidates if b < 8}, reverse=True):
        at_bits = [s for s in sites if bits in s.candidates]
        if simulator is None or bits not in simulate_bits or len(options.rules) == 1:
            for s in at_bits:
                ranges[(s.key, bits)] = _own_error_choice(site=s, bits=bits, statistics=statistics,
                                                          check=check_statistics, options=options)
            continue
        for tensor in dict.fromkeys(s.tensor for s in at_bits):
            group = [s for s in at_bits if s.tensor == tensor]
            _simulated_choice(group=group, bits=bits, statistics=statistics,
                              simulator=simulator, options=options, ranges=ranges, costs=costs)
    return Selection(ranges=ranges, costs=costs)


def _histogram(*, stats: TensorStatistics, region_name: str | None):
    return stats.histogram if region_name is None else stats.region(region_name).histogram


def _own_error_choice(*, site: MapSite, bits: int, statistics, check, options) -> SubbyteRange:
    stats = statistics[site.tensor]
    held = None if check is None or site.tensor not in check else \
        _histogram(stats=check[site.tensor], region_name=site.region_name)
    return choose_range(fit_histogram=_histogram(stats=stats, region_name=site.region_name),
                        check_histogram=held, scale8=stats.scale, zero_point8=stats.zero_point,
                        bits=bits, options=options).chosen


def _simulated_choice(*, group: list[MapSite], bits: int, statistics, simulator, options,
                      ranges: dict, costs: dict) -> None:
    tensor = group[0].tensor
    stats = statistics[tensor]
    best_rule, best_cost, fitted = None, None, {}
    for rule in options.rules:
        fitted[rule] = [rule_range(rule=rule, histogram=_histogram(stats=stats,
                                                                   region_name=s.region_name),
                                   scale8=stats.scale, zero_point8=stats.zero_point, bits=bits,
                                   options=options) for s in group]
        edits = [(s.region, int8_lookup(scale8=stats.scale, zero_point8=stats.zero_point,
                                        subbyte=r)) for s, r in zip(group, fitted[rule])]
        cost = simulator.cost(tensor=tensor, edits=edits)
        for s in group:
            costs[(s.key, bits, rule)] = cost
        if best_cost is None or cost < best_cost:
            best_rule, best_cost = rule, cost
    for s, r in zip(group, fitted[best_rule]):
        ranges[(s.key, bits)] = r
