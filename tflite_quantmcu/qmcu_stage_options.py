"""Options of the ``QMCU_PATCH_STAGE`` custom op (docs/qmcu_ops.md §8) and its per-patch geometry.

One op runs a whole patch stage: its layers (a small DAG of conv, depthwise conv, ADD and
pools) patch after patch, every per-patch intermediate in one scratch buffer at offsets the
converter computed (the buffer plan). This module is the Python form of the format: the
dataclasses, their flexbuffer encoding, and the per-patch regions and pads that the numpy
reference (`reference/qmcu_stage.py`) and the C kernel (`qmcu_patch_stage`) both derive
from the options the same way.
"""
from __future__ import annotations

import dataclasses

from flatbuffers import flexbuffers

from tflite_quantmcu.qmcu_options import ADD_LEFT_SHIFT, act_range

STAGE_VERSION = 2          # written when a map has sub-byte patches; else version 1
INT8_STAGE_VERSION = 1     # an all-int8 stage is written as version 1 (older glue runs it)
READABLE_VERSIONS = (1, 2)
STAGE_OP = "QMCU_PATCH_STAGE"
# Layer kinds and their integer codes in the options (C: qmcu_stage_kind).
LAYER_KINDS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 1, "ADD": 2, "AVERAGE_POOL_2D": 3,
               "MAX_POOL_2D": 4, "PAD": 5}
# PAD: a window of kernel 1, stride 1 whose pad_top / pad_left are the paddings before; the
# fill value is multiplier[0] (shift[0] = 0) for int8 patches, each sub-byte patch's zero
# point packed into every element otherwise (version 2).
WINDOW_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD")
INT8_ONLY_KINDS = ("MAX_POOL_2D",)
NO_SLOT = -1
SLOT_ALIGNMENT = 4


@dataclasses.dataclass(frozen=True)
class StageTensor:
    """A feature map of the stage: full logical shape, quantization, per-axis patch parts.

    rows[i] / cols[j]: [start, stop) of grid row i / grid column j (image coordinates);
    patch (i, j) holds rows[i] x cols[j]. offset: its slot in the scratch buffer, or -1
    (the stage input; the stage output when patches write straight into it).
    """

    shape: tuple[int, int, int, int]
    bits: int
    zero_point: int
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    offset: int = NO_SLOT
    patch_bits: tuple[int, ...] = ()
    patch_zero_points: tuple[int, ...] = ()

    @property
    def pixel_bytes(self) -> int:
        """Bytes of one pixel at the widest width any patch holds."""
        return max(self.pixel_bytes_at(p) for p in range(max(1, len(self.patch_bits))))

    def bits_at(self, p: int) -> int:
        """Width of patch p's part (patch_bits, version 2; else `bits`)."""
        return self.patch_bits[p] if self.patch_bits else self.bits

    def zero_point_at(self, p: int) -> int:
        return self.patch_zero_points[p] if self.patch_zero_points else self.zero_point

    def pixel_bytes_at(self, p: int) -> int:
        return self.shape[3] * self.bits_at(p) // 8

    @property
    def is_subbyte(self) -> bool:
        return any(b < 8 for b in self.patch_bits)

    def region(self, i: int, j: int) -> tuple[int, int, int, int]:
        return self.rows[i] + self.cols[j]


@dataclasses.dataclass(frozen=True)
class StageLayer:
    """One layer: kind, stage tensors read/written, window geometry of the full image.

    filter / bias: index of the weight / bias tensor among the op's inputs (-1: none).
    pad_top / pad_left: the layer's own padding before the first pixel (SAME or VALID of
    the original op); per patch only the part that falls outside the image is applied.
    multiplier / shift: per output channel (conv, depthwise); (in1, in2, out) for ADD.
    staging[k]: scratch offset where input k's window is copied first, -1: read in place.
    kernel_scratch: scratch offset of the kernel's own scratch (opt path), -1: none.
    """

    kind: str
    inputs: tuple[int, ...]
    output: int
    act_min: int
    act_max: int
    filter: int = -1
    bias: int = -1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad_top: int = 0
    pad_left: int = 0
    depth_multiplier: int = 1
    multiplier: tuple[int, ...] = ()
    shift: tuple[int, ...] = ()
    staging: tuple[int, ...] = ()
    kernel_scratch: int = NO_SLOT
    kernel_scratch_bytes: int = 0
    variants: tuple[StageVariant, ...] = ()
    patch_variants: tuple[int, ...] = ()
    variant_data: int = -1

    def variant_at(self, p: int) -> StageVariant | None:
        """Patch p's variant (None: variant 0, the layer's own int8 fields)."""
        v = self.patch_variants[p] if self.patch_variants else 0
        return None if v == 0 else self.variants[v - 1]


@dataclasses.dataclass(frozen=True)
class StageVariant:
    """Version 2: a layer's quantization for patches whose maps are not all int8 (variant
    v >= 1 of the layer; variant 0 is the layer's own int8 fields).

    act_min / act_max: the output clamp at the patch's output width. bias / requant: word
    offsets into the layer's `variant_data` constant (an INT32 op input): bias, C_out words
    (a copy rescaled to the patch's input scale; -1: the layer's own `bias` operand, or none);
    requant, 2 n words, multipliers then shifts: n = C_out for conv/depthwise, 3 for ADD
    (in1, in2, out), 1 for an average pool that rescales (-1: a pool that does not).
    """

    act_min: int
    act_max: int
    bias: int = -1
    requant: int = -1


@dataclasses.dataclass(frozen=True)
class StageOptions:
    """The whole op: grid, tensors (0 = stage input, last = stage output), layers in order.

    output_gap: -1, or the converter placed the stage output `output_gap` bytes before the
    stage input in the arena (offline plan), overlapping it: output rows of patch row i
    only reach input rows no later patch reads. The kernels need not know; the
    reference executor runs on such one buffer to check it.
    """

    grid: tuple[int, int]
    tensors: tuple[StageTensor, ...]
    layers: tuple[StageLayer, ...]
    scratch_bytes: int
    output_gap: int = -1

    def __post_init__(self) -> None:
        check_stage(options=self)

    @property
    def output(self) -> int:
        return len(self.tensors) - 1

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def version(self) -> int:
        """2 when a map has per-patch widths or a layer has variants, else 1."""
        subbyte = any(t.patch_bits or t.patch_zero_points for t in self.tensors) or any(
            layer.variants or layer.patch_variants for layer in self.layers)
        return STAGE_VERSION if subbyte else INT8_STAGE_VERSION


def check_stage(*, options: StageOptions) -> None:
    """ValueError naming the first broken rule of docs §8 (the C check mirrors it)."""
    rows, cols = options.grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid {options.grid} must be at least 1x1")
    if len(options.tensors) < 2 or len(options.layers) != len(options.tensors) - 1:
        raise ValueError("a stage has an input and one output tensor per layer")
    for t, tensor in enumerate(options.tensors):
        if len(tensor.rows) != rows or len(tensor.cols) != cols:
            raise ValueError(f"tensor {t}: {len(tensor.rows)}x{len(tensor.cols)} parts, grid "
                             f"is {rows}x{cols}")
        if tensor.bits != 8:
            raise ValueError(f"tensor {t}: bits {tensor.bits}: the base width is 8 (sub-byte "
                             "widths are per patch, patch_bits)")
        _check_patch_widths(tensor=tensor, t=t, options=options)
        for lo, hi in tensor.rows + tensor.cols:
            if not 0 <= lo < hi:
                raise ValueError(f"tensor {t}: empty or negative part [{lo}, {hi})")
        if tensor.rows[-1][1] > tensor.shape[1] or tensor.cols[-1][1] > tensor.shape[2]:
            raise ValueError(f"tensor {t}: parts leave the {tensor.shape} map")
    produced = {0}
    for index, layer in enumerate(options.layers):
        _check_layer(layer=layer, index=index, produced=produced, options=options)
        produced.add(layer.output)
    if options.layers[-1].output != options.output:
        raise ValueError("the last layer must write the stage output (the last tensor)")
    if options.output_gap < -1 or options.scratch_bytes < 0:
        raise ValueError(f"output_gap {options.output_gap} / scratch_bytes "
                         f"{options.scratch_bytes} out of range")


def _check_patch_widths(*, tensor: StageTensor, t: int, options: StageOptions) -> None:
    patches = options.patches
    if len(tensor.patch_bits) != len(tensor.patch_zero_points) or \
            len(tensor.patch_bits) not in (0, patches):
        raise ValueError(f"tensor {t}: patch_bits / patch_zero_points need {patches} entries "
                         f"each (or none), got {len(tensor.patch_bits)} / "
                         f"{len(tensor.patch_zero_points)}")
    if tensor.is_subbyte and t in (0, options.output):
        raise ValueError(f"tensor {t}: the stage input and output stay int8")
    for p, (bits, zp) in enumerate(zip(tensor.patch_bits, tensor.patch_zero_points)):
        lo, hi = act_range(bits=bits) if bits in (2, 4, 8) else (1, 0)
        if not lo <= zp <= hi:
            raise ValueError(f"tensor {t} patch {p}: bits {bits}, zero point {zp}")
        if tensor.shape[3] * bits % 8:
            raise ValueError(f"tensor {t}: {tensor.shape[3]} channels cannot be packed at "
                             f"{bits} bits (docs §1.1 channel-count rule)")


def _check_variants(*, layer: StageLayer, index: int, options: StageOptions) -> None:
    if (layer.variants or layer.variant_data != -1) and not layer.patch_variants:
        raise ValueError(f"layer {index}: variants / variant_data without patch_variants")
    if len(layer.patch_variants) not in (0, options.patches) or any(
            not 0 <= v <= len(layer.variants) for v in layer.patch_variants):
        raise ValueError(f"layer {index}: patch_variants must give each of the "
                         f"{options.patches} patches a variant in [0, {len(layer.variants)}]")
    if layer.kind in INT8_ONLY_KINDS and (layer.variants or any(
            options.tensors[t].is_subbyte for t in layer.inputs + (layer.output,))):
        raise ValueError(f"layer {index}: {layer.kind} runs int8 maps only")
    if layer.kind == "PAD":
        src, out = options.tensors[layer.inputs[0]], options.tensors[layer.output]
        if layer.variants or any(
                (src.bits_at(p), src.zero_point_at(p)) != (out.bits_at(p), out.zero_point_at(p))
                for p in range(options.patches) if src.is_subbyte or out.is_subbyte):
            raise ValueError(f"layer {index}: a PAD's output has its input's widths and zero "
                             "points, and no variants")
    for p in range(options.patches):
        bits = options.tensors[layer.output].bits_at(p)
        lo, hi = act_range(bits=bits)
        variant = layer.variant_at(p)
        if variant is None:
            if layer.kind != "PAD" and any(
                    options.tensors[t].bits_at(p) != 8 for t in layer.inputs + (layer.output,)):
                raise ValueError(f"layer {index} patch {p}: variant 0 is int8, the patch's "
                                 "maps are not")
            continue
        if not lo <= variant.act_min <= variant.act_max <= hi:
            raise ValueError(f"layer {index} patch {p}: act range [{variant.act_min}, "
                             f"{variant.act_max}] at {bits} bits")
        if (layer.kind != "AVERAGE_POOL_2D" and variant.requant < 0) or \
                min(variant.requant, variant.bias) < -1 or layer.variant_data < 1:
            raise ValueError(f"layer {index} patch {p}: a variant needs its requant offset in "
                             "the layer's variant_data operand")


def _check_layer(*, layer: StageLayer, index: int, produced: set[int],
                 options: StageOptions) -> None:
    if layer.kind not in LAYER_KINDS:
        raise ValueError(f"layer {index}: kind {layer.kind!r} not one of {sorted(LAYER_KINDS)}")
    want = 2 if layer.kind == "ADD" else 1
    if len(layer.inputs) != want or len(layer.staging) != want:
        raise ValueError(f"layer {index}: {layer.kind} reads {want} tensors, got "
                         f"{len(layer.inputs)} (staging {len(layer.staging)})")
    if any(t not in produced for t in layer.inputs) or layer.output != index + 1:
        raise ValueError(f"layer {index}: reads {layer.inputs} / writes {layer.output}, which "
                         "is not a DAG in execution order (layer n writes tensor n + 1)")
    lo, hi = act_range(bits=options.tensors[layer.output].bits)
    if not lo <= layer.act_min <= layer.act_max <= hi:
        raise ValueError(f"layer {index}: act range [{layer.act_min}, {layer.act_max}]")
    _check_variants(layer=layer, index=index, options=options)
    channels = options.tensors[layer.output].shape[3]
    if layer.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if layer.filter < 1 or len(layer.multiplier) != channels or \
                len(layer.shift) != channels:
            raise ValueError(f"layer {index}: needs a filter and {channels} multipliers/shifts")
    if layer.kind == "ADD" and (len(layer.multiplier) != 3 or len(layer.shift) != 3):
        raise ValueError(f"layer {index}: ADD needs (in1, in2, out) multipliers and shifts")
    if layer.kind == "PAD" and (len(layer.multiplier) != 1 or layer.shift != (0,) or
                                not -128 <= layer.multiplier[0] <= 127 or
                                layer.kernel != (1, 1) or layer.stride != (1, 1) or
                                layer.dilation != (1, 1)):
        raise ValueError(f"layer {index}: PAD needs kernel/stride/dilation 1, multiplier = "
                         "(int8 fill value,) and shift = (0,)")
    if min(layer.kernel + layer.stride + layer.dilation) < 1 or \
            min(layer.pad_top, layer.pad_left) < 0:
        raise ValueError(f"layer {index}: kernel/stride/dilation must be >= 1, pads >= 0")


# ---- per-patch geometry (C: qmcu_stage_window) --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AxisCut:
    """One axis of one layer input for one patch: the input part the layer reads
    ([start, stop), image coordinates, inside the map) and the border padding around it."""

    start: int
    stop: int
    pad_before: int
    pad_after: int


def input_cut(*, layer: StageLayer, axis: int, out: tuple[int, int], size: int) -> AxisCut:
    """What a layer reads along `axis` (0: rows, 1: cols) for outputs [out[0], out[1])."""
    if layer.kind not in WINDOW_KINDS:
        return AxisCut(out[0], out[1], 0, 0)
    stride, dilation = layer.stride[axis], layer.dilation[axis]
    extent = (layer.kernel[axis] - 1) * dilation + 1
    pad = (layer.pad_top, layer.pad_left)[axis]
    start = out[0] * stride - pad
    stop = (out[1] - 1) * stride + extent - pad
    return AxisCut(max(start, 0), min(stop, size), max(-start, 0), max(stop - size, 0))


def patch_cuts(*, options: StageOptions, layer: StageLayer, k: int, i: int,
               j: int) -> tuple[AxisCut, AxisCut]:
    """Row and column cut of input `k` of `layer` for patch (i, j)."""
    src = options.tensors[layer.inputs[k]]
    out = options.tensors[layer.output]
    return (input_cut(layer=layer, axis=0, out=out.rows[i], size=src.shape[1]),
            input_cut(layer=layer, axis=1, out=out.cols[j], size=src.shape[2]))


def held_part(*, options: StageOptions, t: int, i: int, j: int) -> tuple[int, int, int, int]:
    """Rows x cols of tensor t that patch (i, j) holds (the whole map for the stage input)."""
    tensor = options.tensors[t]
    if t == 0:
        return 0, tensor.shape[1], 0, tensor.shape[2]
    return tensor.region(i, j)


def add_quant(*, s1: float, s2: float, s_out: float,
              quantize_multiplier) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(multipliers, shifts) of in1, in2, out for an int8 ADD (docs §4)."""
    twice = 2 * max(s1, s2)
    pairs = [quantize_multiplier(r) for r in (s1 / twice, s2 / twice,
                                              twice / ((1 << ADD_LEFT_SHIFT) * s_out))]
    return tuple(m for m, _ in pairs), tuple(s for _, s in pairs)


# ---- flexbuffer encoding ---------------------------------------------------------------------

def _pairs(values: tuple[tuple[int, int], ...]) -> list[int]:
    return [int(v) for pair in values for v in pair]


def encode_stage_options(*, options: StageOptions) -> bytes:
    """The flexbuffer map of docs §8 (flat int vectors, so C reads them without nesting).
    Version 1 for an all-int8 stage (the same bytes as before version 2), else version 2
    with the per-patch keys."""
    tensors = []
    for t in options.tensors:
        entry = {"shape": [int(v) for v in t.shape], "bits": t.bits,
                 "zero_point": t.zero_point, "rows": _pairs(t.rows), "cols": _pairs(t.cols),
                 "offset": t.offset}
        if t.patch_bits:
            entry.update(patch_bits=[int(v) for v in t.patch_bits],
                         patch_zero_points=[int(v) for v in t.patch_zero_points])
        tensors.append(entry)
    layers = []
    for layer in options.layers:
        entry = {"kind": LAYER_KINDS[layer.kind], "inputs": list(layer.inputs),
                 "output": layer.output, "act_min": layer.act_min, "act_max": layer.act_max,
                 "filter": layer.filter, "bias": layer.bias, "kernel": list(layer.kernel),
                 "stride": list(layer.stride), "dilation": list(layer.dilation),
                 "pad_top": layer.pad_top, "pad_left": layer.pad_left,
                 "depth_multiplier": layer.depth_multiplier,
                 "multiplier": [int(v) for v in layer.multiplier],
                 "shift": [int(v) for v in layer.shift], "staging": list(layer.staging),
                 "kernel_scratch": layer.kernel_scratch,
                 "kernel_scratch_bytes": layer.kernel_scratch_bytes}
        if layer.patch_variants:
            entry.update(patch_variants=[int(v) for v in layer.patch_variants],
                         variants=_variant_words(layer=layer),
                         variant_data=layer.variant_data)
        layers.append(entry)
    return bytes(flexbuffers.Dumps({"version": options.version, "grid": list(options.grid),
                                    "scratch_bytes": options.scratch_bytes,
                                    "output_gap": options.output_gap,
                                    "tensors": tensors, "layers": layers}))


VARIANT_WORDS = 4   # act_min, act_max, bias, requant


def _variant_words(*, layer: StageLayer) -> list[int]:
    return [int(w) for v in layer.variants for w in (v.act_min, v.act_max, v.bias, v.requant)]


def _unpairs(values) -> tuple[tuple[int, int], ...]:
    values = [int(v) for v in values]
    return tuple((values[k], values[k + 1]) for k in range(0, len(values), 2))


def decode_stage_options(*, data: bytes) -> StageOptions:
    """The options `encode_stage_options` wrote (version 1 or 2); ValueError when malformed."""
    raw = flexbuffers.Loads(bytes(data))
    if not isinstance(raw, dict) or raw.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{STAGE_OP}: options are not a version-1 or version-{STAGE_VERSION} "
                         "flexbuffer map")
    kinds = {code: name for name, code in LAYER_KINDS.items()}
    try:
        tensors = tuple(StageTensor(shape=tuple(int(v) for v in t["shape"]), bits=t["bits"],
                                    zero_point=t["zero_point"], rows=_unpairs(t["rows"]),
                                    cols=_unpairs(t["cols"]), offset=t["offset"],
                                    patch_bits=tuple(int(v) for v in t.get("patch_bits", ())),
                                    patch_zero_points=tuple(
                                        int(v) for v in t.get("patch_zero_points", ())))
                        for t in raw["tensors"])
        layers = tuple(StageLayer(
            kind=kinds.get(layer["kind"], str(layer["kind"])),
            inputs=tuple(layer["inputs"]), output=layer["output"],
            act_min=layer["act_min"], act_max=layer["act_max"], filter=layer["filter"],
            bias=layer["bias"], kernel=tuple(layer["kernel"]), stride=tuple(layer["stride"]),
            dilation=tuple(layer["dilation"]), pad_top=layer["pad_top"],
            pad_left=layer["pad_left"], depth_multiplier=layer["depth_multiplier"],
            multiplier=tuple(layer["multiplier"]), shift=tuple(layer["shift"]),
            staging=tuple(layer["staging"]), kernel_scratch=layer["kernel_scratch"],
            kernel_scratch_bytes=layer["kernel_scratch_bytes"],
            variants=_variants(layer.get("variants", ())),
            patch_variants=tuple(int(v) for v in layer.get("patch_variants", ())),
            variant_data=layer.get("variant_data", -1))
            for layer in raw["layers"])
        if raw["version"] == INT8_STAGE_VERSION and (
                any(t.patch_bits for t in tensors) or any(x.patch_variants for x in layers)):
            raise ValueError(f"{STAGE_OP}: per-patch widths need version {STAGE_VERSION}")
        return StageOptions(grid=tuple(raw["grid"]), tensors=tensors, layers=layers,
                            scratch_bytes=raw["scratch_bytes"],
                            output_gap=raw.get("output_gap", -1))
    except (KeyError, TypeError) as err:
        raise ValueError(f"{STAGE_OP}: missing or malformed option: {err}") from err


def _variants(words) -> tuple[StageVariant, ...]:
    words = [int(v) for v in words]
    if len(words) % VARIANT_WORDS:
        raise ValueError(f"{STAGE_OP}: variants hold {VARIANT_WORDS} ints each, got {len(words)}")
    return tuple(StageVariant(*words[k:k + VARIANT_WORDS])
                 for k in range(0, len(words), VARIANT_WORDS))


# ---- the C kernel's int32 pool (docs §8.3) ----------------------------------------------------
TENSOR_WORDS = 7   # n, h, w, c, bits, zero_point, offset
LAYER_WORDS = 24   # see docs §8.3 and qmcu/qmcu_stage.h
LAYER_EXT_WORDS = 3   # version 2, per layer: variants, variant table, variant_data operand


def requant_words(*, layer: StageLayer) -> int:
    """Words of the layer's multipliers and shifts in the pool."""
    return len(layer.multiplier) + len(layer.shift)


def stage_pool_words(*, options: StageOptions) -> int:
    """int32 words the TFLM glue parses the options into (persistent, once per op)."""
    rows, cols = options.grid
    count = len(options.tensors)
    base = (TENSOR_WORDS * count + 2 * (rows + cols) * count + LAYER_WORDS * len(options.layers)
            + sum(requant_words(layer=layer) for layer in options.layers))
    return base + len(_extension(options=options, at=0))


def _extension(*, options: StageOptions, at: int) -> list[int]:
    """Version 2's per-patch section (docs §8.3), placed at pool word `at`; empty for an
    all-int8 stage (version 1: the pool is exactly the version-1 pool)."""
    if options.version == INT8_STAGE_VERSION:
        return []
    patches = options.patches
    head = len(options.tensors) + LAYER_EXT_WORDS * len(options.layers)
    where = at + head
    index, tables = [], []
    for t in options.tensors:
        if t.patch_bits:
            index.append(where)
            tables += list(t.patch_bits) + list(t.patch_zero_points)
            where += 2 * patches
        else:
            index.append(-1)
    for layer in options.layers:
        if layer.patch_variants:
            index += [len(layer.variants), where, layer.variant_data]
            block = list(layer.patch_variants) + _variant_words(layer=layer)
            tables += block
            where += len(block)
        else:
            index += [0, -1, -1]
    return index + tables


def stage_pool(*, options: StageOptions) -> list[int]:
    """The pool the C parser fills (docs §8.3), for programs that embed it without the parser
    (the bare-metal tests); tests compare it with the parser's."""
    pool = [int(v) for t in options.tensors
            for v in tuple(t.shape) + (t.bits, t.zero_point, t.offset)]
    for t in options.tensors:
        pool += _pairs(t.rows) + _pairs(t.cols)
    requant_at = len(pool) + LAYER_WORDS * len(options.layers)
    requant: list[int] = []
    for layer in options.layers:
        inputs = list(layer.inputs) + [-1] * (2 - len(layer.inputs))
        staging = list(layer.staging) + [NO_SLOT] * (2 - len(layer.staging))
        pool += [LAYER_KINDS[layer.kind], len(layer.inputs), *inputs, layer.output, *staging,
                 layer.act_min, layer.act_max, layer.filter, layer.bias, *layer.kernel,
                 *layer.stride, *layer.dilation, layer.pad_top, layer.pad_left,
                 layer.depth_multiplier, layer.kernel_scratch, layer.kernel_scratch_bytes,
                 requant_at + len(requant), len(layer.multiplier)]
        requant += [int(v) for v in layer.multiplier] + [int(v) for v in layer.shift]
    pool += requant
    return pool + _extension(options=options, at=len(pool))
