"""Calibration data as users have it: uint8 pixels, mean/std normalisation, images without a
channel axis, JPEG folders, shape errors that name the file, a warning for tiny sets.

Oracles: TFLite's input quantization applied by hand (round half away from zero, clamp)
to (pixel - mean) / std computed in float32; JPEG pixels as Pillow decodes them (and
close to the encoded picture); PNGs written by the specification-based writer of
test_calibration_data.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from cli_output import message_lines

from test_calibration_data import _png_bytes, hand_quantized
from testdata.synthetic_models import Conv, Mean, ModelSpec, build_int8_graph
from tflite_quantmcu.errors import CalibrationDataError, CalibrationDataWarning, ConfigError
from tflite_quantmcu.io_types import IoTypes, convert_io_types
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.quant.calibration_data import (MIN_CALIBRATION_SAMPLES, InputNormalization,
                                                    calibration_batches, data_batches,
                                                    model_input, parse_normalization,
                                                    read_jpeg)

RGB, GREY = (6, 5, 3), (6, 5, 1)


def graph_of(shape):
    return build_int8_graph(spec=ModelSpec(input_shape=shape, seed=3,
                                           layers=(Conv(filters=4), Mean())))


@pytest.fixture(scope="module")
def rgb():
    return graph_of(RGB)


@pytest.fixture(scope="module")
def grey():
    return graph_of(GREY)


def pixels(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


def codes(source, graph, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationDataWarning)
        return np.concatenate([b.x for b in data_batches(source=source, graph=graph,
                                                         progress=False, **kwargs)])


def expected(*, raw, graph, mean=(0.0,), std=(255.0,)) -> np.ndarray:
    real = (raw.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return hand_quantized(x=real, graph=graph)


# ---- uint8 pixels and normalisation -------------------------------------------------------
def test_uint8_pixels_default_to_unit_range(rgb):
    raw = pixels((9,) + RGB)
    np.testing.assert_array_equal(codes([raw], rgb), expected(raw=raw, graph=rgb))


@pytest.mark.parametrize("mean,std", [((127.5,), (127.5,)),
                                      ((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))])
def test_uint8_pixels_with_scalar_or_per_channel_mean_std(rgb, mean, std):
    raw = pixels((7,) + RGB, seed=1)
    norm = InputNormalization(mean=mean, std=std)
    got = codes([raw], rgb, normalization=norm)
    np.testing.assert_array_equal(got, expected(raw=raw, graph=rgb, mean=mean, std=std))
    # per channel really is per channel: channel 0 alone, hand-computed in Python floats
    spec = model_input(graph=rgb)
    real0 = (float(raw[0, 0, 0, 0]) - mean[0]) / std[0]
    assert abs(int(got[0, 0, 0, 0]) - (round(real0 / spec.scale) + spec.zero_point)) <= 1


def test_float_data_is_normalised_only_when_asked(rgb):
    raw = np.random.default_rng(2).uniform(0, 255, size=(4,) + RGB).astype(np.float32)
    np.testing.assert_array_equal(codes([raw / 255], rgb),
                                  hand_quantized(x=raw / np.float32(255), graph=rgb))
    norm = InputNormalization(mean=(10.0,), std=(200.0,))
    np.testing.assert_array_equal(codes([raw], rgb, normalization=norm),
                                  expected(raw=raw, graph=rgb, mean=(10.0,), std=(200.0,)))


def test_int8_codes_are_never_normalised(rgb):
    raw = np.random.default_rng(3).integers(-128, 128, size=(3,) + RGB).astype(np.int8)
    norm = InputNormalization(mean=(127.5,), std=(127.5,))
    np.testing.assert_array_equal(codes([raw], rgb, normalization=norm), raw)


def test_uint8_input_model_takes_uint8_as_codes_unless_normalised(rgb):
    graph = convert_io_types(graph=rgb, options=IoTypes(input_type="uint8"))
    assert model_input(graph=graph).dtype == "uint8"
    raw = pixels((3,) + RGB, seed=4)
    np.testing.assert_array_equal(codes([raw], graph), raw)
    norm = InputNormalization(mean=(0.0,), std=(255.0,))
    spec = model_input(graph=graph)
    real = raw.astype(np.float32) / np.float32(255)
    want = np.clip(np.round(real.astype(np.float64) / np.float32(spec.scale)) + spec.zero_point,
                   0, 255)   # no exact .5 ties at these values: plain rounding is TFLite's here
    np.testing.assert_array_equal(codes([raw], graph, normalization=norm), want)


@pytest.mark.parametrize("mean,std,words", [
    ((1.0, 2.0), (255.0,), ["mean has 2 values", "3 channels"]),
    ((0.0,), (1.0, 2.0, 3.0, 4.0), ["std has 4 values", "3 channels"]),
])
def test_channel_count_mismatch_is_a_config_error(rgb, mean, std, words):
    with pytest.raises(ConfigError) as err:
        codes([pixels((1,) + RGB)], rgb, normalization=InputNormalization(mean=mean, std=std))
    for word in words:
        assert word in str(err.value)


def test_parse_normalization():
    assert parse_normalization(mean=None, std=None) is None
    norm = parse_normalization(mean="123.7,116.3,103.5", std="58")
    assert norm == InputNormalization(mean=(123.7, 116.3, 103.5), std=(58.0,))
    for mean, std, words in [("1", None, "go together"), (None, "2", "go together"),
                             ("a,b", "1", "--input-mean"), ("1", "", "--input-std"),
                             ("1", "0", "> 0"), ("1", "-2,1,1", "> 0"), ("nan", "1", "finite")]:
        with pytest.raises(ConfigError, match=words):
            parse_normalization(mean=mean, std=std)


# ---- channel axis --------------------------------------------------------------------------
def test_one_channel_model_accepts_images_without_channel_axis(tmp_path, grey):
    raw = pixels((5, 6, 5), seed=5)
    want = expected(raw=raw[..., None], graph=grey)
    np.testing.assert_array_equal(codes([raw], grey), want)            # (N, H, W)
    np.testing.assert_array_equal(codes(list(raw), grey), want)        # (H, W) each
    np.savez(tmp_path / "c.npz", x=raw, y=np.arange(5))
    np.testing.assert_array_equal(codes(tmp_path / "c.npz", grey), want)
    floats = raw.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(codes([floats], grey), want)


def test_three_channel_model_does_not_guess_a_channel_axis(rgb):
    with pytest.raises(CalibrationDataError, match=r"\(6, 5, 3\).*got \(2, 6, 5\)"):
        codes([pixels((2, 6, 5))], rgb)


# ---- image folders -------------------------------------------------------------------------
def test_png_folder_of_greyscale_images(tmp_path, grey):
    images = [pixels(GREY, seed=s) for s in (6, 7)]
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(_png_bytes(image=image, filters=[1] * GREY[0]))
    norm = InputNormalization(mean=(127.5,), std=(127.5,))
    np.testing.assert_array_equal(codes(tmp_path, grey, normalization=norm),
                                  expected(raw=np.stack(images), graph=grey, mean=(127.5,),
                                           std=(127.5,)))


def smooth_picture(shape) -> np.ndarray:
    """A smooth gradient (JPEG keeps it within a few levels)."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    layers = [(40 + 20 * rows + 10 * cols + 30 * c) % 256 for c in range(shape[2])]
    return np.stack(layers, axis=-1).astype(np.uint8)


@pytest.mark.parametrize("shape,mode", [(RGB, "RGB"), (GREY, "L")])
def test_jpeg_folder(tmp_path, shape, mode):
    image_module = pytest.importorskip("PIL.Image")
    picture = smooth_picture(shape)
    source = picture if mode == "RGB" else picture[..., 0]
    image_module.fromarray(source, mode=mode).save(tmp_path / "a.jpg", quality=95)
    decoded = read_jpeg(path=str(tmp_path / "a.jpg"))
    assert decoded.shape == shape and decoded.dtype == np.uint8
    with image_module.open(tmp_path / "a.jpg") as reopened:
        np.testing.assert_array_equal(decoded.reshape(reopened.size[1], reopened.size[0], -1),
                                      np.asarray(reopened).reshape(shape))
    assert int(np.abs(decoded.astype(int) - picture).max()) <= 8
    graph = graph_of(shape)
    np.testing.assert_array_equal(codes(tmp_path, graph),
                                  expected(raw=decoded[None], graph=graph))


def test_image_of_the_wrong_size_names_the_file_and_both_shapes(tmp_path, rgb):
    (tmp_path / "a.png").write_bytes(_png_bytes(image=pixels(RGB), filters=[0] * RGB[0]))
    wrong = pixels((4, 5, 3))
    (tmp_path / "b.png").write_bytes(_png_bytes(image=wrong, filters=[0] * 4))
    with pytest.raises(CalibrationDataError) as err:
        codes(tmp_path, rgb)
    text = str(err.value)
    assert str(tmp_path / "b.png") in text and "(6, 5, 3)" in text and "got (4, 5, 3)" in text


def test_jpeg_of_the_wrong_size_and_a_broken_jpeg(tmp_path, rgb):
    image_module = pytest.importorskip("PIL.Image")
    image_module.fromarray(smooth_picture((8, 8, 3))).save(tmp_path / "big.jpeg")
    with pytest.raises(CalibrationDataError, match=r"big\.jpeg.*\(6, 5, 3\).*got \(8, 8, 3\)"):
        codes(tmp_path, rgb)
    (tmp_path / "big.jpeg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(CalibrationDataError, match=r"big\.jpeg: cannot decode JPEG"):
        codes(tmp_path, rgb)


# ---- few samples ---------------------------------------------------------------------------
def test_fewer_than_32_calibration_samples_warn(rgb):
    few = pixels((MIN_CALIBRATION_SAMPLES - 1,) + RGB)
    with pytest.warns(CalibrationDataWarning, match=f"only {MIN_CALIBRATION_SAMPLES - 1} "):
        list(calibration_batches(source=[few], graph=rgb, progress=False))
    enough = pixels((MIN_CALIBRATION_SAMPLES,) + RGB)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationDataWarning)
        list(calibration_batches(source=[enough], graph=rgb, progress=False))


# ---- command line --------------------------------------------------------------------------
def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflite_quantmcu.cli", "convert", *map(str, args)],
                          capture_output=True, text=True, check=False)


def test_cli_uint8_npz_with_mean_std_warns_and_converts(tmp_path):
    from fixture_models import TESTDATA
    raw = pixels((20, 64, 64), seed=8)   # (N, H, W) for a 64x64x1 model
    np.savez(tmp_path / "calib.npz", x=raw)
    model = TESTDATA / "digits_mnv1_w025_r64_int8.tflite"
    proc = run_cli(model, "--out", tmp_path / "out", "--sram", "256KB", "--split-after", "4",
                   "--patch-grid", "2x2", "--calibration", tmp_path / "calib.npz",
                   "--input-mean", "0", "--input-std", "255", "--no-tflm", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert "warning: only 20 calibration sample(s)" in proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_normalization"] == {"mean": [0.0], "std": [255.0]}
    assert report["calibration_samples"] + report["holdout_samples"] == 20


@pytest.mark.parametrize("extra,words", [
    (["--input-mean", "127.5"], "--input-mean and --input-std go together"),
    (["--input-mean", "1,2", "--input-std", "1"], "mean has 2 values"),
    (["--input-mean", "x", "--input-std", "1"], "--input-mean: cannot read 'x'"),
])
def test_cli_bad_normalisation_exits_2_with_one_line(tmp_path, rgb, extra, words):
    model = tmp_path / "m.tflite"
    model.write_bytes(write_model_bytes(graph=rgb))
    np.save(tmp_path / "c.npy", pixels((40,) + RGB))
    proc = run_cli(model, "--out", tmp_path / "out", "--sram", "256KB", "--policy", "patch-int8",
                   "--calibration", tmp_path / "c.npy", "--eval-data", tmp_path / "c.npy",
                   "--no-tflm", *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert not (tmp_path / "out").exists()
