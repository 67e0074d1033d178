"""The fixture models the tests run on, and random inputs for them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tflite_quantmcu.ir.graph import Graph

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
COMMITTED = sorted(p.name for p in TESTDATA.glob("*.tflite"))
GENERATED = ["mobilenetv2_w100_r224.tflite"]


def fixture_path(name: str) -> Path:
    """Path of a committed or generated fixture (generated ones live in testdata/generated)."""
    committed = TESTDATA / name
    return committed if committed.exists() else TESTDATA / "generated" / name


def all_fixture_names() -> list[str]:
    return COMMITTED + GENERATED


def random_inputs(*, graph: Graph, samples: int, seed: int) -> list[np.ndarray]:
    """Uniform random values for every model input, leading axis = samples."""
    rng = np.random.default_rng(seed)
    arrays = []
    for key in graph.main.inputs:
        tensor = graph.main.tensors[key]
        shape = (samples, *tensor.shape)
        if tensor.type_name == "INT8":
            arrays.append(rng.integers(-128, 128, size=shape, dtype=np.int8))
        elif tensor.type_name == "UINT8":
            arrays.append(rng.integers(0, 256, size=shape, dtype=np.uint8))
        else:
            arrays.append(rng.standard_normal(shape).astype(np.float32))
    return arrays
