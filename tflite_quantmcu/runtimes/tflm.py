"""TFLite Micro (the tflite-micro wheel) as a reference runtime, in a subprocess."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflite_quantmcu.errors import UnsupportedModelError

DEFAULT_ARENA_BYTES = 32 * 1024 * 1024
_ARENA_LINE = re.compile(r"Arena allocation (head|tail|total) (\d+) bytes")


@dataclass(frozen=True)
class TflmArena:
    """What TFLM's RecordingMicroAllocator prints: head = planned non-persistent bytes."""

    head: int
    tail: int
    total: int


@dataclass(frozen=True)
class TflmRun:
    arena: TflmArena
    outputs: list[np.ndarray]


def measure_arena(*, model_bytes: bytes, arena_size: int = DEFAULT_ARENA_BYTES) -> TflmArena:
    """Allocates the model in TFLM and returns its arena report."""
    return run_tflm(model_bytes=model_bytes, inputs=None, num_outputs=0,
                    arena_size=arena_size).arena


def run_tflm(*, model_bytes: bytes, inputs: Sequence[np.ndarray] | None, num_outputs: int,
             arena_size: int = DEFAULT_ARENA_BYTES) -> TflmRun:
    """Runs `inputs` (one array per model input, leading axis = samples) in TFLM."""
    with tempfile.TemporaryDirectory(prefix="qmcu_tflm_") as tmp:
        model_path = Path(tmp) / "model.tflite"
        model_path.write_bytes(model_bytes)
        args = [str(model_path), str(arena_size)]
        if inputs is not None:
            np.savez(Path(tmp) / "in.npz", **{f"input_{i}": x for i, x in enumerate(inputs)})
            args += [str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz"), str(num_outputs)]
        proc = subprocess.run([sys.executable, "-m", "tflite_quantmcu.runtimes.tflm_probe", *args],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise UnsupportedModelError(
                f"TFLite Micro could not run the model (exit {proc.returncode}): "
                + " | ".join(tail))
        outputs = []
        if inputs is not None:
            with np.load(Path(tmp) / "out.npz") as data:
                outputs = [data[f"output_{j}"] for j in range(num_outputs)]
    return TflmRun(arena=_parse_arena(proc.stderr + proc.stdout), outputs=outputs)


def _parse_arena(text: str) -> TflmArena:
    found = {kind: int(value) for kind, value in _ARENA_LINE.findall(text)}
    if set(found) != {"head", "tail", "total"}:
        raise UnsupportedModelError(f"TFLite Micro printed no arena report: {text[-300:]!r}")
    return TflmArena(head=found["head"], tail=found["tail"], total=found["total"])
