"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (numpy only).

The package installs the original idx files, gzip-compressed, under
``/usr/share/datasets/fashion-mnist/``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60000 images)
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10000 images)

``load_split`` returns the raw 28x28 uint8 images and uint8 labels,
``to_model_input`` turns them into the bundled model's float32 input
(96x96x3, values in [0, 1]) and ``quantize_input`` applies the model's int8
input quantization.  Nothing here imports TensorFlow, and every function is
deterministic: the same images always give bit-identical outputs.
"""

import gzip
import os
import zipfile

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"
APT_PACKAGE = "dataset-fashion-mnist"
IMAGE_SIDE = 28
MODEL_SIDE = 96
MODEL_CHANNELS = 3
NUM_CLASSES = 10
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IDX_MAGIC = {1: 2049, 3: 2051}  # unsigned-byte idx files of rank 1 and 3


def split_paths(*, split: str, data_dir: str = DATA_DIR) -> tuple:
    """Return (images_path, labels_path) of a split ("train" or "test")."""
    if split not in _FILE_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _FILE_PREFIX[split]
    return (
        os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"),
        os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"),
    )


def _read_idx(*, path: str, rank: int) -> np.ndarray:
    """Read one gzip-compressed unsigned-byte idx file of the given rank."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Fashion-MNIST file {path} is missing; install the Debian package "
            f"'{APT_PACKAGE}' (apt-get install {APT_PACKAGE})"
        )
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    header = np.frombuffer(raw, dtype=">u4", count=1 + rank)
    if int(header[0]) != _IDX_MAGIC[rank]:
        raise ValueError(f"{path}: bad idx magic {int(header[0])}, expected {_IDX_MAGIC[rank]}")
    shape = tuple(int(d) for d in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + rank))
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} data bytes, header says shape {shape}")
    return data.reshape(shape).copy()


def load_split(*, split: str, data_dir: str = DATA_DIR) -> tuple:
    """Return (images uint8 [N, 28, 28], labels uint8 [N]) of "train" or "test"."""
    images_path, labels_path = split_paths(split=split, data_dir=data_dir)
    images = _read_idx(path=images_path, rank=3)
    labels = _read_idx(path=labels_path, rank=1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"unexpected shapes: images {images.shape}, labels {labels.shape}")
    return images, labels


def _bilinear_taps(*, src: int, dst: int) -> tuple:
    """Source indices and weights of a half-pixel-centre bilinear resize."""
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, pos - lo


def upscale(*, images: np.ndarray, side: int = MODEL_SIDE) -> np.ndarray:
    """Bilinear (half-pixel centres, edge-clamped) resize of [N, H, W] to [N, side, side].

    Computed in float64 with plain element-wise numpy arithmetic (no BLAS), so
    the result is bit-identical on every machine. Values keep the input range.
    """
    img = np.asarray(images, dtype=np.float64)
    lo_r, hi_r, w_r = _bilinear_taps(src=img.shape[1], dst=side)
    lo_c, hi_c, w_c = _bilinear_taps(src=img.shape[2], dst=side)
    rows = img[:, lo_r, :] * (1.0 - w_r)[None, :, None] + img[:, hi_r, :] * w_r[None, :, None]
    return rows[:, :, lo_c] * (1.0 - w_c)[None, None, :] + rows[:, :, hi_c] * w_c[None, None, :]


def to_model_input(*, images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 96, 96, 3] in [0, 1] (bilinear, grey to 3 channels)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    big = upscale(images=images, side=MODEL_SIDE) / 255.0
    big = np.clip(big, 0.0, 1.0).astype(np.float32)
    return np.repeat(big[..., None], MODEL_CHANNELS, axis=-1)


def quantize_input(*, x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float model input -> int8 with the model's input (scale, zero_point)."""
    q = np.round(np.asarray(x, dtype=np.float64) / float(scale)) + int(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def stratified_indices(*, labels: np.ndarray, total: int, seed: int) -> np.ndarray:
    """Deterministic sorted pick of ``total`` indices, spread evenly over the classes.

    Every class gets ``total // 10`` indices; the first ``total % 10`` classes
    get one more.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    picks = []
    for cls in range(NUM_CLASSES):
        count = total // NUM_CLASSES + (1 if cls < total % NUM_CLASSES else 0)
        members = np.flatnonzero(labels == cls)
        if members.size < count:
            raise ValueError(f"class {cls} has {members.size} samples, need {count}")
        picks.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(picks))


def save_npz(*, path: str, arrays: dict, compress: bool = True) -> None:
    """Like ``np.savez(_compressed)`` but byte-reproducible (fixed zip timestamps).

    ``np.savez`` stamps every member with the current time; this writes the
    same archive layout with a fixed 1980-01-01 date, so equal arrays give
    equal files. Read it back with ``np.load``.
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, mode="w", compression=method, allowZip64=True) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
