"""Top-1 of the bundled int8 model on the whole Fashion-MNIST test set, per runtime and input rounding.

Why two int8 top-1 figures exist: ``testdata/fashion_mnv2_r96.json`` (written by
make_bundled_model.py) quantizes the float inputs with numpy's round-half-to-even
(``fashion_mnist.quantize_input``); the tool quantizes as TFLite's QUANTIZE op
(``reference.model_inputs``, round half away from zero), as do the QuantMCU bench and
``convert --eval-data``. This script runs both input codings through LiteRT
(BUILTIN_REF, one image at a time) and the tool's codes through the numpy reference
executor, and counts the input codes and logit vectors that differ. Prints a Markdown
table; about 5 minutes on 2 cores.

    python3 bench/bundled_top1_runtimes.py [--samples N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testdata import fashion_mnist  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_file  # noqa: E402
from tflite_quantmcu.reference.executor import run_graph  # noqa: E402
from tflite_quantmcu.reference.model_inputs import quantize_inputs  # noqa: E402
from tflite_quantmcu.runtimes.litert import run_litert  # noqa: E402

MODEL = ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite"
CHUNK = 500


def litert_logits(*, model_bytes: bytes, codes: np.ndarray) -> np.ndarray:
    rows = [run_litert(model_bytes=model_bytes, inputs=[codes[i:i + 1]])[0]
            for i in range(len(codes))]
    return np.concatenate(rows).reshape(len(codes), -1)


def chunk_results(*, graph, model_bytes: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """Logits of one chunk: reference and LiteRT on the tool's codes, LiteRT on numpy's."""
    real = fashion_mnist.to_model_input(images=images)
    tool_codes = quantize_inputs(graph=graph, values=[real])[0]
    q = graph.main.tensors[graph.main.inputs[0]].quantization
    numpy_codes = fashion_mnist.quantize_input(x=real, scale=q.scale[0],
                                               zero_point=int(q.zero_point[0]))
    reference = run_graph(graph=graph, inputs=[tool_codes])[0].reshape(len(images), -1)
    return {"reference": reference,
            "litert": litert_logits(model_bytes=model_bytes, codes=tool_codes),
            "litert_numpy_codes": litert_logits(model_bytes=model_bytes, codes=numpy_codes),
            "codes_differ": np.array([int((tool_codes != numpy_codes).sum())])}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="stratified subset")
    args = parser.parse_args(argv)
    x, y = fashion_mnist.load_split(split="test")
    if args.samples is not None:
        pick = fashion_mnist.stratified_indices(labels=y, total=args.samples, seed=0)
        x, y = x[pick], y[pick]
    graph = read_model_file(path=MODEL)
    model_bytes = MODEL.read_bytes()
    correct = {"reference": 0, "litert": 0, "litert_numpy_codes": 0}
    codes_differ = logits_differ = 0
    for start in range(0, len(y), CHUNK):
        out = chunk_results(graph=graph, model_bytes=model_bytes, images=x[start:start + CHUNK])
        labels = y[start:start + CHUNK]
        for key in correct:
            correct[key] += int((out[key].argmax(axis=-1) == labels).sum())
        codes_differ += int(out["codes_differ"][0])
        logits_differ += int((out["reference"] != out["litert"]).any(axis=-1).sum())
    print(f"{MODEL.name}, {len(y)} test images\n")
    print("| runtime | input rounding | top-1 % |\n|---|---|---:|")
    print(f"| numpy reference executor | TFLite QUANTIZE | {100 * correct['reference'] / len(y):.2f} |")
    print(f"| LiteRT BUILTIN_REF | TFLite QUANTIZE | {100 * correct['litert'] / len(y):.2f} |")
    print(f"| LiteRT BUILTIN_REF | numpy half-to-even | "
          f"{100 * correct['litert_numpy_codes'] / len(y):.2f} |")
    print(f"\ninput codes that differ between the two roundings: {codes_differ:,}; images whose "
          f"logits differ between the reference executor and LiteRT (same codes): {logits_differ}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
