"""Sliding-window geometry shared by convolution, depthwise convolution and pooling.

Arrays here are NHWC with the sample axis folded into N. Padding follows
TFLite's ComputePaddingWithOffset: the output size comes from the padding type,
the total padding is split with the odd pixel at the bottom/right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tflite_quantmcu.ir import schema


@dataclass(frozen=True)
class AxisWindow:
    """One spatial axis: kernel size, stride, dilation, output size and padding."""

    kernel: int
    stride: int
    dilation: int
    out: int
    pad_before: int
    pad_after: int

    @property
    def effective_kernel(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def tap_slice(self, tap: int) -> slice:
        """Rows of the padded input that kernel tap `tap` reads for all outputs."""
        start = tap * self.dilation
        return slice(start, start + (self.out - 1) * self.stride + 1, self.stride)


def axis_window(*, padding: int, size: int, kernel: int, stride: int,
                dilation: int = 1) -> AxisWindow:
    """TFLite's output size and padding of one spatial axis."""
    effective = (kernel - 1) * dilation + 1
    if padding == schema.Padding.SAME:
        out = (size + stride - 1) // stride
    else:
        out = (size - effective + stride) // stride
    total = max(0, (out - 1) * stride + effective - size)
    return AxisWindow(kernel=kernel, stride=stride, dilation=dilation, out=out,
                      pad_before=total // 2, pad_after=total - total // 2)


def pad_spatial(*, x: np.ndarray, rows: AxisWindow, cols: AxisWindow, fill) -> np.ndarray:
    """Pads axes 1 and 2 of an NHWC array with `fill` (no copy when nothing to pad)."""
    widths = ((0, 0), (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after), (0, 0))
    if not any(before or after for before, after in widths):
        return x
    return np.pad(x, widths, constant_values=fill)


def window_view(*, padded: np.ndarray, rows: AxisWindow, cols: AxisWindow) -> np.ndarray:
    """Read-only view (N, OH, OW, C, KH, KW) of every window of a padded NHWC array."""
    view = sliding_window_view(padded, (rows.effective_kernel, cols.effective_kernel), axis=(1, 2))
    return view[:, :(rows.out - 1) * rows.stride + 1:rows.stride,
                :(cols.out - 1) * cols.stride + 1:cols.stride, :,
                ::rows.dilation, ::cols.dilation]


def tap(*, padded: np.ndarray, rows: AxisWindow, cols: AxisWindow, i: int, j: int) -> np.ndarray:
    """The input each output position meets at kernel tap (i, j): (N, OH, OW, C)."""
    return padded[:, rows.tap_slice(i), cols.tap_slice(j), :]


def valid_counts(*, height: int, width: int, rows: AxisWindow, cols: AxisWindow) -> np.ndarray:
    """How many window taps fall inside the unpadded input, per output position (OH, OW)."""
    inside = np.ones((1, height, width, 1), dtype=np.int64)
    padded = pad_spatial(x=inside, rows=rows, cols=cols, fill=0)
    total = np.zeros((1, rows.out, cols.out, 1), dtype=np.int64)
    for i in range(rows.kernel):
        for j in range(cols.kernel):
            total += tap(padded=padded, rows=rows, cols=cols, i=i, j=j)
    return total[0, :, :, 0]


# Work on outputs in blocks of about this many elements, so that the int64/float
# temporaries of one block stay in the CPU cache (measured 3-4x faster than whole arrays).
BLOCK_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class OutputBlock:
    """Images and output rows of one block; `rows` is the block's own row geometry."""

    images: slice
    out_rows: slice
    rows: AxisWindow

    def input_rows(self) -> slice:
        """Rows of the padded input this block reads."""
        start = self.out_rows.start * self.rows.stride
        return slice(start, start + (self.rows.out - 1) * self.rows.stride
                     + self.rows.effective_kernel)


def output_blocks(*, images: int, rows: AxisWindow, row_elements: int,
                  target: int = BLOCK_ELEMENTS) -> list[OutputBlock]:
    """Splits (images x output rows) into blocks of about `target` output elements."""
    per_image = rows.out * row_elements
    if per_image >= target:
        step = max(1, target // max(row_elements, 1))
        return [_block(n, n + 1, r, min(r + step, rows.out), rows)
                for n in range(images) for r in range(0, rows.out, step)]
    step = max(1, target // max(per_image, 1))
    return [_block(n, min(n + step, images), 0, rows.out, rows) for n in range(0, images, step)]


def _block(n0: int, n1: int, r0: int, r1: int, rows: AxisWindow) -> OutputBlock:
    block_rows = AxisWindow(kernel=rows.kernel, stride=rows.stride, dilation=rows.dilation,
                            out=r1 - r0, pad_before=rows.pad_before, pad_after=rows.pad_after)
    return OutputBlock(images=slice(n0, n1), out_rows=slice(r0, r1), rows=block_rows)
