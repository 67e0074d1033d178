"""Limiting BLAS threads while the executor runs.

The executor's matmuls are many small, skinny products (blocks of about 64K
outputs). Multi-threaded OpenBLAS synchronizes its threads on every call; on a
busy 2-core machine this made a MobileNetV2 w0.35 r96 batch 8x slower in wall
time than one BLAS thread (86 vs 10 ms/image). `threadpoolctl` (optional) sets
the limit for the duration of a run and restores it afterwards.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional dependency: without it BLAS keeps its own setting
    threadpool_limits = None


@contextlib.contextmanager
def limited_blas_threads(*, threads: int | None) -> Iterator[None]:
    """Runs the body with at most `threads` BLAS threads (None: leave BLAS alone)."""
    if threads is None or threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield
