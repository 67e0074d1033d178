"""Build the bundled default model: a MobileNetV2-style Fashion-MNIST classifier, int8.

Run from the repository root (10 to 17 minutes of training on 2 shared CPU cores,
plus about 5 minutes of conversion and evaluation)::

    python3 testdata/make_bundled_model.py            # train, convert, evaluate, write
    python3 testdata/make_bundled_model.py --check-converter   # also convert twice, compare

It reads Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (see
``testdata/fashion_mnist.py``), trains a small MobileNetV2-style network on
96x96x3 inputs (28x28 images, bilinear upscale, grey replicated to 3 channels),
converts it with the TF 2.21 converter to a full-int8 TFLite model (int8 input
and output, per-channel weights, calibrated on the 512 images of
``fashion_mnist_calib.npz``) and writes, next to this script:

* ``fashion_mnv2_r96_int8.tflite``  the int8 model (output: logits, no softmax);
* ``fashion_mnist_calib.npz``       ``x`` 512 training images (28x28 uint8,
  stratified by class, fixed seed) and ``y`` their labels;
* ``fashion_mnv2_r96.json``         accuracies, TFLM arena head, parameters,
  training settings, input quantization, op list.

Accuracy is measured on the full 10k test set: float top-1 with Keras, int8
top-1 with the LiteRT interpreter (BUILTIN_REF kernels). The layer-based peak
activation memory is the "Arena allocation head" that TFLite Micro's
``print_allocations()`` prints; it must lie between 300 KB and 600 KB so that a
256 KB MCU needs patch-based inference.

Determinism: seeds are fixed (``keras.utils.set_random_seed``), op determinism
is on, the training subset and its per-epoch order come from a fixed numpy
generator, the calibration set is fixed and the npz is written with fixed zip
timestamps. Checked on the build machine (tensorflow-cpu 2.21, 2 cores): two
complete runs from scratch gave a byte-identical ``.tflite`` and calibration
npz, and converting the same weights twice gives identical bytes
(``--check-converter``). The JSON differs between runs only in the timings.
Other CPUs, thread counts or TF versions may train to different weights.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fashion_mnist  # noqa: E402  (sibling module, numpy only)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

SEED = 20251121
MODEL_NAME = "fashion_mnv2_r96"
TFLITE_NAME = f"{MODEL_NAME}_int8.tflite"
CALIB_NAME = "fashion_mnist_calib.npz"
REPORT_NAME = f"{MODEL_NAME}.json"
CALIB_SIZE = 512
TRAIN = {
    "train_subset": 12000,  # stratified subset of the 60k training images
    "epochs": 4,
    "batch_size": 64,
    "learning_rate": 3e-3,  # Adam, cosine decay to 0 over all steps
    "weight_decay": 0.0,
    "augmentation": "none",
}
# (expansion t, output channels c, stride s) of each inverted residual block.
BLOCKS = (
    (6, 16, 1),   # 48x48: expand 16->96 (221 KB int8); sets the activation peak
    (6, 24, 2),   # 48x48 -> 24x24
    (6, 24, 1),
    (6, 32, 2),   # -> 12x12
    (6, 32, 1),
    (6, 64, 2),   # -> 6x6
)
STEM_CHANNELS = 16
HEAD_CHANNELS = 128
ARENA_MIN, ARENA_MAX = 300 * 1024, 600 * 1024
TFLM_ARENA_SIZE = 4 * 1024 * 1024


# ----------------------------------------------------------------------------- model

def conv_bn(*, x, filters: int, kernel: int, stride: int, relu6: bool, name: str):
    """Conv2D (no bias) + BatchNorm (+ ReLU6); the converter folds BN into the conv."""
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu6 else x


def inverted_residual(*, x, expansion: int, filters: int, stride: int, name: str):
    """1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 project, ADD when shapes match."""
    in_channels = x.shape[-1]
    y = conv_bn(x=x, filters=in_channels * expansion, kernel=1, stride=1, relu6=True,
                name=f"{name}_expand")
    y = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                     name=f"{name}_dw")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = conv_bn(x=y, filters=filters, kernel=1, stride=1, relu6=False, name=f"{name}_project")
    if stride == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_model() -> keras.Model:
    """MobileNetV2-style classifier, 96x96x3 -> 10 logits."""
    side = fashion_mnist.MODEL_SIDE
    inputs = keras.Input((side, side, fashion_mnist.MODEL_CHANNELS), name="image")
    x = conv_bn(x=inputs, filters=STEM_CHANNELS, kernel=3, stride=2, relu6=True, name="stem")
    for index, (expansion, filters, stride) in enumerate(BLOCKS):
        x = inverted_residual(x=x, expansion=expansion, filters=filters, stride=stride,
                              name=f"block{index + 1}")
    x = conv_bn(x=x, filters=HEAD_CHANNELS, kernel=1, stride=1, relu6=True, name="head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(fashion_mnist.NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, logits, name=MODEL_NAME)


# ----------------------------------------------------------------------------- data

class UpscaledBatches(keras.utils.PyDataset):
    """Batches of model input made on the fly from 28x28 images, fixed order per epoch."""

    def __init__(self, *, images, labels, batch_size: int, seed: int, shuffle: bool):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch = 0
        self.order = self._order()

    def _order(self):
        if not self.shuffle:
            return np.arange(len(self.images))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        pick = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = fashion_mnist.to_model_input(images=self.images[pick])
        return x, self.labels[pick].astype(np.int32)

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()


def calibration_set(*, train_x, train_y) -> tuple:
    """512 stratified training images (28x28 uint8) and labels, fixed seed."""
    pick = fashion_mnist.stratified_indices(labels=train_y, total=CALIB_SIZE, seed=SEED + 1)
    return train_x[pick], train_y[pick]


# ----------------------------------------------------------------------------- train

def train(*, model, train_x, train_y, settings: dict) -> tuple:
    """Train in place; return (wall seconds, process CPU seconds)."""
    pick = fashion_mnist.stratified_indices(labels=train_y, total=settings["train_subset"],
                                            seed=SEED)
    data = UpscaledBatches(images=train_x[pick], labels=train_y[pick],
                           batch_size=settings["batch_size"], seed=SEED, shuffle=True)
    steps = settings["epochs"] * len(data)
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start, cpu_start = time.time(), time.process_time()
    model.fit(data, epochs=settings["epochs"], verbose=2, shuffle=False)
    return time.time() - start, time.process_time() - cpu_start


def float_accuracy(*, model, test_x, test_y) -> float:
    """Keras top-1 on the given 28x28 test images."""
    data = UpscaledBatches(images=test_x, labels=test_y, batch_size=500, seed=0, shuffle=False)
    logits = model.predict(data, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == test_y))


# ----------------------------------------------------------------------------- convert

def convert_int8(*, model, calib_x) -> bytes:
    """Full-int8 conversion (int8 in/out, per-channel weights), calibrated on calib_x."""
    def representative():
        for start in range(0, len(calib_x), 1):
            yield [fashion_mnist.to_model_input(images=calib_x[start:start + 1])]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def litert_interpreter(*, model_bytes: bytes):
    """LiteRT interpreter with the reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_content=model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def input_quantization(*, model_bytes: bytes) -> tuple:
    """(scale, zero_point) of the model input."""
    detail = litert_interpreter(model_bytes=model_bytes).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point)


def int8_accuracy(*, model_bytes: bytes, test_x, test_y) -> float:
    """LiteRT (BUILTIN_REF) top-1 of the int8 model, one image at a time."""
    interpreter = litert_interpreter(model_bytes=model_bytes)
    in_detail = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    scale, zero_point = in_detail["quantization"]
    correct = 0
    for start in range(0, len(test_x), 500):
        x = fashion_mnist.to_model_input(images=test_x[start:start + 500])
        q = fashion_mnist.quantize_input(x=x, scale=scale, zero_point=zero_point)
        for row, label in zip(q, test_y[start:start + 500]):
            interpreter.set_tensor(in_detail["index"], row[None])
            interpreter.invoke()
            correct += int(np.argmax(interpreter.get_tensor(out_index)[0]) == label)
    return correct / len(test_x)


def op_list(*, model_bytes: bytes) -> list:
    """Builtin op names in execution order."""
    interpreter = litert_interpreter(model_bytes=model_bytes)
    return [op["op_name"] for op in interpreter._get_ops_details()]


_TFLM_PROBE = """
import sys
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
interp = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
interp.print_allocations()
"""


def tflm_arena_head(*, model_path: str) -> int:
    """TFLite Micro's 'Arena allocation head' (bytes), read from a subprocess's stderr."""
    result = subprocess.run(
        [sys.executable, "-c", _TFLM_PROBE, model_path, str(TFLM_ARENA_SIZE)],
        capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        if "Arena allocation head" in line:
            return int(line.split("Arena allocation head")[1].split()[0])
    raise RuntimeError(f"no 'Arena allocation head' line in TFLM output:\n{result.stderr}")


# ----------------------------------------------------------------------------- main

def setup_determinism() -> None:
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()


def write_report(*, path: str, report: dict) -> None:
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-converter", action="store_true",
                        help="convert twice and report whether the bytes are identical")
    parser.add_argument("--out-dir", default=HERE,
                        help="where to write the outputs (default: testdata/)")
    parser.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    parser.add_argument("--train-subset", type=int, default=TRAIN["train_subset"])
    args = parser.parse_args(argv)
    settings = dict(TRAIN, epochs=args.epochs, train_subset=args.train_subset, seed=SEED)

    setup_determinism()
    train_x, train_y = fashion_mnist.load_split(split="train")
    test_x, test_y = fashion_mnist.load_split(split="test")
    calib_x, calib_y = calibration_set(train_x=train_x, train_y=train_y)
    os.makedirs(args.out_dir, exist_ok=True)
    tflite_path = os.path.join(args.out_dir, TFLITE_NAME)
    fashion_mnist.save_npz(path=os.path.join(args.out_dir, CALIB_NAME),
                           arrays={"x": calib_x, "y": calib_y})

    model = build_model()
    seconds, cpu_seconds = train(model=model, train_x=train_x, train_y=train_y,
                                 settings=settings)
    print(f"training took {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU", flush=True)
    float_acc = float_accuracy(model=model, test_x=test_x, test_y=test_y)
    print(f"float top-1 {float_acc:.4f}", flush=True)

    model_bytes = convert_int8(model=model, calib_x=calib_x)
    converter_deterministic = None
    if args.check_converter:
        converter_deterministic = convert_int8(model=model, calib_x=calib_x) == model_bytes
        print(f"converter deterministic: {converter_deterministic}", flush=True)
    with open(tflite_path, "wb") as handle:
        handle.write(model_bytes)
    arena_head = tflm_arena_head(model_path=tflite_path)
    print(f"TFLM arena head {arena_head} bytes", flush=True)
    int8_acc = int8_accuracy(model_bytes=model_bytes, test_x=test_x, test_y=test_y)
    print(f"int8 top-1 {int8_acc:.4f}", flush=True)
    scale, zero_point = input_quantization(model_bytes=model_bytes)

    write_report(path=os.path.join(args.out_dir, REPORT_NAME), report={
        "model": TFLITE_NAME,
        "tflite_bytes": len(model_bytes),
        "tflite_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "float_top1_test10k": round(float_acc, 4),
        "int8_top1_test10k": round(int8_acc, 4),
        "int8_evaluator": "ai_edge_litert Interpreter, OpResolverType.BUILTIN_REF",
        "tflm_arena_head_bytes": arena_head,
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "training": dict(settings, seconds=round(seconds), cpu_seconds=round(cpu_seconds),
                         cpu_count=os.cpu_count(),
                         tensorflow=tf.__version__),
        "input": {"shape": [1, 96, 96, 3], "dtype": "int8", "scale": scale,
                  "zero_point": zero_point,
                  "preprocessing": "fashion_mnist.to_model_input then quantize_input"},
        "output": "int8 logits [1, 10] (no softmax)",
        "ops": op_list(model_bytes=model_bytes),
        "converter_deterministic": converter_deterministic,
        "calibration": {"file": CALIB_NAME, "count": CALIB_SIZE},
    })
    if not ARENA_MIN <= arena_head <= ARENA_MAX:
        print(f"WARNING: arena head {arena_head} outside [{ARENA_MIN}, {ARENA_MAX}]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
