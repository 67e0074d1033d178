"""A minimal PNG decoder (numpy + zlib) for calibration image folders.

No image library is a runtime dependency of tflite-quantmcu (Pillow is not
installed with it), so calibration folders of PNG files are read here. Supported:
8-bit greyscale, greyscale+alpha, RGB and RGBA, not interlaced -- what image
datasets exported with Pillow, OpenCV or matplotlib normally are. Anything else
(16-bit, palette, Adam7 interlacing, JPEG) raises :class:`CalibrationDataError`
naming the file and what it holds; convert such data to ``.npy`` instead.
Limits (docs/limits.md): a PNG file of at most ``MAX_PNG_FILE_BYTES``; the decoded image
(height x width x channels, from the IHDR header) at most ``MAX_IMAGE_BYTES``, checked
before anything is inflated, and inflating stops at the size the header promises, so a
small file can never expand into gigabytes.
The five PNG row filters (None, Sub, Up, Average, Paeth) are those of the PNG
specification (ISO/IEC 15948, section 9).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from tflite_quantmcu.errors import CalibrationDataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS_OF_COLOR_TYPE = {0: 1, 2: 3, 4: 2, 6: 4}
IHDR_BYTES = 13
MAX_PNG_FILE_BYTES = 64 << 20
MAX_IMAGE_BYTES = 16 << 20


def read_png(*, path: str) -> np.ndarray:
    """The image as uint8 [H, W, C] (C = 1, 2, 3 or 4)."""
    data = _read_limited(path=path)
    if not data.startswith(PNG_SIGNATURE):
        raise CalibrationDataError(f"{path}: not a PNG file (bad signature)")
    header, compressed = _png_chunks(path=path, data=data)
    height, width, channels = _png_geometry(path=path, header=header)
    stride = width * channels
    expected = height * (stride + 1)
    raw = _inflate(path=path, compressed=compressed, limit=expected)
    if len(raw) != expected:
        raise CalibrationDataError(f"{path}: PNG image data holds {len(raw)} bytes or more, "
                                   f"expected {expected} for {height}x{width}x{channels}")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    return _unfilter(path=path, rows=rows, channels=channels).reshape(height, width, channels)


def _read_limited(*, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PNG_FILE_BYTES + 1)
    except OSError as err:
        raise CalibrationDataError(f"{path}: cannot be read ({err.strerror})") from err
    if len(data) > MAX_PNG_FILE_BYTES:
        raise CalibrationDataError(f"{path}: PNG file larger than {MAX_PNG_FILE_BYTES:,} B, "
                                   "the limit")
    return data


def _inflate(*, path: str, compressed: bytes, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the zlib stream (one more shows it holds too much)."""
    try:
        return zlib.decompressobj().decompress(compressed, limit + 1)
    except zlib.error as err:
        raise CalibrationDataError(f"{path}: corrupt PNG image data ({err})") from err


def _png_chunks(*, path: str, data: bytes) -> tuple[bytes, bytes]:
    """(IHDR payload, concatenated IDAT payloads)."""
    pos = len(PNG_SIGNATURE)
    header, idat = None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = payload
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise CalibrationDataError(f"{path}: truncated PNG (no IHDR or IDAT chunk)")
    return header, b"".join(idat)


def _png_geometry(*, path: str, header: bytes) -> tuple[int, int, int]:
    if len(header) < IHDR_BYTES:
        raise CalibrationDataError(f"{path}: PNG header (IHDR) of {len(header)} bytes, "
                                   f"expected {IHDR_BYTES}")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header[:IHDR_BYTES])
    if depth != 8 or color not in CHANNELS_OF_COLOR_TYPE or interlace != 0:
        raise CalibrationDataError(
            f"{path}: PNG with bit depth {depth}, colour type {color}, interlace {interlace}; "
            "expected 8-bit greyscale/RGB(A), not interlaced (convert it to .npy)")
    channels = CHANNELS_OF_COLOR_TYPE[color]
    if width == 0 or height == 0:
        raise CalibrationDataError(f"{path}: PNG of {width}x{height} pixels holds no image")
    if height * width * channels > MAX_IMAGE_BYTES:
        raise CalibrationDataError(
            f"{path}: PNG of {height}x{width}x{channels} would decode to "
            f"{height * width * channels:,} B; the limit is {MAX_IMAGE_BYTES:,} B")
    return height, width, channels


def _unfilter(*, path: str, rows: np.ndarray, channels: int) -> np.ndarray:
    """Undo the per-row filters; returns uint8 [H, W*C]."""
    height, stride = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((height, stride), dtype=np.int32)
    prior = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:].astype(np.int32)
        out[y] = _unfilter_row(path=path, kind=kind, line=line, prior=prior, bpp=channels)
        prior = out[y]
    return out.astype(np.uint8)


def _unfilter_row(*, path: str, kind: int, line: np.ndarray, prior: np.ndarray,
                  bpp: int) -> np.ndarray:
    if kind == 0:
        return line
    if kind == 2:
        return (line + prior) & 0xFF
    if kind not in (1, 3, 4):
        raise CalibrationDataError(f"{path}: unknown PNG row filter {kind}")
    row = np.zeros_like(line)
    for x in range(line.size):
        left = row[x - bpp] if x >= bpp else 0
        up = prior[x]
        corner = prior[x - bpp] if x >= bpp else 0
        if kind == 1:
            predictor = left
        elif kind == 3:
            predictor = (left + up) // 2
        else:
            predictor = _paeth(left=left, up=up, corner=corner)
        row[x] = (line[x] + predictor) & 0xFF
    return row


def _paeth(*, left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    return up if to_up <= to_corner else corner
