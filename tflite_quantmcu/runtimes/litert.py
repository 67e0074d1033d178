"""LiteRT with its reference kernels (not XNNPACK), the other builtin-op reference."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def run_litert(*, model_bytes: bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs `inputs` (one array per model input, leading axis = samples); stacks outputs."""
    interpreter = Interpreter(model_content=model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    results: list[list[np.ndarray]] = [[] for _ in out_details]
    for sample in range(inputs[0].shape[0]):
        for detail, batch in zip(in_details, inputs):
            interpreter.set_tensor(detail["index"], batch[sample:sample + 1].reshape(detail["shape"]))
        interpreter.invoke()
        for j, detail in enumerate(out_details):
            results[j].append(interpreter.get_tensor(detail["index"]).copy())
    return [np.stack(r) for r in results]
