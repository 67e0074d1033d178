"""Memory-driven mixed precision of Rusci et al. (MLSys 2020) on the same data as VDQS.

Activations first (RAM, rule [M2]): every node's input + output must fit RAM. All
feature maps start at 8 bits; any cut lowers a width one step (8 -> 4 -> 2, skipping
widths a map may not take). Forward sweep over the nodes (map i -> map i+1): while
the pair exceeds RAM and the output is at least as large as the input, cut the
output; backward sweep from the last node: while it exceeds RAM and the input is at
least as large as the output, cut the input; alternate until every pair fits. This is
Algorithm 1's traversal with the fixed order 8, 4, 2 (``traversal``, including its
fallback for a pair whose larger map is already at 2 bits). VDPC classes are not used
(``BranchSpec.outlier_class`` is ignored): Rusci et al. have no such notion.

Then weights (flash, rule [M1]): while the weights' packed bytes plus
``flash_other_bytes`` exceed the flash limit, compute each cuttable weight's share
r_j = bytes_j / total weight bytes, S = the largest share among cuttable weights, and
cut the earliest weight (in the given order) whose share is >= S - eps (eps = 0.05).

:class:`BudgetError` if the activations do not fit even at 2 bits, or the weights do
not fit flash with every weight at its narrowest width.
"""
from __future__ import annotations

from dataclasses import dataclass

from tflite_quantmcu.analysis.memory import tensor_bytes
from tflite_quantmcu.errors import BudgetError, ConfigError
from tflite_quantmcu.ir.graph import Tensor
from tflite_quantmcu.ir.schema import TensorType
from tflite_quantmcu.quant.plan import BitwidthPlan, BranchRecord, TraversalStep, WeightRecord
from tflite_quantmcu.quant.traversal import PairProblem, initial_bits, resolve_pairs
from tflite_quantmcu.quant.vdqs import BIT_CHOICES, BranchSpec, FeatureMapSpec


@dataclass(frozen=True)
class WeightSpec:
    """A weight tensor (logical shape; packed along its innermost axis when sub-byte)."""

    key: str
    shape: tuple[int, ...]
    candidates: tuple[int, ...] = BIT_CHOICES

    def bytes_at(self, bits: int) -> int:
        tensor = Tensor(name=self.key, shape=tuple(self.shape), dtype=TensorType.INT8)
        return tensor_bytes(tensor=tensor, bits=bits)


@dataclass(frozen=True)
class RusciOptions:
    """eps: share margin of the weight rule; candidates: the widths a cut may reach."""

    eps: float = 0.05
    candidates: tuple[int, ...] = BIT_CHOICES

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ConfigError(f"Rusci eps must be in [0, 1), got {self.eps}")
        if not self.candidates or any(b not in BIT_CHOICES for b in self.candidates) \
                or 8 not in self.candidates:
            raise ConfigError(f"Rusci candidates must include 8 and be among {BIT_CHOICES}, "
                              f"got {self.candidates}")

    def to_dict(self) -> dict:
        return {"eps": self.eps, "candidates": list(self.candidates)}


def _packable(*, bits: int, channels: int) -> bool:
    return bits == 8 or channels % (8 // bits) == 0


def _steps(*, candidates, allowed, channels: int) -> tuple[int, ...]:
    """Widths in cut order (8 first), limited to the allowed and packable ones."""
    return tuple(b for b in sorted(candidates, reverse=True)
                 if b in allowed and _packable(bits=b, channels=channels)) or (8,)


def _activation_orders(*, maps: tuple[FeatureMapSpec, ...], options: RusciOptions):
    return tuple(
        _steps(candidates=options.candidates,
               allowed=m.candidates if m.candidates is not None else BIT_CHOICES,
               channels=int(m.shape[-1]))
        for m in maps)


def cut_activations(*, branch: BranchSpec, options: RusciOptions = RusciOptions()) -> BranchRecord:
    """Rule [M2]: cut the wider side of each node until its input + output fit RAM."""
    maps = branch.feature_maps
    keys = tuple(m.key for m in maps)
    orders = _activation_orders(maps=maps, options=options)
    sizes = tuple({b: m.bytes_at(b) for b in order} for m, order in zip(maps, orders))
    problem = PairProblem(name=branch.name, keys=keys, orders=orders, sizes=sizes,
                          limit=int(branch.memory_limit))
    final, log = resolve_pairs(problem=problem)
    return BranchRecord(name=branch.name, memory_limit=int(branch.memory_limit),
                        outlier_class=branch.outlier_class, keys=keys, orders=orders,
                        initial_bits=initial_bits(orders=orders), final_bits=final, log=log)


class _WeightCutter:
    """State of the weight rule: current widths and the log."""

    def __init__(self, *, weights: tuple[WeightSpec, ...], other: int, limit: int,
                 options: RusciOptions) -> None:
        self.weights = weights
        self.other = other
        self.limit = limit
        self.eps = options.eps
        self.orders = [_steps(candidates=options.candidates, allowed=w.candidates,
                              channels=int(w.shape[-1])) for w in weights]
        self.bits = [order[0] for order in self.orders]
        self.log: list[TraversalStep] = []

    def weight_bytes(self, j: int) -> int:
        return self.weights[j].bytes_at(self.bits[j])

    def flash_bytes(self) -> int:
        return self.other + sum(self.weight_bytes(j) for j in range(len(self.weights)))

    def next_width(self, j: int) -> int | None:
        order = self.orders[j]
        position = order.index(self.bits[j])
        return order[position + 1] if position + 1 < len(order) else None

    def pick(self) -> int | None:
        """The earliest cuttable weight within eps of the largest cuttable share."""
        total = sum(self.weight_bytes(j) for j in range(len(self.weights)))
        cuttable = [j for j in range(len(self.weights)) if self.next_width(j) is not None]
        if not cuttable or total == 0:
            return None
        shares = {j: self.weight_bytes(j) / total for j in cuttable}
        largest = max(shares.values())
        return min(j for j in cuttable if shares[j] >= largest - self.eps)

    def run(self) -> None:
        step = 0
        while self.flash_bytes() > self.limit:
            j = self.pick()
            if j is None:
                raise BudgetError(f"flash: weights need {self.flash_bytes() - self.other} bytes at "
                                  f"their narrowest widths plus {self.other} other bytes = "
                                  f"{self.flash_bytes()}, over the flash limit of "
                                  f"{self.limit} bytes")
            step += 1
            before, old = self.flash_bytes(), self.bits[j]
            self.bits[j] = self.next_width(j)
            self.log.append(TraversalStep(pass_name="weights", round=step, pair=(),
                                          key=self.weights[j].key, from_bits=old,
                                          to_bits=self.bits[j], bytes_before=before,
                                          bytes_after=self.flash_bytes()))


def cut_weights(*, weights: tuple[WeightSpec, ...], flash_limit: int, flash_other_bytes: int = 0,
                options: RusciOptions = RusciOptions()) -> WeightRecord:
    """Rule [M1]: cut the earliest of the largest weights until flash fits."""
    keys = [w.key for w in weights]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"Rusci weights: repeated keys {keys}")
    if flash_limit <= 0 or flash_other_bytes < 0:
        raise ConfigError(f"flash limit {flash_limit} must be > 0 and other bytes "
                          f"{flash_other_bytes} >= 0")
    cutter = _WeightCutter(weights=tuple(weights), other=int(flash_other_bytes),
                           limit=int(flash_limit), options=options)
    initial = tuple(cutter.bits)
    cutter.run()
    return WeightRecord(flash_limit=int(flash_limit), other_bytes=int(flash_other_bytes),
                        keys=tuple(keys), initial_bits=initial, final_bits=tuple(cutter.bits),
                        flash_bytes=cutter.flash_bytes(), log=tuple(cutter.log))


def rusci_bitwidths(*, branches: tuple[BranchSpec, ...] = (), weights: tuple[WeightSpec, ...] = (),
                    flash_limit: int | None = None, flash_other_bytes: int = 0,
                    options: RusciOptions = RusciOptions()) -> BitwidthPlan:
    """Activations of every branch first, then weights (if a flash limit is given)."""
    records = tuple(cut_activations(branch=b, options=options) for b in branches)
    bits: dict[str, int] = {}
    for record in records:
        for key, value in zip(record.keys, record.final_bits):
            if bits.setdefault(key, value) != value:
                raise ConfigError(f"Rusci: tensor '{key}' is in several branches with "
                                  f"different results ({bits[key]} and {value} bits)")
    weight_record = None
    if flash_limit is not None:
        weight_record = cut_weights(weights=tuple(weights), flash_limit=flash_limit,
                                    flash_other_bytes=flash_other_bytes, options=options)
        bits.update(zip(weight_record.keys, weight_record.final_bits))
    elif weights:
        raise ConfigError("Rusci: weights given without a flash limit")
    return BitwidthPlan(policy="rusci", options=options.to_dict(), bits=bits, branches=records,
                        weights=weight_record)
