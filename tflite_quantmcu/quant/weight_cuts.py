"""Weight cuts: 4- and 2-bit filters of ``QMCU_CONV_2D`` / ``QMCU_DEPTHWISE_CONV_2D``.

A plan that gives a filter key 4 or 2 bits makes `apply_bitwidths` convert every op
reading that filter into its QMCU form (docs/qmcu_ops.md §1.2) with the filter
re-quantized here:

**Scales.** Per output channel c, the float filter is ``f = q8 * s8[c]`` (the int8
weights and their scale). The b-bit values are symmetric, ``qmax = 2^(b-1) - 1``
(7 at 4 bits, 1 at 2 bits; -8 / -2 are never produced). The scale is
``s_b[c] = alpha * max|f[c]| / qmax`` with the clip factor alpha taken from
``CLIP_GRID`` to minimise the channel's squared error ``sum (q_b * s_b - f)^2``
(ties: the largest alpha), then stored as float32; ``q_b = clamp(round(f / s_b))``
(half away from zero). A channel of zeros keeps its scale and gets zeros. The error
reached is reported per tensor as ``rel_rmse = ||q_b * s_b - f|| / ||f||`` (bench:
bench/policies.py prints the model's figures).

**Why the QMCU form and not TFLite Micro's INT4 filters.** TFLM's reference CONV_2D /
DEPTHWISE_CONV_2D / FULLY_CONNECTED kernels unpack an INT4 filter into an arena
scratch of one byte per weight for the op's duration (``tflm_scratch``), so every
INT4 filter adds its int8 size to the arena head while it runs, and INT4 has no
2-bit counterpart. The QMCU kernels read the packed filter in place from flash (no
filter scratch: ``qmcu_scratch``). Both forms store the same packed bytes in flash
(the QMCU form adds its INT32 [2, C_out] requant constant, 8 B per output channel).
``bench/policies.py`` prints the arena of both forms for the same plan.

Only filters whose every reader is a conv-like op with a QMCU form (reading it as
input 1) and whose innermost axis (C_in for conv, C_out for depthwise) is a multiple
of ``8 / bits`` may be cut (:func:`weight_candidates`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Buffer, Quantization, Subgraph, Tensor
from tflite_quantmcu.qmcu_options import pack_bits, unpack_bits

CONV_TYPES = ("CONV_2D", "DEPTHWISE_CONV_2D")
WEIGHT_WIDTHS = (8, 4, 2)
CLIP_GRID = tuple(round(1.0 - 0.025 * i, 3) for i in range(29))  # 1.0 .. 0.3


@dataclasses.dataclass(frozen=True)
class WeightCut:
    """A filter at ``bits``: logical int values (original layout), float32 scales per
    output channel, and the relative RMS error against the int8 filter's float values."""

    key: str
    bits: int
    values: np.ndarray
    scales: tuple[float, ...]
    rel_rmse: float


def channel_axis(*, op_type: str) -> int:
    """Output-channel axis of a CONV_2D (OHWI: 0) or DEPTHWISE_CONV_2D (1HWO: 3) filter."""
    return 0 if op_type in ("CONV_2D", "QMCU_CONV_2D") else 3


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _channel_cut(*, real: np.ndarray, qmax: int) -> tuple[np.ndarray, float]:
    """(int values, float32 scale) of one output channel's float weights."""
    peak = float(np.abs(real).max()) if real.size else 0.0
    if peak == 0.0:
        return np.zeros(real.shape, dtype=np.int64), 0.0
    best = None
    for alpha in CLIP_GRID:
        scale = float(np.float32(alpha * peak / qmax))
        q = np.clip(_round_half_away(real / scale), -qmax, qmax)
        err = float(np.sum((q * scale - real) ** 2))
        if best is None or err < best[0]:
            best = (err, q.astype(np.int64), scale)
    return best[1], best[2]


def cut_filter(*, key: str, values: np.ndarray, scales, axis: int, bits: int) -> WeightCut:
    """Re-quantize int8 ``values`` (per-channel ``scales`` along ``axis``) to ``bits``."""
    if bits not in (4, 2):
        raise ValueError(f"weight cut of {key!r}: bits must be 4 or 2, got {bits}")
    values = np.asarray(values, dtype=np.int64)
    channels = values.shape[axis]
    old = np.broadcast_to(np.asarray(scales, dtype=np.float32).astype(np.float64), (channels,))
    moved = np.moveaxis(values, axis, 0)
    qmax = (1 << (bits - 1)) - 1
    out = np.zeros_like(moved)
    new_scales = []
    for c in range(channels):
        real = moved[c] * old[c]
        q, scale = _channel_cut(real=real, qmax=qmax)
        out[c] = q
        new_scales.append(scale if scale > 0.0 else float(np.float32(old[c])))
    real_all = moved * old.reshape((-1,) + (1,) * (moved.ndim - 1))
    approx = out * np.asarray(new_scales).reshape(real_all.shape[:1] + (1,) * (moved.ndim - 1))
    norm = float(np.linalg.norm(real_all))
    error = float(np.linalg.norm(approx - real_all)) / norm if norm > 0 else 0.0
    return WeightCut(key=key, bits=bits, values=np.moveaxis(out, 0, axis),
                     scales=tuple(new_scales), rel_rmse=error)


def packed_filter(*, tensor: Tensor, cut: WeightCut, axis: int, details) -> Tensor:
    """The packed INT8 filter tensor (docs §1.2) of ``cut``; ``details`` is the
    CustomQuantization object recording {bits, logical_shape}."""
    packed = pack_bits(values=cut.values, bits=cut.bits).view(np.int8)
    quantization = Quantization(scale=cut.scales, zero_point=(),
                                quantized_dimension=axis,
                                details_type=schema.fb.QuantizationDetails.CustomQuantization,
                                details=details)
    return dataclasses.replace(tensor, shape=tuple(packed.shape), dtype=schema.TensorType.INT8,
                               buffer=Buffer(data=packed.tobytes()), quantization=quantization,
                               shape_signature=None, extra=dict(tensor.extra))


def unpacked_filter(*, tensor: Tensor, bits: int, logical_shape) -> np.ndarray:
    """Inverse of :func:`packed_filter`'s packing: the logical signed values."""
    data = np.frombuffer(tensor.buffer.data, dtype=np.uint8).reshape(tensor.shape)
    return unpack_bits(packed=data, bits=bits, channels=int(logical_shape[-1]), signed=True)


def weight_candidates(*, subgraph: Subgraph, has_form) -> dict[str, tuple[int, ...]]:
    """Filter key -> the widths it may take: (8, 4, 2) minus what packing forbids, for
    filters read only as input 1 of conv-like ops with a QMCU form (``has_form(index)``)."""
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(subgraph.operators):
        for pos, key in enumerate(op.inputs):
            if key is not None and subgraph.tensors[key].is_constant:
                readers.setdefault(key, []).append(i if pos == 1 else -1)
    result = {}
    for key, ops in readers.items():
        if any(i < 0 or subgraph.operators[i].type not in CONV_TYPES or not has_form(i)
               for i in ops):
            continue
        tensor = subgraph.tensors[key]
        if tensor.dtype != schema.TensorType.INT8 or len(tensor.shape) != 4:
            continue
        inner = int(tensor.shape[-1])
        result[key] = tuple(b for b in WEIGHT_WIDTHS if b == 8 or inner % (8 // b) == 0)
    return result


def weight_cuts(*, subgraph: Subgraph, bits: Mapping[str, int]) -> dict[str, WeightCut]:
    """The cut of every filter key planned below 8 bits."""
    cuts = {}
    for key, width in bits.items():
        tensor = subgraph.tensors.get(key)
        if width >= 8 or tensor is None or not tensor.is_constant:
            continue
        op_type = next(op.type for op in subgraph.operators if len(op.inputs) > 1
                       and op.inputs[1] == key)
        cuts[key] = cut_filter(key=key, values=tensor.array(), scales=tensor.quantization.scale,
                               axis=channel_axis(op_type=op_type), bits=width)
    return cuts


def cut_bias(*, bias: np.ndarray, old_scales, new_scales) -> np.ndarray:
    """Bias at new per-channel scales s_in' * s_w'[c]: round(bias * old / new), half away
    from zero (docs §1.2)."""
    ratio = np.asarray(old_scales, dtype=np.float64) / np.asarray(new_scales, dtype=np.float64)
    return _round_half_away(np.asarray(bias, dtype=np.float64) * ratio).astype(np.int64)
