"""Random inputs for a model, used by equivalence checks (converter and tests)."""
from __future__ import annotations

import numpy as np

from tflite_quantmcu.ir.graph import Graph


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
