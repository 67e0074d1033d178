"""Numpy reference of ``QMCU_PATCH_STAGE`` (docs/qmcu_ops.md §8).

Runs the stage exactly as the options say, on a real scratch buffer: per patch (row-major),
per layer, the inputs are read from their slots (or the stage input) in place or through
their staging copy, the layer runs through the per-layer QMCU reference kernels
(`qmcu_adapters.fast_conv_like`, `qmcu_kernels.add` / `average_pool_2d`, a max pool here)
with the patch's border padding as explicit pads, and its output is written into its slot
(or straight into the stage output). The stage output and input share one byte array
laid out as `output_gap` says, so an overlap that clobbered input still to be read would
show. A depthwise or conv layer whose output slot overlaps
its input slot (in place) runs one output row at a time, each row written into the
scratch before the next is computed, as the C kernels do (row-major writes); a buffer plan that overwrote
rows still to be read would change the result, so the executor checks the plan.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.qmcu_options import (AddOptions, AveragePool2DOptions, Conv2DOptions,
                                          DepthwiseConv2DOptions, Geometry)
from tflite_quantmcu.qmcu_stage_options import (NO_SLOT, AxisCut, StageLayer, StageOptions,
                                                decode_stage_options, held_part, patch_cuts)
from tflite_quantmcu.reference import qmcu_kernels
from tflite_quantmcu.reference.qmcu_adapters import fast_conv_like, folded_input
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.windows import AxisWindow, pad_spatial, tap


class _Buffers:
    """The stage output and input in one byte array (overlapping as `output_gap` says, else
    side by side), the scratch bytes, for N samples."""

    def __init__(self, *, x: np.ndarray, options: StageOptions) -> None:
        self.options = options
        n = x.shape[0]
        out = options.tensors[options.output]
        self.out_shape = (n,) + tuple(out.shape[1:])
        out_bytes = int(np.prod(out.shape[1:]))
        in_bytes = int(np.prod(x.shape[1:]))
        self.in_shape = x.shape
        self.in_at = options.output_gap if options.output_gap >= 0 else out_bytes
        self.io = np.full((n, max(self.in_at + in_bytes, out_bytes)), 0x5A, dtype=np.uint8)
        self.io[:, self.in_at:self.in_at + in_bytes] = x.reshape(n, -1).view(np.uint8)
        self.scratch = np.full((n, max(options.scratch_bytes, 1)), 0xA5, dtype=np.uint8)

    @property
    def samples(self) -> int:
        return self.in_shape[0]

    @property
    def x(self) -> np.ndarray:
        size = int(np.prod(self.in_shape[1:]))
        return self.io[:, self.in_at:self.in_at + size].copy().view(np.int8).reshape(
            self.in_shape)

    def output(self) -> np.ndarray:
        size = int(np.prod(self.out_shape[1:]))
        return self.io[:, :size].copy().view(np.int8).reshape(self.out_shape)

    def write_output(self, *, r0: int, c0: int, value: np.ndarray) -> None:
        """Rows r0.. and columns c0.. of the stage output (rows of the byte array)."""
        _, height, width, channels = self.out_shape
        view = self.io[:, :height * width * channels].reshape(self.samples, height, width,
                                                              channels)
        view[:, r0:r0 + value.shape[1], c0:c0 + value.shape[2]] = value.view(np.uint8)

    def read_slot(self, *, offset: int, shape: tuple[int, int, int], bits: int = 8
                  ) -> np.ndarray:
        """Stored form: int8 (8 bits) or packed uint8 bytes, shape (N, rows, cols, bytes)."""
        size = shape[0] * shape[1] * shape[2]
        if offset < 0 or offset + size > self.options.scratch_bytes:
            raise ValueError(f"slot [{offset}, {offset + size}) leaves the scratch of "
                             f"{self.options.scratch_bytes} bytes")
        data = self.scratch[:, offset:offset + size].copy()
        data = data if bits < 8 else data.view(np.int8)
        return data.reshape((self.samples,) + shape)

    def write_slot(self, *, offset: int, value: np.ndarray) -> None:
        flat = np.ascontiguousarray(value).reshape(self.samples, -1).view(np.uint8)
        if offset < 0 or offset + flat.shape[1] > self.options.scratch_bytes:
            raise ValueError(f"slot [{offset}, {offset + flat.shape[1]}) leaves the scratch")
        self.scratch[:, offset:offset + flat.shape[1]] = flat

    def held(self, *, t: int, i: int, j: int) -> np.ndarray:
        """What patch (i, j) holds of tensor t, stored form (N, rows, cols, bytes/pixel)."""
        if t == 0:
            return self.x
        tensor = self.options.tensors[t]
        r0, r1, c0, c1 = tensor.region(i, j)
        if tensor.offset == NO_SLOT:
            raise ValueError(f"tensor {t} is read but has no slot")
        p = i * self.options.grid[1] + j
        return self.read_slot(offset=tensor.offset, bits=tensor.bits_at(p),
                              shape=(r1 - r0, c1 - c0, tensor.pixel_bytes_at(p)))


def run_stage(*, options: StageOptions, x: np.ndarray, operands: dict[int, np.ndarray]
              ) -> np.ndarray:
    """The stage output (N, H, W, C) int8 for stage input x (N, H, W, C) int8."""
    buffers = _Buffers(x=x, options=options)
    out = options.tensors[options.output]
    for i in range(options.grid[0]):
        for j in range(options.grid[1]):
            for layer in options.layers:
                _run_layer(buffers=buffers, layer=layer, operands=operands, i=i, j=j)
            if out.offset != NO_SLOT:
                r0, _, c0, _ = out.region(i, j)
                buffers.write_output(r0=r0, c0=c0, value=buffers.held(t=options.output, i=i,
                                                                      j=j))
    return buffers.output()


def _layer_input(*, buffers: _Buffers, layer: StageLayer, k: int, i: int,
                 j: int) -> tuple[np.ndarray, AxisCut, AxisCut]:
    """Input k of the layer for patch (i, j): (values, row cut, col cut)."""
    options = buffers.options
    rows, cols = patch_cuts(options=options, layer=layer, k=k, i=i, j=j)
    t = layer.inputs[k]
    r0, _, c0, _ = held_part(options=options, t=t, i=i, j=j)
    window = buffers.held(t=t, i=i, j=j)[:, rows.start - r0:rows.stop - r0,
                                         cols.start - c0:cols.stop - c0]
    if layer.staging[k] == NO_SLOT:
        if window.shape[2] != buffers.held(t=t, i=i, j=j).shape[2]:
            raise ValueError(f"input {k} of a {layer.kind} layer is read in place but its "
                             "window does not span the held columns")
        return window, rows, cols
    buffers.write_slot(offset=layer.staging[k], value=window)
    bits = options.tensors[t].bits_at(i * options.grid[1] + j)
    return buffers.read_slot(offset=layer.staging[k], shape=window.shape[1:], bits=bits), \
        rows, cols


def _run_layer(*, buffers: _Buffers, layer: StageLayer, operands: dict[int, np.ndarray],
               i: int, j: int) -> None:
    options = buffers.options
    out_t = options.tensors[layer.output]
    oh = out_t.rows[i][1] - out_t.rows[i][0]
    ow = out_t.cols[j][1] - out_t.cols[j][0]
    if _in_place(options=options, layer=layer):
        _run_in_place(buffers=buffers, layer=layer, operands=operands, i=i, j=j)
        return
    inputs = [_layer_input(buffers=buffers, layer=layer, k=k, i=i, j=j)
              for k in range(len(layer.inputs))]
    value = compute_layer(options=options, layer=layer, inputs=inputs, operands=operands,
                          out_hw=(oh, ow), patch=i * options.grid[1] + j)
    _store(buffers=buffers, layer=layer, value=value, i=i, j=j, first_row=0)


def _store(*, buffers: _Buffers, layer: StageLayer, value: np.ndarray, i: int, j: int,
           first_row: int) -> None:
    out_t = buffers.options.tensors[layer.output]
    if out_t.offset == NO_SLOT:
        buffers.write_output(r0=out_t.rows[i][0] + first_row, c0=out_t.cols[j][0], value=value)
        return
    row_bytes = value.shape[2] * value.shape[3]
    buffers.write_slot(offset=out_t.offset + first_row * row_bytes, value=value)


def _in_place(*, options: StageOptions, layer: StageLayer) -> bool:
    """The output slot overlaps the input slot (the converter's in-place depthwise or conv);
    any other overlap of a layer's output and its inputs is a broken plan."""
    if layer.kind not in ("DEPTHWISE_CONV_2D", "CONV_2D"):
        return False
    src, dst = options.tensors[layer.inputs[0]], options.tensors[layer.output]
    if layer.staging[0] != NO_SLOT or src.offset == NO_SLOT or dst.offset == NO_SLOT:
        return False
    return dst.offset < src.offset + _slot_extent(src) and src.offset < dst.offset + \
        _slot_extent(dst)


def _slot_extent(tensor) -> int:
    cols = len(tensor.cols)
    return max((r[1] - r[0]) * (c[1] - c[0]) * tensor.pixel_bytes_at(i * cols + j)
               for i, r in enumerate(tensor.rows) for j, c in enumerate(tensor.cols))


def _run_in_place(*, buffers: _Buffers, layer: StageLayer, operands: dict[int, np.ndarray],
                  i: int, j: int) -> None:
    """(Depthwise) conv, one output row at a time, each read from / written to the scratch."""
    options = buffers.options
    out_t = options.tensors[layer.output]
    ow = out_t.cols[j][1] - out_t.cols[j][0]
    rows, cols = patch_cuts(options=options, layer=layer, k=0, i=i, j=j)
    extent = (layer.kernel[0] - 1) * layer.dilation[0] + 1
    for oy in range(out_t.rows[i][1] - out_t.rows[i][0]):
        start = oy * layer.stride[0] - rows.pad_before       # kernel-input coordinates
        stop = start + extent
        size = rows.stop - rows.start
        row_cut = AxisCut(rows.start + max(start, 0), rows.start + min(stop, size),
                          max(-start, 0), max(stop - size, 0))
        held = buffers.held(t=layer.inputs[0], i=i, j=j)
        r0 = held_part(options=options, t=layer.inputs[0], i=i, j=j)[0]
        window = held[:, row_cut.start - r0:row_cut.stop - r0]
        value = compute_layer(options=options, layer=layer, inputs=[(window, row_cut, cols)],
                              operands=operands, out_hw=(1, ow),
                              patch=i * options.grid[1] + j)
        _store(buffers=buffers, layer=layer, value=value, i=i, j=j, first_row=oy)


def _geometry(*, layer: StageLayer, rows: AxisCut, cols: AxisCut) -> Geometry:
    return Geometry(stride_h=layer.stride[0], stride_w=layer.stride[1],
                    dilation_h=layer.dilation[0], dilation_w=layer.dilation[1],
                    padding="EXPLICIT", pad_top=rows.pad_before, pad_bottom=rows.pad_after,
                    pad_left=cols.pad_before, pad_right=cols.pad_after)


def compute_layer(*, options: StageOptions, layer: StageLayer, inputs: list,
                  operands: dict[int, np.ndarray], out_hw: tuple[int, int],
                  patch: int = 0) -> np.ndarray:
    """One layer on one patch (index `patch`, row-major): its output in stored form, int8
    (N, out_h, out_w, C_out) or packed bytes, with the patch's widths and the layer's
    variant for that patch (docs §8.2)."""
    x, rows, cols = inputs[0]
    src = options.tensors[layer.inputs[0]]
    dst = options.tensors[layer.output]
    n = x.shape[0]
    out_shape = (n,) + tuple(out_hw) + (dst.shape[3],)
    in_shape = (n,) + tuple(x.shape[1:3]) + (src.shape[3],)
    geometry = _geometry(layer=layer, rows=rows, cols=cols)
    in_bits, out_bits = src.bits_at(patch), dst.bits_at(patch)
    in_zp, out_zp = src.zero_point_at(patch), dst.zero_point_at(patch)
    variant = layer.variant_at(patch)
    act_min, act_max = (layer.act_min, layer.act_max) if variant is None else \
        (variant.act_min, variant.act_max)
    data = None if variant is None else np.asarray(operands[layer.variant_data], np.int64)
    requant = np.array([layer.multiplier, layer.shift], dtype=np.int64) if variant is None \
        or variant.requant < 0 else _requant_words(data=data, at=variant.requant, kind=layer.kind,
                                                   channels=dst.shape[3])
    if layer.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        weights = operands[layer.filter]
        common = dict(in_bits=in_bits, out_bits=out_bits, w_bits=8, in_zero_point=in_zp,
                      out_zero_point=out_zp, in_shape=in_shape,
                      filter_shape=tuple(weights.shape), out_shape=out_shape,
                      act_min=act_min, act_max=act_max, geometry=geometry)
        depthwise = layer.kind == "DEPTHWISE_CONV_2D"
        opts = DepthwiseConv2DOptions(**common, depth_multiplier=layer.depth_multiplier) \
            if depthwise else Conv2DOptions(**common)
        if variant is not None and variant.bias >= 0:
            bias = data[variant.bias:variant.bias + dst.shape[3]]
        else:
            bias = operands[layer.bias] if layer.bias >= 0 else None
        return fast_conv_like(input=x, filter=weights, bias=bias, requant=requant,
                              options=opts, depthwise=depthwise)
    if layer.kind == "ADD":
        other = options.tensors[layer.inputs[1]]
        (m1, m2, mo), (h1, h2, ho) = (tuple(int(v) for v in row) for row in requant)
        opts = AddOptions(in1_bits=in_bits, in2_bits=other.bits_at(patch), out_bits=out_bits,
                          in1_zero_point=in_zp, in2_zero_point=other.zero_point_at(patch),
                          out_zero_point=out_zp, in1_multiplier=m1, in1_shift=h1,
                          in2_multiplier=m2, in2_shift=h2, out_multiplier=mo, out_shift=ho,
                          act_min=act_min, act_max=act_max, shape=out_shape)
        return qmcu_kernels.add(input1=x, input2=inputs[1][0], options=opts)
    if layer.kind == "AVERAGE_POOL_2D":
        rescale = variant is not None and variant.requant >= 0
        multiplier, shift = (int(requant[0, 0]), int(requant[1, 0])) if rescale else (0, 0)
        opts = AveragePool2DOptions(in_bits=in_bits, out_bits=out_bits, in_zero_point=in_zp,
                                    out_zero_point=out_zp, in_shape=in_shape,
                                    out_shape=out_shape, filter_h=layer.kernel[0],
                                    filter_w=layer.kernel[1], act_min=act_min,
                                    act_max=act_max, geometry=geometry, rescale=rescale,
                                    multiplier=multiplier, shift=shift)
        return qmcu_kernels.average_pool_2d(input=x, options=opts)
    if layer.kind == "PAD":     # copies stored pixels; fills with the zero point (packed)
        widths = ((0, 0), (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after),
                  (0, 0))
        out = np.pad(x, widths, constant_values=layer.multiplier[0] if out_bits == 8 else
                     pad_byte(bits=out_bits, zero_point=out_zp))
        if out.shape[1:3] != tuple(out_hw):
            raise ValueError(f"PAD of {x.shape[1:3]} gives {out.shape[1:3]}, not {out_hw}")
        return out
    return max_pool(x=x, layer=layer, rows=rows, cols=cols, out_hw=out_hw)


def _requant_words(*, data: np.ndarray, at: int, kind: str, channels: int) -> np.ndarray:
    """(2, n) multipliers and shifts at word `at` of a layer's variant data."""
    n = {"ADD": 3, "AVERAGE_POOL_2D": 1}.get(kind, channels)
    if at + 2 * n > data.size:
        raise ValueError(f"variant requant [{at}, {at + 2 * n}) leaves the {data.size} words "
                         "of the layer's variant data")
    return data[at:at + 2 * n].reshape(2, n)


def pad_byte(*, bits: int, zero_point: int) -> int:
    """The byte of a packed map whose every element is `zero_point` (docs §1.1)."""
    return sum(zero_point << (bits * k) for k in range(8 // bits))


def max_pool(*, x: np.ndarray, layer: StageLayer, rows: AxisCut, cols: AxisCut,
             out_hw: tuple[int, int]) -> np.ndarray:
    """Int8 max pool with explicit pads (pads never win: they hold -128), clamped."""
    windows = [AxisWindow(kernel=layer.kernel[a], stride=layer.stride[a], dilation=1,
                          out=out_hw[a], pad_before=cut.pad_before, pad_after=cut.pad_after)
               for a, cut in enumerate((rows, cols))]
    padded = pad_spatial(x=x, rows=windows[0], cols=windows[1], fill=-128)
    out = np.full((x.shape[0],) + tuple(out_hw) + (x.shape[3],), -128, dtype=np.int8)
    for a in range(layer.kernel[0]):
        for b in range(layer.kernel[1]):
            np.maximum(out, tap(padded=padded, rows=windows[0], cols=windows[1], i=a, j=b),
                       out=out)
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)


def patch_stage_kernel(*, ctx: OpContext) -> list[np.ndarray]:
    """Executor kernel of QMCU_PATCH_STAGE (registered in qmcu_adapters.QMCU_KERNELS)."""
    try:
        options = decode_stage_options(data=ctx.op.custom_options or b"")
        operands = {k: ctx.parameter(k) for layer in options.layers
                    for k in (layer.filter, layer.bias, layer.variant_data) if k >= 0}
        x = folded_input(ctx=ctx, i=0)
        out = run_stage(options=options, x=x, operands=operands)
    except ValueError as err:
        raise ctx.error(f"{ctx.op.opcode.custom}: {err}") from err
    return [out.reshape(ctx.output_shape())]
