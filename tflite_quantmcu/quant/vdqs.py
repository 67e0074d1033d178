"""Value-driven quantization search (VDQS, QuantMCU Section III-B, Eq. 2-7, Algorithm 1).

For each feature map i of a branch (execution order, i = 0 .. N) and candidate b:

* **Entropy** ``H(i, b)`` (Eq. 3-4, in bits): requantize the map's int8 codes to b bits
  exactly as ``QMCU_PACK`` does, with the map's planned range at b bits
  (``FeatureMapSpec.ranges``, :mod:`ranges`; the whole int8 range, ``scale_b = scale_8 *
  255 / (2^b - 1)``, when none is given), TFLite fixed-point multiplier; divide the
  value range of the b-bit map, ``[q_min, q_max]`` over the levels that occur, uniformly
  into k = ``bins`` bins (bin of level q: ``(q - q_min) * k // (q_max - q_min + 1)``, exact
  integers) and take the entropy of the bin frequencies. The paper does not give k.
  Default k = 16 = 2^4: the entropy measures the shape of the distribution at the
  resolution of the 4-bit candidate, so dH(i, 4) is small where 4 bits keep the
  histogram's shape and dH(i, 2) is what 2 bits lose (dH can be slightly negative
  when the 4-bit levels fall differently into the bins). With k >= 256 H(i, b) is the
  exact entropy of the b-bit codes and dH >= 0, but then Omega (0.2-0.7 at 4 bits on a
  trained MobileNetV2-style net*) dwarfs Phi (0.02-0.07 per map) and VDQS keeps every
  map at 8 bits for any lam >= 0.2 unless M forces cuts, contrary to the paper's
  Table III (lam moves BitOPs) and Fig. 6 (more than half of the maps sub-byte, the last
  ones 8-bit). With k = 16 on that net, lam 0.2 -> 0.8 moved a branch from 0.58 to 0.78
  of its 8-bit BitOPs, with most maps at 4 bits and the last at 8.
  (*) an ad-hoc 3-epoch Fashion-MNIST net (80 % top-1), 128 calibration images, 3x3
  patches of its first 10 maps.
  Re-measured on the bundled model with the tail searched (held-out training images):
  at k = 16 dH(i, 4) is ~0, every eligible map goes to 4 bits for every lam and the
  top-1 loss is 1.4-1.7 points; ``VdqsOptions`` defaults to k = 24, where lam moves BitOPs as in
  Table III (lam 0.2 / 0.4 / 0.6 / 0.8 -> BitOPs / 1.31 / 1.10 / 1.04 / 1.00 of patch
  int8 at -2.0 / -0.6 / -0.7 / 0 points) and the paper's lam = 0.6 stays within 1 point.
  The convert pipeline (``QuantMCUOptions``) uses k = 16 since sub-byte ranges are chosen
  from calibration data and the accuracy guard raises costly maps back to int8: VDQS then
  proposes (nearly) every eligible map at 4 bits and the guard decides
  (docs/quantmcu_accuracy.md).
* ``Omega(i, b) = dH(i, b) / H(N, b_last)`` (Eq. 5); ``b_last`` = the widest allowed
  candidate of the branch's last map (8 unless restricted). If H(N, b_last) = 0 the
  branch's output carries no information over the calibration set and Omega = 0.
* ``Phi(i, b) = dB(i, b) / B`` (Eq. 2): the BitOPs of a map are those of the ops that
  read it, MACs x weight bits x activation bits (``consumers``, computed by the caller
  with ``analysis/costs.py``); ``dB(i, b) = sum(MACs x w_bits) x (8 - b)``,
  ``B = sum_i sum(MACs x w_bits) x 8`` over the branch. B = 0 gives Phi = 0.
* **Measure** (``VdqsOptions.measure``): ``"bitops"`` (the paper, above) or
  ``"instructions"`` (``--objective min-latency``): ``Phi(i, b) = dI(i, b) / I`` with dI the
  predicted Cortex-M4 instructions the map saves at b bits (``FeatureMapSpec.instructions_saved``,
  from :mod:`instruction_savings`; negative where the b-bit kernels are slower than what runs at
  int8) and I the branch's int8 instructions (``BranchSpec.instructions``). A width that saves
  no instructions is ranked after 8 whatever its S (an entropy that grows by a hair at 16 bins
  would otherwise pick it): only Eq. 7's memory limit can still move such a map down.
* ``S(i, b) = -lam * Omega + (1 - lam) * Phi`` (Eq. 6); candidates are ordered by
  descending S, ties to the wider candidate; the first is the initial pick.

Then :mod:`traversal` (Algorithm 1) adjusts picks until every adjacent pair fits M
(packed bytes, ``tensor_bytes`` semantics).

Allowed candidates of a map: ``FeatureMapSpec.candidates`` or ``VdqsOptions.candidates``,
minus sub-byte widths whose packing would leave a partial byte (channels not a multiple
of 8 / b; docs/qmcu_ops.md §1.1); 8 if none is left. An outlier-class branch (VDPC)
allows only 8 bits everywhere (Eq. 7 is still checked).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.analysis.memory import tensor_bytes
from tflite_quantmcu.errors import BudgetError, CalibrationDataError, ConfigError
from tflite_quantmcu.ir.graph import Tensor
from tflite_quantmcu.ir.schema import TensorType
from tflite_quantmcu.quant.plan import BitwidthPlan, BranchRecord, CandidateScore
from tflite_quantmcu.quant.ranges import SubbyteRange, full_range, levels
from tflite_quantmcu.quant.statistics import NUM_CODES, TensorStatistics
from tflite_quantmcu.quant.traversal import PairProblem, initial_bits, resolve_pairs

BIT_CHOICES = (8, 4, 2)
MEASURES = ("bitops", "instructions")
MAX_BINS = NUM_CODES   # k >= 256 already gives every int8 code its own bin (module doc)


@dataclass(frozen=True)
class ConsumerCost:
    """One op that reads a feature map: its MACs and weight bits (8 for weightless ops)."""

    macs: int
    weight_bits: int = 8


@dataclass(frozen=True)
class FeatureMapSpec:
    """A feature map of a branch as VDQS needs it.

    ``histogram``: 256 counts of its int8 codes over the calibration set (index c + 128),
    e.g. a :class:`RegionStatistics` histogram for a patch tensor. ``ranges``: its range at
    each sub-byte candidate (missing: the whole int8 range).
    """

    key: str
    shape: tuple[int, ...]
    histogram: tuple[int, ...]
    scale: float
    zero_point: int
    consumers: tuple[ConsumerCost, ...] = ()
    candidates: tuple[int, ...] | None = None
    ranges: tuple[SubbyteRange, ...] = ()
    instructions_saved: tuple[tuple[int, float], ...] = ()   # (bits, saved) per sub-byte width

    def __post_init__(self) -> None:
        if len({r.bits for r in self.ranges}) != len(self.ranges):
            raise ConfigError(f"feature map '{self.key}': more than one range per bit width")
        if len(self.histogram) != NUM_CODES:
            raise ConfigError(f"feature map '{self.key}': histogram needs {NUM_CODES} bins, "
                              f"got {len(self.histogram)}")
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise ConfigError(f"feature map '{self.key}': shape {self.shape} must be positive")
        if sum(self.histogram) <= 0:
            raise CalibrationDataError(f"feature map '{self.key}': empty histogram")
        if self.candidates is not None:
            _check_candidates(where=f"feature map '{self.key}'", candidates=self.candidates)

    def bytes_at(self, bits: int) -> int:
        """Packed bytes at ``bits`` (analysis.memory.tensor_bytes semantics)."""
        tensor = Tensor(name=self.key, shape=tuple(self.shape), dtype=TensorType.INT8)
        return tensor_bytes(tensor=tensor, bits=bits)

    def range_at(self, bits: int) -> SubbyteRange:
        """The map's range at a sub-byte width (the whole int8 range if none was given)."""
        for subbyte in self.ranges:
            if subbyte.bits == bits:
                return subbyte
        return full_range(scale8=self.scale, zero_point8=self.zero_point, bits=bits)

    @property
    def bitops_per_activation_bit(self) -> int:
        return sum(c.macs * c.weight_bits for c in self.consumers)

    def saved_instructions(self, bits: int) -> float:
        """Predicted instructions saved at ``bits`` (0 at 8; the ``instructions`` measure)."""
        if bits == 8:
            return 0.0
        for width, saved in self.instructions_saved:
            if width == bits:
                return float(saved)
        raise ConfigError(f"feature map '{self.key}': the instructions measure needs its "
                          f"saved instructions at {bits} bits, got widths "
                          f"{[w for w, _ in self.instructions_saved]}")


@dataclass(frozen=True)
class BranchSpec:
    """The feature maps of one dataflow branch in execution order, and its limit M."""

    name: str
    feature_maps: tuple[FeatureMapSpec, ...]
    memory_limit: int
    outlier_class: bool = False
    instructions: float = 0.0   # int8 instructions of the branch's ops (the instructions measure)

    def __post_init__(self) -> None:
        keys = [m.key for m in self.feature_maps]
        if len(keys) < 2:
            raise ConfigError(f"branch '{self.name}': needs at least 2 feature maps, got {keys}")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"branch '{self.name}': repeated feature map keys {keys}")
        if int(self.memory_limit) <= 0:
            raise BudgetError(f"branch '{self.name}': memory limit M = {self.memory_limit} "
                              "bytes leaves no room for feature maps")


@dataclass(frozen=True)
class VdqsOptions:
    """lam: weight of accuracy vs cost (paper 0.6); bins: k of Eq. 3; candidates: m widths;
    measure: what Phi counts, BitOPs (the paper) or predicted instructions (module doc)."""

    lam: float = 0.6
    bins: int = 24
    candidates: tuple[int, ...] = BIT_CHOICES
    measure: str = "bitops"

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ConfigError(f"VDQS measure must be one of {MEASURES}, got {self.measure!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"VDQS lam must be in [0, 1], got {self.lam}")
        if not 2 <= int(self.bins) <= MAX_BINS:
            raise ConfigError(f"VDQS bins (--bins) must be 2..{MAX_BINS}, got {self.bins} "
                              f"(with {MAX_BINS} bins every one of the {NUM_CODES} codes has "
                              "its own bin already; more change nothing)")
        _check_candidates(where="VDQS options", candidates=self.candidates)

    def to_dict(self) -> dict:
        return {"lam": self.lam, "bins": self.bins, "candidates": list(self.candidates),
                "measure": self.measure}


def _check_candidates(*, where: str, candidates) -> None:
    if not candidates or len(set(candidates)) != len(candidates) or \
            any(b not in BIT_CHOICES for b in candidates):
        raise ConfigError(f"{where}: candidates must be distinct values of {BIT_CHOICES}, "
                          f"got {tuple(candidates)}")


def branch_memory_limit(*, sram_bytes: int, resident_bytes: int) -> int:
    """M for a branch: the SRAM budget minus what stays resident during the patch stage
    (e.g. the full output buffer the patches are written into, kernel scratch)."""
    if sram_bytes <= 0 or resident_bytes < 0:
        raise ConfigError(f"SRAM budget {sram_bytes} must be > 0 and resident bytes "
                          f"{resident_bytes} >= 0")
    limit = int(sram_bytes) - int(resident_bytes)
    if limit <= 0:
        raise BudgetError(f"{resident_bytes} bytes resident during the patch stage leave no "
                          f"room for patch feature maps in an SRAM budget of {sram_bytes} bytes")
    return limit


def allowed_candidates(*, feature_map: FeatureMapSpec, options: VdqsOptions,
                       outlier_class: bool = False) -> tuple[int, ...]:
    """The candidates VDQS may give this map, widest first (module doc)."""
    if outlier_class:
        return (8,)
    base = feature_map.candidates if feature_map.candidates is not None else options.candidates
    channels = int(feature_map.shape[-1])
    allowed = tuple(sorted((b for b in base if b == 8 or channels % (8 // b) == 0), reverse=True))
    return allowed or (8,)


def requantized_levels(*, scale: float, zero_point: int, bits: int,
                       subbyte: SubbyteRange | None = None) -> np.ndarray:
    """The b-bit level of every int8 code (index c + 128), as QMCU_PACK computes it with
    ``subbyte`` (None: the whole int8 range); for 8 bits the code shifted to 0..255."""
    return levels(scale8=scale, zero_point8=zero_point, bits=bits, subbyte=subbyte)


def binned_entropy(*, level_counts: np.ndarray, bins: int) -> float:
    """Entropy (bits) of ``bins`` uniform bins over the occupied level range (module doc)."""
    occupied = np.flatnonzero(level_counts)
    low, high = int(occupied[0]), int(occupied[-1])
    levels = np.arange(low, high + 1, dtype=np.int64)
    bin_index = (levels - low) * int(bins) // (high - low + 1)
    counts = np.bincount(bin_index, weights=level_counts[low:high + 1].astype(np.float64))
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * np.log2(probs)).sum()) + 0.0


def feature_map_entropy(*, feature_map: FeatureMapSpec, bits: int, bins: int) -> float:
    """H(i, b) of Eq. 4 for one feature map."""
    subbyte = None if bits == 8 else feature_map.range_at(bits)
    level_of = requantized_levels(scale=feature_map.scale, zero_point=feature_map.zero_point,
                                  bits=bits, subbyte=subbyte)
    level_counts = np.bincount(level_of,
                               weights=np.asarray(feature_map.histogram, dtype=np.float64),
                               minlength=1 << bits)
    return binned_entropy(level_counts=level_counts, bins=bins)


@dataclass(frozen=True)
class BranchScores:
    """Scores of every allowed candidate of every map, and the resulting preference orders."""

    last_entropy: float
    scores: tuple[tuple[CandidateScore, ...], ...]
    orders: tuple[tuple[int, ...], ...]


def score_branch(*, branch: BranchSpec, options: VdqsOptions = VdqsOptions()) -> BranchScores:
    """Eq. 2-6 for every map and allowed candidate; orders by descending S (ties: wider)."""
    maps = branch.feature_maps
    allowed = [allowed_candidates(feature_map=m, options=options,
                                  outlier_class=branch.outlier_class) for m in maps]
    if options.measure == "instructions":
        total_cost = float(branch.instructions)
    else:
        total_cost = 8 * sum(m.bitops_per_activation_bit for m in maps)
    last_entropy = feature_map_entropy(feature_map=maps[-1], bits=max(allowed[-1]),
                                       bins=options.bins)
    rows = tuple(
        tuple(_candidate_score(feature_map=m, bits=b, options=options, last_entropy=last_entropy,
                               total_cost=total_cost) for b in cands)
        for m, cands in zip(maps, allowed))
    orders = tuple(tuple(s.bits for s in sorted(
        row, key=lambda s: (_saves_nothing(score=s, options=options), -s.score, -s.bits)))
        for row in rows)
    return BranchScores(last_entropy=last_entropy, scores=rows, orders=orders)


def _saves_nothing(*, score: CandidateScore, options: VdqsOptions) -> bool:
    """Instructions measure: a sub-byte width predicted no faster than 8 bits (module doc)."""
    return options.measure == "instructions" and score.bits < 8 and score.phi <= 0


def _candidate_score(*, feature_map: FeatureMapSpec, bits: int, options: VdqsOptions,
                     last_entropy: float, total_cost: float) -> CandidateScore:
    entropy8 = feature_map_entropy(feature_map=feature_map, bits=8, bins=options.bins)
    entropy = feature_map_entropy(feature_map=feature_map, bits=bits, bins=options.bins)
    delta = entropy8 - entropy
    omega = delta / last_entropy if last_entropy > 0 else 0.0
    if options.measure == "instructions":
        saved = feature_map.saved_instructions(bits)
    else:
        saved = feature_map.bitops_per_activation_bit * (8 - bits)
    phi = saved / total_cost if total_cost > 0 else 0.0
    score = -options.lam * omega + (1.0 - options.lam) * phi
    _check_finite(key=feature_map.key, values=(entropy, omega, phi, score))
    return CandidateScore(bits=bits, bytes=feature_map.bytes_at(bits), entropy=entropy,
                          delta_entropy=delta, omega=omega, phi=phi, score=score + 0.0)


def _check_finite(*, key: str, values) -> None:
    if not all(math.isfinite(v) for v in values):
        raise CalibrationDataError(f"feature map '{key}': non-finite VDQS score inputs {values}")


def search_bitwidths(*, branch: BranchSpec, options: VdqsOptions = VdqsOptions()) -> BitwidthPlan:
    """VDQS for one branch: scores, initial pick, Algorithm 1; deterministic."""
    scored = score_branch(branch=branch, options=options)
    keys = tuple(m.key for m in branch.feature_maps)
    sizes = tuple({s.bits: s.bytes for s in row} for row in scored.scores)
    problem = PairProblem(name=branch.name, keys=keys, orders=scored.orders, sizes=sizes,
                          limit=int(branch.memory_limit))
    final, log = resolve_pairs(problem=problem)
    record = BranchRecord(name=branch.name, memory_limit=int(branch.memory_limit),
                          outlier_class=branch.outlier_class, keys=keys, orders=scored.orders,
                          initial_bits=initial_bits(orders=scored.orders), final_bits=final,
                          last_entropy=scored.last_entropy, scores=scored.scores, log=log)
    ranges = {m.key: m.range_at(b) for m, b in zip(branch.feature_maps, final) if b < 8}
    return BitwidthPlan(policy="vdqs", options=options.to_dict(), bits=dict(zip(keys, final)),
                        branches=(record,), ranges=ranges)


def feature_map_from_statistics(*, key: str, shape: tuple[int, ...],
                                statistics: TensorStatistics, region: str | None = None,
                                consumers: tuple[ConsumerCost, ...] = (),
                                candidates: tuple[int, ...] | None = None,
                                ranges: tuple[SubbyteRange, ...] = (),
                                instructions_saved: tuple[tuple[int, float], ...] = ()
                                ) -> FeatureMapSpec:
    """A FeatureMapSpec from collected statistics: the whole tensor, or one patch region."""
    histogram = statistics.histogram if region is None else statistics.region(region).histogram
    return FeatureMapSpec(key=key, shape=tuple(shape), histogram=tuple(histogram),
                          scale=statistics.scale, zero_point=statistics.zero_point,
                          consumers=tuple(consumers), candidates=candidates,
                          ranges=tuple(ranges), instructions_saved=tuple(instructions_saved))


def options_from_dict(data: dict) -> VdqsOptions:
    """Inverse of :meth:`VdqsOptions.to_dict` (for replaying a plan's options)."""
    return VdqsOptions(lam=float(data["lam"]), bins=int(data["bins"]),
                       candidates=tuple(int(b) for b in data["candidates"]),
                       measure=str(data.get("measure", "bitops")))


__all__ = ["BIT_CHOICES", "MEASURES", "BranchScores", "BranchSpec", "ConsumerCost", "FeatureMapSpec",
           "VdqsOptions", "allowed_candidates", "binned_entropy",
           "branch_memory_limit", "feature_map_entropy", "feature_map_from_statistics",
           "options_from_dict", "requantized_levels", "score_branch", "search_bitwidths"]
