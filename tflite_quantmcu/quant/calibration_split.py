"""Split calibration batches into the samples that fit ranges/widths and held-out samples.

    fit, heldout = split_holdout(batches=data_batches(source=..., graph=g), every=2)
    statistics = collect_patch_statistics(..., calibration=fit)   # streams the fit samples
    heldout                                                       # filled once fit is consumed

Sample i (counting from 0 over the whole stream) is held out iff ``i % every == every - 1``
and fewer than ``max_holdout`` samples are held out already; every other sample fits. The
fit samples stream (memory does not grow with them); the held-out ones are kept (the accuracy
guard runs them several times), at most ``max_holdout``. ``every = 0`` holds nothing out.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.quant.calibration_data import Batch

HOLDOUT_EVERY = 2
MAX_HOLDOUT = 1024


def split_holdout(*, batches: Iterable[Batch], every: int = HOLDOUT_EVERY,
                  max_holdout: int = MAX_HOLDOUT) -> tuple[Iterator[np.ndarray], list[Batch]]:
    """(fit inputs as a stream of arrays, held-out Batches filled while the stream is read)."""
    if every < 0 or every == 1 or max_holdout < 0:
        raise ConfigError(f"hold-out split: every must be 0 or >= 2 and max_holdout >= 0, got "
                          f"{every}, {max_holdout}")
    heldout: list[Batch] = []
    return _fit_stream(batches=batches, every=every, max_holdout=max_holdout,
                       heldout=heldout), heldout


def _fit_stream(*, batches: Iterable[Batch], every: int, max_holdout: int,
                heldout: list[Batch]) -> Iterator[np.ndarray]:
    seen = kept = 0
    for batch in batches:
        index = np.arange(seen, seen + batch.x.shape[0])
        seen += batch.x.shape[0]
        held = (index % every == every - 1) if every else np.zeros(index.shape, dtype=bool)
        room = max_holdout - kept
        if held.sum() > room:
            held[np.flatnonzero(held)[room:]] = False
        if held.any():
            heldout.append(Batch(x=batch.x[held], y=None if batch.y is None else batch.y[held]))
            kept += int(held.sum())
        if (~held).any():
            yield batch.x[~held]
