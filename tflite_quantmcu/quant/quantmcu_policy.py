"""QuantMCU end to end: statistics -> VDPC per patch -> VDQS per branch -> one BitwidthPlan.

    result = search_quantmcu(graph=g, patch_plan=p, patched_graph=pg,
                             calibration=batches, sram_budget=256 * 1024)
    result.plan.bits        # patched tensor key ("p0_1/3") -> 8 / 4 / 2

Steps (each a function below):

1. **Statistics** (:func:`collect_patch_statistics`): the *whole original* graph runs
   once per calibration batch in the reference executor; every stage feature map (ops
   0..split) gets a :class:`StatisticsCollector` entry with the plan's per-patch regions
   (``plan.regions``) named like the branches (``p{row}_{col}``), every tail map
   (``tail=True``, the default) a whole-tensor entry. The patched graph computes
   bit-identical values in those regions, so this is the same data at a fraction of the
   cost. Memory is constant in the number of samples (256-bin histograms and per-region
   (min, max) pair tables, see ``statistics``).
2. **VDPC** (:func:`classify_branches`): ``classify_patches`` on each stage map; a
   branch is outlier-class per ``QuantMCUOptions.classify_on``: ``"first"`` (default)
   -- its patch of the stage's first feature map is outlier-class (the paper's Fig. 2-3
   classify the patches of the first layer's output and apply the class to the
   dataflow branch that follows); ``"any"`` -- its patch is outlier-class in any stage
   map (stricter, keeps more branches at 8 bits).
3. **M** (:func:`branch_memory_limits`): for each branch, the SRAM budget minus the
   bytes resident while the branch runs: the largest sum, over the branch's ops, of
   the live arena buffers of the patched graph (TFLM's planner, ``plan_memory`` with
   kernel scratch) that do not belong to the branch -- the stage input, finished patch
   outputs / row strips, scratch. The branch's own tensors (``p{i}_{j}/...``: its
   feature maps and its border-PAD / slice helpers, which are copies of its maps and
   vanish when a sub-byte conv folds the PAD) are what Eq. 7's pairs account for.
   Sums of sizes, not arena offsets: fragmentation is not modelled. No budget -> no
   limit.
4. **VDQS** (:func:`search_branch`): per non-outlier branch, ``search_bitwidths`` with
   each map's candidates = ``options.candidates`` restricted to what
   ``apply_bitwidths.subbyte_candidates`` allows for that patched tensor, and BitOPs
   from the patched ops that read the map's values (``analysis.costs``: MACs x weight
   bits; PAD/slice helpers looked through). Outlier branches stay at 8 bits (their
   Eq. 7 is still checked). ``use_vdpc=False``: every branch is searched.

5. **The tail** (:func:`tail_branch`, ``QuantMCUOptions.search_tail``, default True): the
   int8 activation tensors written by the ops after the split (their keys are the
   original keys in the patched graph), in op order, are one more dataflow branch,
   named ``"tail"``, searched by the same VDQS: entropy from the whole-tensor
   statistics, Phi from the BitOPs of the ops reading each map (B = the tail's 8-bit
   BitOPs), candidates from ``subbyte_candidates`` of the patched graph, Omega
   normalised by the entropy of the tail's last map (the model output). VDPC does not
   apply (no patches), so the tail is never outlier-class. Its M is derived as a patch
   branch's (:func:`tail_memory_limit`): the budget minus the largest sum of live
   non-tail buffers over the tail's ops -- the stage output while the first tail op
   reads it, kernel scratch. Default on because the paper's Table I has QuantMCU's
   BitOPs below the layer-based model's, which the patch stage alone cannot give (see
   the ceiling below); the plan has a branch record ``"tail"`` and the result's
   ``to_dict()["tail"]`` says whether it was searched. ``search_tail=False`` gives the
   stage-only behaviour.

``uniform_plan`` gives the baseline "every eligible stage feature map at b bits".
Everything is deterministic for the same inputs; timings are reported, not used.

**Ranges** (issue 11): every candidate sub-byte width of every searched map gets a range
(:mod:`ranges`) chosen per map before VDQS scores it (:mod:`range_selection`: by simulated
model-output error on held-out calibration samples when ``heldout_x`` is given), so Eq. 3-4's
entropy is that of the map as it would be quantized; the plan carries the chosen ranges.
Defaults since then: rules ``full`` + ``percentile``, k = 16, and the accuracy guard in
``convert`` (docs/quantmcu_accuracy.md has the figures). The measurements below predate
ranges (whole int8 range, k as stated).

Measured on the bundled model (bench/quantmcu_accuracy.py; tuning figures on 1,000
held-out training images, never the test set), 256 KB budget -> the planner's stage
ops 0..6, 2x2 patches:

* VDPC, density ratio 1.0: the patches' outlier densities on the first map are
  0.9-1.2x the map's (the garment covers all four quadrants), so 3 of 4 branches are
  outlier-class and QuantMCU stays close to patch int8 (BitOPs / 1.05, -0.15 pt on the
  2,000-image test subset); ratio 1.5 flags none (= no VDPC: BitOPs / 1.22, -1.7 pt).
  "first" and "any" classified identically. With 4x4 patches densities spread
  0.2-1.9x and VDPC separates patches (8 of 16 outlier-class).
* VDQS bins: k = 16 puts every eligible map at 4 bits for any lam in 0.1..0.8 (dH(i, 4)
  is ~0 at 16 bins), k = 20-32 makes lam move BitOPs (k = 24: / 1.22 at lam 0.1 to / 1.00
  at lam 0.6), k >= 32 keeps 8 bits at lam 0.6. 2 bits win only for lam < 0.2 at k = 64.
* Ceiling: even every eligible stage map at 2 bits gives BitOPs / 1.37 (stage ops
  0..6) or / 1.81 (stage forced to ops 0..13, 2x2, still within 256 KB): op 0 reads the
  8-bit image, op 0's output feeds a STRIDED_SLICE (residual), patch outputs feed the
  CONCATENATION, and the ops after the stage stay 8-bit.
* With the tail (18 maps after op 6, 15 of them sub-byte capable; held-out, 1,000
  images, patch int8 = 88.60 %): k = 16, lam 0.2-0.6 -> BitOPs / 1.33 at -1.7 pt (every
  tail map read by a conv at 4 bits; lam 0.8: / 1.32, -1.4 pt); without VDPC / 1.62 at
  -1.5 pt; k = 24 makes lam move BitOPs as Table III does (lam 0.2 / 0.4 / 0.6 / 0.8:
  / 1.31, -2.0 pt; / 1.10, -0.6 pt; / 1.04, -0.7 pt; / 1.00); k = 32-64 keep (nearly)
  every map at 8 bits for lam >= 0.4. 2 bits are picked only for lam <= 0.1 (k 16-64)
  and then cost 3-78 pt. Floor: every eligible map at 2 bits is / 2.35 (11.7 % top-1),
  at 4 bits / 1.62 (-4.3 pt). One tail map alone at 2 bits costs 2.4-11 pt (ReLU6
  outputs) or 22-55 pt (linear projection / residual-sum outputs); at 4 bits up to 1.8
  pt (block2's projection output). So BitOPs <= patch int8 / 2.2 (needs about 85 % of
  the eligible BitOPs read at 2 bits) is out of reach at <= 1 pt loss for this
  post-training model whatever lam and k; the paper's 2.2x comes with its own models.
  Test subset (2,000 images, int8 87.85 %), defaults (k 16, lam 0.6, tail on): / 1.33
  at -1.85 pt (stage only: / 1.05 at -0.15 pt); the held-out pick k = 24, lam 0.4:
  / 1.10 at +0.05 pt.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.analysis.costs import op_macs, weight_bits
from tflite_quantmcu.analysis.memory import MemoryPlan, plan_memory
from tflite_quantmcu.analysis.tflm_scratch import scratch_requests
from tflite_quantmcu.errors import CalibrationDataError, ConfigError
from tflite_quantmcu.ir.graph import Graph, Subgraph
from tflite_quantmcu.ir.schema import TensorType
from tflite_quantmcu.patches.branches import PatchBranch, PatchFeatureMap, patch_branches
from tflite_quantmcu.patches.plan import PatchPlan
from tflite_quantmcu.quant.apply_bitwidths import subbyte_candidates
from tflite_quantmcu.quant.instruction_savings import InstructionSavings
from tflite_quantmcu.quant.plan import BitwidthPlan, merge_plans
from tflite_quantmcu.quant.range_selection import (SELECT_SAMPLES, MapSite, OutputSimulator,
                                                   Selection, select_ranges)
from tflite_quantmcu.quant.ranges import (DEFAULT_PERCENTILE_MASS, RANGE_RULES, RangeOptions,
                                          SubbyteRange, choose_range, full_range)
from tflite_quantmcu.quant.statistics import StatisticsCollector, TensorStatistics
from tflite_quantmcu.quant.vdpc import PatchClasses, VdpcOptions, classify_patches
from tflite_quantmcu.quant.vdqs import (BIT_CHOICES, BranchSpec, ConsumerCost, VdqsOptions,
                                        branch_memory_limit, feature_map_from_statistics,
                                        search_bitwidths)
from tflite_quantmcu.reference.executor import run_graph

CLASSIFY_ON = ("first", "any")
DEFAULT_RANGE_RULES = ("full", "percentile")   # docs/quantmcu_accuracy.md: why not "mse" too
TAIL = "tail"


@dataclass(frozen=True)
class QuantMCUOptions:
    """phi: VDPC central mass; lam: VDQS accuracy weight; bins: VDQS k; the VDPC rule's
    parameters (``vdpc.VdpcOptions``); candidates; use_vdpc; classify_on; search_tail:
    also search the layer-based part after the patch stage as branch "tail" (module doc)."""

    phi: float = 0.96
    lam: float = 0.6
    bins: int = 16   # with ranges + the accuracy guard: docs/quantmcu_accuracy.md
    min_density_ratio: float = 1.0
    min_outliers: int = 1
    min_sample_fraction: float = 0.0
    candidates: tuple[int, ...] = BIT_CHOICES
    use_vdpc: bool = True
    classify_on: str = "first"
    search_tail: bool = True
    range_rules: tuple[str, ...] = DEFAULT_RANGE_RULES
    percentile_mass: float = DEFAULT_PERCENTILE_MASS
    select_samples: int = SELECT_SAMPLES
    measure: str = "bitops"   # VDQS's Phi: "bitops" or "instructions" (--objective min-latency)

    def __post_init__(self) -> None:
        if self.classify_on not in CLASSIFY_ON:
            raise ConfigError(f"QuantMCU classify_on must be one of {CLASSIFY_ON}, "
                              f"got {self.classify_on!r}")
        self.vdpc_options()
        self.vdqs_options()
        self.range_options()

    def range_options(self) -> RangeOptions:
        return RangeOptions(rules=tuple(self.range_rules), percentile_mass=self.percentile_mass)

    def vdpc_options(self) -> VdpcOptions:
        return VdpcOptions(phi=self.phi, min_density_ratio=self.min_density_ratio,
                           min_outliers=self.min_outliers,
                           min_sample_fraction=self.min_sample_fraction)

    def vdqs_options(self) -> VdqsOptions:
        return VdqsOptions(lam=self.lam, bins=self.bins, candidates=tuple(self.candidates),
                           measure=self.measure)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["candidates"] = list(self.candidates)
        data["range_rules"] = list(self.range_rules)
        return data


@dataclass(frozen=True)
class BranchLimit:
    """M of one branch and the resident bytes it was derived from (None: no budget)."""

    branch: str
    resident_bytes: int
    memory_limit: int | None


@dataclass(frozen=True)
class QuantMCUResult:
    """The plan (keys = patched tensor keys) and how it was found."""

    plan: BitwidthPlan
    patch_classes: tuple[PatchClasses, ...]
    outlier_branches: tuple[str, ...]
    branch_limits: tuple[BranchLimit, ...]
    num_samples: int
    statistics_time_s: float
    search_time_s: float
    tail_keys: tuple[str, ...] = ()
    selection: Selection | None = None

    def to_dict(self) -> dict:
        """JSON-ready figures for a report (the plan itself: ``plan.to_dict()``)."""
        names = [b.branch for b in self.branch_limits if b.branch != TAIL]
        return {
            "patch_classes": [c.to_dict() for c in self.patch_classes],
            "branch_classes": {n: ("outlier" if n in self.outlier_branches else "non_outlier")
                               for n in names},
            "class_counts": {"outlier": len(self.outlier_branches),
                             "non_outlier": len(names) - len(self.outlier_branches)},
            "branch_limits": [dataclasses.asdict(b) for b in self.branch_limits],
            "tail": {"searched": bool(self.tail_keys), "feature_maps": len(self.tail_keys)},
            "range_rules": _rule_counts(self.plan),
            "num_samples": self.num_samples,
            "statistics_time_s": self.statistics_time_s,
            "search_time_s": self.search_time_s,
        }


def _rule_counts(plan: BitwidthPlan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for subbyte in plan.ranges.values():
        counts[subbyte.rule] = counts.get(subbyte.rule, 0) + 1
    return dict(sorted(counts.items()))


# -- 1. statistics ---------------------------------------------------------------------------
def stage_graph(*, graph: Graph, patch_plan: PatchPlan) -> Graph:
    """The original graph cut after the split op: ops 0..split, output = stage output."""
    sub = graph.main
    split = int(patch_plan.split_op)
    stage = Subgraph(name=sub.name, tensors=dict(sub.tensors), inputs=list(sub.inputs),
                     outputs=[sub.operators[split].outputs[0]],
                     operators=list(sub.operators[:split + 1]), extra=dict(sub.extra))
    return dataclasses.replace(graph, subgraphs=[stage] + list(graph.subgraphs[1:]))


def stage_map_regions(*, graph: Graph,
                      patch_plan: PatchPlan) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """Stage op outputs -> {branch name: (y0, y1, x0, x1)}, in op order."""
    cols = len(patch_plan.col_bounds) - 1
    regions = dict(patch_plan.regions)
    result = {}
    for op in graph.main.operators[:int(patch_plan.split_op) + 1]:
        key = op.outputs[0]
        if key in regions:
            result[key] = {f"p{i // cols}_{i % cols}": tuple(r.to_json())
                           for i, r in enumerate(regions[key])}
    return result


def tail_map_keys(*, graph: Graph, patch_plan: PatchPlan) -> tuple[str, ...]:
    """Int8 activation tensors written by the original ops after the split, in op order
    (the patched graph keeps these keys)."""
    sub = graph.main
    keys = []
    for op in sub.operators[int(patch_plan.split_op) + 1:]:
        for key in op.outputs:
            tensor = sub.tensors[key]
            if tensor.dtype == TensorType.INT8 and not tensor.is_constant and key not in keys:
                keys.append(key)
    return tuple(keys)


def collect_patch_statistics(*, graph: Graph, patch_plan: PatchPlan,
                             calibration: Iterable[np.ndarray],
                             tail: bool = True) -> dict[str, TensorStatistics]:
    """Statistics of every stage feature map and its patch regions over ``calibration``
    (an iterable of model-input batches, leading axis = samples); with ``tail`` the whole
    original graph runs once per batch and the tail maps (:func:`tail_map_keys`) get
    whole-tensor statistics too, else only the stage runs."""
    if not patch_plan.is_patched:
        raise ConfigError("QuantMCU needs a patched plan (grid larger than 1x1)")
    regions = stage_map_regions(graph=graph, patch_plan=patch_plan)
    observed = {key: regions.get(key) for key in regions}
    if tail:
        observed.update({key: None for key in tail_map_keys(graph=graph, patch_plan=patch_plan)})
    runnable = graph if tail else stage_graph(graph=graph, patch_plan=patch_plan)
    collector = StatisticsCollector()

    def observe(_index, _op, produced):
        for key, values in produced.items():
            if key in observed:
                _observe_tensor(collector=collector, tensor=runnable.main.tensors[key], key=key,
                                values=values, regions=observed[key])

    batches = 0
    for batch in calibration:
        run_graph(graph=runnable, inputs=[batch], observer=observe)
        batches += 1
    if batches == 0:
        raise CalibrationDataError("calibration data holds no batches")
    return collector.finish()


def _observe_tensor(*, collector: StatisticsCollector, tensor, key: str, values: np.ndarray,
                    regions: Mapping[str, tuple[int, int, int, int]] | None) -> None:
    quant = tensor.quantization
    sample_shape = tuple(tensor.shape[-3:]) if regions else tuple(tensor.shape[1:])
    values = values.reshape((values.shape[0],) + sample_shape)
    collector.update(key=key, values=values, scale=quant.scale[0],
                     zero_point=quant.zero_point[0], regions=regions)


# -- 2. VDPC -----------------------------------------------------------------------------------
def classify_stage(*, statistics: Mapping[str, TensorStatistics],
                   options: QuantMCUOptions) -> tuple[PatchClasses, ...]:
    """VDPC on every stage feature map (statistics order = op order; tail maps, which
    have no patch regions, are not classified)."""
    return tuple(classify_patches(statistics=s, options=options.vdpc_options())
                 for s in statistics.values() if s.regions)


def classify_branches(*, classes: tuple[PatchClasses, ...],
                      options: QuantMCUOptions) -> tuple[str, ...]:
    """Names of the outlier-class branches (sorted); none when VDPC is off."""
    if not options.use_vdpc:
        return ()
    deciding = classes[:1] if options.classify_on == "first" else classes
    return tuple(sorted({name for c in deciding for name in c.outlier_patches}))


# -- 2b. the tail: the layer-based part after the patch stage --------------------------------
@dataclass(frozen=True)
class TailFeatureMap:
    """A tail map: its key (the same in the original and the patched graph), its producer
    and the ops reading it in the patched graph."""

    key: str
    producer: int
    compute_consumers: tuple[int, ...]


@dataclass(frozen=True)
class TailBranch:
    """The tail as one more dataflow branch: its maps in execution order."""

    name: str
    feature_maps: tuple[TailFeatureMap, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(m.key for m in self.feature_maps)


def tail_branch(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph) -> TailBranch:
    """The tail maps (:func:`tail_map_keys`) located in the patched graph."""
    sub = patched_graph.main
    producers, consumers = sub.producers(), sub.consumers()
    maps = []
    for key in tail_map_keys(graph=graph, patch_plan=patch_plan):
        if key not in producers:
            raise ConfigError(f"tail tensor {key!r} of the original graph is produced by no op "
                              "of the patched graph: it was made from another model or plan")
        maps.append(TailFeatureMap(key=key, producer=producers[key],
                                   compute_consumers=tuple(sorted(set(consumers.get(key, ()))))))
    return TailBranch(name=TAIL, feature_maps=tuple(sorted(maps, key=lambda m: m.producer)))


# -- 3. M --------------------------------------------------------------------------------------
def branch_memory_limits(*, patched_graph: Graph, branches: tuple[PatchBranch, ...],
                         sram_budget: int | None) -> tuple[BranchLimit, ...]:
    """M of every branch (module doc, step 3)."""
    memory = plan_memory(graph=patched_graph, scratch=scratch_requests)
    return tuple(_branch_limit(memory=memory, branch=b, sram_budget=sram_budget)
                 for b in branches)


def _branch_limit(*, memory: MemoryPlan, branch: PatchBranch,
                  sram_budget: int | None) -> BranchLimit:
    prefix = f"{branch.name}/"
    return _limit_over_ops(memory=memory, name=branch.name,
                           producers=[m.producer for m in branch.feature_maps],
                           owned=lambda key: key.startswith(prefix), sram_budget=sram_budget)


def _limit_over_ops(*, memory: MemoryPlan, name: str, producers: list[int], owned,
                    sram_budget: int | None) -> BranchLimit:
    """Largest sum of live non-branch buffers over the ops from the branch's first to its
    last producer, and M = budget minus that."""
    steps = range(min(producers), max(producers) + 1)
    resident = max(sum(b.size for b in memory.live_during_op(i) if not owned(b.key))
                   for i in steps)
    limit = None if sram_budget is None else \
        branch_memory_limit(sram_bytes=int(sram_budget), resident_bytes=resident)
    return BranchLimit(branch=name, resident_bytes=resident, memory_limit=limit)


def tail_memory_limit(*, patched_graph: Graph, tail: TailBranch,
                      sram_budget: int | None) -> BranchLimit:
    """M of the tail, derived like a patch branch's: what is live besides the tail's own
    maps while they are produced (the stage output while the first tail op reads it,
    kernel scratch)."""
    memory = plan_memory(graph=patched_graph, scratch=scratch_requests)
    owned = set(tail.keys)
    return _limit_over_ops(memory=memory, name=tail.name,
                           producers=[m.producer for m in tail.feature_maps],
                           owned=lambda key: key in owned, sram_budget=sram_budget)


# -- 4. VDQS -----------------------------------------------------------------------------------
def consumer_costs(*, subgraph: Subgraph,
                   feature_map: PatchFeatureMap | TailFeatureMap) -> tuple[ConsumerCost, ...]:
    """MACs and weight bits of the patched ops that read the map's values."""
    return tuple(ConsumerCost(macs=op_macs(subgraph=subgraph, op=subgraph.operators[i]),
                              weight_bits=weight_bits(subgraph=subgraph,
                                                      op=subgraph.operators[i]))
                 for i in feature_map.compute_consumers)


def map_candidates(*, key: str, allowed: Mapping[str, Iterable[int]],
                   options: QuantMCUOptions) -> tuple[int, ...]:
    """``options.candidates`` that the graph pass allows for ``key`` (8 always)."""
    permitted = set(allowed.get(key, (8,))) | {8}
    return tuple(b for b in options.candidates if b in permitted) or (8,)


def map_ranges(*, statistics: TensorStatistics, check: TensorStatistics | None,
               region: str | None, candidates: Iterable[int],
               options: QuantMCUOptions) -> tuple[SubbyteRange, ...]:
    """The chosen range (:func:`ranges.choose_range`) of a map at each sub-byte candidate:
    fitted on ``statistics``, judged on the held-out ``check`` statistics (None: on the fit
    samples)."""
    def histogram(stats):
        return stats.histogram if region is None else stats.region(region).histogram
    return tuple(choose_range(fit_histogram=histogram(statistics),
                              check_histogram=None if check is None else histogram(check),
                              scale8=statistics.scale, zero_point8=statistics.zero_point,
                              bits=b, options=options.range_options()).chosen
                 for b in candidates if b < 8)


def branch_spec(*, patched_graph: Graph, branch: PatchBranch,
                statistics: Mapping[str, TensorStatistics], limit: BranchLimit,
                allowed: Mapping[str, Iterable[int]], outlier_class: bool,
                options: QuantMCUOptions,
                check_statistics: Mapping[str, TensorStatistics] | None = None,
                chosen: Mapping[tuple[str, int], SubbyteRange] | None = None,
                savings: InstructionSavings | None = None) -> BranchSpec:
    """The VDQS input of one branch; ``chosen``: ranges picked beforehand per (key, bits)
    (:mod:`range_selection`), else :func:`map_ranges`; ``savings``: the instructions measure's
    model (needed when ``options.measure`` is ``"instructions"``)."""
    sub = patched_graph.main
    check = check_statistics or {}
    maps = []
    for m in branch.feature_maps:
        candidates = map_candidates(key=m.patched_key, allowed=allowed, options=options)
        ranges = _chosen_ranges(key=m.patched_key, candidates=candidates, chosen=chosen)
        if ranges is None:
            ranges = map_ranges(statistics=statistics[m.original_key],
                                check=check.get(m.original_key), region=branch.name,
                                candidates=() if outlier_class else candidates, options=options)
        maps.append(feature_map_from_statistics(
            key=m.patched_key, shape=sub.tensors[m.patched_key].shape,
            statistics=statistics[m.original_key], region=branch.name,
            consumers=consumer_costs(subgraph=sub, feature_map=m), candidates=candidates,
            ranges=ranges, instructions_saved=_saved_instructions(
                savings=savings, key=m.patched_key, candidates=candidates, options=options)))
    maps = tuple(maps)
    memory_limit = limit.memory_limit
    if memory_limit is None:
        memory_limit = 2 * sum(m.bytes_at(8) for m in maps) + 1
    return BranchSpec(name=branch.name, feature_maps=maps, memory_limit=memory_limit,
                      outlier_class=outlier_class,
                      instructions=_branch_instructions(savings=savings, maps=maps,
                                                        options=options))


def tail_spec(*, patched_graph: Graph, tail: TailBranch,
              statistics: Mapping[str, TensorStatistics], limit: BranchLimit,
              allowed: Mapping[str, Iterable[int]], options: QuantMCUOptions,
              check_statistics: Mapping[str, TensorStatistics] | None = None,
              chosen: Mapping[tuple[str, int], SubbyteRange] | None = None,
              savings: InstructionSavings | None = None) -> BranchSpec:
    """The VDQS input of the tail: whole-tensor statistics, never outlier-class."""
    sub = patched_graph.main
    _check_tail_statistics(tail=tail, statistics=statistics)
    check = check_statistics or {}
    maps = []
    for m in tail.feature_maps:
        candidates = map_candidates(key=m.key, allowed=allowed, options=options)
        ranges = _chosen_ranges(key=m.key, candidates=candidates, chosen=chosen)
        if ranges is None:
            ranges = map_ranges(statistics=statistics[m.key], check=check.get(m.key),
                                region=None, candidates=candidates, options=options)
        maps.append(feature_map_from_statistics(
            key=m.key, shape=sub.tensors[m.key].shape, statistics=statistics[m.key],
            consumers=consumer_costs(subgraph=sub, feature_map=m), candidates=candidates,
            ranges=ranges, instructions_saved=_saved_instructions(
                savings=savings, key=m.key, candidates=candidates, options=options)))
    maps = tuple(maps)
    memory_limit = limit.memory_limit
    if memory_limit is None:
        memory_limit = 2 * sum(m.bytes_at(8) for m in maps) + 1
    return BranchSpec(name=tail.name, feature_maps=maps, memory_limit=memory_limit,
                      instructions=_branch_instructions(savings=savings, maps=maps,
                                                        options=options))


def _saved_instructions(*, savings: InstructionSavings | None, key: str, candidates,
                        options: QuantMCUOptions) -> tuple[tuple[int, float], ...]:
    """(bits, predicted instructions saved) per sub-byte candidate; () for the BitOPs measure."""
    if options.measure != "instructions":
        return ()
    if savings is None:
        raise ConfigError("QuantMCU measure 'instructions' needs the latency model "
                          "(search_quantmcu(savings=instruction_savings(...)))")
    return tuple((b, savings.saved(key=key, bits=b)) for b in candidates if b < 8)


def _branch_instructions(*, savings: InstructionSavings | None, maps, options: QuantMCUOptions
                         ) -> float:
    if options.measure != "instructions" or savings is None:
        return 0.0
    return savings.total(keys=[m.key for m in maps])


def _check_tail_statistics(*, tail: TailBranch, statistics: Mapping[str, TensorStatistics]) -> None:
    missing = [k for k in tail.keys if k not in statistics]
    if missing:
        raise ConfigError(f"statistics lack the tail maps {missing[:3]} (of {len(missing)}): "
                          "collect them with collect_patch_statistics(tail=True) or set "
                          "QuantMCUOptions(search_tail=False)")


def _chosen_ranges(*, key: str, candidates: Iterable[int],
                   chosen: Mapping[tuple[str, int], SubbyteRange] | None
                   ) -> tuple[SubbyteRange, ...] | None:
    wanted = [b for b in candidates if b < 8]
    if chosen is None or any((key, b) not in chosen for b in wanted):
        return None
    return tuple(chosen[(key, b)] for b in wanted)


def map_sites(*, graph: Graph, patch_plan: PatchPlan, branches: tuple[PatchBranch, ...],
              tail: TailBranch | None, outliers: tuple[str, ...],
              allowed: Mapping[str, Iterable[int]], options: QuantMCUOptions) -> list[MapSite]:
    """Every searched map with its place in the int8 graph (for :mod:`range_selection`)."""
    regions = stage_map_regions(graph=graph, patch_plan=patch_plan)
    sites = [MapSite(key=m.patched_key, tensor=m.original_key, region_name=b.name,
                     region=regions[m.original_key][b.name],
                     candidates=(8,) if b.name in outliers else
                     map_candidates(key=m.patched_key, allowed=allowed, options=options))
             for b in branches for m in b.feature_maps]
    if tail is not None:
        sites += [MapSite(key=m.key, tensor=m.key, region_name=None, region=None,
                          candidates=map_candidates(key=m.key, allowed=allowed, options=options))
                  for m in tail.feature_maps]
    return sites


def search_branch(*, spec: BranchSpec, options: QuantMCUOptions) -> BitwidthPlan:
    """VDQS of one branch (8 bits everywhere for an outlier-class one)."""
    return search_bitwidths(branch=spec, options=options.vdqs_options())


def allowed_subbyte_bits(*, patched_graph: Graph) -> dict[str, tuple[int, ...]]:
    """Bit widths the graph pass can give each patched tensor."""
    return {key: tuple(int(b) for b in bits)
            for key, bits in subbyte_candidates(graph=patched_graph).items()}


def search_quantmcu(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph,
                    calibration: Iterable[np.ndarray] | None, sram_budget: int | None,
                    options: QuantMCUOptions = QuantMCUOptions(),
                    statistics: Mapping[str, TensorStatistics] | None = None,
                    allowed: Mapping[str, Iterable[int]] | None = None,
                    check_statistics: Mapping[str, TensorStatistics] | None = None,
                    heldout_x: np.ndarray | None = None,
                    savings: InstructionSavings | None = None) -> QuantMCUResult:
    """QuantMCU's bit widths for the per-patch feature maps (module doc).

    ``statistics`` (from :func:`collect_patch_statistics`) skips step 1, e.g. for
    parameter sweeps; ``allowed`` overrides ``subbyte_candidates`` of the patched graph;
    ``check_statistics``: statistics of held-out calibration samples; ``heldout_x``: those
    samples' int8 input codes. With ``heldout_x`` each map's range rule is chosen by the model
    output error of its first ``options.select_samples`` samples (:mod:`range_selection`),
    else by the map's own quantization error on ``check_statistics`` (None: on the fit
    samples, :func:`ranges.choose_range`). ``savings``: the latency model of ``patched_graph``
    (:mod:`instruction_savings`), needed with ``options.measure == "instructions"``.
    """
    if not patch_plan.is_patched:
        raise ConfigError("QuantMCU needs a patched plan (grid larger than 1x1); the patch "
                          f"planner kept the model layer-based: {patch_plan.reason}")
    start = time.perf_counter()
    if statistics is None:
        if calibration is None:
            raise ConfigError("search_quantmcu: give calibration batches or statistics")
        statistics = collect_patch_statistics(graph=graph, patch_plan=patch_plan,
                                              calibration=calibration)
    collected = time.perf_counter()
    branches = patch_branches(graph=graph, patched_graph=patched_graph, plan=patch_plan)
    if allowed is None:
        allowed = allowed_subbyte_bits(patched_graph=patched_graph)
    classes = classify_stage(statistics=statistics, options=options)
    outliers = classify_branches(classes=classes, options=options)
    limits = branch_memory_limits(patched_graph=patched_graph, branches=branches,
                                  sram_budget=sram_budget)
    tail = _searched_tail(graph=graph, patch_plan=patch_plan, patched_graph=patched_graph,
                          options=options)
    if tail is not None:
        _check_tail_statistics(tail=tail, statistics=statistics)
    simulator = None if heldout_x is None or len(heldout_x) == 0 else \
        OutputSimulator(graph=graph, x=heldout_x[:options.select_samples])
    selection = select_ranges(
        sites=map_sites(graph=graph, patch_plan=patch_plan, branches=branches, tail=tail,
                        outliers=outliers, allowed=allowed, options=options),
        statistics=statistics, check_statistics=check_statistics, simulator=simulator,
        options=options.range_options())
    plans = [search_branch(spec=branch_spec(
        patched_graph=patched_graph, branch=b, statistics=statistics, limit=lim,
        allowed=allowed, outlier_class=b.name in outliers, options=options,
        check_statistics=check_statistics, chosen=selection.ranges, savings=savings),
        options=options) for b, lim in zip(branches, limits)]
    if tail is not None:
        tail_limit = tail_memory_limit(patched_graph=patched_graph, tail=tail,
                                       sram_budget=sram_budget)
        limits = limits + (tail_limit,)
        plans.append(search_branch(spec=tail_spec(
            patched_graph=patched_graph, tail=tail, statistics=statistics, limit=tail_limit,
            allowed=allowed, options=options, check_statistics=check_statistics,
            chosen=selection.ranges, savings=savings), options=options))
    merged = merge_plans(plans=plans)
    selection = _with_lowerable(selection=selection, sites=map_sites(
        graph=graph, patch_plan=patch_plan, branches=branches, tail=None, outliers=(),
        allowed=allowed, options=options), statistics=statistics,
        check_statistics=check_statistics, simulator=simulator, options=options)
    plan = dataclasses.replace(merged, policy="quantmcu" if options.use_vdpc else
                               "quantmcu-no-vdpc", options=options.to_dict())
    done = time.perf_counter()
    return QuantMCUResult(plan=plan, patch_classes=classes, outlier_branches=outliers,
                          branch_limits=limits,
                          num_samples=next(iter(statistics.values())).num_samples,
                          statistics_time_s=collected - start, search_time_s=done - collected,
                          tail_keys=() if tail is None else tail.keys, selection=selection)


def _with_lowerable(*, selection: Selection, sites: list[MapSite], statistics,
                    check_statistics, simulator, options: QuantMCUOptions,
                    bits: int = 4) -> Selection:
    """``selection`` plus a ``bits``-bit range (and simulated cost) for every branch map that
    VDPC kept out of VDQS (outlier class) but the graph allows at ``bits``: the accuracy
    guard's descent may lower them when the measured drop allows (accuracy_guard.py)."""
    extra = [dataclasses.replace(s, candidates=(bits,)) for s in sites
             if bits in s.candidates and (s.key, bits) not in selection.ranges]
    if not extra or simulator is None:
        return selection
    more = select_ranges(sites=extra, statistics=statistics, check_statistics=check_statistics,
                         simulator=simulator, options=options.range_options())
    return Selection(ranges={**selection.ranges, **more.ranges},
                     costs={**selection.costs, **more.costs})


def _searched_tail(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph,
                   options: QuantMCUOptions) -> TailBranch | None:
    """The tail when it is searched: option on and at least 2 maps (a VDQS branch)."""
    if not options.search_tail:
        return None
    tail = tail_branch(graph=graph, patch_plan=patch_plan, patched_graph=patched_graph)
    return tail if len(tail.feature_maps) >= 2 else None


def uniform_plan(*, graph: Graph, patch_plan: PatchPlan, patched_graph: Graph, bits: int = 4,
                 allowed: Mapping[str, Iterable[int]] | None = None,
                 tail: bool = False, statistics: Mapping[str, TensorStatistics] | None = None,
                 check_statistics: Mapping[str, TensorStatistics] | None = None,
                 range_rules: tuple[str, ...] = ("full",),
                 heldout_x: np.ndarray | None = None,
                 select_samples: int = SELECT_SAMPLES) -> BitwidthPlan:
    """Every per-patch feature map (and with ``tail`` every tail map) at ``bits`` where the
    graph pass allows it, else 8; each sub-byte map's range chosen among ``range_rules`` as
    :func:`search_quantmcu` does (rules other than ``full`` need ``statistics``)."""
    if bits not in BIT_CHOICES:
        raise ConfigError(f"uniform plan: bits must be one of {BIT_CHOICES}, got {bits}")
    if allowed is None:
        allowed = allowed_subbyte_bits(patched_graph=patched_graph)
    branches = patch_branches(graph=graph, patched_graph=patched_graph, plan=patch_plan)
    regions = stage_map_regions(graph=graph, patch_plan=patch_plan)
    sites = [MapSite(key=m.patched_key, tensor=m.original_key, region_name=b.name,
                     region=regions[m.original_key][b.name], candidates=(bits,))
             for b in branches for m in b.feature_maps]
    if tail:
        sites += [MapSite(key=k, tensor=k, region_name=None, region=None, candidates=(bits,))
                  for k in tail_map_keys(graph=graph, patch_plan=patch_plan)]
    chosen = {s.key: (bits if bits in set(allowed.get(s.key, ())) else 8) for s in sites}
    sites = [s for s in sites if chosen[s.key] < 8]
    options = RangeOptions(rules=tuple(range_rules))
    if statistics is None:
        if tuple(range_rules) != ("full",):
            raise ConfigError(f"range rules {tuple(range_rules)} need calibration statistics")
        ranges = {s.key: _full_range_of(graph=graph, key=s.tensor, bits=bits) for s in sites}
    else:
        simulator = None if heldout_x is None or len(heldout_x) == 0 else \
            OutputSimulator(graph=graph, x=heldout_x[:select_samples])
        selection = select_ranges(sites=sites, statistics=statistics,
                                  check_statistics=check_statistics, simulator=simulator,
                                  options=options)
        ranges = {s.key: selection.ranges[(s.key, bits)] for s in sites}
    return BitwidthPlan(policy=f"uniform{bits}" + ("-tail" if tail else ""),
                        options={"bits": bits, "tail": tail, "range_rules": list(range_rules)},
                        bits=chosen, ranges=ranges)


def _full_range_of(*, graph: Graph, key: str, bits: int) -> SubbyteRange:
    quant = graph.main.tensors[key].quantization
    return full_range(scale8=quant.scale[0], zero_point8=quant.zero_point[0], bits=bits)
