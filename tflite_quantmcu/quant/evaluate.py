"""Top-1 accuracy of a Graph (builtin and QMCU_* ops) with the reference executor.

``data`` is any labelled source :func:`calibration_data.data_batches` accepts (a
``.npz`` with ``x`` and ``y``, an iterable of ``(x, y)`` pairs, ...). Batches are
streamed, so memory does not grow with the number of samples. The executor is bit
exact with TFLite Micro, so the figure is the one the firmware would get.
"""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.errors import CalibrationDataError, UnsupportedModelError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.quant.calibration_data import InputNormalization, data_batches
from tflite_quantmcu.reference.executor import run_graph


def top1_accuracy(*, graph: Graph, data, batch_size: int = 64, limit: int | None = None,
                  progress: bool = True,
                  normalization: InputNormalization | None = None) -> float:
    """Fraction of samples whose largest output (first model output) is the label."""
    correct, total = top1_counts(graph=graph, data=data, batch_size=batch_size, limit=limit,
                                 progress=progress, normalization=normalization)
    return correct / total


def top1_counts(*, graph: Graph, data, batch_size: int = 64, limit: int | None = None,
                progress: bool = True,
                normalization: InputNormalization | None = None) -> tuple[int, int]:
    """(samples whose largest output is the label, samples)."""
    classes = _check_classifier(graph=graph)
    correct = total = 0
    for batch in data_batches(source=data, graph=graph, batch_size=batch_size,
                              require_labels=True, limit=limit, progress=progress,
                              description="evaluation", normalization=normalization):
        _check_labels(labels=batch.y, classes=classes, data=data)
        logits = run_graph(graph=graph, inputs=[batch.x])[0]
        predicted = np.argmax(logits.reshape(logits.shape[0], -1), axis=1)
        correct += int(np.count_nonzero(predicted == batch.y))
        total += batch.x.shape[0]
    return correct, total


def _check_labels(*, labels: np.ndarray, classes: int, data) -> None:
    """Labels are class indices 0..classes-1 (a label of 10**12 never matches: refused)."""
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        where = f"evaluation data {data}" if isinstance(data, str) else "evaluation data"
        raise CalibrationDataError(f"{where}: labels must be class indices 0..{classes - 1}, got "
                                   f"{int(bad[0])} ({bad.size} such labels in a batch)")


def _check_classifier(*, graph: Graph) -> int:
    """The number of class scores of the first output."""
    sub = graph.main
    if not sub.outputs:
        raise UnsupportedModelError("top-1 accuracy: the model has no output")
    shape = sub.tensors[sub.outputs[0]].shape
    if int(np.prod(shape)) < 2:
        raise UnsupportedModelError(f"top-1 accuracy: output {sub.tensors[sub.outputs[0]].name!r}"
                                    f" has shape {shape}; expected class scores")
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))
