"""Write model-ready Fashion-MNIST files for the bundled model under testdata/generated/.

Run from the repository root (numpy only, a few seconds)::

    python3 testdata/make_datasets.py               # calibration + 28x28 test set
    python3 testdata/make_datasets.py --limit 500   # also a float32 96x96x3 test slice

Writes (testdata/generated/ is git-ignored):

* ``fashion_calib_r96.npz``  ``x`` float32 [512, 96, 96, 3] in [0, 1], ``y`` uint8,
  from the committed ``testdata/fashion_mnist_calib.npz``;
* ``fashion_test_28.npz``    ``x`` uint8 [10000, 28, 28], ``y`` uint8: the full
  Debian test set, kept at 28x28 (a float32 96x96x3 copy would be 1.1 GB);
  ``fashion_mnist.to_model_input(images=x)`` expands it, in batches, to model input;
* ``fashion_test_r96.npz``   only with ``--limit N``: ``x`` float32 [N, 96, 96, 3]
  of the first N test images, ``y`` uint8.

For the int8 model, ``fashion_mnist.quantize_input(x=..., scale=..., zero_point=...)``
with the input quantization recorded in ``testdata/fashion_mnv2_r96.json`` gives
its int8 input.
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fashion_mnist  # noqa: E402

CALIB_PATH = os.path.join(HERE, "fashion_mnist_calib.npz")
TEST_SLICE_PATH = os.path.join(HERE, "fashion_mnist_test300.npz")
TEST_SLICE = 300
OUT_DIR = os.path.join(HERE, "generated")


def write_calibration(*, out_dir: str) -> str:
    """Expand the committed 28x28 calibration images to model input."""
    with np.load(CALIB_PATH) as data:
        images, labels = data["x"], data["y"]
    path = os.path.join(out_dir, "fashion_calib_r96.npz")
    fashion_mnist.save_npz(path=path, arrays={"x": fashion_mnist.to_model_input(images=images),
                                              "y": labels}, compress=False)
    return path


def write_test_28(*, out_dir: str, images, labels) -> str:
    """The full test set at 28x28 uint8."""
    path = os.path.join(out_dir, "fashion_test_28.npz")
    fashion_mnist.save_npz(path=path, arrays={"x": images, "y": labels})
    return path


def write_test_r96(*, out_dir: str, images, labels, limit: int) -> str:
    """The first ``limit`` test images as float32 model input."""
    if limit <= 0:
        raise ValueError(f"--limit must be positive, got {limit}")
    path = os.path.join(out_dir, "fashion_test_r96.npz")
    x = fashion_mnist.to_model_input(images=images[:limit])
    fashion_mnist.save_npz(path=path, arrays={"x": x, "y": labels[:limit]}, compress=False)
    return path


def write_test_slice(*, images, labels) -> str:
    """The committed accuracy-test images: the first 300 Debian test images, 28x28 uint8
    (tests/test_accuracy_regression.py; rewritten only by --write-test-slice)."""
    fashion_mnist.save_npz(path=TEST_SLICE_PATH, arrays={"x": images[:TEST_SLICE],
                                                         "y": labels[:TEST_SLICE]})
    return TEST_SLICE_PATH


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None,
                        help="also write fashion_test_r96.npz with the first N test images")
    parser.add_argument("--out-dir", default=OUT_DIR)
    parser.add_argument("--write-test-slice", action="store_true",
                        help="(maintainers) rewrite the committed testdata/fashion_mnist_test300.npz")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    images, labels = fashion_mnist.load_split(split="test")
    if args.write_test_slice:
        print(f"wrote {write_test_slice(images=images, labels=labels)}")
    written = [write_calibration(out_dir=args.out_dir),
               write_test_28(out_dir=args.out_dir, images=images, labels=labels)]
    if args.limit is not None:
        written.append(write_test_r96(out_dir=args.out_dir, images=images, labels=labels,
                                      limit=args.limit))
    for path in written:
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
