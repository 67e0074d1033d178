"""Runs a model in the tflite-micro wheel; started in a subprocess by `tflm.py`.

TFLite Micro aborts the whole process on some bad models and prints its arena
report only to C stderr, so it never runs inside the caller's process.
Usage: python -m tflite_quantmcu.runtimes.tflm_probe MODEL ARENA_BYTES [IN.npz OUT.npz N_OUT]
IN.npz holds `input_<i>` arrays of shape [samples, ...]; OUT.npz gets `output_<j>`.
"""
from __future__ import annotations

import sys

import numpy as np


def _run_samples(interpreter, inputs_path: str, outputs_path: str, num_outputs: int) -> None:
    with np.load(inputs_path) as data:
        inputs = [data[f"input_{i}"] for i in range(len(data.files))]
    results: dict[str, list[np.ndarray]] = {}
    for sample in range(inputs[0].shape[0]):
        for i, batch in enumerate(inputs):
            interpreter.set_input(batch[sample], i)
        interpreter.invoke()
        for j in range(num_outputs):
            results.setdefault(f"output_{j}", []).append(np.array(interpreter.get_output(j)))
    np.savez(outputs_path, **{k: np.stack(v) for k, v in results.items()})


def main(argv: list[str]) -> int:
    from tflite_micro.python.tflite_micro import runtime

    model = open(argv[0], "rb").read()
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=int(argv[1]))
    if len(argv) == 5:
        _run_samples(interpreter, argv[2], argv[3], int(argv[4]))
    sys.stdout.flush()
    interpreter.print_allocations()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
