"""Arena scratch the QMCU_* glue requests (cmixnn_bridge/tflm/qmcu_tflm_ops.cc Prepare).

Only QMCU_CONV_2D and QMCU_DEPTHWISE_CONV_2D request scratch, and only on the optimized
path (`QMCU_USE_OPT` at build time) for the shapes it supports; the reference path and
every other QMCU op request none. QMCU_PATCH_STAGE requests one buffer: the scratch its
options' buffer plan sizes (per-patch intermediates, staging copies, kernel scratch). These mirror `qmcu_conv_2d_opt_scratch_size` and
`qmcu_depthwise_conv_2d_opt_scratch_size` (src/opt/*.c, default `QMCU_CONV_COLS_BYTES`);
tests/test_cmixnn_host.py compares them with the C functions. A firmware built without
`QMCU_USE_OPT` needs these bytes less: the figure is sized for the optimized build.
"""
from __future__ import annotations

from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.qmcu_stage_options import STAGE_OP, decode_stage_options

CONV_COLS_BYTES = 6144   # QMCU_CONV_COLS_BYTES
MICRO_TILE_PIXELS = 3    # QMCU_MT
CONST_WORDS = 14         # QMCU_C_WORDS
DW_MAX_TAPS = 64         # QMCU_DW_MAX_TAPS
NO_SCRATCH_OPS = frozenset({"QMCU_ADD", "QMCU_AVERAGE_POOL_2D", "QMCU_PACK", "QMCU_UNPACK"})


def _align4(n: int) -> int:
    return (n + 3) & ~3


def conv_scratch_bytes(*, filter_shape, in_channels: int, w_bits: int) -> int:
    """qmcu_conv_2d_opt_scratch_size for valid params; 0 where the opt path does not apply."""
    k = filter_shape[1] * filter_shape[2] * in_channels
    padded = k % 4 != 0
    if k % (32 // w_bits) and w_bits != 8:
        return 0
    k = (k + 3) // 4 * 4  # 8-bit weights: K padded with zeros, smallest tile
    groups = 4 if padded else min(max(CONV_COLS_BYTES // (6 * k), 4), 32)
    return groups * MICRO_TILE_PIXELS * k * 2 + 4 * k + _align4(k * 2) + CONST_WORDS * 4


def depthwise_scratch_bytes(*, filter_shape, in_channels: int, out_channels: int, in_bits: int,
                            depth_multiplier: int) -> int:
    """qmcu_depthwise_conv_2d_opt_scratch_size for valid params; 0 off the opt path."""
    taps = filter_shape[1] * filter_shape[2]
    if depth_multiplier != 1 or in_channels % (32 // in_bits) or taps > DW_MAX_TAPS:
        return 0
    return _align4(taps * out_channels * 2) + out_channels * 4 + in_channels * in_bits // 8


def qmcu_scratch_requests(*, op_type: str, custom_options: bytes) -> list[int] | None:
    """Scratch sizes a QMCU op requests (empty: none), None for a custom op not ours."""
    if op_type in NO_SCRATCH_OPS:
        return []
    if op_type == STAGE_OP:
        need = decode_stage_options(data=custom_options).scratch_bytes
        return [need] if need > 0 else []
    if op_type == "QMCU_CONV_2D":
        o = decode_options(op=op_type, data=custom_options)
        need = conv_scratch_bytes(filter_shape=o.filter_shape, in_channels=o.in_shape[3],
                                  w_bits=o.w_bits)
    elif op_type == "QMCU_DEPTHWISE_CONV_2D":
        o = decode_options(op=op_type, data=custom_options)
        need = depthwise_scratch_bytes(filter_shape=o.filter_shape, in_channels=o.in_shape[3],
                                       out_channels=o.out_shape[3], in_bits=o.in_bits,
                                       depth_multiplier=o.depth_multiplier)
    else:
        return None
    return [need] if need > 0 else []
