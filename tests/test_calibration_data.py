"""Calibration / evaluation data loaders: every input form, every error, streaming.

The reference for float inputs is TFLite's quantization formula applied by hand
(round half away from zero, clamp); PNG files are written here with the PNG
specification's filter definitions, so the decoder is checked against the format.
"""
from __future__ import annotations

import struct
import zipfile
import zlib

import numpy as np
import pytest

from testdata.synthetic_models import Conv, Mean, ModelSpec, build_int8_graph
from tflite_quantmcu.errors import CalibrationDataError
from tflite_quantmcu.quant.calibration_data import (calibration_batches, data_batches,
                                                    model_input)
from tflite_quantmcu.quant.png_reader import read_png

SHAPE = (6, 5, 3)


@pytest.fixture(scope="module")
def graph():
    spec = ModelSpec(input_shape=SHAPE, seed=3, layers=(Conv(filters=4), Mean()))
    return build_int8_graph(spec=spec)


def hand_quantized(*, x: np.ndarray, graph) -> np.ndarray:
    spec = model_input(graph=graph)
    q = []
    for value in np.asarray(x, dtype=np.float32).reshape(-1):
        scaled = float(value) / float(np.float32(spec.scale))
        rounded = int(np.floor(abs(scaled) + 0.5)) * (1 if scaled >= 0 else -1)
        q.append(min(127, max(-128, rounded + spec.zero_point)))
    return np.asarray(q, dtype=np.int8).reshape(x.shape)


def collect(batches):
    batches = list(batches)
    xs = np.concatenate([b.x for b in batches])
    ys = None if batches[0].y is None else np.concatenate([b.y for b in batches])
    return batches, xs, ys


def float_data(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, size=(n,) + SHAPE).astype(np.float32)


def test_npy_float_is_quantized_like_tflite_and_rebatched(tmp_path, graph):
    x = float_data(11)
    np.save(tmp_path / "c.npy", x)
    batches, xs, ys = collect(data_batches(source=tmp_path / "c.npy", graph=graph, batch_size=4,
                                           progress=False))
    assert [b.x.shape[0] for b in batches] == [4, 4, 3]
    assert xs.dtype == np.int8 and ys is None
    np.testing.assert_array_equal(xs, hand_quantized(x=x, graph=graph))


def test_npy_int8_codes_pass_through(tmp_path, graph):
    x = np.random.default_rng(1).integers(-128, 128, size=(5,) + SHAPE).astype(np.int8)
    np.save(tmp_path / "c.npy", x)
    xs = np.concatenate(list(calibration_batches(source=str(tmp_path / "c.npy"), graph=graph,
                                                 progress=False)))
    np.testing.assert_array_equal(xs, x)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_with_labels_streams_both(tmp_path, graph, compression):
    x = float_data(600, seed=2)
    y = np.arange(600) % 10
    path = tmp_path / "d.npz"
    (np.savez_compressed if compression == zipfile.ZIP_DEFLATED else np.savez)(path, x=x, y=y)
    _, xs, ys = collect(data_batches(source=path, graph=graph, batch_size=100,
                                     require_labels=True, progress=False))
    np.testing.assert_array_equal(xs, hand_quantized(x=x, graph=graph))
    np.testing.assert_array_equal(ys, y)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 360 + 1, 70 * 360])
def test_npz_labels_stay_paired_when_x_is_read_in_smaller_chunks(tmp_path, graph,
                                                                 monkeypatch, chunk_bytes):
    """x rows are read by bytes (1, 3 or 70 samples of 360 B at a time), y by rows."""
    import tflite_quantmcu.quant.calibration_data as calibration_data
    monkeypatch.setattr(calibration_data, "READ_CHUNK_BYTES", chunk_bytes)
    x = float_data(300, seed=4)
    y = np.arange(300) % 7
    np.savez(tmp_path / "e.npz", x=x, y=y)
    _, xs, ys = collect(data_batches(source=tmp_path / "e.npz", graph=graph, batch_size=64,
                                     require_labels=True, progress=False))
    np.testing.assert_array_equal(xs, hand_quantized(x=x, graph=graph))
    np.testing.assert_array_equal(ys, y)


def test_limit_stops_early(tmp_path, graph):
    np.save(tmp_path / "c.npy", float_data(30))
    _, xs, _ = collect(data_batches(source=tmp_path / "c.npy", graph=graph, batch_size=8,
                                    limit=13, progress=False))
    assert xs.shape[0] == 13


def _png_bytes(*, image: np.ndarray, filters: list[int]) -> bytes:
    """An 8-bit PNG written from the specification's filter formulas (ISO 15948 s. 9)."""
    height, width, channels = image.shape
    color = {1: 0, 3: 2, 4: 6}[channels]
    rows = image.reshape(height, width * channels).astype(np.int64)
    raw = b""
    for y, kind in enumerate(filters):
        line, prior = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        out = []
        for x in range(line.size):
            a = line[x - channels] if x >= channels else 0
            b = prior[x]
            c = prior[x - channels] if x >= channels else 0
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else \
                (b if abs(p - b) <= abs(p - c) else c)
            pred = [0, a, b, (a + b) // 2, paeth][kind]
            out.append((line[x] - pred) % 256)
        raw += bytes([kind]) + bytes(out)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + \
            struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_png_decoder_every_filter(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes(image=image, filters=[0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(read_png(path=str(path)), image)


def test_directory_of_png_and_npy(tmp_path, graph):
    image = np.random.default_rng(5).integers(0, 256, size=SHAPE).astype(np.uint8)
    (tmp_path / "a.png").write_bytes(_png_bytes(image=image, filters=[4] * SHAPE[0]))
    second = float_data(2, seed=6)
    np.save(tmp_path / "b.npy", second)
    (tmp_path / "notes.txt").write_text("ignored")
    _, xs, _ = collect(data_batches(source=tmp_path, graph=graph, progress=False))
    expected = np.concatenate([hand_quantized(x=image[None] / np.float32(255), graph=graph),
                               hand_quantized(x=second, graph=graph)])
    np.testing.assert_array_equal(xs, expected)


class FakeDataset:
    """Duck-typed like tf.data: iterating yields (x, y) of objects with __array__."""

    class Tensor:
        def __init__(self, value):
            self.value = value

        def __array__(self, dtype=None, copy=None):
            return self.value

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        for start in range(0, len(self.x), 3):
            yield self.Tensor(self.x[start:start + 3]), self.Tensor(self.y[start:start + 3])


def test_iterables_samples_batches_pairs_and_dataset_like(graph):
    x = float_data(7, seed=7)
    y = np.arange(7)
    expected = hand_quantized(x=x, graph=graph)
    forms = [list(x), [x[:3], x[3:]], (s for s in x)]
    for form in forms:
        _, xs, _ = collect(data_batches(source=form, graph=graph, batch_size=2, progress=False))
        np.testing.assert_array_equal(xs, expected)
    _, xs, ys = collect(data_batches(source=[(s, int(t)) for s, t in zip(x, y)], graph=graph,
                                     progress=False))
    np.testing.assert_array_equal(ys, y)
    _, xs, ys = collect(data_batches(source=FakeDataset(x, y), graph=graph, batch_size=4,
                                     progress=False))
    np.testing.assert_array_equal(xs, expected)
    np.testing.assert_array_equal(ys, y)


def test_generators_are_streamed(graph):
    pulled = []

    def source():
        for i in range(1000):
            pulled.append(i)
            yield float_data(1, seed=i)

    first = next(iter(data_batches(source=source(), graph=graph, batch_size=5, progress=False)))
    assert first.x.shape[0] == 5 and len(pulled) == 5


def test_progress_bar_goes_to_stderr_and_can_be_disabled(graph, capsys):
    list(data_batches(source=[float_data(3)], graph=graph, progress=True))
    assert "calibration" in capsys.readouterr().err
    list(data_batches(source=[float_data(3)], graph=graph, progress=False))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("source, words", [
    ([], ["no samples"]),
    ([np.zeros((0,) + SHAPE, np.float32)], ["no samples"]),
    ([np.zeros((2, 6, 5, 4), np.float32)], ["(6, 5, 3)", "(2, 6, 5, 4)"]),
    ([np.zeros((5, 3), np.float32)], ["(6, 5, 3)", "(5, 3)"]),
    ([np.full((1,) + SHAPE, np.nan, np.float32)], ["NaN"]),
    ([np.full((1,) + SHAPE, np.inf, np.float32)], ["NaN/inf"]),
    ([np.zeros((1,) + SHAPE, np.int16)], ["int16", "uint8 pixels", "int8 codes"]),
    ([np.zeros((1,) + SHAPE, np.int32)], ["int32"]),
    ([(np.zeros((2,) + SHAPE, np.float32), np.zeros(3, np.int64))], ["2 labels", "(3,)"]),
    ([(np.zeros((2,) + SHAPE, np.float32), np.zeros(2, np.float32))], ["integers", "float32"]),
    ([(np.zeros((2,) + SHAPE, np.float32), 1, 2)], ["(x, y) pair"]),
    (42, ["int"]),
    ("/nonexistent/calib.npz", ["no such file"]),
])
def test_bad_data_raises_named_errors(graph, source, words):
    with pytest.raises(CalibrationDataError) as err:
        list(data_batches(source=source, graph=graph, progress=False))
    for word in words:
        assert word in str(err.value)


def test_file_errors(tmp_path, graph):
    np.savez(tmp_path / "wrong.npz", images=float_data(2))
    (tmp_path / "c.csv").write_text("1,2")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cases = [("wrong.npz", "key 'x'"), ("c.csv", ".npy or .npz"), ("obj.npy", "obj.npy"),
             ("bad.png", "signature")]
    for name, words in cases:
        source = tmp_path if name.endswith(".png") else tmp_path / name
        with pytest.raises(CalibrationDataError, match=words):
            list(data_batches(source=source, graph=graph, progress=False))
        if name.endswith(".png"):
            (tmp_path / name).unlink()


def test_labels_required_for_evaluation(graph):
    with pytest.raises(CalibrationDataError, match="labels"):
        list(data_batches(source=[float_data(2)], graph=graph, require_labels=True,
                          progress=False))
