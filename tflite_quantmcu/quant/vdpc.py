"""Value-driven patch classification (VDPC, QuantMCU Section III-A).

Outlier values (design doc, "VDPC semantics"): fit N(mu, sigma) to all real values of
the feature map over the calibration set; a value ``x`` is an outlier iff
``|x - mu| > z * sigma`` with ``z = Phi^-1((1 + phi) / 2)``, i.e. ``phi`` is the central
probability mass of the fitted Gaussian treated as non-outlier (phi = 0.96 -> z = 2.054).
Because the real value is monotone in the int8 code, the non-outlier values are the
codes of one interval ``[low_code, high_code]``.

Containment rule (which patches are outlier-class). With a Gaussian-tail threshold a
fraction ``1 - phi`` of the values are outliers by construction, so nearly every patch
of a few thousand values "contains an outlier" in every sample; the literal rule would
make every patch outlier-class and VDQS would never run. The rule is therefore about
where outliers *concentrate*. A patch is outlier-class iff all three hold:

1. it holds at least ``min_outliers`` (>= 1) outlier values over the calibration set;
2. its outlier density (outliers / values of the patch, over the calibration set) is at
   least ``min_density_ratio`` times the density of the whole feature map (default 1.0:
   at least the map's average density). Measured on an ad-hoc trained (3 epochs, 80 %)
   MobileNetV2-style Fashion-MNIST net (3x3 patches of its first 10 maps), patch
   densities ranged from 0.1 to 2.3 times the map's: ratio 2.0 flagged no patch in most
   maps (VDPC would never keep a branch at 8 bits), 1.0 flagged 3-5 of 9 (the object's
   patches), the literal rule all 9;
3. in at least ``min_sample_fraction`` of the calibration samples the patch held at
   least one outlier (default 0: no per-sample requirement; raise it to ignore patches
   whose outliers come from a few samples only).

``min_density_ratio=0, min_outliers=1`` gives the literal reading "the patch contains an
outlier value" (over the calibration set). Every quantity is computed exactly from the
collected statistics (histograms and per-sample (min, max) pairs).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.quant.statistics import (CODE_OFFSET, NUM_CODES, RegionStatistics,
                                              TensorStatistics, count_codes_outside)


@dataclass(frozen=True)
class VdpcOptions:
    """Parameters of the outlier test and of the containment rule (see module doc)."""

    phi: float = 0.96
    min_density_ratio: float = 1.0
    min_outliers: int = 1
    min_sample_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.phi < 1.0:
            raise ConfigError(f"VDPC phi must be in (0, 1), got {self.phi}")
        if self.min_density_ratio < 0.0:
            raise ConfigError(f"VDPC min_density_ratio must be >= 0, got {self.min_density_ratio}")
        if self.min_outliers < 1:
            raise ConfigError(f"VDPC min_outliers must be >= 1, got {self.min_outliers}")
        if not 0.0 <= self.min_sample_fraction <= 1.0:
            raise ConfigError(
                f"VDPC min_sample_fraction must be in [0, 1], got {self.min_sample_fraction}")

    @property
    def z(self) -> float:
        """Outlier distance in standard deviations: Phi^-1((1 + phi) / 2)."""
        return outlier_z(phi=self.phi)


@dataclass(frozen=True)
class PatchClass:
    """The class of one patch and the figures that decided it."""

    name: str
    bounds: tuple[int, int, int, int]
    outlier_class: bool
    outliers: int
    values: int
    outlier_fraction: float
    density_ratio: float
    samples_with_outlier: int
    sample_fraction: float


@dataclass(frozen=True)
class PatchClasses:
    """VDPC result for one feature map; JSON-serialisable via :meth:`to_json`."""

    key: str
    phi: float
    z: float
    mu: float
    sigma: float
    threshold: float
    low_code: int
    high_code: int
    map_outliers: int
    map_values: int
    num_samples: int
    options: VdpcOptions
    patches: tuple[PatchClass, ...] = field(default_factory=tuple)

    @property
    def outlier_patches(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.patches if p.outlier_class)

    @property
    def class_counts(self) -> dict[str, int]:
        outliers = len(self.outlier_patches)
        return {"outlier": outliers, "non_outlier": len(self.patches) - outliers}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["patches"] = [asdict(p) for p in self.patches]
        data["class_counts"] = self.class_counts
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> PatchClasses:
        data = dict(data)
        data.pop("class_counts", None)
        data["options"] = VdpcOptions(**data["options"])
        data["patches"] = tuple(
            PatchClass(**{**p, "bounds": tuple(p["bounds"])}) for p in data["patches"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> PatchClasses:
        return cls.from_dict(json.loads(text))


def outlier_z(*, phi: float) -> float:
    """z such that a standard normal lies in [-z, z] with probability phi."""
    return NormalDist().inv_cdf((1.0 + phi) / 2.0)


def non_outlier_codes(*, statistics: TensorStatistics, z: float) -> tuple[float, float, int, int]:
    """(mu, sigma, low_code, high_code): the codes whose value lies within z*sigma of mu.

    If no code does (possible only for a degenerate fit), returns low_code = 128 and
    high_code = -129 so that every code counts as an outlier.
    """
    mu, sigma = statistics.mean_std()
    reals = statistics.code_values()
    inside = np.flatnonzero(np.abs(reals - mu) <= z * sigma)
    if inside.size == 0:
        return mu, sigma, NUM_CODES - CODE_OFFSET, -CODE_OFFSET - 1
    return mu, sigma, int(inside[0]) - CODE_OFFSET, int(inside[-1]) - CODE_OFFSET


def classify_patches(*, statistics: TensorStatistics,
                     options: VdpcOptions = VdpcOptions()) -> PatchClasses:
    """Classify every region of ``statistics`` as outlier-class or not (module doc)."""
    if not statistics.regions:
        raise ConfigError(f"tensor '{statistics.key}': no patch regions were collected")
    z = options.z
    mu, sigma, low, high = non_outlier_codes(statistics=statistics, z=z)
    map_outliers = count_codes_outside(histogram=statistics.histogram, low_code=low,
                                       high_code=high)
    map_density = map_outliers / statistics.num_values
    patches = tuple(
        _classify_region(region=r, low=low, high=high, map_density=map_density, options=options)
        for r in statistics.regions)
    return PatchClasses(key=statistics.key, phi=options.phi, z=z, mu=mu, sigma=sigma,
                        threshold=z * sigma, low_code=low, high_code=high,
                        map_outliers=map_outliers, map_values=statistics.num_values,
                        num_samples=statistics.num_samples, options=options, patches=patches)


def _classify_region(*, region: RegionStatistics, low: int, high: int, map_density: float,
                     options: VdpcOptions) -> PatchClass:
    outliers = region.count_outside(low_code=low, high_code=high)
    values = region.num_values
    density = outliers / values
    ratio = density / map_density if map_density > 0 else 0.0
    with_outlier = region.samples_outside(low_code=low, high_code=high)
    sample_fraction = with_outlier / region.num_samples
    is_outlier = (outliers >= options.min_outliers and ratio >= options.min_density_ratio
                  and sample_fraction >= options.min_sample_fraction)
    return PatchClass(name=region.name, bounds=region.bounds, outlier_class=bool(is_outlier),
                      outliers=outliers, values=values, outlier_fraction=density,
                      density_ratio=ratio, samples_with_outlier=with_outlier,
                      sample_fraction=sample_fraction)


def outlier_patch_names(*, classes) -> frozenset[str]:
    """Patches that are outlier-class in any of the given :class:`PatchClasses`
    (a branch that crosses several classified feature maps stays 8-bit if any says so)."""
    return frozenset(name for c in classes for name in c.outlier_patches)
