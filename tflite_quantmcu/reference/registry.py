"""Which reference kernel runs which op.

Builtin ops are looked up by their type name ('CONV_2D'); custom ops by their
custom code ('QMCU_CONV_2D') in the `custom_kernels` mapping the caller passes;
the default, `DEFAULT_CUSTOM_KERNELS`, holds the QMCU_* ops (qmcu_adapters.py) and
QMCU_PATCH_STAGE (qmcu_stage.py).

A kernel is a callable `kernel(*, ctx: OpContext) -> list[np.ndarray]`: one array
per op output, each with the leading sample axis.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Subgraph
from tflite_quantmcu.reference import (conv, depthwise, elementwise, fully_connected, pooling,
                                       quantize, reduce, shape_ops, softmax)
from tflite_quantmcu.reference.op_context import OpContext
from tflite_quantmcu.reference.qmcu_adapters import QMCU_KERNELS
from tflite_quantmcu.reference.qmcu_stage import patch_stage_kernel

Kernel = Callable[..., list[np.ndarray]]

BUILTIN_KERNELS: Mapping[str, Kernel] = MappingProxyType({
    **conv.KERNELS, **depthwise.KERNELS, **pooling.KERNELS, **elementwise.KERNELS,
    **fully_connected.KERNELS, **reduce.KERNELS, **shape_ops.KERNELS, **quantize.KERNELS,
    **softmax.KERNELS,
})

DEFAULT_CUSTOM_KERNELS: Mapping[str, Kernel] = MappingProxyType({
    **QMCU_KERNELS, "QMCU_PATCH_STAGE": patch_stage_kernel})


def kernel_for(*, subgraph: Subgraph, index: int,
               custom_kernels: Mapping[str, Kernel] = DEFAULT_CUSTOM_KERNELS) -> Kernel:
    """The kernel of op `index`; `UnsupportedOpError` naming the op if there is none."""
    op = subgraph.operators[index]
    if op.opcode.builtin == schema.BuiltinOperator.CUSTOM:
        kernel = custom_kernels.get(op.opcode.custom or "")
        known = sorted(custom_kernels) or ["none"]
        kind = f"custom op {op.opcode.custom!r}"
    else:
        kernel = BUILTIN_KERNELS.get(op.type)
        known = sorted(BUILTIN_KERNELS)
        kind = f"builtin op {op.type}"
    if kernel is None:
        raise UnsupportedOpError(
            f"reference executor: {subgraph.op_label(index)}: {kind} has no reference kernel "
            f"(supported: {', '.join(known)})")
    return kernel


def supported_builtin_ops() -> tuple[str, ...]:
    """Names of the builtin ops the reference executor runs."""
    return tuple(sorted(BUILTIN_KERNELS))


__all__ = ["BUILTIN_KERNELS", "DEFAULT_CUSTOM_KERNELS", "Kernel", "OpContext", "kernel_for",
           "supported_builtin_ops"]
