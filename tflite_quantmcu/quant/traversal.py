"""Algorithm 1 of QuantMCU (lines 10-29): make every adjacent pair of feature maps fit M.

Input: for each feature map of a branch (in execution order) its candidate bit widths
in descending preference (VDQS: descending quantization score; Rusci et al.: 8, 4, 2)
and its bytes at each candidate; each map starts at its first candidate. Eq. 7:
``Mem(i, b_i) + Mem(i+1, b_{i+1}) <= M`` for every adjacent pair.

Our reading of the pseudocode (printed with loop bounds and an index that never
advances):

* ``while Eq. 7 fails: Traverse(forward); Traverse(backward)``.
* Forward pass: pairs ``(i, i+1)`` for i = 0 .. N-1; while the pair exceeds M and
  ``Mem(i) <= Mem(i+1)`` (the latter map is at least as large), the latter map moves
  to its next candidate in preference order.
* Backward pass: pairs ``(i-1, i)`` for i = N .. 1 (visited from the end of the branch,
  as "backward" and r = -1 say); while the pair exceeds M and ``Mem(i) <= Mem(i-1)``
  (the former is at least as large), the former map moves to its next candidate.
  ``NeedChange`` is read as testing the pair the pass is adjusting, ``(i, i+r)``.
* "Next candidate" = the next one in preference order whose bytes are strictly smaller
  than the current ones; candidates with more bits are skipped because they cannot help
  Eq. 7 (read literally, a map whose order is [2, 8, 4] would end at 4 after starting
  at 2, wider than where it began). ``k < m`` becomes "such a candidate exists".
* The two passes only ever shrink the larger map of a pair. When a round changes
  nothing while a pair still exceeds M (its larger map is already at its narrowest
  candidate), a **fallback** pass (not in the paper) shrinks the other map of each
  such pair; it is logged as 'fallback'. Shrinking never breaks another pair.
* Before anything, if some pair exceeds M even with both maps at their narrowest
  candidates, no assignment can satisfy Eq. 7 and :class:`BudgetError` names that pair.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tflite_quantmcu.errors import BudgetError
from tflite_quantmcu.quant.plan import TraversalStep


@dataclass(frozen=True)
class PairProblem:
    """A branch as Algorithm 1 sees it."""

    name: str
    keys: tuple[str, ...]
    orders: tuple[tuple[int, ...], ...]
    sizes: tuple[Mapping[int, int], ...]
    limit: int


def check_pairs_feasible(*, problem: PairProblem) -> None:
    """Raise BudgetError naming the first pair that cannot fit even at its narrowest widths."""
    for i in range(len(problem.keys) - 1):
        narrow = [_narrowest(problem=problem, index=j) for j in (i, i + 1)]
        need = [problem.sizes[j][b] for j, b in zip((i, i + 1), narrow)]
        if sum(need) > problem.limit:
            raise BudgetError(
                f"branch '{problem.name}': feature maps '{problem.keys[i]}' and "
                f"'{problem.keys[i + 1]}' need {need[0]} + {need[1]} = {sum(need)} bytes even at "
                f"{narrow[0]} and {narrow[1]} bits, over the limit M = {problem.limit} bytes")


def _narrowest(*, problem: PairProblem, index: int) -> int:
    """The candidate of map ``index`` with the fewest bytes."""
    return min(problem.orders[index], key=lambda bits: problem.sizes[index][bits])


class _Traversal:
    """Mutable state of one run: current bits and the log."""

    def __init__(self, *, problem: PairProblem) -> None:
        self.p = problem
        self.bits = [order[0] for order in problem.orders]
        self.log: list[TraversalStep] = []
        self.round = 0

    def mem(self, i: int) -> int:
        return self.p.sizes[i][self.bits[i]]

    def pair_bytes(self, i: int) -> int:
        return self.mem(i) + self.mem(i + 1)

    def pair_ok(self, i: int) -> bool:
        return self.pair_bytes(i) <= self.p.limit

    def all_ok(self) -> bool:
        return all(self.pair_ok(i) for i in range(len(self.bits) - 1))

    def next_smaller(self, i: int) -> int | None:
        order = self.p.orders[i]
        current = self.mem(i)
        for bits in order[order.index(self.bits[i]) + 1:]:
            if self.p.sizes[i][bits] < current:
                return bits
        return None

    def change(self, *, i: int, pair: int, pass_name: str) -> bool:
        """Move map i to its next smaller candidate; False if it has none."""
        new = self.next_smaller(i)
        if new is None:
            return False
        before = self.pair_bytes(pair)
        old = self.bits[i]
        self.bits[i] = new
        self.log.append(TraversalStep(
            pass_name=pass_name, round=self.round, pair=(self.p.keys[pair], self.p.keys[pair + 1]),
            key=self.p.keys[i], from_bits=old, to_bits=new, bytes_before=before,
            bytes_after=self.pair_bytes(pair)))
        return True

    def forward(self) -> bool:
        changed = False
        for i in range(len(self.bits) - 1):
            while (not self.pair_ok(i) and self.mem(i) <= self.mem(i + 1)
                   and self.change(i=i + 1, pair=i, pass_name="forward")):
                changed = True
        return changed

    def backward(self) -> bool:
        changed = False
        for i in range(len(self.bits) - 1, 0, -1):
            while (not self.pair_ok(i - 1) and self.mem(i) <= self.mem(i - 1)
                   and self.change(i=i - 1, pair=i - 1, pass_name="backward")):
                changed = True
        return changed

    def fallback(self) -> None:
        for i in range(len(self.bits) - 1):
            while not self.pair_ok(i):
                larger, smaller = (i, i + 1) if self.mem(i) >= self.mem(i + 1) else (i + 1, i)
                if not (self.change(i=larger, pair=i, pass_name="fallback")
                        or self.change(i=smaller, pair=i, pass_name="fallback")):
                    raise AssertionError("fallback stuck on a pair checked feasible")


def resolve_pairs(*, problem: PairProblem) -> tuple[tuple[int, ...], tuple[TraversalStep, ...]]:
    """Final bits per map and the log of changes (module doc)."""
    check_pairs_feasible(problem=problem)
    state = _Traversal(problem=problem)
    while not state.all_ok():
        state.round += 1
        changed = state.forward()
        changed = state.backward() or changed
        if not changed and not state.all_ok():
            state.fallback()
    return tuple(state.bits), tuple(state.log)


def initial_bits(*, orders: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Each map's first (most preferred) candidate."""
    return tuple(order[0] for order in orders)
