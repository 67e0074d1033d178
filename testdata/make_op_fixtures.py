#!/usr/bin/env python3
"""Build the small int8 models that cover the reference executor's ops (testdata/ops/).

Each model is a seeded random Keras model converted with the TF TFLite converter
(full int8, builtin ops). Together they exercise what the fixture networks of
make_fixtures.py do not: SUB, MUL (two activations and a constant), broadcast
ADD, standalone RELU/RELU6, dilated and strided convolution, depth multiplier 2,
AVERAGE/MAX_POOL_2D with SAME padding, STRIDED_SLICE, SLICE, PAD/PADV2,
CONCATENATION on inner axes, MEAN with keep_dims over one axis, FULLY_CONNECTED on
rank-3 input, float model I/O (QUANTIZE / DEQUANTIZE), SOFTMAX, SUM and MEAN
over the channel axis.

    python3 testdata/make_op_fixtures.py            # (re)builds every model

TensorFlow is needed only here; the tests read the committed .tflite files.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "ops"
SEED = 4242
CALIBRATION_SAMPLES = 16


def build_arith(*, keras, tf):
    """Elementwise ops, activations, dilation, depth multiplier, pooling."""
    inp = keras.Input((12, 10, 6), batch_size=1)
    a = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="dilated")(inp)
    b = keras.layers.Conv2D(8, 1, name="pointwise")(inp)
    prod = keras.layers.Multiply(name="mul")([a, b])
    diff = keras.layers.Subtract(name="sub")([a, b])
    scaled = keras.layers.Lambda(lambda t: t * tf.constant(np.linspace(-1.5, 2.0, 8),
                                                           dtype=tf.float32),
                                 name="mul_const")(diff)
    shifted = keras.layers.Lambda(lambda t: t + tf.constant(np.linspace(-0.5, 0.7, 8),
                                                            dtype=tf.float32),
                                  name="add_const")(prod)
    joined = keras.layers.Concatenate(axis=-1, name="concat")([scaled, shifted])
    relu = keras.layers.ReLU(name="relu")(joined)
    relu6 = keras.layers.ReLU(6.0, name="relu6")(keras.layers.Concatenate(axis=2)([a, prod]))
    dw = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same",
                                      name="dw_mult2")(relu)
    avg = keras.layers.AveragePooling2D(3, strides=2, padding="same", name="avg")(relu)
    mx = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="max")(relu6)
    strided = keras.layers.Conv2D(4, (3, 2), strides=(2, 3), padding="valid",
                                  activation="relu6", name="strided")(inp)
    return keras.Model(inp, [dw, avg, mx, strided])


def build_shapes(*, keras, tf):
    """Slicing, padding, reductions and a rank-3 fully connected layer."""
    inp = keras.Input((9, 11, 5), batch_size=1)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    sliced = keras.layers.Lambda(lambda t: t[:, 1:8:2, -9:, 1:5], name="strided")(x)
    cut = keras.layers.Lambda(lambda t: tf.slice(t, [0, 2, 0, 0], [1, 5, 7, 6]), name="slice")(x)
    padded = keras.layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 2], [0, 1], [0, 0]]),
                                 name="pad")(cut)
    padded_v2 = keras.layers.Lambda(
        lambda t: tf.pad(t, [[0, 0], [2, 0], [1, 1], [0, 0]], constant_values=0.5),
        name="padv2")(sliced)
    mean_h = keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=1, keepdims=True),
                                 name="mean_h")(padded)
    mean_c = keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=[1, 2]), name="mean_hw")(x)
    rows = keras.layers.Reshape((9, 66), name="rows")(x)
    dense = keras.layers.Dense(7, activation="relu", name="dense_rank3")(rows)
    head = keras.layers.Dense(5, name="head")(mean_c)
    return keras.Model(inp, [padded_v2, mean_h, dense, head])


def build_float_io(*, keras, tf):
    """A float-interface model: QUANTIZE in front, DEQUANTIZE behind."""
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="fc")(x))


def build_softmax(*, keras, tf):
    """SOFTMAX on classifier logits (rank 2) and on a rank-3 tensor."""
    inp = keras.Input((6, 6, 4), batch_size=1)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    logits = keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    rows = keras.layers.Dense(7, name="row_logits")(keras.layers.Reshape((4, 32))(x))
    return keras.Model(inp, [keras.layers.Softmax(name="probs")(logits),
                             keras.layers.Softmax(name="row_probs")(rows)])


def build_reduce(*, keras, tf):
    """SUM and MEAN over the channel axis (negative axis), with and without keep_dims."""
    inp = keras.Input((5, 7, 6), batch_size=1)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    total = keras.layers.Lambda(lambda t: tf.reduce_sum(t, axis=-1, keepdims=True),
                                name="sum_c")(x)
    mean = keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=[2, -1]), name="mean_wc")(x)
    return keras.Model(inp, [total, mean])


MODELS = {
    "ops_arith": (build_arith, True),
    "ops_shapes": (build_shapes, True),
    "ops_float_io": (build_float_io, False),
    "ops_softmax": (build_softmax, True),
    "ops_reduce": (build_reduce, True),
}


def convert(*, tf, model, int8_io: bool) -> bytes:
    rng = np.random.default_rng(SEED)
    shape = model.inputs[0].shape[1:]
    samples = rng.uniform(-1.0, 1.0, size=(CALIBRATION_SAMPLES, *shape)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf
    keras = tf.keras
    OUT_DIR.mkdir(exist_ok=True)
    for name, (builder, int8_io) in MODELS.items():
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        data = convert(tf=tf, model=builder(keras=keras, tf=tf), int8_io=int8_io)
        (OUT_DIR / f"{name}.tflite").write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
