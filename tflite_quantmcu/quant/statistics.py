"""Streaming statistics of int8 feature maps, constant in the number of samples.

What is kept, per tensor and per named patch region of a tensor:

* a 256-bin histogram over the int8 codes (bin ``c + 128``). Together with the tensor's
  scale and zero point it is a complete sufficient statistic for every per-value
  quantity the policies use: mean, standard deviation, the number of values outside
  any threshold, and the entropy of the map requantized to any bit width;
* per region, the joint count table of the per-sample ``(min code, max code)`` pairs:
  how many calibration samples had their smallest and largest code in that region
  equal to each pair. VDPC's outlier set is "codes outside an interval" (``|x - mu| >
  t`` with ``x`` monotone in the code), so "this region held at least one outlier in
  this sample" is ``min < low or max > high``, and the table answers it exactly for
  any interval chosen *after* collection (one pass, no need to know mu, sigma or phi
  while collecting).

The pair table is stored sparsely (sorted pair keys + counts). It has at most
``256 * 257 / 2 = 32,896`` entries (``min <= max``) whatever the number of samples,
typically a few hundred; histograms are fixed at 256 counters. So memory is bounded
by a constant that depends only on the number of tensors and regions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.errors import CalibrationDataError, ConfigError

NUM_CODES = 256
CODE_OFFSET = 128
MAX_PAIRS = NUM_CODES * (NUM_CODES + 1) // 2

Bounds = tuple[int, int, int, int]


@dataclass(frozen=True)
class RegionStatistics:
    """Statistics of one patch region ``[y0:y1, x0:x1]`` (half-open) of a tensor.

    ``histogram[c + 128]`` counts code ``c`` over all samples; ``extremes`` holds
    ``(min_code, max_code, samples)`` triples sorted by ``(min_code, max_code)``.
    """

    name: str
    bounds: Bounds
    num_samples: int
    histogram: tuple[int, ...]
    extremes: tuple[tuple[int, int, int], ...]

    @property
    def num_values(self) -> int:
        return sum(self.histogram)

    def count_outside(self, *, low_code: int, high_code: int) -> int:
        """Values (over all samples) with a code below ``low_code`` or above ``high_code``."""
        return count_codes_outside(histogram=self.histogram, low_code=low_code,
                                   high_code=high_code)

    def samples_outside(self, *, low_code: int, high_code: int) -> int:
        """Samples in which this region held a code below ``low_code`` or above ``high_code``."""
        return sum(n for lo, hi, n in self.extremes if lo < low_code or hi > high_code)


@dataclass(frozen=True)
class TensorStatistics:
    """Statistics of one int8 tensor over the calibration set."""

    key: str
    scale: float
    zero_point: int
    sample_shape: tuple[int, ...]
    num_samples: int
    histogram: tuple[int, ...]
    regions: tuple[RegionStatistics, ...] = ()

    @property
    def num_values(self) -> int:
        return sum(self.histogram)

    def region(self, name: str) -> RegionStatistics:
        for region in self.regions:
            if region.name == name:
                return region
        raise ConfigError(f"tensor '{self.key}': no region named '{name}' "
                          f"(have {[r.name for r in self.regions]})")

    def code_values(self) -> np.ndarray:
        """Real value of every code, index ``c + 128`` (float64)."""
        return code_real_values(scale=self.scale, zero_point=self.zero_point)

    def mean_std(self) -> tuple[float, float]:
        """Mean and (population) standard deviation of the real values."""
        return histogram_mean_std(histogram=self.histogram, scale=self.scale,
                                  zero_point=self.zero_point)


def code_real_values(*, scale: float, zero_point: int) -> np.ndarray:
    """``scale * (c - zero_point)`` for c = -128..127, as float64."""
    codes = np.arange(-CODE_OFFSET, NUM_CODES - CODE_OFFSET, dtype=np.float64)
    return float(scale) * (codes - float(zero_point))


def histogram_mean_std(*, histogram, scale: float, zero_point: int) -> tuple[float, float]:
    """Mean and population standard deviation of the values a code histogram describes."""
    counts = np.asarray(histogram, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise CalibrationDataError("empty histogram: no calibration values were collected")
    reals = code_real_values(scale=scale, zero_point=zero_point)
    mean = float(counts @ reals / total)
    var = float(counts @ (reals - mean) ** 2 / total)
    return mean, var ** 0.5


def count_codes_outside(*, histogram, low_code: int, high_code: int) -> int:
    """Number of values with code ``< low_code`` or ``> high_code``."""
    counts = np.asarray(histogram, dtype=np.int64)
    codes = np.arange(-CODE_OFFSET, NUM_CODES - CODE_OFFSET)
    return int(counts[(codes < low_code) | (codes > high_code)].sum())


def code_histogram(values: np.ndarray) -> np.ndarray:
    """256-bin int64 histogram of int8 codes."""
    flat = values.reshape(-1).astype(np.int16) + CODE_OFFSET
    return np.bincount(flat, minlength=NUM_CODES).astype(np.int64)


class _RegionAccumulator:
    """Running histogram and sparse (min, max) pair counts of one region."""

    def __init__(self, *, name: str, bounds: Bounds) -> None:
        self.name = name
        self.bounds = bounds
        self.histogram = np.zeros(NUM_CODES, dtype=np.int64)
        self.pair_keys = np.zeros(0, dtype=np.int32)
        self.pair_counts = np.zeros(0, dtype=np.int64)

    def update(self, values: np.ndarray) -> None:
        y0, y1, x0, x1 = self.bounds
        block = values[:, y0:y1, x0:x1, :]
        self.histogram += code_histogram(block)
        per_sample = block.reshape(block.shape[0], -1)
        lows = per_sample.min(axis=1).astype(np.int32) + CODE_OFFSET
        highs = per_sample.max(axis=1).astype(np.int32) + CODE_OFFSET
        self._add_pairs(lows * NUM_CODES + highs)

    def _add_pairs(self, keys: np.ndarray) -> None:
        new_keys, new_counts = np.unique(keys, return_counts=True)
        merged = np.concatenate([self.pair_keys, new_keys.astype(np.int32)])
        counts = np.concatenate([self.pair_counts, new_counts.astype(np.int64)])
        self.pair_keys, inverse = np.unique(merged, return_inverse=True)
        self.pair_counts = np.zeros(self.pair_keys.size, dtype=np.int64)
        np.add.at(self.pair_counts, inverse, counts)

    @property
    def nbytes(self) -> int:
        return self.histogram.nbytes + self.pair_keys.nbytes + self.pair_counts.nbytes

    def finish(self, *, num_samples: int) -> RegionStatistics:
        extremes = tuple(
            (int(k) // NUM_CODES - CODE_OFFSET, int(k) % NUM_CODES - CODE_OFFSET, int(n))
            for k, n in zip(self.pair_keys, self.pair_counts))
        return RegionStatistics(name=self.name, bounds=self.bounds, num_samples=num_samples,
                                histogram=tuple(int(v) for v in self.histogram),
                                extremes=extremes)


class _TensorAccumulator:
    """Running statistics of one tensor and its regions."""

    def __init__(self, *, key: str, scale: float, zero_point: int,
                 sample_shape: tuple[int, ...], regions: Mapping[str, Bounds]) -> None:
        self.key = key
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.sample_shape = sample_shape
        self.num_samples = 0
        self.histogram = np.zeros(NUM_CODES, dtype=np.int64)
        self.regions = {name: _RegionAccumulator(name=name, bounds=bounds)
                        for name, bounds in regions.items()}

    def check_same(self, *, scale: float, zero_point: int, sample_shape: tuple[int, ...],
                   regions: Mapping[str, Bounds]) -> None:
        mine = (self.scale, self.zero_point, self.sample_shape,
                {n: r.bounds for n, r in self.regions.items()})
        got = (float(scale), int(zero_point), sample_shape, dict(regions))
        if mine != got:
            raise ConfigError(
                f"tensor '{self.key}': update with (scale, zero point, sample shape, regions) "
                f"{got} differs from the first update's {mine}")

    def update(self, values: np.ndarray) -> None:
        self.num_samples += values.shape[0]
        self.histogram += code_histogram(values)
        for region in self.regions.values():
            region.update(values)

    @property
    def nbytes(self) -> int:
        return self.histogram.nbytes + sum(r.nbytes for r in self.regions.values())

    def finish(self) -> TensorStatistics:
        regions = tuple(r.finish(num_samples=self.num_samples) for r in self.regions.values())
        return TensorStatistics(key=self.key, scale=self.scale, zero_point=self.zero_point,
                                sample_shape=self.sample_shape, num_samples=self.num_samples,
                                histogram=tuple(int(v) for v in self.histogram),
                                regions=regions)


class StatisticsCollector:
    """Accumulates :class:`TensorStatistics` batch by batch.

    Call :meth:`update` once per tensor and batch (leading axis = samples), then
    :meth:`finish`. A tensor's scale, zero point, per-sample shape and regions must be
    the same in every update.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, _TensorAccumulator] = {}

    def update(self, *, key: str, values: np.ndarray, scale: float, zero_point: int,
               regions: Mapping[str, Bounds] | None = None) -> None:
        """Add a batch ``values`` (int8, ``[samples, ...]``; 4-D ``[samples, H, W, C]`` when
        ``regions`` are given) of tensor ``key``; ``regions`` maps a name to (y0, y1, x0, x1)."""
        values = _check_values(key=key, values=values, with_regions=bool(regions))
        regions = {name: _check_bounds(key=key, name=name, bounds=b, shape=values.shape)
                   for name, b in (regions or {}).items()}
        sample_shape = tuple(int(d) for d in values.shape[1:])
        tensor = self._tensors.get(key)
        if tensor is None:
            tensor = _TensorAccumulator(key=key, scale=scale, zero_point=zero_point,
                                        sample_shape=sample_shape, regions=regions)
            self._tensors[key] = tensor
        else:
            tensor.check_same(scale=scale, zero_point=zero_point, sample_shape=sample_shape,
                              regions=regions)
        tensor.update(values)

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulated arrays (bounded independently of the sample count)."""
        return sum(t.nbytes for t in self._tensors.values())

    def finish(self) -> dict[str, TensorStatistics]:
        """The statistics of every tensor seen, keyed like the updates, in first-seen order."""
        return {key: tensor.finish() for key, tensor in self._tensors.items()}


def _check_values(*, key: str, values: np.ndarray, with_regions: bool) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype != np.int8:
        raise CalibrationDataError(f"tensor '{key}': expected int8 codes, got {values.dtype}")
    if values.ndim < 2 or values.shape[0] == 0 or values.size == 0:
        raise CalibrationDataError(
            f"tensor '{key}': expected a non-empty [samples, ...] array, got shape {values.shape}")
    if with_regions and values.ndim != 4:
        raise CalibrationDataError(
            f"tensor '{key}': regions need [samples, H, W, C] values, got shape {values.shape}")
    return values


def _check_bounds(*, key: str, name: str, bounds, shape: tuple[int, ...]) -> Bounds:
    y0, y1, x0, x1 = (int(v) for v in bounds)
    height, width = shape[1], shape[2]
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ConfigError(f"tensor '{key}': region '{name}' bounds (y0, y1, x0, x1) = "
                          f"{(y0, y1, x0, x1)} must be non-empty and inside H={height}, W={width}")
    return y0, y1, x0, x1
