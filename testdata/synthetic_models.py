"""Deterministic int8 TFLite graphs built straight from a layer spec (no TensorFlow).

A `ModelSpec` lists layers applied one after another to an NHWC input; the
builder returns a `Graph` (write it with `tflite_quantmcu.ir.writer`). Weights
are seeded random int8 with per-channel scales, biases int32, and every
output scale is set from the statistics of its input so values use the int8
range without saturating everywhere. Zero points are non-zero on purpose, so
tests notice padding done with the wrong value.

    spec = ModelSpec(input_shape=(20, 24, 3), seed=1, layers=(
        Conv(filters=8, kernel=(3, 3), stride=(2, 2)),
        DepthwiseConv(kernel=(5, 5), padding="VALID"),
        Pool(kind="MAX", size=(2, 2), stride=(2, 2)),
        Residual(source=1),          # adds the output of layer 1 (shapes must match)
    ))
    graph = build_int8_graph(spec=spec)

Layer outputs are numbered from 0; `Residual.source = -1` means the model input.
`float_input=True` makes the input float32 followed by a QUANTIZE op.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import (Buffer, Graph, OpCode, Operator, Quantization, Subgraph,
                                      Tensor)

fb = schema.fb
INT8 = schema.TensorType.INT8
_ACTIVATIONS = {"NONE": schema.ActivationFunctionType.NONE,
                "RELU": schema.ActivationFunctionType.RELU,
                "RELU6": schema.ActivationFunctionType.RELU6}
_PADDINGS = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "SAME"
    activation: str = "RELU6"


@dataclass(frozen=True)
class DepthwiseConv:
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "SAME"
    activation: str = "RELU6"
    multiplier: int = 1


@dataclass(frozen=True)
class Pool:
    kind: str = "MAX"            # "MAX" or "AVG"
    size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: str = "VALID"


@dataclass(frozen=True)
class Pad:
    top: int = 1
    bottom: int = 1
    left: int = 1
    right: int = 1


@dataclass(frozen=True)
class Residual:
    source: int                  # index of an earlier layer output, -1 = the model input
    activation: str = "NONE"


@dataclass(frozen=True)
class Mean:
    """Global average over H and W (keep_dims), e.g. to end a feature extractor."""


@dataclass(frozen=True)
class ModelSpec:
    input_shape: tuple[int, int, int]
    layers: tuple
    seed: int = 0
    float_input: bool = False


@dataclass
class _Value:
    """A feature map while building: tensor key, shape, scale, zero point, value spread."""

    key: str
    shape: tuple[int, int, int, int]
    scale: float
    zero_point: int
    spread: float                # std of the real values, roughly


def build_int8_graph(*, spec: ModelSpec) -> Graph:
    """The int8 graph of `spec` (deterministic for a given spec)."""
    builder = _Builder(seed=spec.seed)
    value = builder.model_input(shape=spec.input_shape, float_input=spec.float_input)
    outputs = [value]
    for index, layer in enumerate(spec.layers):
        value = builder.layer(layer=layer, value=value, earlier=outputs, index=index)
        outputs.append(value)
    return builder.graph(output=value)


def conv_output_size(*, size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """TFLite's output size for a window op."""
    if padding == "SAME":
        return -(-size // stride)
    extent = (kernel - 1) * dilation + 1
    return -(-(size - extent + 1) // stride)


class _Builder:
    def __init__(self, *, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.subgraph = Subgraph(name="main")
        self.opcodes: dict[str, OpCode] = {}

    # -- tensors ----------------------------------------------------------------------------
    def _activation(self, *, name: str, shape: tuple[int, ...], scale: float, zero_point: int,
                    dtype: int = INT8) -> str:
        quant = Quantization(scale=(scale,), zero_point=(zero_point,))
        return self.subgraph.add_tensor(tensor=Tensor(name=name, shape=shape, dtype=dtype,
                                                      quantization=quant), key=name)

    def _constant(self, *, name: str, values: np.ndarray, dtype: int,
                  quant: Quantization | None = None) -> str:
        tensor = Tensor(name=name, shape=values.shape, dtype=dtype,
                        buffer=Buffer(data=values.tobytes()), quantization=quant)
        return self.subgraph.add_tensor(tensor=tensor, key=name)

    def _op(self, *, kind: str, version: int, inputs: list, output: str, options_type: int = 0,
            options: object = None) -> None:
        opcode = self.opcodes.setdefault(kind, OpCode(builtin=getattr(schema.BuiltinOperator,
                                                                      kind), version=version))
        self.subgraph.operators.append(Operator(opcode=opcode, inputs=inputs, outputs=[output],
                                                options_type=options_type, options=options))

    # -- model input / output ---------------------------------------------------------------
    def model_input(self, *, shape: tuple[int, int, int], float_input: bool) -> _Value:
        full = (1, *shape)
        scale, zero_point = 1.0 / 64, int(self.rng.integers(-20, 21))
        if not float_input:
            key = self._activation(name="input", shape=full, scale=scale, zero_point=zero_point)
            self.subgraph.inputs.append(key)
            return _Value(key, full, scale, zero_point, spread=128 * scale / math.sqrt(3))
        source = self.subgraph.add_tensor(tensor=Tensor(name="input", shape=full,
                                                        dtype=schema.TensorType.FLOAT32),
                                          key="input")
        self.subgraph.inputs.append(source)
        key = self._activation(name="input_q", shape=full, scale=scale, zero_point=zero_point)
        self._op(kind="QUANTIZE", version=1, inputs=[source], output=key,
                 options_type=fb.BuiltinOptions.QuantizeOptions, options=fb.QuantizeOptionsT())
        return _Value(key, full, scale, zero_point, spread=1.0)

    def graph(self, *, output: _Value) -> Graph:
        self.subgraph.outputs.append(output.key)
        return Graph(subgraphs=[self.subgraph], description="synthetic int8 model")

    # -- layers -----------------------------------------------------------------------------
    def layer(self, *, layer: object, value: _Value, earlier: list[_Value], index: int) -> _Value:
        name = f"l{index}"
        if isinstance(layer, Conv):
            return self._conv(layer=layer, value=value, name=name, depthwise=False)
        if isinstance(layer, DepthwiseConv):
            return self._conv(layer=layer, value=value, name=name, depthwise=True)
        if isinstance(layer, Pool):
            return self._pool(layer=layer, value=value, name=name)
        if isinstance(layer, Pad):
            return self._pad(layer=layer, value=value, name=name)
        if isinstance(layer, Residual):
            return self._residual(layer=layer, value=value, other=earlier[layer.source + 1],
                                  name=name)
        if isinstance(layer, Mean):
            return self._mean(value=value, name=name)
        raise TypeError(f"unknown layer spec {layer!r}")

    def _conv(self, *, layer, value: _Value, name: str, depthwise: bool) -> _Value:
        _, height, width, channels = value.shape
        kh, kw = layer.kernel
        out_channels = channels * layer.multiplier if depthwise else layer.filters
        out_h = conv_output_size(size=height, kernel=kh, stride=layer.stride[0],
                                 dilation=layer.dilation[0], padding=layer.padding)
        out_w = conv_output_size(size=width, kernel=kw, stride=layer.stride[1],
                                 dilation=layer.dilation[1], padding=layer.padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"layer {name}: {layer} leaves no output for a {value.shape} input")
        weight_shape = (1, kh, kw, out_channels) if depthwise else (out_channels, kh, kw, channels)
        weights = self.rng.integers(-127, 128, size=weight_shape, dtype=np.int8)
        w_scales = self.rng.uniform(0.5, 1.5, size=out_channels) / 127
        w_key = self._constant(name=f"{name}/w", values=weights, dtype=INT8, quant=Quantization(
            scale=tuple(float(s) for s in w_scales), zero_point=(0,) * out_channels,
            quantized_dimension=3 if depthwise else 0))
        bias_scales = value.scale * w_scales
        fan_in = kh * kw * (1 if depthwise else channels)
        spread = value.spread * math.sqrt(fan_in) * 0.58
        bias_real = self.rng.normal(0, 0.3 * spread, size=out_channels)
        bias = np.round(bias_real / bias_scales).astype(np.int32)
        b_key = self._constant(name=f"{name}/b", values=bias, dtype=schema.TensorType.INT32,
                               quant=Quantization(scale=tuple(float(s) for s in bias_scales),
                                                  zero_point=(0,) * out_channels))
        out = self._requantized(name=name, shape=(1, out_h, out_w, out_channels), spread=spread,
                                activation=layer.activation)
        options = fb.DepthwiseConv2DOptionsT() if depthwise else fb.Conv2DOptionsT()
        options.padding = _PADDINGS[layer.padding]
        options.strideH, options.strideW = layer.stride
        options.dilationHFactor, options.dilationWFactor = layer.dilation
        options.fusedActivationFunction = _ACTIVATIONS[layer.activation]
        if depthwise:
            options.depthMultiplier = layer.multiplier
            self._op(kind="DEPTHWISE_CONV_2D", version=3, inputs=[value.key, w_key, b_key],
                     output=out.key, options_type=fb.BuiltinOptions.DepthwiseConv2DOptions,
                     options=options)
        else:
            self._op(kind="CONV_2D", version=3, inputs=[value.key, w_key, b_key], output=out.key,
                     options_type=fb.BuiltinOptions.Conv2DOptions, options=options)
        return out

    def _requantized(self, *, name: str, shape: tuple[int, ...], spread: float,
                     activation: str) -> _Value:
        if activation == "NONE":
            scale = 3 * spread / 127
            zero_point = int(self.rng.integers(-10, 11))
        else:
            top = 6.0 if activation == "RELU6" else 3 * spread
            scale = min(top, 3 * spread) / 255
            zero_point = -128
        key = self._activation(name=name, shape=shape, scale=scale, zero_point=zero_point)
        real_spread = spread if activation == "NONE" else spread * 0.6
        return _Value(key, shape, scale, zero_point, spread=real_spread)

    def _pool(self, *, layer: Pool, value: _Value, name: str) -> _Value:
        _, height, width, channels = value.shape
        out_h = conv_output_size(size=height, kernel=layer.size[0], stride=layer.stride[0],
                                 dilation=1, padding=layer.padding)
        out_w = conv_output_size(size=width, kernel=layer.size[1], stride=layer.stride[1],
                                 dilation=1, padding=layer.padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"layer {name}: {layer} leaves no output for a {value.shape} input")
        shape = (1, out_h, out_w, channels)
        key = self._activation(name=name, shape=shape, scale=value.scale,
                               zero_point=value.zero_point)
        options = fb.Pool2DOptionsT()
        options.padding = _PADDINGS[layer.padding]
        options.strideH, options.strideW = layer.stride
        options.filterHeight, options.filterWidth = layer.size
        kind = "MAX_POOL_2D" if layer.kind == "MAX" else "AVERAGE_POOL_2D"
        self._op(kind=kind, version=2, inputs=[value.key], output=key,
                 options_type=fb.BuiltinOptions.Pool2DOptions, options=options)
        return _Value(key, shape, value.scale, value.zero_point, value.spread)

    def _pad(self, *, layer: Pad, value: _Value, name: str) -> _Value:
        _, height, width, channels = value.shape
        shape = (1, height + layer.top + layer.bottom, width + layer.left + layer.right, channels)
        paddings = np.array([[0, 0], [layer.top, layer.bottom], [layer.left, layer.right],
                             [0, 0]], dtype=np.int32)
        p_key = self._constant(name=f"{name}/paddings", values=paddings,
                               dtype=schema.TensorType.INT32)
        key = self._activation(name=name, shape=shape, scale=value.scale,
                               zero_point=value.zero_point)
        self._op(kind="PAD", version=2, inputs=[value.key, p_key], output=key,
                 options_type=fb.BuiltinOptions.PadOptions, options=fb.PadOptionsT())
        return _Value(key, shape, value.scale, value.zero_point, value.spread)

    def _residual(self, *, layer: Residual, value: _Value, other: _Value, name: str) -> _Value:
        if other.shape != value.shape:
            raise ValueError(
                f"layer {name}: residual shapes differ: {other.shape} vs {value.shape}")
        spread = math.hypot(value.spread, other.spread)
        out = self._requantized(name=name, shape=value.shape, spread=spread,
                                activation=layer.activation)
        options = fb.AddOptionsT()
        options.fusedActivationFunction = _ACTIVATIONS[layer.activation]
        self._op(kind="ADD", version=2, inputs=[other.key, value.key], output=out.key,
                 options_type=fb.BuiltinOptions.AddOptions, options=options)
        return out

    def _mean(self, *, value: _Value, name: str) -> _Value:
        axes = self._constant(name=f"{name}/axes", values=np.array([1, 2], dtype=np.int32),
                              dtype=schema.TensorType.INT32)
        shape = (1, 1, 1, value.shape[3])
        key = self._activation(name=name, shape=shape, scale=value.scale,
                               zero_point=value.zero_point)
        options = fb.ReducerOptionsT()
        options.keepDims = True
        self._op(kind="MEAN", version=2, inputs=[value.key, axes], output=key,
                 options_type=fb.BuiltinOptions.ReducerOptions, options=options)
        return _Value(key, shape, value.scale, value.zero_point, value.spread)
