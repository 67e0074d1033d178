"""Calibration and evaluation data: every accepted form, streamed in model-ready batches.

    for batch in data_batches(source="calib.npz", graph=graph):
        batch.x   # int8 [n, *input shape], the model's input codes
        batch.y   # int labels [n] or None

Accepted ``source`` forms (single-input models):

* ``.npy`` file: an array ``[N, *input shape]`` (memory-mapped, read batch by batch);
* ``.npz`` file: key ``x`` (samples) and optional ``y`` (integer labels), both read
  from the archive batch by batch, compressed or not;
* a directory: its ``.npy`` files (one sample or a batch each), 8-bit PNG images
  (decoded by :mod:`png_reader`, no dependency) and JPEG images (``.jpg``/``.jpeg``,
  decoded by Pillow, an optional dependency: ``pip install tflite-quantmcu[images]``),
  in sorted file name order, no labels. Images are not resized: each must already have
  the model's input height, width and channels;
* any Python iterable (a list, a generator, a ``tf.data.Dataset`` -- duck-typed, no
  TensorFlow import) yielding arrays or ``(x, y)`` pairs; each item is one sample or a
  batch (anything ``numpy.asarray`` accepts, e.g. eager tensors).

Values, by dtype:

* int8 arrays are the model's input codes (and uint8 arrays too when the model input is
  uint8 and no ``normalization`` is given);
* uint8 arrays and image files are pixels p: the real input value is
  ``(p - mean) / std`` with the given :class:`InputNormalization`, by default mean 0 and
  std 255 (p / 255, values in [0, 1]);
* float arrays are real values, used as they are, or ``(x - mean) / std`` when a
  ``normalization`` is given.

``mean`` and ``std`` are one value or one per channel (the input's last axis). Real values
are quantized with the input tensor's scale and zero point exactly as TFLite's QUANTIZE op
(``reference.model_inputs.quantize_input``). When the model input has one channel,
samples without the channel axis (``[H, W]`` or ``[N, H, W]``) are given one.

Any other dtype, a NaN/inf, a shape that is neither ``input shape`` nor
``[n, *input shape]``, labels that are not integers or do not match the samples, or no
sample at all raise :class:`CalibrationDataError` saying what was expected and got
(and the file, for data read from files). Fewer than ``MIN_CALIBRATION_SAMPLES``
calibration samples only warn (:class:`CalibrationDataWarning`): the statistics are noisy.

Memory does not grow with the number of samples: sources are read chunk by chunk
(at most ``READ_CHUNK_BYTES`` of file data at a time) and re-cut into batches of
``batch_size``. Limits (docs/limits.md), each a :class:`CalibrationDataError` raised before
the memory is spent: one sample at most ``MAX_SAMPLE_BYTES`` (checked from the ``.npy``
header or the PNG header), at most ``MAX_SAMPLES`` samples (a ``limit`` above it is a
:class:`ConfigError`; a larger source needs a ``limit``), PNG images as in :mod:`png_reader`.
A file that cannot be read (not a zip, bad CRC, empty, a dangling link, a folder where a
file should be) is a :class:`CalibrationDataError` naming it. A progress bar (tqdm, a dependency of
ai-edge-litert) goes to stderr unless ``progress=False``.
"""
from __future__ import annotations

import math
import os
import stat
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from tflite_quantmcu.errors import CalibrationDataError, CalibrationDataWarning, ConfigError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Graph, Tensor
from tflite_quantmcu.quant.png_reader import MAX_IMAGE_BYTES, read_png
from tflite_quantmcu.reference.model_inputs import quantize_input

NPY_READ_ROWS = 256
READ_CHUNK_BYTES = 16 << 20
MAX_SAMPLE_BYTES = 64 << 20
MAX_SAMPLES = 100_000
PIXEL_SCALE = 255.0
JPEG_SUFFIXES = (".jpg", ".jpeg")
SAMPLE_SUFFIXES = (".npy", ".png") + JPEG_SUFFIXES
MIN_CALIBRATION_SAMPLES = 32


@dataclass(frozen=True)
class InputNormalization:
    """Real input value = (raw - mean) / std; one value, or one per channel (last axis)."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (PIXEL_SCALE,)

    def __post_init__(self):
        for name, values in (("mean", self.mean), ("std", self.std)):
            if not values or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"input {name}: expected one or more finite numbers, got "
                                  f"{values}")
        if not all(v > 0 for v in self.std):
            raise ConfigError(f"input std: every value must be > 0, got {self.std}")

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


PIXEL_NORMALIZATION = InputNormalization()


def parse_normalization(*, mean: str | None, std: str | None) -> InputNormalization | None:
    """``--input-mean``/``--input-std`` text ("127.5" or "123.7,116.3,103.5"); both or none."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ConfigError("--input-mean and --input-std go together: real value = "
                          "(pixel - mean) / std; give both (e.g. --input-mean 127.5 "
                          "--input-std 127.5)")
    return InputNormalization(mean=_numbers(text=mean, option="--input-mean"),
                              std=_numbers(text=std, option="--input-std"))


def _numbers(*, text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as err:
        raise ConfigError(f"{option}: cannot read {text!r}; expected a number or one number "
                          "per channel separated by commas, e.g. 123.7,116.3,103.5") from err


@dataclass(frozen=True)
class ModelInput:
    """What a sample must look like: the model input's per-sample shape, dtype, quantization."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int
    tensor: Tensor

    @property
    def tensor_shape_note(self) -> str:
        return f"{self.sample_shape} or [n, *{self.sample_shape}]"


@dataclass(frozen=True)
class Batch:
    """Model-ready samples (input dtype, leading sample axis) and their labels, if any."""

    x: np.ndarray
    y: np.ndarray | None


def model_input(*, graph: Graph) -> ModelInput:
    """The single input of the graph's main subgraph as the loaders need it."""
    sub = graph.main
    if len(sub.inputs) != 1:
        raise ConfigError(f"calibration data: the model has {len(sub.inputs)} inputs; only "
                          "single-input models are supported")
    tensor = sub.tensors[sub.inputs[0]]
    shape = tuple(int(d) for d in tensor.shape)
    sample_shape = shape[1:] if shape and shape[0] == 1 else shape
    quant = tensor.quantization
    scale = float(quant.scale[0]) if quant is not None and quant.scale else None
    zero_point = int(quant.zero_point[0]) if quant is not None and quant.zero_point else 0
    dtype = np.dtype(schema.TENSOR_TYPE_NUMPY[tensor.dtype]).name
    return ModelInput(name=tensor.name, sample_shape=sample_shape, dtype=dtype, scale=scale,
                      zero_point=zero_point, tensor=tensor)


def data_batches(*, source, graph: Graph, batch_size: int = 64, require_labels: bool = False,
                 limit: int | None = None, progress: bool = True,
                 description: str = "calibration",
                 normalization: InputNormalization | None = None) -> Iterator[Batch]:
    """Model-ready batches of ``source`` (module doc); at most ``limit`` samples."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and not 1 <= limit <= MAX_SAMPLES:
        raise ConfigError(f"sample limit (--calibration-limit) must be 1..{MAX_SAMPLES:,}, "
                          f"got {limit}")
    spec = model_input(graph=graph)
    known = _known_total(source=source, limit=limit)
    if limit is None and known is not None and known > MAX_SAMPLES:
        raise CalibrationDataError(f"calibration data: {known:,} samples, more than the limit "
                                   f"of {MAX_SAMPLES:,}; pass a sample limit "
                                   "(--calibration-limit)")
    chunks = (_model_ready(spec=spec, x=x, y=y, where=where, require_labels=require_labels,
                           normalization=normalization)
              for x, y, where in source_chunks(source=source))
    batches = _rebatch(chunks=chunks, batch_size=batch_size, limit=limit)
    yield from _with_progress(batches=batches, enabled=progress, description=description,
                              total=known)


def calibration_batches(*, source, graph: Graph, batch_size: int = 64,
                        limit: int | None = None, progress: bool = True,
                        normalization: InputNormalization | None = None
                        ) -> Iterator[np.ndarray]:
    """Only the inputs of :func:`data_batches` (labels, if any, are dropped); warns
    (:class:`CalibrationDataWarning`) when fewer than ``MIN_CALIBRATION_SAMPLES`` came."""
    count = 0
    for batch in data_batches(source=source, graph=graph, batch_size=batch_size, limit=limit,
                              progress=progress, normalization=normalization):
        count += batch.x.shape[0]
        yield batch.x
    if count < MIN_CALIBRATION_SAMPLES:
        warnings.warn(f"only {count} calibration sample(s); ranges and entropies from fewer "
                      f"than {MIN_CALIBRATION_SAMPLES} are noisy (use a few hundred)",
                      CalibrationDataWarning, stacklevel=2)


# -- sources -> raw chunks ------------------------------------------------------------------
def source_chunks(*, source) -> Iterator[tuple[np.ndarray, np.ndarray | None, str]]:
    """(x, y or None, where) chunks of any accepted source, before any checking."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            return _directory_chunks(path=path)
        if not os.path.isfile(path):
            raise CalibrationDataError(f"calibration data {path!r}: no such file or directory")
        if path.endswith(".npy"):
            return _npy_chunks(path=path)
        if path.endswith(".npz"):
            return _npz_chunks(path=path)
        raise CalibrationDataError(f"calibration data {path!r}: expected a .npy or .npz file "
                                   "or a directory of .npy/.png files")
    if isinstance(source, np.ndarray):
        return iter([(source, None, "array")])
    if isinstance(source, Iterable):
        return _iterable_chunks(items=source)
    raise CalibrationDataError(f"calibration data: expected a path, an array or an iterable, "
                               f"got {type(source).__name__}")


def _npy_chunks(*, path: str) -> Iterator[tuple[np.ndarray, None, str]]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise CalibrationDataError(f"{path}: not a readable .npy array ({_reason(err)})") \
            from err
    if array.dtype.hasobject:
        raise CalibrationDataError(f"{path}: dtype {array.dtype} holds Python objects; "
                                   "expected int8 codes or float values")
    if not array.ndim:
        yield array, None, path
        return
    rows = _rows_per_read(shape=array.shape, dtype=array.dtype, where=path)
    for start in range(0, max(array.shape[0], 1), rows):
        yield array[start:start + rows], None, path


def _rows_per_read(*, shape: tuple[int, ...], dtype: np.dtype, where: str) -> int:
    """Rows per read under READ_CHUNK_BYTES; CalibrationDataError if one row (sample) is
    larger than MAX_SAMPLE_BYTES or the rows are more than MAX_SAMPLES."""
    row_bytes = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize
    if row_bytes > MAX_SAMPLE_BYTES:
        raise CalibrationDataError(f"{where}: one sample of shape {tuple(shape[1:])} "
                                   f"({dtype}) is {row_bytes:,} B; the limit is "
                                   f"{MAX_SAMPLE_BYTES:,} B")
    return max(1, min(NPY_READ_ROWS, READ_CHUNK_BYTES // max(row_bytes, 1)))


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _npz_chunks(*, path: str) -> Iterator[tuple[np.ndarray, np.ndarray | None, str]]:
    """Chunks of a .npz; a damaged archive (not a zip, bad CRC, truncated) is a
    CalibrationDataError whenever it shows."""
    try:
        yield from _npz_archive_chunks(path=path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            NotImplementedError) as err:
        raise CalibrationDataError(f"{path}: not a readable .npz archive "
                                   f"({_reason(err)})") from err


def _npz_archive_chunks(*, path: str) -> Iterator[tuple[np.ndarray, np.ndarray | None, str]]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "x.npy" not in names:
            raise CalibrationDataError(f"{path}: expected key 'x' (and optional 'y'), got keys "
                                       f"{sorted(n[:-4] for n in names if n.endswith('.npy'))}")
        labels = _npz_member_rows(archive=archive, member="y.npy", where=f"{path}['y']") \
            if "y.npy" in names else None
        pending = [np.zeros(0, dtype=np.int64)]   # labels read, not yet paired
        for x in _npz_member_rows(archive=archive, member="x.npy", where=f"{path}['x']"):
            y = None if labels is None else _next_labels(labels=labels, pending=pending,
                                                         count=x.shape[0] if x.ndim else 1)
            yield x, y, path
        if labels is not None and (pending[0].size or next(labels, None) is not None):
            raise CalibrationDataError(f"{path}: 'y' has more labels than 'x' has samples")


def _next_labels(*, labels: Iterator[np.ndarray], pending: list[np.ndarray],
                 count: int) -> np.ndarray:
    """The next `count` labels (x and y are read in chunks of different row counts); fewer
    if 'y' ends early (reported by the label check)."""
    while pending[0].shape[0] < count:
        more = next(labels, None)
        if more is None:
            break
        pending[0] = np.concatenate([pending[0], np.atleast_1d(more)])
    taken, pending[0] = pending[0][:count], pending[0][count:]
    return taken


def _npz_member_rows(*, archive: zipfile.ZipFile, member: str,
                     where: str) -> Iterator[np.ndarray]:
    """Rows of one .npy member, at most READ_CHUNK_BYTES at a time, without reading it whole;
    a header that promises more data than the member holds is refused before reading."""
    size = archive.getinfo(member).file_size
    with archive.open(member) as handle:
        shape, dtype = _npy_header(handle=handle, where=where)
        if not shape:
            yield np.frombuffer(handle.read(dtype.itemsize), dtype=dtype).reshape(())
            return
        promised = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if promised > size:
            raise CalibrationDataError(f"{where}: header promises {promised:,} B of array "
                                       f"data ({shape}, {dtype}), the member holds {size:,} B")
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        step = _rows_per_read(shape=shape, dtype=dtype, where=where)
        for start in range(0, shape[0], step):
            rows = min(step, shape[0] - start)
            raw = handle.read(rows * row_items * dtype.itemsize)
            if len(raw) != rows * row_items * dtype.itemsize:
                raise CalibrationDataError(f"{where}: truncated array data")
            yield np.frombuffer(raw, dtype=dtype).reshape((rows,) + tuple(shape[1:]))


def _npy_header(*, handle, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise CalibrationDataError(f"{where}: .npy format version {version} not supported")
        shape, fortran, dtype = reader(handle)
    except (ValueError, EOFError) as err:
        raise CalibrationDataError(f"{where}: not a readable .npy array ({err})") from err
    if fortran and len(shape) > 1:
        raise CalibrationDataError(f"{where}: Fortran-ordered arrays are not supported; save it "
                                   "with numpy.ascontiguousarray")
    if dtype.hasobject:
        raise CalibrationDataError(f"{where}: dtype {dtype} holds Python objects; expected "
                                   "int8 codes or float values")
    return tuple(shape), dtype


def _directory_chunks(*, path: str) -> Iterator[tuple[np.ndarray, None, str]]:
    try:
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(SAMPLE_SUFFIXES))
    except OSError as err:
        raise CalibrationDataError(f"{path}: cannot list the folder ({_reason(err)})") from err
    if len(names) > MAX_SAMPLES:
        raise CalibrationDataError(f"{path}: {len(names):,} sample files; the limit is "
                                   f"{MAX_SAMPLES:,}")
    for name in names:
        file = os.path.join(path, name)
        _require_regular_file(path=file)
        if name.lower().endswith(".png"):
            yield read_png(path=file), None, file
        elif name.lower().endswith(JPEG_SUFFIXES):
            yield read_jpeg(path=file), None, file
        else:
            yield from _npy_chunks(path=file)


def _require_regular_file(*, path: str) -> None:
    """A regular file or a link to one (not a folder, a dangling link or a link loop)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        what = "a dangling or looping link" if os.path.islink(path) else "unreadable"
        raise CalibrationDataError(f"{path}: {what} ({_reason(err)})") from err
    if not stat.S_ISREG(mode):
        raise CalibrationDataError(f"{path}: not a regular file; a calibration folder holds "
                                   ".npy and .png files")


def read_jpeg(*, path: str) -> np.ndarray:
    """A JPEG image as uint8 [H, W, 1] (greyscale) or [H, W, 3] (any colour mode), by Pillow."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise CalibrationDataError(
            f"{path}: reading JPEG needs Pillow (pip install 'tflite-quantmcu[images]' or "
            "pip install pillow); or convert the images to .npy/.npz or PNG") from err
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                raise CalibrationDataError(f"{path}: not a JPEG file (Pillow reads "
                                           f"{image.format})")
            width, height = image.size
            if width * height * 3 > MAX_IMAGE_BYTES:
                raise CalibrationDataError(
                    f"{path}: a {width}x{height} image is over the decoded-image limit of "
                    f"{MAX_IMAGE_BYTES:,} bytes")
            grey = image.mode in ("L", "1")
            pixels = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise CalibrationDataError(f"{path}: cannot decode JPEG ({err})") from err
    return pixels[..., None] if grey else pixels


def _iterable_chunks(*, items: Iterable) -> Iterator[tuple[np.ndarray, np.ndarray | None, str]]:
    for index, item in enumerate(items):
        where = f"item {index} of the calibration iterable"
        if isinstance(item, (tuple, list)) and len(item) == 2:
            yield _as_array(value=item[0], where=where), _as_array(value=item[1],
                                                                    where=where), where
        elif isinstance(item, (tuple, list)):
            raise CalibrationDataError(f"{where}: expected an array or an (x, y) pair, got a "
                                       f"{type(item).__name__} of {len(item)} items")
        else:
            yield _as_array(value=item, where=where), None, where


def _as_array(*, value, where: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise CalibrationDataError(f"{where}: cannot be read as an array ({err})") from err


# -- checking and conversion ----------------------------------------------------------------
def _model_ready(*, spec: ModelInput, x: np.ndarray, y: np.ndarray | None, where: str,
                 require_labels: bool, normalization: InputNormalization | None) -> Batch:
    x = _batched(spec=spec, x=x, where=where)
    values = _converted(spec=spec, x=x, where=where, normalization=normalization)
    labels = _checked_labels(y=y, count=x.shape[0], where=where)
    if require_labels and labels is None:
        raise CalibrationDataError(f"{where}: evaluation needs labels ('y' in a .npz, or (x, y) "
                                   "pairs from an iterable), got samples only")
    return Batch(x=values, y=labels)


def _batched(*, spec: ModelInput, x: np.ndarray, where: str) -> np.ndarray:
    shape, sample = tuple(x.shape), spec.sample_shape
    if shape == sample:
        return x[None]
    if shape[1:] == sample:
        return x
    one_channel = len(sample) >= 2 and sample[-1] == 1
    if one_channel and shape == sample[:-1]:
        return x[None, ..., None]
    if one_channel and shape[1:] == sample[:-1]:
        return x[..., None]
    also = f" (or without the channel axis: {sample[:-1]} or [n, *{sample[:-1]}])" \
        if one_channel else ""
    raise CalibrationDataError(f"{where}: samples for input {spec.name!r} must have shape "
                               f"{spec.tensor_shape_note}{also}, got {shape}")


def _converted(*, spec: ModelInput, x: np.ndarray, where: str,
               normalization: InputNormalization | None) -> np.ndarray:
    codes = x.dtype == np.dtype(spec.dtype) and x.dtype.kind in "iu"
    if codes and (x.dtype != np.uint8 or normalization is None):
        return np.ascontiguousarray(x)
    if x.dtype == np.uint8:
        x = _normalized(x=x, normalization=normalization or PIXEL_NORMALIZATION, spec=spec)
    elif x.dtype.kind != "f":
        raise CalibrationDataError(
            f"{where}: dtype {x.dtype}; expected {spec.dtype} codes, uint8 pixels or float "
            "real values (e.g. images scaled as in training)")
    elif normalization is not None:
        x = _normalized(x=x, normalization=normalization, spec=spec)
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.isfinite(x).sum())
        raise CalibrationDataError(f"{where}: {bad} NaN/inf values")
    if spec.dtype == "float32" or spec.scale is None:
        if spec.dtype != "float32":
            raise CalibrationDataError(f"input {spec.name!r} ({spec.dtype}) has no scale to "
                                       "quantize float data with")
        return x.astype(np.float32)
    return quantize_input(tensor=spec.tensor, values=x)


def _normalized(*, x: np.ndarray, normalization: InputNormalization,
                spec: ModelInput) -> np.ndarray:
    """(x - mean) / std in float32, mean/std broadcast over the last (channel) axis."""
    channels = x.shape[-1] if x.ndim > 1 else 1
    for name, values in (("mean", normalization.mean), ("std", normalization.std)):
        if len(values) not in (1, channels):
            raise ConfigError(f"input {name} has {len(values)} values, input {spec.name!r} "
                              f"has {channels} channels (shape {spec.sample_shape}); give one "
                              f"value or {channels}")
    mean = np.asarray(normalization.mean, dtype=np.float32)
    std = np.asarray(normalization.std, dtype=np.float32)
    return (x.astype(np.float32) - mean) / std


def _checked_labels(*, y: np.ndarray | None, count: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 0 and count == 1:
        y = y[None]
    if y.dtype.kind not in "iu":
        raise CalibrationDataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.shape != (count,):
        raise CalibrationDataError(f"{where}: expected {count} labels (shape ({count},)) for "
                                   f"{count} samples, got shape {y.shape}")
    return y.astype(np.int64)


# -- batching and progress ------------------------------------------------------------------
def _rebatch(*, chunks: Iterator[Batch], batch_size: int, limit: int | None) -> Iterator[Batch]:
    """Re-cuts chunks into batches of ``batch_size`` (the last may be smaller)."""
    pending: list[Batch] = []
    held, emitted = 0, 0
    for chunk in chunks:
        if limit is not None and emitted + held + chunk.x.shape[0] > limit:
            chunk = _head(batch=chunk, count=limit - emitted - held)
        pending.append(chunk)
        held += chunk.x.shape[0]
        if emitted + held > MAX_SAMPLES:
            raise CalibrationDataError(f"calibration data holds more than {MAX_SAMPLES:,} "
                                       "samples, the limit; pass a sample limit "
                                       "(--calibration-limit)")
        while held >= batch_size:
            batch, pending = _take(parts=pending, count=batch_size)
            held -= batch_size
            emitted += batch_size
            yield batch
        if limit is not None and emitted + held >= limit:
            break
    if held:
        emitted += held
        yield _take(parts=pending, count=held)[0]
    if emitted == 0:
        raise CalibrationDataError("calibration data holds no samples")


def _head(*, batch: Batch, count: int) -> Batch:
    return Batch(x=batch.x[:count], y=None if batch.y is None else batch.y[:count])


def _take(*, parts: list[Batch], count: int) -> tuple[Batch, list[Batch]]:
    """The first ``count`` samples of ``parts`` as one batch, and what is left."""
    labelled = {p.y is not None for p in parts}
    if len(labelled) > 1:
        raise CalibrationDataError("calibration data mixes labelled and unlabelled samples")
    xs = np.concatenate([p.x for p in parts], axis=0)
    ys = np.concatenate([p.y for p in parts], axis=0) if labelled == {True} else None
    rest = [] if xs.shape[0] == count else \
        [Batch(x=xs[count:], y=None if ys is None else ys[count:])]
    return Batch(x=xs[:count], y=None if ys is None else ys[:count]), rest


def _known_total(*, source, limit: int | None) -> int | None:
    """Sample count when cheap to know (arrays, .npy), else None."""
    total = None
    if isinstance(source, np.ndarray) and source.ndim > 0:
        total = int(source.shape[0])
    elif isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".npy") \
            and os.path.isfile(source):
        total = _npy_rows(path=os.fspath(source))
    if limit is not None:
        return limit if total is None else min(limit, total)
    return total


def _npy_rows(*, path: str) -> int | None:
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (ValueError, EOFError, OSError):
        return None   # reported with its reason when the data is read
    return int(shape[0]) if shape else None


def _with_progress(*, batches: Iterator[Batch], enabled: bool, description: str,
                   total: int | None) -> Iterator[Batch]:
    if not enabled:
        yield from batches
        return
    with tqdm(total=total, desc=description, unit="sample", file=sys.stderr,
              leave=False) as bar:
        for batch in batches:
            bar.update(batch.x.shape[0])
            yield batch
