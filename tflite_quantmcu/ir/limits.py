"""How large a model the reader accepts, checked before the memory is spent.

The reader counts these from the flatbuffer's own length fields (no object is
built yet) and raises `ModelLimitError` naming the limit, the value found and
the file. docs/limits.md lists the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class ReaderLimits:
    """Upper bounds on what one `.tflite` file may make the reader allocate."""

    max_file_bytes: int = 4 * GIB        # the file, flatbuffer plus external buffer data
    max_subgraphs: int = 1_000
    max_tensors: int = 1_000_000         # over all subgraphs
    max_ops: int = 1_000_000             # over all subgraphs
    max_buffers: int = 1_000_000
    max_buffer_bytes: int = 4 * GIB      # constant data, inline and external, all buffers
    max_table_bytes: int = 256 * MIB     # names, shapes, quantization arrays, op index lists
    max_tensor_bytes: int = 2 * GIB - 1  # one tensor (TFLM sizes tensors in 32-bit integers)


DEFAULT_LIMITS = ReaderLimits()
