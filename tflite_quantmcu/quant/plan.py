"""The bit-width plan every policy returns: data only, JSON round trip for ``--plan`` replay.

``BitwidthPlan.bits`` maps a tensor key to its bit width (feature maps and, for
policies that cut weights, weight tensors). The records say how the policy got there:
per branch the candidate scores, the candidate order, the initial pick and every
change of the traversal; for weights the flash figures and every cut.

``BitwidthPlan.ranges`` (format version 2) maps every feature map planned below 8 bits to
its :class:`~tflite_quantmcu.quant.ranges.SubbyteRange`: (scale, zero point) and the rule
that chose them. The policies of the convert pipeline fill it for every sub-byte map; a map
without a range (version-1 plans, which had none, still load) takes the whole int8 range
(rule ``full``), which is what such plans meant.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.quant.ranges import SubbyteRange

PLAN_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class CandidateScore:
    """VDQS figures of one feature map at one candidate bit width (Eq. 2-6)."""

    bits: int
    bytes: int
    entropy: float
    delta_entropy: float
    omega: float
    phi: float
    score: float


@dataclass(frozen=True)
class TraversalStep:
    """One change made by a policy.

    ``pass_name``: 'forward' / 'backward' (Algorithm 1 or Rusci's sweeps), 'fallback'
    (a pair the paper's passes cannot fix, see ``traversal``), or 'weights'.
    ``bytes_before`` / ``bytes_after``: the pair's bytes (activations) or the total flash
    bytes (weights).
    """

    pass_name: str
    round: int
    pair: tuple[str, ...]
    key: str
    from_bits: int
    to_bits: int
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class BranchRecord:
    """How one branch's feature-map bit widths were chosen."""

    name: str
    memory_limit: int
    outlier_class: bool
    keys: tuple[str, ...]
    orders: tuple[tuple[int, ...], ...]
    initial_bits: tuple[int, ...]
    final_bits: tuple[int, ...]
    last_entropy: float | None = None
    scores: tuple[tuple[CandidateScore, ...], ...] = ()
    log: tuple[TraversalStep, ...] = ()


@dataclass(frozen=True)
class WeightRecord:
    """How weight bit widths were cut to fit flash (Rusci et al.)."""

    flash_limit: int
    other_bytes: int
    keys: tuple[str, ...]
    initial_bits: tuple[int, ...]
    final_bits: tuple[int, ...]
    flash_bytes: int
    log: tuple[TraversalStep, ...] = ()


@dataclass(frozen=True)
class BitwidthPlan:
    """Tensor key -> bits and (below 8 bits) range, plus the records of the policy run
    (treat as read-only). ``guard``: what the accuracy guard measured and changed, if it ran.
    ``reasons``: per sub-byte map, why it is below 8 bits: ``"bitops"`` (VDQS's pick) or
    ``"memory"`` (lowered to fit the arena budget, ``memory_fit``); empty for other policies."""

    policy: str
    options: Mapping[str, object]
    bits: Mapping[str, int]
    branches: tuple[BranchRecord, ...] = ()
    weights: WeightRecord | None = None
    version: int = field(default=PLAN_FORMAT_VERSION)
    ranges: Mapping[str, SubbyteRange] = field(default_factory=dict)
    guard: Mapping[str, object] | None = None
    reasons: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, subbyte in self.ranges.items():
            if self.bits.get(key) != subbyte.bits:
                raise ConfigError(f"bit-width plan: tensor {key!r} has a {subbyte.bits}-bit range "
                                  f"but is planned at {self.bits.get(key)!r} bits")

    def range_of(self, key: str) -> SubbyteRange | None:
        """The planned range of a sub-byte map (None: the whole int8 range)."""
        return self.ranges.get(key)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["options"] = dict(self.options)
        data["bits"] = dict(self.bits)
        data["ranges"] = {k: r.to_dict() for k, r in sorted(self.ranges.items())}
        data["guard"] = None if self.guard is None else dict(self.guard)
        data["reasons"] = dict(sorted(self.reasons.items()))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping) -> BitwidthPlan:
        version = data.get("version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise ConfigError(f"bit-width plan: expected version 1 or {PLAN_FORMAT_VERSION} "
                              f"(a JSON integer), got {version!r}")
        bits = _checked_bits(data.get("bits"))
        ranges = {str(k): SubbyteRange.from_dict(v) for k, v in data.get("ranges", {}).items()}
        weights = data.get("weights")
        guard = data.get("guard")
        return cls(policy=str(data["policy"]), options=dict(data.get("options", {})), bits=bits,
                   branches=tuple(_branch_from_dict(b) for b in data.get("branches", ())),
                   weights=None if weights is None else _weights_from_dict(weights),
                   ranges=ranges, guard=None if guard is None else dict(guard),
                   version=int(version), reasons=_checked_reasons(data.get("reasons", {})))

    @classmethod
    def from_json(cls, text: str) -> BitwidthPlan:
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as err:
            raise ConfigError(f"bit-width plan is not valid JSON: {err}") from err
        except RecursionError as err:
            raise ConfigError("bit-width plan: JSON nested too deeply") from err
        if not isinstance(data, dict):
            raise ConfigError("bit-width plan: expected a JSON object")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise ConfigError(f"bit-width plan: malformed ({err!r})") from err


def _reject_constant(name: str) -> None:
    raise ConfigError(f"bit-width plan: {name} is not a number a plan can hold")


def _checked_bits(bits: object) -> dict[str, int]:
    """Tensor key -> 8, 4 or 2, each a JSON integer (not 4.5, not true, not null)."""
    if not isinstance(bits, Mapping):
        raise ConfigError(f"bit-width plan: 'bits' must be an object of tensor key -> 8, 4 "
                          f"or 2, got {type(bits).__name__}")
    bad = {k: v for k, v in bits.items() if type(v) is not int or v not in (2, 4, 8)}
    if bad:
        shown = dict(list(bad.items())[:5])
        raise ConfigError(f"bit-width plan: bit widths must be the integers 8, 4 or 2, got "
                          f"{shown}{' ...' if len(bad) > 5 else ''}")
    return {str(k): v for k, v in bits.items()}


def _checked_reasons(reasons: object) -> dict[str, str]:
    """Tensor key -> "bitops" or "memory"."""
    if not isinstance(reasons, Mapping) or any(v not in ("bitops", "memory")
                                               for v in reasons.values()):
        raise ConfigError("bit-width plan: 'reasons' must be an object of tensor key -> "
                          "\"bitops\" or \"memory\"")
    return {str(k): str(v) for k, v in reasons.items()}


def _step_from_dict(data: Mapping) -> TraversalStep:
    return TraversalStep(**{**data, "pair": tuple(data["pair"])})


def _branch_from_dict(data: Mapping) -> BranchRecord:
    return BranchRecord(
        name=data["name"], memory_limit=int(data["memory_limit"]),
        outlier_class=bool(data["outlier_class"]), keys=tuple(data["keys"]),
        orders=tuple(tuple(o) for o in data["orders"]),
        initial_bits=tuple(data["initial_bits"]), final_bits=tuple(data["final_bits"]),
        last_entropy=data.get("last_entropy"),
        scores=tuple(tuple(CandidateScore(**s) for s in row) for row in data.get("scores", ())),
        log=tuple(_step_from_dict(s) for s in data.get("log", ())))


def _weights_from_dict(data: Mapping) -> WeightRecord:
    return WeightRecord(
        flash_limit=int(data["flash_limit"]), other_bytes=int(data["other_bytes"]),
        keys=tuple(data["keys"]), initial_bits=tuple(data["initial_bits"]),
        final_bits=tuple(data["final_bits"]), flash_bytes=int(data["flash_bytes"]),
        log=tuple(_step_from_dict(s) for s in data.get("log", ())))


def merge_plans(*, plans: Iterable[BitwidthPlan]) -> BitwidthPlan:
    """One plan from several (e.g. one per branch) of the same policy and options.

    A key planned twice must get the same bits; at most one plan may cut weights.
    """
    plans = list(plans)
    if not plans:
        raise ConfigError("merge_plans: no plans given")
    first = plans[0]
    bits: dict[str, int] = {}
    ranges: dict[str, SubbyteRange] = {}
    for plan in plans:
        if (plan.policy, dict(plan.options)) != (first.policy, dict(first.options)):
            raise ConfigError(f"merge_plans: policy/options {plan.policy} {dict(plan.options)} "
                              f"differ from {first.policy} {dict(first.options)}")
        for key, value in plan.bits.items():
            if bits.setdefault(key, value) != value:
                raise ConfigError(f"merge_plans: tensor '{key}' planned at {bits[key]} and "
                                  f"{value} bits")
        for key, subbyte in plan.ranges.items():
            if ranges.setdefault(key, subbyte) != subbyte:
                raise ConfigError(f"merge_plans: tensor '{key}' planned with two ranges")
    weights = [p.weights for p in plans if p.weights is not None]
    if len(weights) > 1:
        raise ConfigError("merge_plans: more than one plan cuts weights")
    return BitwidthPlan(policy=first.policy, options=dict(first.options), bits=bits,
                        branches=tuple(b for p in plans for b in p.branches),
                        weights=weights[0] if weights else None, ranges=ranges)
