"""Exact integer matrix products through floating-point BLAS.

numpy has no fast integer matmul. Integer products summed in floating point are
exact as long as every partial sum stays below 2**24 (float32) or 2**53
(float64) in magnitude; `bound` gives an upper limit on |partial sum| and picks
the narrowest type that is exact, whatever order BLAS adds in.
"""
from __future__ import annotations

import numpy as np

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53


def exact_matmul(*, lhs: np.ndarray, rhs: np.ndarray, lhs_abs_max: int) -> np.ndarray:
    """lhs (M, K) @ rhs (K, N) for integer-valued arrays; int64 result, bit-exact.

    `lhs_abs_max` bounds |lhs|; rhs is small (weights) and is measured here.
    """
    rhs_col_abs = np.abs(rhs.astype(np.int64)).sum(axis=0)
    bound = int(lhs_abs_max) * int(rhs_col_abs.max(initial=0))
    if bound < FLOAT32_EXACT:
        dtype = np.float32
    elif bound < FLOAT64_EXACT:
        dtype = np.float64
    else:
        return lhs.astype(np.int64) @ rhs.astype(np.int64)
    product = lhs.astype(dtype, copy=False) @ rhs.astype(dtype, copy=False)
    return product.astype(np.int64)


def abs_max_offset(*, x: np.ndarray, offset: int) -> int:
    """max |x + offset| over an integer array, without materializing x + offset."""
    if x.size == 0:
        return 0
    return max(abs(int(x.min()) + offset), abs(int(x.max()) + offset))
