"""Keras entry and quantization-aware fine-tuning (TensorFlow is the optional ``tf`` extra).

    from tflite_quantmcu.keras import convert_keras_model, finetune
    result = convert_keras_model(model, representative_dataset=gen, sram="256KB")
    tuned = finetune(model, plan=result.plan, train_data=(x, y), epochs=2,
                     representative_dataset=gen, sram="256KB")
    deployed = tuned.deploy(sram="256KB", eval_data=(x_test, y_test))   # a ConversionResult

**Conversion.** ``convert_keras_model`` runs TensorFlow's ``TFLiteConverter`` (full int8,
per-channel weights, calibrated with the user's ``representative_dataset``) and then the
convert pipeline through :func:`tflite_quantmcu.convert`, with the same samples as
calibration data.

**Where a plan key lives on the Keras graph.** A plan key is either a tensor key of the
int8 graph (a whole feature map) or a patch-branch tensor ``p{i}_{j}/{op}`` of the
patched graph (the output of op ``op`` computed for patch ``(i, j)``; see
``patches/rewrite.py``). Both lead to the producing op of the int8 graph, and the op's
output tensor name (TFLiteConverter's ``model/<layer>_N/...;...`` form, the first
``;``-part being the fused op's final value) names the Keras layer whose output the map
is: the ReLU6 after a conv+BN, the BN of a projection, the ``Add`` of a residual. Fake
quantization is inserted after that layer (the layer is wrapped; its weights are shared).

**Branch regions (what is emulated and what is approximate).** A map of the patch stage
has one width and one range per patch branch. On the layer-based Keras graph the map is
one tensor, so each of its pixels is given to one branch: among the patches whose
region of that map (``PatchPlan.regions``, halo included) holds the pixel, the one whose
region centre is nearest (ties: the first in row-major order). That pixel is fake-quantized
at that branch's width and range. Exact: the branch widths, ranges and the core region
of every branch. Approximate: in the deployed graph a halo pixel is computed once per
patch that reads it, each time at that patch's width; the emulation quantizes it once,
at its owner's width. Not emulated: int8 rounding of the 8-bit maps and of the 8-bit
weights (the converter's int8 calibration handles them as in plain post-training
quantization), and the int8 step that precedes each sub-byte requantization in the
deployed kernels.

**Filters cut below 8 bits** (plan keys that are filter tensors, e.g. from
``plan_for_bitops_ratio``): the Conv2D / DepthwiseConv2D layer whose kernel it is (named in
the filter's tensor name) computes its conv with a fake-quantized kernel, in the form
``weight_cuts`` deploys. Per output channel c of the *folded* filter ``F = kernel x m`` (m:
the frozen BatchNormalization factor ``gamma / sqrt(var + eps)`` of the BN that reads only
the conv, which the converter folds; 1 without one): ``qmax = 2^(b-1) - 1``; for each clip
factor alpha of ``weight_cuts.CLIP_GRID`` the scale ``alpha max|F[c]| / qmax`` and codes
``clamp(round_half_away(F / s), -qmax, qmax)``; the alpha with the least squared error
(first minimum: the largest alpha) gives the channel's codes q and scale s; the conv uses
``q s / m``. Gradients pass straight through inside ``[-qmax s, qmax s]`` and are 0 outside;
alpha and s are not learned (recomputed at every step). This is float32 arithmetic where
``weight_cuts`` uses float64 on the int8 values, so it matches the deployed rule up to
rounding ties (tested against a numpy reading of the rule).

**Export of cut filters.** After training, each cut layer's kernel is set to exactly
``q s / m`` (the fine-tuned model returned holds these kernels). The int8 conversion then
stores per channel ``q8 = round(q s / s8)`` with ``s8 = qmax s / 127`` (the peak code is
``qmax``: alpha <= 1 clamps the largest weight there), i.e. ``q8 = round(q 127 / qmax)``,
and ``weight_cuts`` at deploy time recovers q exactly at alpha 1 (``|q8 s8 / s - q| <=
qmax / 254 < 1/2``; its squared error is only that int8 rounding, so the search keeps
alpha 1 unless a smaller alpha happens to fit the int8-rounded values better) with the
scale ``127 s8 / qmax``, equal to s up to float32 rounding.
``FinetuneResult.weight_check`` records, per filter, whether the deployed cut equals the
trained codes (a mismatch warns) and the largest relative scale difference. Approximate:
the bias, which passes through int8 at ``s_in s8`` and is re-rounded at ``s_in s`` by
``weight_cuts.cut_bias`` (about one accumulator step).

**Learned clipping.** Each sub-byte branch has a learnable interval ``[lo, hi]`` (``lo <= 0
<= hi``, initialised from the plan's range, else by LSQ's rule from the representative
samples, see ``initial_intervals``) with
the quantizer ``s = (hi - lo) / (2^b - 1)``, ``zp = round(-lo / s)``,
``y = (clip(round(x / s) + zp, 0, 2^b - 1) - zp) * s``; rounding passes the gradient
straight through, so ``lo``/``hi`` get LSQ-style gradients (from the clipped values and
from the step). BatchNormalization layers are frozen (inference mode), so the folded
conv the converter writes is the one trained.

**Export.** The fine-tuned model (without the fake-quant wrappers) is converted to int8
again; every learned interval becomes int8 codes of the new map's quantization and then
a :class:`~tflite_quantmcu.quant.ranges.SubbyteRange` (rule ``qat``), the plan's range
format that ``apply_bitwidths`` applies. Accuracy is only ever measured on the deployed
integer model (the convert pipeline's reference executor), never on the Keras model.

Determinism: ``seed`` fixes Keras/TF/numpy seeds and op determinism is switched on, so
two runs on one machine give the same weights and the same bytes.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from tflite_quantmcu.api import ConversionResult, convert
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.patches.plan import PatchPlan
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.ranges import INT8_HIGH, INT8_LOW, SubbyteRange, range_from_codes
from tflite_quantmcu.quant.weight_cuts import WeightCut, weight_cuts

QAT_RULE = "qat"
IO_TYPES = ("int8", "uint8", "float32")
INIT_SAMPLES = 32
_BRANCH_KEY = re.compile(r"^p(\d+)_(\d+)/(\d+)$")


def _tensorflow():
    """(tensorflow, keras) or a ConfigError naming the extra to install."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        import keras
    except ImportError as err:
        raise ConfigError("tflite_quantmcu.keras needs TensorFlow: pip install "
                          f"'tflite-quantmcu[tf]' ({err})") from err
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"tflite_quantmcu.keras: expected the Keras 'tensorflow' backend, "
                          f"got {keras.backend.backend()!r}")
    return tf, keras


# ---- Keras -> int8 .tflite ---------------------------------------------------------------------

def representative_samples(dataset) -> list[np.ndarray]:
    """The samples of a ``representative_dataset`` (a generator function, or any iterable of
    arrays / one-element lists as TFLiteConverter takes them), each with a batch axis."""
    items = dataset() if isinstance(dataset, Callable) else dataset
    if items is None or not isinstance(items, Iterable):
        raise ConfigError(f"representative_dataset: expected a generator function or an "
                          f"iterable of input arrays, got {type(dataset).__name__}")
    samples = []
    for index, item in enumerate(items):
        if isinstance(item, (list, tuple)):
            if len(item) != 1:
                raise ConfigError(f"representative_dataset item {index}: expected one input "
                                  f"(a single-input model), got {len(item)}")
            item = item[0]
        array = np.asarray(item, dtype=np.float32)
        samples.append(array)
    if not samples:
        raise ConfigError("representative_dataset: no samples")
    return samples


def keras_to_int8(model, *, samples: list[np.ndarray], input_type: str = "int8",
                  output_type: str = "int8") -> bytes:
    """Full-int8 TFLiteConverter conversion, per-channel weights, calibrated on `samples`."""
    tf, _ = _tensorflow()
    types = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
    for option, value in (("input_type", input_type), ("output_type", output_type)):
        if value not in types:
            raise ConfigError(f"{option}: expected one of {IO_TYPES}, got {value!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = types[input_type]
    converter.inference_output_type = types[output_type]
    return bytes(converter.convert())


def convert_keras_model(model, *, representative_dataset, sram: int | str,
                        flash: int | str | None = None, policy: str = "quantmcu",
                        eval_data=None, input_type: str = "int8", output_type: str = "int8",
                        name: str | None = None, **settings) -> ConversionResult:
    """TFLiteConverter full-int8 conversion of a Keras model, then the convert pipeline.

    The representative samples calibrate both the int8 conversion and (policy
    ``quantmcu``) the bit-width search. `settings` are `ConvertOptions` fields.
    """
    samples = representative_samples(representative_dataset)
    data = keras_to_int8(model, samples=samples, input_type=input_type, output_type=output_type)
    calibration = np.concatenate([_batched(s, model) for s in samples]) \
        if policy == "quantmcu" and "plan" not in settings else None
    return convert(data, sram=sram, flash=flash, policy=policy, calibration=calibration,
                   eval_data=eval_data, name=name or f"{model.name}.tflite", **settings)


def _batched(sample: np.ndarray, model) -> np.ndarray:
    rank = len(model.inputs[0].shape)
    return sample if sample.ndim == rank else sample[None]


# ---- plan keys -> Keras layers and regions -----------------------------------------------------

@dataclass(frozen=True)
class MapSite:
    """One feature map of the plan on the Keras graph.

    ``owner``: [H, W] branch index of every pixel (None: one branch, the whole map);
    ``keys``/``bits``: per branch, the plan key and its width (8 where the plan has none).
    """

    layer: str
    op_index: int
    keys: tuple[str, ...]
    bits: tuple[int, ...]
    owner: np.ndarray | None = field(default=None, compare=False)


def plan_sites(*, graph: Graph, patch_plan: PatchPlan | None, plan: BitwidthPlan,
               layer_names: Iterable[str]) -> tuple[MapSite, ...]:
    """The Keras site of every map with a sub-byte width in `plan` (module docstring)."""
    sub = graph.main
    producers = sub.producers()
    by_op: dict[int, dict[int | None, str]] = {}
    for key, bits in sorted(plan.bits.items()):
        if bits >= 8 or (key in sub.tensors and sub.tensors[key].is_constant):
            continue   # filters: weight_sites
        match = _BRANCH_KEY.match(key)
        if match:
            i, j, op = (int(g) for g in match.groups())
            if patch_plan is None or not patch_plan.is_patched or op >= len(sub.operators):
                raise ConfigError(f"plan key {key!r} is a patch-branch tensor, but the model "
                                  "has no such patch stage")
            by_op.setdefault(op, {})[i * patch_plan.grid[1] + j] = key
        elif key in producers:
            by_op.setdefault(producers[key], {})[None] = key
        else:
            raise ConfigError(f"plan key {key!r}: expected a feature map of the int8 graph or a "
                              "patch-branch tensor 'p<row>_<col>/<op>'")
    names = tuple(layer_names)
    return tuple(_site(graph=graph, patch_plan=patch_plan, plan=plan, op=op, branches=branches,
                       names=names) for op, branches in sorted(by_op.items()))


def _site(*, graph: Graph, patch_plan: PatchPlan | None, plan: BitwidthPlan, op: int,
          branches: Mapping[int | None, str], names: tuple[str, ...]) -> MapSite:
    sub = graph.main
    key = sub.operators[op].outputs[0]
    layer = keras_layer_of(tensor_name=sub.tensors[key].name, layer_names=names)
    if None in branches:
        whole = branches[None]
        return MapSite(layer=layer, op_index=op, keys=(whole,), bits=(plan.bits[whole],))
    regions = dict(patch_plan.regions)[key]
    rows, cols = patch_plan.grid
    keys = tuple(f"p{p // cols}_{p % cols}/{op}" for p in range(rows * cols))
    bits = tuple(plan.bits.get(k, 8) for k in keys)
    shape = sub.tensors[key].shape
    return MapSite(layer=layer, op_index=op, keys=keys, bits=bits,
                   owner=owner_map(regions=regions, height=shape[1], width=shape[2]))


def keras_layer_of(*, tensor_name: str, layer_names: Iterable[str]) -> str:
    """The Keras layer whose output a converted tensor is (its name's first ';'-part)."""
    parts = tensor_name.split(";")[0].split("/")
    names = sorted(layer_names, key=len, reverse=True)
    for part in parts:
        for name in names:
            if part == name or re.fullmatch(re.escape(name) + r"_\d+", part):
                return name
    raise ConfigError(f"tensor {tensor_name!r}: no Keras layer of the model is named in it "
                      "(was the .tflite converted from this model?)")


def owner_map(*, regions, height: int, width: int) -> np.ndarray:
    """[H, W] index of the patch that owns each pixel: the nearest region centre among the
    regions holding it (ties: the first)."""
    rr, cc = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    best = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int32)
    for index, region in enumerate(regions):
        inside = np.zeros((height, width), dtype=bool)
        inside[region.rows.start:region.rows.stop, region.cols.start:region.cols.stop] = True
        centre = ((region.rows.start + region.rows.stop) / 2,
                  (region.cols.start + region.cols.stop) / 2)
        distance = np.where(inside, (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2, np.inf)
        closer = distance < best
        owner[closer], best[closer] = index, distance[closer]
    if (owner < 0).any():
        raise ConfigError("patch regions do not cover their feature map")
    return owner


def initial_intervals(*, base, graph: Graph, plan: BitwidthPlan, sites: tuple[MapSite, ...],
                      samples: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """Key -> (lo, hi) to start from: the plan's range where it has one; else LSQ's
    initialisation (step 2 mean|x| / sqrt(2^b - 1), Esser et al. 2020) from the layer's
    float output on the representative samples, the interval ending at the map's int8
    range and, for maps with negative values, reaching as far below 0 as above."""
    _, keras = _tensorflow()
    probe = keras.Model(base.inputs, [base.get_layer(s.layer).output for s in sites])
    outputs = probe(np.concatenate([_batched(x, base) for x in samples]))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    out = {}
    for site, values in zip(sites, outputs):
        values = np.asarray(values)
        tensor = graph.main.tensors[graph.main.operators[site.op_index].outputs[0]]
        scale8, zp8 = float(tensor.quantization.scale[0]), int(tensor.quantization.zero_point[0])
        full = (scale8 * (INT8_LOW - zp8), scale8 * (INT8_HIGH - zp8))
        mean_abs = float(np.mean(np.abs(values)))
        for key, bits in zip(site.keys, site.bits):
            subbyte = plan.range_of(key)
            if subbyte is not None:
                out[key] = (scale8 * (subbyte.low_code - zp8), scale8 * (subbyte.high_code - zp8))
                continue
            levels = (1 << min(bits, 8)) - 1
            span = min(2.0 * mean_abs / np.sqrt(levels) * levels, full[1] - full[0])
            if float(values.min()) < 0:
                out[key] = (max(-span / 2, full[0]), min(span / 2, full[1]))
            else:
                out[key] = (0.0, min(span, full[1]))
    return out


# ---- filters the plan cuts: where they live on the Keras graph ---------------------------------

@dataclass(frozen=True)
class WeightSite:
    """A filter the plan cuts below 8 bits, on the Keras graph.

    ``layer``: the Conv2D / DepthwiseConv2D layer whose kernel it is; ``multiplier``: per
    output channel, the frozen BatchNormalization factor ``gamma / sqrt(var + eps)`` that
    the converter folds into the kernel (ones without such a BN): the int8 filter is
    ``kernel x multiplier``, and that folded filter is what ``weight_cuts`` re-quantizes.
    """

    key: str
    layer: str
    bits: int
    batch_norm: str | None
    multiplier: np.ndarray = field(compare=False)


def weight_sites(*, graph: Graph, plan: BitwidthPlan, base) -> tuple[WeightSite, ...]:
    """The Keras site of every filter key `plan` puts below 8 bits."""
    _, keras = _tensorflow()
    sub = graph.main
    convs = [layer.name for layer in base.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    out = []
    for key, bits in sorted(plan.bits.items()):
        tensor = sub.tensors.get(key)
        if bits >= 8 or tensor is None or not tensor.is_constant:
            continue
        layer = base.get_layer(_conv_layer_of(tensor_name=tensor.name, convs=convs))
        if getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last":
            raise ConfigError(f"filter {key!r}: layer {layer.name!r} is grouped or channels_first;"
                              " weight cuts are emulated for channels_last convs only")
        bn = _folded_batch_norm(base=base, layer=layer, keras=keras)
        channels = layer.kernel.shape[-1] * (layer.kernel.shape[-2] if
                                             _is_depthwise(layer, keras) else 1)
        multiplier = np.ones(channels, dtype=np.float32) if bn is None else _bn_factor(bn)
        out.append(WeightSite(key=key, layer=layer.name, bits=bits,
                              batch_norm=None if bn is None else bn.name,
                              multiplier=multiplier))
    if len({w.layer for w in out}) != len(out):
        raise ConfigError(f"two planned filters lead to one Keras layer: {[w.layer for w in out]}")
    return tuple(out)


def _conv_layer_of(*, tensor_name: str, convs: list[str]) -> str:
    for part in tensor_name.split(";"):
        try:
            return keras_layer_of(tensor_name=part, layer_names=convs)
        except ConfigError:
            continue
    raise ConfigError(f"filter {tensor_name!r}: no Conv2D/DepthwiseConv2D layer of the model is "
                      "named in it (was the .tflite converted from this model?)")


def _is_depthwise(layer, keras) -> bool:
    return isinstance(layer, keras.layers.DepthwiseConv2D)


def _folded_batch_norm(*, base, layer, keras):
    """The BatchNormalization that reads only `layer`'s output (folded by the converter)."""
    readers = [other for other in base.layers if other is not layer
               and any(_history_layer(t) is layer for t in _inputs_of(other))]
    if len(readers) == 1 and isinstance(readers[0], keras.layers.BatchNormalization):
        return readers[0]
    return None


def _inputs_of(layer) -> list:
    try:
        inputs = layer.input
    except (AttributeError, ValueError):   # a layer not called in the model
        return []
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _history_layer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _bn_factor(bn) -> np.ndarray:
    """gamma / sqrt(moving_variance + epsilon) per channel (float32, as the converter)."""
    variance = np.asarray(bn.moving_variance, dtype=np.float32)
    gamma = np.asarray(bn.gamma, dtype=np.float32) if bn.scale else np.ones_like(variance)
    return (gamma / np.sqrt(variance + np.float32(bn.epsilon))).astype(np.float32)


# ---- the fake-quantized model ------------------------------------------------------------------

def _fake_quant_layer(keras, tf):
    """The wrapper class (defined here so that TensorFlow is imported only on use)."""

    class FakeQuantAfter(keras.layers.Layer):
        """inner(x), then per-branch fake quantization with learnable [lo, hi]."""

        def __init__(self, *, inner, owner, bits, lo, hi, range_speed, name, **kwargs):
            super().__init__(name=name, **kwargs)
            self.inner = inner
            self.owner = None if owner is None else np.asarray(owner, dtype=np.int32)
            self.levels = np.asarray([(1 << b) - 1 for b in bits], dtype=np.float32)
            self.passthrough = np.asarray([b >= 8 for b in bits])
            lo, hi = np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32)
            # lo/hi are stored in units of span x range_speed, so that an optimizer step
            # moves them by a fraction of the interval (Adam steps are ~lr in the variable)
            self.unit = np.maximum(hi - lo, 1e-6) * np.float32(range_speed)
            self.lo_var = self.add_weight(name="lo", shape=(len(bits),),
                                          initializer=keras.initializers.Constant(lo / self.unit))
            self.hi_var = self.add_weight(name="hi", shape=(len(bits),),
                                          initializer=keras.initializers.Constant(hi / self.unit))

        def interval(self):
            """(lo, hi) real values, lo <= 0 <= hi."""
            unit = tf.constant(self.unit)
            return tf.minimum(self.lo_var * unit, 0.0), tf.maximum(self.hi_var * unit, 0.0)

        def call(self, inputs, mask=None):  # noqa: ARG002 -- Keras passes masks along
            y = self.inner(inputs)
            lo, hi = self.interval()
            levels = tf.constant(self.levels)
            keep = tf.constant(self.passthrough)
            if self.owner is not None:
                owner = tf.constant(self.owner)
                lo, hi = tf.gather(lo, owner)[None, :, :, None], tf.gather(hi, owner)[None, :, :, None]
                levels = tf.gather(levels, owner)[None, :, :, None]
                keep = tf.gather(keep, owner)[None, :, :, None]
            else:
                lo, hi, levels, keep = lo[0], hi[0], levels[0], keep[0]
            step = tf.maximum(hi - lo, 1e-6) / levels
            zero = tf.stop_gradient(tf.clip_by_value(tf.round(-lo / step), 0.0, levels))
            scaled = y / step
            rounded = scaled + tf.stop_gradient(tf.round(scaled) - scaled)
            q = tf.clip_by_value(rounded + zero, 0.0, levels)
            return tf.where(keep, y, (q - zero) * step)

    return FakeQuantAfter


def _weight_quant_layer(keras, tf):
    """The filter fake-quant wrapper class (TensorFlow is imported only on use)."""
    from tflite_quantmcu.quant.weight_cuts import CLIP_GRID

    class FakeQuantFilter(keras.layers.Layer):
        """inner's conv with its folded filter fake-quantized as ``weight_cuts`` cuts it."""

        def __init__(self, *, inner, bits, multiplier, name, **kwargs):
            super().__init__(name=name, **kwargs)
            self.inner = inner
            self.qmax = float((1 << (bits - 1)) - 1)
            self.depthwise = isinstance(inner, keras.layers.DepthwiseConv2D)
            self.multiplier = np.asarray(multiplier, dtype=np.float32)
            self.grid = np.asarray(CLIP_GRID, dtype=np.float32)

        def folded_codes(self):
            """(codes, scales, inside): the b-bit values [N, C] of the folded filter (rows:
            kernel positions, columns: output channels), their per-channel scales [C] and
            where the filter is inside the clipping range (for the gradient)."""
            folded = tf.reshape(self.inner.kernel, (-1, self.multiplier.size)) * self.multiplier
            peak = tf.reduce_max(tf.abs(folded), axis=0)
            scales = tf.constant(self.grid)[:, None] * peak[None, :] / self.qmax   # [A, C]
            safe = tf.where(scales > 0, scales, 1.0)
            ratio = folded[None] / safe[:, None, :]                                 # [A, N, C]
            codes = tf.clip_by_value(tf.sign(ratio) * tf.floor(tf.abs(ratio) + 0.5),
                                     -self.qmax, self.qmax)
            errors = tf.reduce_sum(tf.square(codes * scales[:, None, :] - folded[None]), axis=1)
            pick = tf.argmin(errors, axis=0)     # first minimum: the largest alpha
            chosen = tf.gather(tf.transpose(codes, (2, 1, 0)), pick, axis=2, batch_dims=1)
            scale = tf.gather(tf.transpose(scales), pick, axis=1, batch_dims=1)
            inside = tf.abs(folded) <= self.qmax * scale[None] * (1 + 1e-6)
            return tf.stop_gradient(tf.transpose(chosen)), tf.stop_gradient(scale), \
                folded, inside

        def quantized_kernel(self):
            """The kernel whose folding gives the fake-quantized filter (straight-through
            gradient inside the clipping range, 0 outside)."""
            codes, scale, folded, inside = self.folded_codes()
            value = codes * scale[None]
            ste = tf.stop_gradient(value) + (folded - tf.stop_gradient(folded)) * \
                tf.cast(inside, folded.dtype)
            return tf.reshape(ste / self.multiplier, tf.shape(self.inner.kernel))

        def call(self, inputs):
            layer = self.inner
            kernel = self.quantized_kernel()
            if self.depthwise:
                y = keras.ops.depthwise_conv(inputs, kernel, strides=layer.strides,
                                             padding=layer.padding,
                                             dilation_rate=layer.dilation_rate,
                                             data_format=layer.data_format)
            else:
                y = keras.ops.conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                                   dilation_rate=layer.dilation_rate,
                                   data_format=layer.data_format)
            if layer.use_bias:
                y = y + layer.bias
            return layer.activation(y) if layer.activation is not None else y

    return FakeQuantFilter


def fake_quant_model(base, *, sites: tuple[MapSite, ...],
                     intervals: Mapping[str, tuple[float, float]], range_speed: float = 1.0,
                     weight_sites: tuple[WeightSite, ...] = ()):
    """A model sharing `base`'s layers, with fake quantization after every site's layer
    and of the filter of every weight site (the layer's kernel is shared and trained)."""
    tf, keras = _tensorflow()
    wrapper = _fake_quant_layer(keras, tf)
    weight_wrapper = _weight_quant_layer(keras, tf)
    by_layer = {site.layer: site for site in sites}
    if len(by_layer) != len(sites):
        raise ConfigError("two planned maps lead to the same Keras layer: "
                          f"{sorted(s.layer for s in sites)}")
    by_conv = {site.layer: site for site in weight_sites}

    def clone(layer):
        inner = layer
        if layer.name in by_conv:
            w = by_conv[layer.name]
            inner = weight_wrapper(inner=layer, bits=w.bits, multiplier=w.multiplier,
                                   name=f"{layer.name}_wq")
        site = by_layer.get(layer.name)
        if site is None:
            return inner
        lo = [intervals[k][0] for k in site.keys]
        hi = [intervals[k][1] for k in site.keys]
        return wrapper(inner=inner, owner=site.owner, bits=site.bits, lo=lo, hi=hi,
                       range_speed=range_speed, name=f"{layer.name}_qat")

    return keras.models.clone_model(base, clone_function=clone)


# ---- fine-tuning -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FinetuneOptions:
    """learning_rate: Adam, weights and ranges alike; batch_size: for array data;
    range_speed: the clipping interval moves about learning_rate x range_speed of its
    initial width per step (the LSQ step-size gradient scale plays this role)."""

    learning_rate: float = 1e-4
    range_speed: float = 20.0
    batch_size: int = 64
    seed: int = 0
    progress: bool = True


@dataclass
class FinetuneResult:
    """The fine-tuned Keras model, its int8 .tflite and the plan with the learned ranges
    (keys of that .tflite's graph and of its patched graph)."""

    model: object
    tflite_bytes: bytes
    plan: BitwidthPlan
    patch_grid: tuple[int, int] | None
    split_after: str | None
    history: dict
    train_time_s: float
    sites: tuple[MapSite, ...] = ()
    weight_sites: tuple[WeightSite, ...] = ()
    weight_cuts: Mapping[str, WeightCut] = field(default_factory=dict)
    weight_check: Mapping[str, dict] = field(default_factory=dict)

    def deploy(self, *, sram: int | str, eval_data=None, name: str = "qat.tflite",
               **settings) -> ConversionResult:
        """The convert pipeline with the learned plan (same patch split and grid)."""
        if self.patch_grid is not None:
            settings.setdefault("patch_grid", self.patch_grid)
            settings.setdefault("split_after", self.split_after)
        return convert(self.tflite_bytes, sram=sram, policy="quantmcu", plan=self.plan,
                       eval_data=eval_data, name=name, **settings)


def finetune(model, *, plan: BitwidthPlan, train_data, epochs: int, representative_dataset,
             sram: int | str, validation_data=None, loss=None,
             options: FinetuneOptions = FinetuneOptions(), **settings) -> FinetuneResult:
    """Quantization-aware fine-tuning of `model` at `plan`'s widths (module docstring).

    `plan`'s keys are those of the int8 conversion of `model` by `convert_keras_model`
    with the same `sram` and `settings` (its patch split and grid are recomputed here).
    `train_data`: ``(x, y)`` arrays, or anything ``keras.Model.fit`` takes.
    The user's model is not changed: a copy is fine-tuned.
    """
    tf, keras = _tensorflow()
    if epochs < 0:
        raise ConfigError(f"epochs: expected >= 0, got {epochs}")
    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    samples = representative_samples(representative_dataset)
    reference = convert(keras_to_int8(model, samples=samples), sram=sram,
                        **{**settings, "policy": "patch-int8", "verify": False,
                           "measure_tflm": False})
    graph, patch_plan = reference.conversion.graph, reference.conversion.patch_plan
    base = keras.models.clone_model(model)
    base.set_weights(model.get_weights())
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    sites = plan_sites(graph=graph, patch_plan=patch_plan, plan=plan,
                       layer_names=[layer.name for layer in base.layers])
    intervals = initial_intervals(base=base, graph=graph, plan=plan, sites=sites,
                                  samples=samples[:INIT_SAMPLES])
    filters = weight_sites(graph=graph, plan=plan, base=base)
    tuned = fake_quant_model(base, sites=sites, intervals=intervals,
                             range_speed=options.range_speed, weight_sites=filters)
    tuned.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = _fit(tuned, train_data=train_data, validation_data=validation_data,
                   epochs=epochs, options=options)
    train_time = time.perf_counter() - start
    learned = _learned_intervals(tuned=tuned, sites=sites)
    cuts = trained_cuts(tuned=tuned, sites=filters, base=base)
    exported = keras_to_int8(base, samples=samples)
    new_graph = read_model_bytes(data=exported)
    new_plan = exported_plan(plan=plan, old=graph, new=new_graph, learned=learned)
    check = exported_cut_check(old=graph, new=new_graph, cuts=cuts)
    grid = patch_plan.grid if patch_plan.is_patched else None
    split = new_graph.main.operators[patch_plan.split_op].outputs[0] if grid else None
    return FinetuneResult(model=base, tflite_bytes=exported, plan=new_plan, patch_grid=grid,
                          split_after=split, history=history, train_time_s=train_time,
                          sites=sites, weight_sites=filters, weight_cuts=cuts,
                          weight_check=check)


def _fit(tuned, *, train_data, validation_data, epochs: int, options: FinetuneOptions) -> dict:
    verbose = 1 if options.progress and sys.stderr.isatty() else (2 if options.progress else 0)
    if isinstance(train_data, tuple) and len(train_data) == 2:
        x, y = train_data
        fitted = tuned.fit(x=x, y=y, batch_size=options.batch_size, epochs=epochs,
                           validation_data=validation_data, shuffle=True, verbose=verbose)
    else:
        fitted = tuned.fit(train_data, epochs=epochs, validation_data=validation_data,
                           verbose=verbose)
    return {k: [float(v) for v in values] for k, values in fitted.history.items()}


def _learned_intervals(*, tuned, sites: tuple[MapSite, ...]) -> dict[str, tuple[float, float]]:
    out = {}
    for site in sites:
        lo, hi = (v.numpy() for v in tuned.get_layer(f"{site.layer}_qat").interval())
        for index, key in enumerate(site.keys):
            out[key] = (float(lo[index]), float(hi[index]))
    return out


def trained_cuts(*, tuned, sites: tuple[WeightSite, ...], base) -> dict[str, WeightCut]:
    """Key -> the fake quantizer's b-bit filter at the end of training (values in the
    TFLite filter layout, float32 scales); each layer's kernel is then set to the kernel
    whose folding is exactly that filter, ``codes x scale / multiplier`` (module doc)."""
    _, keras = _tensorflow()
    out = {}
    for site in sites:
        wrapper = filter_wrapper(model=tuned, layer=site.layer)
        codes, scale, folded, _ = (np.asarray(v) for v in wrapper.folded_codes())
        layer = base.get_layer(site.layer)
        shape = tuple(layer.kernel.shape)
        kernel = (codes * scale[None] / site.multiplier[None]).astype(np.float32)
        layer.kernel.assign(kernel.reshape(shape))
        real = codes * scale[None].astype(np.float64)
        error = float(np.linalg.norm(real - folded) / max(np.linalg.norm(folded), 1e-30))
        values = codes.astype(np.int64).reshape(shape)
        values = values.reshape(1, *shape[:2], -1) if _is_depthwise(layer, keras) \
            else values.transpose(3, 0, 1, 2)
        out[site.key] = WeightCut(key=site.key, bits=site.bits, values=values,
                                  scales=tuple(float(v) for v in scale), rel_rmse=error)
    return out


def filter_wrapper(*, model, layer: str):
    """The filter fake-quant wrapper of `layer` in a `fake_quant_model` (it sits inside the
    map wrapper ``<layer>_qat`` when the layer's output is a planned map too)."""
    names = {other.name: other for other in model.layers}
    if f"{layer}_wq" in names:
        return names[f"{layer}_wq"]
    return names[f"{layer}_qat"].inner


def exported_cut_check(*, old: Graph, new: Graph,
                       cuts: Mapping[str, WeightCut]) -> dict[str, dict]:
    """Per trained filter: does ``weight_cuts`` cut the exported int8 filter (new key) into
    the trained values, and how far apart are the scales (relative)?  A mismatch is warned
    about: the deployed model would then not run the trained filter."""
    rename = _filter_renames(old=old, new=new, keys=cuts)
    again = weight_cuts(subgraph=new.main, bits={rename[k]: c.bits for k, c in cuts.items()})
    out = {}
    for key, cut in sorted(cuts.items()):
        got = again[rename[key]]
        equal = bool(np.array_equal(got.values, cut.values))
        diff = max((abs(a - b) / b for a, b in zip(got.scales, cut.scales) if b > 0),
                   default=0.0)
        out[rename[key]] = {"trained_key": key, "bits": cut.bits, "values_equal": equal,
                            "max_scale_rel_diff": float(diff)}
        if not equal:
            warnings.warn(f"filter {rename[key]!r}: the exported int8 filter does not cut back "
                          f"into the trained {cut.bits}-bit values", RuntimeWarning, stacklevel=3)
    return out


def _filter_renames(*, old: Graph, new: Graph, keys) -> dict[str, str]:
    """Old filter key -> the new graph's key (input 1 of the op at the same index)."""
    out = {}
    for key in keys:
        index = next(i for i, op in enumerate(old.main.operators)
                     if len(op.inputs) > 1 and op.inputs[1] == key)
        out[key] = new.main.operators[index].inputs[1]
    return out


def exported_plan(*, plan: BitwidthPlan, old: Graph, new: Graph,
                  learned: Mapping[str, tuple[float, float]]) -> BitwidthPlan:
    """`plan` on the keys of `new` (whole maps: same producing op), with the learned
    intervals as ranges in the new maps' int8 quantization."""
    old_producers = old.main.producers()
    rename = {k: new.main.operators[old_producers[k]].outputs[0]
              for k in plan.bits if k in old_producers}
    rename.update(_filter_renames(old=old, new=new, keys=[
        k for k in plan.bits if k in old.main.tensors and old.main.tensors[k].is_constant]))
    bits = {rename.get(k, k): b for k, b in plan.bits.items()}
    ranges = {}
    for key, (lo, hi) in sorted(learned.items()):
        if plan.bits.get(key, 8) >= 8:
            continue
        new_key = rename.get(key, key)
        match = _BRANCH_KEY.match(key)
        op = int(match.group(3)) if match else old_producers[key]
        tensor = new.main.tensors[new.main.operators[op].outputs[0]]
        ranges[new_key] = interval_range(bits=plan.bits[key], lo=lo, hi=hi,
                                         scale8=float(tensor.quantization.scale[0]),
                                         zero_point8=int(tensor.quantization.zero_point[0]))
    weights = plan.weights
    if weights is not None:
        weights = dataclasses.replace(weights, keys=tuple(rename.get(k, k) for k in weights.keys),
                                      log=tuple(dataclasses.replace(
                                          step, key=rename.get(step.key, step.key),
                                          pair=tuple(rename.get(k, k) for k in step.pair))
                                          for step in weights.log))
    return BitwidthPlan(policy=plan.policy, options={**dict(plan.options), "qat": True},
                        bits=bits, branches=plan.branches, weights=weights, ranges=ranges)


def interval_range(*, bits: int, lo: float, hi: float, scale8: float,
                   zero_point8: int) -> SubbyteRange:
    """The int8 codes nearest to [lo, hi] (holding the zero point, at least one step wide)
    as a sub-byte range of rule ``qat``."""
    low = int(np.clip(np.round(lo / scale8) + zero_point8, INT8_LOW, zero_point8))
    high = int(np.clip(np.round(hi / scale8) + zero_point8, zero_point8, INT8_HIGH))
    if low == high:
        high, low = (high + 1, low) if high < INT8_HIGH else (high, low - 1)
    return range_from_codes(scale8=scale8, zero_point8=zero_point8, bits=bits, low_code=low,
                            high_code=high, rule=QAT_RULE)
