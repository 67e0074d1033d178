"""The CLI bad-input matrix (issue 15): each case ends in one `error:` line naming the flag or
file and the reason, exit 2, no traceback, and no output folder left behind."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from cli_output import message_lines

from fixture_models import fixture_path
from tflite_quantmcu.cli import main

MODEL = fixture_path("fashion_mnv2_r96_int8.tflite")   # input int8 [1, 96, 96, 3]
SAMPLE_SHAPE = (96, 96, 3)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """main() in this process: an escaping exception fails the test (no traceback allowed)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:   # argparse's own usage errors
        code = err.code
    return code, capsys.readouterr().err


def _assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _convert(tmp_path: Path, capsys, *extra) -> tuple[int, str]:
    out = tmp_path / "out"
    result = _run(["convert", MODEL, "--out", out, "--sram", "256KB", "--no-tflm",
                   "--no-verify", *extra], capsys)
    assert not out.exists(), "a failed convert must not leave an output folder"
    return result


def _good_calibration(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(-128, 128, size=(4, *SAMPLE_SHAPE), dtype=np.int8))
    return path


# -- flags ------------------------------------------------------------------------------------
FLAG_CASES = {
    "sram_400_digits": (["--sram", "1" * 400], ["--sram", "400 digits"]),
    "sram_over_4gib": (["--sram", "5000MB"], ["--sram", "at most"]),
    "sram_arabic_digits": (["--sram", "\u0664KB"], ["--sram", "ASCII digits"]),
    "grid_arabic_digits": (["--patch-grid", "\u0664x\u0664"], ["--patch-grid", "ASCII"]),
    "grid_superscript": (["--patch-grid", "\u00b2x2"], ["--patch-grid", "ASCII"]),
    "grid_huge": (["--patch-grid", "9" * 400 + "x2"], ["--patch-grid"]),
    "split_superscript": (["--split-after", "\u00b2"], ["split", "\u00b2", "no op"]),
    "split_arabic_digit": (["--split-after", "\u0663"], ["split", "\u0663", "no op"]),
    "mac_overhead_nan": (["--max-mac-overhead", "nan"], ["--max-mac-overhead", "nan"]),
    "mac_overhead_negative": (["--max-mac-overhead", "-0.5"], ["--max-mac-overhead"]),
    "file_growth_inf": (["--max-file-growth", "inf"], ["--max-file-growth", "inf"]),
    "bins_two_billion": (["--bins", "2000000000"], ["--bins", "2000000000", "2..256"]),
    "bins_one": (["--bins", "1"], ["--bins", "2..256"]),
    "phi_nan": (["--phi", "nan"], ["phi", "nan"]),
    "lambda_nan": (["--lambda", "nan"], ["lam", "nan"]),
    "calibration_limit_zero": (["--calibration-limit", "0"], ["--calibration-limit", "got 0"]),
    "calibration_limit_huge": (["--calibration-limit", "9" * 400], ["--calibration-limit"]),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flag(tmp_path, capsys, case):
    extra, fragments = FLAG_CASES[case]
    code, err = _convert(tmp_path, capsys, "--calibration", _good_calibration(tmp_path), *extra)
    _assert_user_error(code, err, *fragments)


# -- calibration files ------------------------------------------------------------------------
def _npz_not_a_zip(folder: Path) -> Path:
    path = folder / "notes.npz"
    path.write_text("not a zip archive\n")
    return path


def _npz_bad_crc(folder: Path) -> Path:
    path = folder / "crc.npz"
    np.savez(path, x=np.zeros((2, *SAMPLE_SHAPE), dtype=np.int8))
    data = bytearray(path.read_bytes())
    data[data.find(b"x.npy") + 5 + 200] ^= 0xFF   # a byte of the stored (uncompressed) array
    path.write_bytes(bytes(data))
    return path


def _npz_header_promises_too_much(folder: Path) -> Path:
    path = folder / "promise.npz"
    np.savez(path, x=np.zeros((2, *SAMPLE_SHAPE), dtype=np.int8))
    data = path.read_bytes().replace(b"(2, 96, 96, 3)", b"(9, 96, 96, 3)")
    path.write_bytes(data)
    return path


def _empty_npy(folder: Path) -> Path:
    path = folder / "empty.npy"
    path.write_bytes(b"")
    return path


def _npy_truncated(folder: Path) -> Path:
    """A header promising 10^12 bytes in a file of a few bytes."""
    path = folder / "promise.npy"
    np.save(path, np.zeros((1, 4), dtype=np.int8))
    path.write_bytes(path.read_bytes().replace(b"(1, 4)", b"(1, 1000000000000)"))
    return path


def _npy_huge_sample(folder: Path) -> Path:
    """One 100 MB sample (a sparse file: no disk or memory spent) over the 64 MiB limit."""
    path = folder / "huge.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|i1", "fortran_order": False,
                                                      "shape": (1, 100_000_000)})
        handle.truncate(handle.tell() + 100_000_000)
    return path


def _png(*, width: int, height: int, channels: int = 3, ihdr: bytes | None = None,
         pixels: bytes | None = None) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + \
            struct.pack(">I", zlib.crc32(kind + payload))
    color = {1: 0, 3: 2, 4: 6}[channels]
    header = ihdr if ihdr is not None else struct.pack(">IIBBBBB", width, height, 8, color,
                                                       0, 0, 0)
    raw = pixels if pixels is not None else bytes(height * (width * channels + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + \
        chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _png_folder(folder: Path, *entries: str) -> Path:
    images = folder / "images"
    images.mkdir()
    (images / "a_good.png").write_bytes(_png(width=96, height=96))
    for entry in entries:
        if entry == "loop":
            (images / "b_loop.png").symlink_to(images / "c_loop.png")
            (images / "c_loop.png").symlink_to(images / "b_loop.png")
        elif entry == "dangling":
            (images / "b_dangling.png").symlink_to(images / "missing.png")
        elif entry == "directory":
            (images / "b_dir.png").mkdir()
        elif entry == "short_ihdr":
            (images / "b_short.png").write_bytes(_png(width=1, height=1, ihdr=b"\x00" * 5))
        elif entry == "bomb":
            # 1 MB of zeros compresses to ~1 KB; the header claims 60000 x 60000 RGB
            (images / "b_bomb.png").write_bytes(_png(width=60000, height=60000,
                                                     pixels=bytes(1 << 20)))
        elif entry == "more_than_promised":
            (images / "b_more.png").write_bytes(_png(width=96, height=96,
                                                     pixels=bytes(50 << 20)))
    return images


CALIBRATION_CASES = {
    "npz_not_a_zip": (_npz_not_a_zip, ["notes.npz", "not a readable .npz", "not a zip"]),
    "npz_bad_crc": (_npz_bad_crc, ["crc.npz", "CRC"]),
    "npz_header_promises_more": (_npz_header_promises_too_much, ["promise.npz", "promises"]),
    "npy_empty": (_empty_npy, ["empty.npy", "not a readable .npy"]),
    "npy_huge_sample": (_npy_huge_sample, ["huge.npy", "100,000,000 B", "limit"]),
    "npy_header_promises_more": (_npy_truncated, ["promise.npy", "greater than file size"]),
    "png_symlink_loop": (lambda d: _png_folder(d, "loop"), ["b_loop.png", "link"]),
    "png_dangling_link": (lambda d: _png_folder(d, "dangling"), ["b_dangling.png", "link"]),
    "png_directory_inside": (lambda d: _png_folder(d, "directory"),
                             ["b_dir.png", "not a regular file"]),
    "png_short_ihdr": (lambda d: _png_folder(d, "short_ihdr"), ["b_short.png", "IHDR", "5 bytes"]),
    "png_decompression_bomb": (lambda d: _png_folder(d, "bomb"),
                               ["b_bomb.png", "60000x60000x3", "limit"]),
    "png_more_data_than_header": (lambda d: _png_folder(d, "more_than_promised"),
                                  ["b_more.png", "expected"]),
}


@pytest.mark.parametrize("case", sorted(CALIBRATION_CASES))
def test_bad_calibration_data(tmp_path, capsys, case):
    make, fragments = CALIBRATION_CASES[case]
    code, err = _convert(tmp_path, capsys, "--calibration", make(tmp_path))
    _assert_user_error(code, err, "error: ", *fragments)


def test_eval_labels_out_of_range(tmp_path, capsys):
    path = tmp_path / "eval.npz"
    np.savez(path, x=np.zeros((3, *SAMPLE_SHAPE), dtype=np.int8),
             y=np.array([0, 1, 10 ** 12], dtype=np.int64))
    code, err = _convert(tmp_path, capsys, "--policy", "patch-int8", "--eval-data", path)
    _assert_user_error(code, err, "eval.npz", "class indices 0..9", str(10 ** 12))


# -- plan files -------------------------------------------------------------------------------
def _plan(bits: str = '{"x": 8}', version: str = "1") -> bytes:
    return (f'{{"version": {version}, "policy": "quantmcu", "options": {{}}, '
            f'"bits": {bits}}}').encode()


PLAN_CASES = {
    "bits_null": (_plan(bits="null"), ["'bits' must be an object", "NoneType"]),
    "bits_list": (_plan(bits="[8, 4]"), ["'bits' must be an object", "list"]),
    "bits_infinity": (_plan(bits='{"x": Infinity}'), ["Infinity"]),
    "bits_nan": (_plan(bits='{"x": NaN}'), ["NaN"]),
    "bits_null_width": (_plan(bits='{"x": null}'), ["integers 8, 4 or 2", "None"]),
    "bits_four_and_a_half": (_plan(bits='{"x": 4.5}'), ["integers 8, 4 or 2", "4.5"]),
    "bits_true": (_plan(bits='{"x": true}'), ["integers 8, 4 or 2", "True"]),
    "version_true": (_plan(version="true"), ["expected version 1", "True"]),
    "version_float": (_plan(version="1.0"), ["expected version 1", "1.0"]),
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
    "not_utf8": (b'{"version": 1, "policy": "\xff\xfe"}', ["plan.json", "not UTF-8"]),
    "not_json": (b"{version: 1", ["not valid JSON"]),
    "top_level_list": (b"[1, 2]", ["expected a JSON object"]),
    "branches_of_numbers": (b'{"version": 1, "policy": "q", "bits": {}, "branches": [1]}',
                            ["malformed"]),
}


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_bad_plan_file(tmp_path, capsys, case):
    data, fragments = PLAN_CASES[case]
    plan = tmp_path / "plan.json"
    plan.write_bytes(data)
    code, err = _convert(tmp_path, capsys, "--plan", plan)
    _assert_user_error(code, err, "plan", *fragments)


def test_plan_file_that_is_a_directory(tmp_path, capsys):
    code, err = _convert(tmp_path, capsys, "--plan", tmp_path)
    _assert_user_error(code, err, "--plan")


def test_valid_plan_json_still_replays(tmp_path):
    """The strict reader accepts what `to_json` writes (guards against over-rejecting)."""
    from tflite_quantmcu.quant.plan import PLAN_FORMAT_VERSION, BitwidthPlan
    plan = BitwidthPlan(policy="quantmcu", options={"lam": 0.6}, bits={"a": 8, "b": 4, "c": 2})
    assert BitwidthPlan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["version"] == PLAN_FORMAT_VERSION
