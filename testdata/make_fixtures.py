#!/usr/bin/env python3
"""Build the int8 TFLite fixture models of the test suite from code, deterministically.

Every fixture is a Keras model with seeded random weights, converted with the TF 2.21
TFLite converter to a full-int8 model (int8 input and output, builtin int8 ops only).
Small fixtures are committed under testdata/; large ones are written to
testdata/generated/ (git-ignored). testdata/fixtures.json describes each fixture.

    python3 testdata/make_fixtures.py                 # build what is missing or stale
    python3 testdata/make_fixtures.py --only conv_chain --force
    python3 testdata/make_fixtures.py --verify        # LiteRT vs TFLM, TFLM arena head

A fixture is up to date when its file exists and is newer than this script, or when
fixtures.json records that exact file (sha256) as built by this exact script (sha256);
the second rule keeps a fresh git checkout, whose file times are arbitrary, from
rebuilding. TensorFlow is imported only when a model must be built.

Determinism: Keras seeds (keras.utils.set_random_seed), a cleared Keras session before
each model (layer and tensor names), TF op determinism, oneDNN off, one TF thread, and
numpy generators with fixed seeds for BatchNorm parameters and calibration inputs.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

INDEX_NAME = "fixtures.json"
GENERATED_DIR = "generated"
COMMITTED_LIMIT_BYTES = 1 << 20
CALIBRATION_SAMPLES = 8
BATCHNORM_INIT_SAMPLES = 16
VERIFY_SAMPLES = 4
VERIFY_SEED = 20261121
ARENA_PATTERN = re.compile(r"Arena allocation (head|tail|total) (\d+) bytes")


@dataclasses.dataclass(frozen=True)
class Fixture:
    """One fixture model: how to build it, where it lives, what it is for."""

    name: str
    builder: Callable  # keyword-only: (keras, input_shape, **params) -> keras.Model
    params: dict
    input_shape: tuple[int, int, int]
    committed: bool
    seed: int
    purpose: str
    arena_bytes: int = 8 << 20
    float_io: bool = False  # keep the converter's float32 input/output (QUANTIZE/DEQUANTIZE)

    @property
    def file_name(self) -> str:
        return f"{self.name}.tflite"

    def path(self, *, testdata: Path) -> Path:
        folder = testdata if self.committed else testdata / GENERATED_DIR
        return folder / self.file_name


def fixture_table() -> tuple[Fixture, ...]:
    """All fixtures, in build order (smallest first)."""
    return (
        Fixture(
            name="conv_chain",
            builder=build_conv_chain,
            params={},
            input_shape=(40, 48, 3),
            committed=True,
            seed=101,
            purpose="small non-square net covering PAD, AVERAGE/MAX_POOL_2D, ADD, CONCATENATION, "
            "CONV_2D SAME/VALID x stride 1/2, DEPTHWISE_CONV_2D; unit tests of readers and passes",
        ),
        Fixture(
            name="resnet8_cifar",
            builder=build_resnet8,
            params={"classes": 10},
            input_shape=(32, 32, 3),
            committed=True,
            seed=102,
            purpose="MLPerf-Tiny-like ResNet-8 (CIFAR 32x32, 16/32/64 ch): residual ADDs and "
            "1x1 stride-2 shortcut convs for patch planning across branches",
        ),
        Fixture(
            name="mobilenetv1_w025_r96",
            builder=build_mobilenetv1,
            params={"alpha": 0.25, "classes": 2},
            input_shape=(96, 96, 3),
            committed=True,
            seed=103,
            purpose="VWW-like MobileNetV1 alpha 0.25 at 96x96, 2 classes: plain conv/depthwise chain",
        ),
        Fixture(
            name="mobilenetv1_w025_r96_float_io",
            builder=build_mobilenetv1,
            params={"alpha": 0.25, "classes": 2},
            input_shape=(96, 96, 3),
            committed=True,
            seed=106,
            purpose="VWW-like MobileNetV1 alpha 0.25 at 96x96 exported with float32 input and "
            "output (the converter's default): --input-type/--output-type and the float input "
            "that dominates the arena",
            float_io=True,
        ),
        Fixture(
            name="mobilenetv2_w035_r144",
            builder=build_mobilenetv2,
            params={"alpha": 0.35, "classes": 10},
            input_shape=(144, 144, 3),
            committed=True,
            seed=104,
            purpose="MobileNetV2 alpha 0.35 at 144x144 (MCUNet-class): main patch-inference and "
            "mixed-precision fixture, fits 256-512 KB SRAM only with patches",
        ),
        Fixture(
            name="mobilenetv2_w100_r224",
            builder=build_mobilenetv2,
            params={"alpha": 1.0, "classes": 1000},
            input_shape=(224, 224, 3),
            committed=False,
            seed=105,
            purpose="full MobileNetV2 at 224x224 (QuantMCU/MCUNetV2 paper setting): memory figures "
            "against the papers and TFLM; large, generated only",
            arena_bytes=24 << 20,
        ),
    )


# ----------------------------------------------------------------------------- Keras models


def build_conv_chain(*, keras, input_shape):
    """Small net whose int8 graph keeps PAD, both pools, ADD, CONCATENATION, both paddings."""
    layers = keras.layers
    # A static batch of 1 keeps the final Reshape a plain RESHAPE (no SHAPE/STRIDED_SLICE/PACK).
    inputs = keras.Input(shape=input_shape, batch_size=1, name="image")
    x = conv_bn_relu(keras=keras, x=inputs, filters=8, kernel=3, stride=2, padding="same", name="c0")
    # Asymmetric padding cannot fold into a SAME conv: the int8 graph keeps a PAD op.
    x = layers.ZeroPadding2D(padding=((1, 3), (2, 2)), name="pad0")(x)
    x = conv_bn_relu(keras=keras, x=x, filters=8, kernel=3, stride=1, padding="valid", name="c1")
    branch_a = layers.DepthwiseConv2D(3, padding="same", name="dw0")(x)
    branch_a = layers.BatchNormalization(name="dw0_bn")(branch_a)
    branch_a = layers.ReLU(name="dw0_relu")(branch_a)
    branch_a = conv_bn_relu(keras=keras, x=branch_a, filters=8, kernel=1, stride=1, padding="same", name="pw0")
    x = layers.Add(name="add0")([x, branch_a])
    pool_max = layers.MaxPooling2D(2, strides=2, padding="valid", name="maxpool")(x)
    pool_avg = layers.AveragePooling2D(3, strides=2, padding="same", name="avgpool")(x)
    conv_s2 = conv_bn_relu(keras=keras, x=x, filters=8, kernel=3, stride=2, padding="valid", name="c2")
    conv_s2 = layers.ZeroPadding2D(padding=((0, 1), (0, 1)), name="pad1")(conv_s2)
    x = layers.Concatenate(name="concat")([pool_max, pool_avg, conv_s2])
    x = conv_bn_relu(keras=keras, x=x, filters=16, kernel=3, stride=1, padding="same", name="c3")
    x = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    # A 1x1 conv head instead of Dense: TFLM rounds per-channel FULLY_CONNECTED differently
    # from LiteRT's reference kernel (double vs single rounding), conv ops agree bit for bit.
    x = layers.Conv2D(4, 1, name="logits")(x)
    outputs = layers.Reshape((4,), name="flatten")(x)
    return keras.Model(inputs, outputs, name="conv_chain")


def conv_bn_relu(*, keras, x, filters, kernel, stride, padding, name):
    layers = keras.layers
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_resnet8(*, keras, input_shape, classes):
    """ResNet-8 as in MLPerf Tiny image classification: 16/32/64 channels, 3 stages."""
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn_relu(keras=keras, x=inputs, filters=16, kernel=3, stride=1, padding="same", name="stem")
    for stage, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
        x = residual_block(keras=keras, x=x, filters=filters, stride=stride, name=f"stage{stage}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet8_cifar")


def residual_block(*, keras, x, filters, stride, name):
    layers = keras.layers
    y = conv_bn_relu(keras=keras, x=x, filters=filters, kernel=3, stride=stride, padding="same", name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b")(y)
    y = layers.BatchNormalization(name=f"{name}_b_bn")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_shortcut")(x)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_mobilenetv1(*, keras, input_shape, alpha, classes):
    return keras.applications.MobileNet(
        alpha=alpha,
        input_shape=input_shape,
        weights=None,
        classes=classes,
        classifier_activation=None,
    )


def build_mobilenetv2(*, keras, input_shape, alpha, classes):
    return keras.applications.MobileNetV2(
        alpha=alpha,
        input_shape=input_shape,
        weights=None,
        classes=classes,
        classifier_activation=None,
    )


# ----------------------------------------------------------------------------- building


def import_tensorflow():
    """Import TF configured for reproducible, quiet conversion. Returns (tf, keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # oneDNN kernels change float rounding, hence scales
    import tensorflow as tf
    import keras

    # Thread count changes reduction order (BatchNorm statistics, calibration ranges): pin it.
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    return tf, keras


def float_inputs(*, seed, count, input_shape):
    """Deterministic inputs in the [-1, 1] range Keras' MobileNet preprocessing produces."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(count, *input_shape)).astype(np.float32)


def init_batchnorm(*, keras, model, seed, input_shape):
    """Random gamma/beta, then moving statistics taken from one batch of inputs.

    With momentum 0 a single training-mode call stores that batch's mean and variance,
    so each BatchNormalization normalizes its input in inference mode too and the
    activations of a deep random net neither vanish nor explode.
    """
    rng = np.random.default_rng(seed + 1)
    batchnorms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batchnorms:
        channels = layer.gamma.shape[-1]
        layer.gamma.assign(rng.uniform(0.5, 1.5, size=channels).astype(np.float32))
        layer.beta.assign(rng.normal(0.0, 0.25, size=channels).astype(np.float32))
        layer.momentum = 0.0
    batch = float_inputs(seed=seed + 2, count=BATCHNORM_INIT_SAMPLES, input_shape=input_shape)
    model(batch, training=True)
    for layer in batchnorms:
        layer.momentum = 0.99


def convert_full_int8(*, tf, model, calibration, float_io=False):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Keras' export prints every captured tensor; the converter warns about input stats.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def build_fixture(*, tf, keras, fixture):
    """Keras model with seeded weights -> full-int8 .tflite bytes."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(fixture.seed)
    model = fixture.builder(keras=keras, input_shape=fixture.input_shape, **fixture.params)
    init_batchnorm(keras=keras, model=model, seed=fixture.seed, input_shape=fixture.input_shape)
    calibration = float_inputs(seed=fixture.seed + 3, count=CALIBRATION_SAMPLES, input_shape=fixture.input_shape)
    return convert_full_int8(tf=tf, model=model, calibration=calibration,
                             float_io=fixture.float_io)


def write_atomically(*, path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- model facts


def sha256_of(*, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def builtin_op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    table = schema.BuiltinOperator
    return {value: key for key, value in vars(table).items() if key.isupper()}


def read_model_facts(*, data: bytes) -> dict:
    """Op counts and I/O shapes of the first subgraph, read straight from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    names = builtin_op_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        opcode = model.OperatorCodes(i)
        code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
        custom = opcode.CustomCode()
        codes.append(custom.decode() if custom else names[code])
    graph = model.Subgraphs(0)
    counts: dict[str, int] = {}
    for i in range(graph.OperatorsLength()):
        name = codes[graph.Operators(i).OpcodeIndex()]
        counts[name] = counts.get(name, 0) + 1
    return {
        "ops": dict(sorted(counts.items())),
        "operator_count": graph.OperatorsLength(),
        "input_shape": tensor_shape(graph=graph, index=graph.Inputs(0)),
        "output_shape": tensor_shape(graph=graph, index=graph.Outputs(0)),
    }


def tensor_shape(*, graph, index):
    return [int(d) for d in graph.Tensors(index).ShapeAsNumpy()]


def index_entry(*, fixture: Fixture, testdata: Path, data: bytes, script_sha: str) -> dict:
    facts = read_model_facts(data=data)
    return {
        "file": str(fixture.path(testdata=testdata).relative_to(testdata)),
        "storage": "committed" if fixture.committed else "generated",
        "purpose": fixture.purpose,
        "input_shape": facts["input_shape"],
        "input_dtype": "int8",
        "output_shape": facts["output_shape"],
        "ops": facts["ops"],
        "operator_count": facts["operator_count"],
        "size_bytes": len(data),
        "sha256": sha256_of(data=data),
        "script_sha256": script_sha,
    }


def load_index(*, path: Path) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text())["fixtures"]


def save_index(*, path: Path, entries: dict) -> bool:
    """Write the index if its content changed. Returns True when written."""
    document = {
        "generator": "testdata/make_fixtures.py",
        "note": "Built by testdata/make_fixtures.py; arena heads measured by its --verify.",
        "fixtures": dict(sorted(entries.items())),
    }
    text = compact_number_lists(text=json.dumps(document, indent=2)) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    write_atomically(path=path, data=text.encode())
    return True


def compact_number_lists(*, text: str) -> str:
    """Put JSON lists of plain numbers (shapes, ranges) on one line."""
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                  lambda match: "[" + ", ".join(match.group(1).replace(",", " ").split()) + "]", text)


def merge_entry(*, old: dict | None, new: dict) -> dict:
    """Keep verification results that belong to the same model bytes."""
    if old and old.get("sha256") == new["sha256"]:
        for key in ("tflm_arena_head_bytes", "tflm_arena", "verify"):
            if key in old:
                new[key] = old[key]
    return new


# ----------------------------------------------------------------------------- freshness


def is_up_to_date(*, path: Path, script: Path, script_sha: str, recorded: dict | None) -> bool:
    if not path.exists():
        return False
    if path.stat().st_mtime >= script.stat().st_mtime:
        return True
    if not recorded:
        return False
    same_file = recorded.get("sha256") == sha256_of(data=path.read_bytes())
    return same_file and recorded.get("script_sha256") == script_sha


# ----------------------------------------------------------------------------- verification


class ProbeError(RuntimeError):
    """The TFLM child process failed or did not report its arena."""


def tflm_probe(*, model_path: Path, inputs_path: Path, outputs_path: Path, arena_bytes: int) -> None:
    """Child-process side: run TFLM on the inputs, save outputs, print the arena report."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model_path.read_bytes(), arena_size=arena_bytes)
    samples = np.load(inputs_path)["inputs"]
    outputs = []
    for sample in samples:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)))
    np.savez(outputs_path, outputs=np.stack(outputs))
    sys.stdout.flush()
    interpreter.print_allocations()


def run_tflm_subprocess(*, script: Path, model_path: Path, inputs_path: Path, outputs_path: Path, arena_bytes: int):
    """Run TFLM in a child (it aborts the process on some errors). Returns (outputs, arena)."""
    command = [
        sys.executable, str(script), "--tflm-probe", str(model_path),
        "--probe-inputs", str(inputs_path), "--probe-outputs", str(outputs_path),
        "--probe-arena", str(arena_bytes),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProbeError(f"TFLM probe of {model_path.name} failed (exit {result.returncode}): "
                           f"{result.stderr[-2000:]}")
    arena = {f"{part}_bytes": int(size) for part, size in ARENA_PATTERN.findall(result.stderr + result.stdout)}
    if "head_bytes" not in arena:
        raise ProbeError(f"TFLM probe of {model_path.name} printed no arena head")
    return np.load(outputs_path)["outputs"], arena


def run_litert_reference(*, data: bytes, samples: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in samples:
        interpreter.set_tensor(input_index, sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(outputs)


def verify_fixture(*, fixture: Fixture, testdata: Path, script: Path) -> dict:
    """LiteRT (reference kernels) vs TFLM on random int8 inputs; TFLM arena head."""
    path = fixture.path(testdata=testdata)
    data = path.read_bytes()
    rng = np.random.default_rng(VERIFY_SEED)
    if fixture.float_io:
        samples = rng.uniform(-1, 1, size=(VERIFY_SAMPLES, *fixture.input_shape)).astype(np.float32)
    else:
        samples = rng.integers(-128, 128, size=(VERIFY_SAMPLES, *fixture.input_shape), dtype=np.int8)
    litert = run_litert_reference(data=data, samples=samples)
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path = Path(tmp) / "inputs.npz"
        np.savez(inputs_path, inputs=samples)
        tflm, arena = run_tflm_subprocess(
            script=script, model_path=path, inputs_path=inputs_path,
            outputs_path=Path(tmp) / "outputs.npz", arena_bytes=fixture.arena_bytes,
        )
    tflm = tflm.reshape(litert.shape)
    wide = np.float64 if fixture.float_io else np.int32
    diff = np.abs(litert.astype(wide) - tflm.astype(wide))
    return {
        "tflm_arena_head_bytes": arena["head_bytes"],
        "tflm_arena": arena,
        "verify": {
            "samples": VERIFY_SAMPLES,
            "litert_ref_equals_tflm": bool(diff.max() == 0),
            "max_abs_diff_steps": diff.max().item(),
            "differing_outputs": int((diff > 0).sum()),
            "output_range": [litert.min().item(), litert.max().item()],
        },
    }


# ----------------------------------------------------------------------------- driver


def parse_args(argv):
    names = [fixture.name for fixture in fixture_table()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=names, help="build only this fixture (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--verify", action="store_true", help="run LiteRT vs TFLM and record TFLM arena heads")
    parser.add_argument("--testdata", type=Path, default=Path(__file__).resolve().parent, help=argparse.SUPPRESS)
    parser.add_argument("--tflm-probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-outputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-arena", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected_fixtures(*, only):
    return [fixture for fixture in fixture_table() if not only or fixture.name in only]


def build_stale(*, fixtures, testdata: Path, script: Path, script_sha: str, index: dict, force: bool) -> list[Fixture]:
    """Build what is missing or stale. Returns the fixtures that could not be built."""
    stale = []
    for fixture in fixtures:
        path = fixture.path(testdata=testdata)
        recorded = index.get(fixture.name)
        # A committed fixture is the reference the tests were written against: a clone
        # never rebuilds it (TF builds are not byte-reproducible); --force does.
        kept = fixture.committed and path.exists()
        if not force and (kept or is_up_to_date(path=path, script=script, script_sha=script_sha,
                                                 recorded=recorded)):
            print(f"up to date  {path.relative_to(testdata.parent)}")
        else:
            stale.append(fixture)
    if not stale:
        return []
    start = time.perf_counter()
    try:
        tf, keras = import_tensorflow()
    except ImportError as error:
        for fixture in stale:
            print(f"NOT BUILT   {fixture.path(testdata=testdata).relative_to(testdata.parent)}: "
                  f"cannot import tensorflow ({error}); pip install 'tensorflow-cpu==2.21.0'")
        return stale
    print(f"imported    tensorflow {tf.__version__} in {time.perf_counter() - start:.1f} s")
    for fixture in stale:
        build_one(tf=tf, keras=keras, fixture=fixture, testdata=testdata)
    return []


def build_one(*, tf, keras, fixture: Fixture, testdata: Path) -> None:
    start = time.perf_counter()
    data = build_fixture(tf=tf, keras=keras, fixture=fixture)
    check_size(fixture=fixture, data=data)
    path = fixture.path(testdata=testdata)
    write_atomically(path=path, data=data)
    print(f"built       {path.relative_to(testdata.parent)}: {len(data):,} B in {time.perf_counter() - start:.1f} s")


def check_size(*, fixture: Fixture, data: bytes) -> None:
    if fixture.committed and len(data) >= COMMITTED_LIMIT_BYTES:
        raise SystemExit(f"{fixture.name}: {len(data):,} B is too large to commit (limit 1 MiB)")


def refresh_index(*, fixtures, testdata: Path, script_sha: str, index: dict) -> dict:
    entries = dict(index)
    for fixture in fixtures:
        path = fixture.path(testdata=testdata)
        if path.exists():
            new = index_entry(fixture=fixture, testdata=testdata, data=path.read_bytes(), script_sha=script_sha)
            entries[fixture.name] = merge_entry(old=index.get(fixture.name), new=new)
    return entries


def verify_all(*, fixtures, testdata: Path, script: Path, entries: dict) -> bool:
    all_equal = True
    for fixture in fixtures:
        if not fixture.path(testdata=testdata).exists():
            print(f"not verified {fixture.name}: file missing")
            continue
        start = time.perf_counter()
        try:
            result = verify_fixture(fixture=fixture, testdata=testdata, script=script)
        except ProbeError as error:
            print(f"FAILED      {fixture.name}: {error}")
            all_equal = False
            continue
        entries[fixture.name].update(result)
        check = result["verify"]
        all_equal &= check["litert_ref_equals_tflm"]
        print(f"verified    {fixture.name}: TFLM arena head {result['tflm_arena_head_bytes']:,} B, "
              f"LiteRT-ref == TFLM: {check['litert_ref_equals_tflm']} "
              f"(max diff {check['max_abs_diff_steps']}), {time.perf_counter() - start:.1f} s")
    if not all_equal:
        print("note: TFLM rounds per-channel FULLY_CONNECTED twice (like the double-rounding "
              "MultiplyByQuantizedMultiplier), LiteRT's reference kernel once; one-step output "
              "differences after FULLY_CONNECTED come from there")
    return all_equal


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tflm_probe:
        tflm_probe(model_path=args.tflm_probe, inputs_path=args.probe_inputs,
                   outputs_path=args.probe_outputs, arena_bytes=args.probe_arena)
        return 0
    script = Path(__file__).resolve()
    script_sha = sha256_of(data=script.read_bytes())
    testdata = args.testdata.resolve()
    index_path = testdata / INDEX_NAME
    index = load_index(path=index_path)
    fixtures = selected_fixtures(only=args.only)
    missing = build_stale(fixtures=fixtures, testdata=testdata, script=script, script_sha=script_sha,
                          index=index, force=args.force)
    entries = refresh_index(fixtures=fixtures, testdata=testdata, script_sha=script_sha, index=index)
    verified_ok = True
    if args.verify:
        verified_ok = verify_all(fixtures=fixtures, testdata=testdata, script=script, entries=entries)
    # The tracked index is rewritten only by an explicit maintenance run (--verify, --force,
    # --only); `make test` builds what is missing and leaves the working tree clean.
    maintenance = args.verify or args.force or args.only
    if maintenance and save_index(path=index_path, entries=entries):
        print(f"wrote       {index_path.relative_to(testdata.parent)}")
    committed_missing = [fixture.name for fixture in missing if fixture.committed]
    if committed_missing or not verified_ok:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
