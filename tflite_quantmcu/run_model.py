"""`tflite-quantmcu run`: any model we write (builtin and QMCU_* ops) on data, optionally
beside the model it was converted from.

The reference executor is bit-exact with TFLite Micro, so its outputs are the firmware's.
Builtin-only models can also run in the tflite-micro wheel (`runtime="tflm"`).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.quant.calibration_data import data_batches
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.runtimes.tflm import run_tflm

RUNTIMES = ("reference", "tflm")


@dataclass(frozen=True)
class RunOptions:
    runtime: str = "reference"
    limit: int | None = None
    batch_size: int = 64
    progress: bool = False


@dataclass(frozen=True)
class ModelRun:
    """Every output of the model on every sample (leading axis) and the labels, if any."""

    outputs: tuple[np.ndarray, ...]
    labels: np.ndarray | None

    @property
    def samples(self) -> int:
        return int(self.outputs[0].shape[0])

    @property
    def predictions(self) -> np.ndarray:
        first = self.outputs[0]
        return np.argmax(first.reshape(first.shape[0], -1), axis=1)

    @property
    def top1(self) -> float | None:
        if self.labels is None:
            return None
        return float(np.mean(self.predictions == self.labels))


@dataclass(frozen=True)
class Agreement:
    """How the converted model's outputs compare with the original's on the same samples."""

    samples: int
    identical_samples: int
    top1_agreement: float
    max_abs_difference: int


def run_model(*, graph: Graph, data, options: RunOptions = RunOptions()) -> ModelRun:
    """Runs `graph` on every sample of `data` (any source `data_batches` accepts)."""
    if options.runtime not in RUNTIMES:
        raise ConfigError(f"runtime: expected one of {RUNTIMES}, got {options.runtime!r}")
    model_bytes = write_model_bytes(graph=graph) if options.runtime == "tflm" else b""
    parts: list[list[np.ndarray]] = []
    labels: list[np.ndarray] = []
    for batch in data_batches(source=data, graph=graph, batch_size=options.batch_size,
                              limit=options.limit, progress=options.progress,
                              description="run"):
        parts.append(_run_batch(graph=graph, x=batch.x, runtime=options.runtime,
                                model_bytes=model_bytes))
        if batch.y is not None:
            labels.append(batch.y)
    outputs = tuple(np.concatenate(column) for column in zip(*parts))
    return ModelRun(outputs=outputs, labels=np.concatenate(labels) if labels else None)


def _run_batch(*, graph: Graph, x: np.ndarray, runtime: str, model_bytes: bytes
               ) -> list[np.ndarray]:
    if runtime == "reference":
        return list(run_graph(graph=graph, inputs=[x]))
    sub = graph.main
    shape = tuple(sub.tensors[sub.inputs[0]].shape)
    per_sample = x[:, None] if len(shape) == x.ndim and shape[0] == 1 else x
    outputs = run_tflm(model_bytes=model_bytes, inputs=[per_sample],
                       num_outputs=len(sub.outputs)).outputs
    # The reference executor's layout: samples first, then the output tensor's shape.
    return [out.reshape(x.shape[0], *tuple(sub.tensors[key].shape))
            for out, key in zip(outputs, sub.outputs)]


def agreement(*, converted: ModelRun, original: ModelRun) -> Agreement:
    """Bit-identical samples and top-1 agreement of two runs on the same samples."""
    if converted.samples != original.samples or len(converted.outputs) != len(original.outputs):
        raise ConfigError(f"--compare: the models gave {converted.samples} and "
                          f"{original.samples} samples, {len(converted.outputs)} and "
                          f"{len(original.outputs)} outputs; expected the same")
    same = np.ones(converted.samples, dtype=bool)
    worst = 0
    for a, b in zip(converted.outputs, original.outputs):
        if a.shape != b.shape:
            raise ConfigError(f"--compare: output shapes differ: {a.shape} vs {b.shape}")
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).reshape(a.shape[0], -1)
        same &= diff.max(axis=1) == 0
        worst = max(worst, int(diff.max(initial=0)))
    return Agreement(samples=converted.samples, identical_samples=int(same.sum()),
                     top1_agreement=float(np.mean(converted.predictions == original.predictions)),
                     max_abs_difference=worst)


def outputs_file_bytes(*, run: ModelRun, path_suffix: str) -> bytes:
    """The outputs as .npy (single-output models) or .npz (`output_0`, `output_1`, ...)."""
    buffer = io.BytesIO()
    if path_suffix == ".npy":
        if len(run.outputs) != 1:
            raise ConfigError(f"--save: the model has {len(run.outputs)} outputs; a .npy holds "
                              "one, use a .npz path")
        np.save(buffer, run.outputs[0], allow_pickle=False)
    elif path_suffix == ".npz":
        np.savez(buffer, **{f"output_{i}": out for i, out in enumerate(run.outputs)})
    else:
        raise ConfigError(f"--save: expected a .npy or .npz path, got suffix {path_suffix!r}")
    return buffer.getvalue()
