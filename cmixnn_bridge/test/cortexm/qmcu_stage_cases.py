"""QMCU_PATCH_STAGE cases for the bare-metal programs: the numpy reference's inputs, operands
and outputs with the pool the C parser would build (`stage_pool`), as a C header.

Used by tests/test_stage_op_cortexm.py (correctness on QEMU) and bench/kernels_cortexm.py
--stage (instruction counts); loaded by path.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from testdata.synthetic_models import (Conv, DepthwiseConv, ModelSpec, Pad, Pool, Residual,
                                       build_int8_graph)
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.patches.rewrite import build_patched_graph
from tflite_quantmcu.patches.stage import make_stage, split_bounds
from tflite_quantmcu.patches.stage_op import apply_stage_op
from tflite_quantmcu.quant.apply_bitwidths import subbyte_candidates
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.ranges import full_range
from tflite_quantmcu.qmcu_stage_options import decode_stage_options, stage_pool
from tflite_quantmcu.reference.qmcu_stage import run_stage

TESTDATA = pathlib.Path(__file__).resolve().parents[3] / "testdata"


def fixture(name: str) -> pathlib.Path:
    path = TESTDATA / name
    return path if path.exists() else TESTDATA / "generated" / name


def synthetic():
    spec = ModelSpec(input_shape=(19, 17, 8), seed=7, layers=(
        Conv(filters=8, kernel=(5, 3), dilation=(2, 1)),
        Pool(kind="MAX", size=(3, 3), stride=(2, 2), padding="SAME"),
        DepthwiseConv(kernel=(7, 5), stride=(1, 1), activation="RELU"),
        Conv(filters=8, kernel=(1, 1), activation="NONE"),
        Residual(source=1),
        Pool(kind="AVG", size=(3, 3), stride=(1, 1), padding="SAME"),
        DepthwiseConv(kernel=(3, 3), stride=(2, 2), multiplier=2)))
    return build_int8_graph(spec=spec)


def mixed_widths(*, builtin, seed: int, keep8: float | None = None) -> BitwidthPlan:
    """A plan giving each per-patch map of the builtin form a random width it may take (8, 4
    or 2; keep8: the chance of 8 where sub-byte is allowed, None: uniform), half of the
    sub-byte ones a narrowed range with its own zero point: every patch its own widths and
    quantization, so the stage op needs per-patch tables and variants."""
    rng = np.random.default_rng(seed)
    allowed = subbyte_candidates(graph=builtin)
    bits, ranges = {}, {}
    for key in sorted(k for k in allowed if k.startswith("p")):
        sub = [b for b in allowed[key] if b < 8]
        width = int(rng.choice([8] + sub)) if keep8 is None or not sub else \
            (8 if rng.random() < keep8 else int(rng.choice(sub)))
        bits[key] = width
        if width == 8:
            continue
        q = builtin.main.tensors[key].quantization
        chosen = full_range(scale8=q.scale[0], zero_point8=q.zero_point[0], bits=width)
        if rng.random() < 0.5:
            chosen = dataclasses.replace(
                chosen, rule="test", zero_point=int(rng.integers(0, 1 << width)),
                scale=float(np.float32(chosen.scale * rng.uniform(0.3, 1.0))))
        ranges[key] = chosen
    return BitwidthPlan(policy="test-mixed", options={"seed": seed}, bits=bits, ranges=ranges)


def synthetic_pad():
    """A stage with PAD layers (explicit paddings inside the stage, as Keras' ZeroPadding2D
    before a VALID stride-2 depthwise), then a residual block."""
    spec = ModelSpec(input_shape=(17, 15, 4), seed=3, layers=(
        Conv(filters=8, kernel=(3, 3)),
        Pad(1, 2, 0, 1),
        DepthwiseConv(kernel=(3, 3), stride=(2, 2), padding="VALID"),
        Conv(filters=8, kernel=(1, 1), activation="NONE"),
        Pad(2, 0, 1, 1),
        DepthwiseConv(kernel=(3, 3), dilation=(1, 1), padding="VALID"),
        Conv(filters=8, kernel=(1, 1), padding="VALID"),
        Residual(source=3)))
    return build_int8_graph(spec=spec)


def stage_case(name, split, grid, in_place, subbyte_seed=None):
    """The op's options and operands (None for the stage input); subbyte_seed: mixed
    per-patch widths (`mixed_widths`), None: int8."""
    if name is None:
        graph = synthetic()
    elif name == "synthetic-pad":
        graph = synthetic_pad()
    else:
        path = fixture(name)
        if not path.exists():
            raise ConfigError(f"{path} is absent (testdata/make_fixtures.py)")
        graph = read_model_file(path=path)
    st = make_stage(subgraph=graph.main, split=split)
    shape = graph.main.tensors[st.output_key].shape
    rows = split_bounds(size=shape[1], parts=grid[0])
    cols = split_bounds(size=shape[2], parts=grid[1])
    widths = None if subbyte_seed is None else mixed_widths(
        builtin=build_patched_graph(graph=graph, stage=st, row_bounds=rows, col_bounds=cols,
                                    in_place=in_place),
        seed=subbyte_seed)
    patched = apply_stage_op(graph=graph, stage=st, in_place=in_place, row_bounds=rows,
                             col_bounds=cols, bitwidths=widths)
    op = patched.main.operators[0]
    operands = [None] + [patched.main.tensors[k].array() for k in op.inputs[1:]]
    return op.custom_options, operands


def _array(ctype: str, name: str, values) -> str:
    body = ",".join(str(int(v)) for v in values) or "0"
    return f"static const {ctype} {name}[] = {{{body}}};\n"


def _case_source(index: int, label: str, data: bytes, operands: list) -> tuple[str, str, int, int]:
    options = decode_stage_options(data=data)
    x = np.random.default_rng(index).integers(
        -128, 128, size=options.tensors[0].shape, dtype=np.int8)
    expected = run_stage(options=options, x=x, operands={
        k: a for k, a in enumerate(operands) if a is not None})
    pool = stage_pool(options=options)
    out_bytes = expected.size
    in_at = options.output_gap if options.output_gap >= 0 else out_bytes
    text = _array("int32_t", f"pool{index}", pool)
    text += _array("int8_t", f"input{index}", x.reshape(-1))
    text += _array("int8_t", f"expected{index}", expected.reshape(-1))
    names = []
    for k, a in enumerate(operands):
        if a is None:
            names.append("0")
            continue
        ctype = "int32_t" if a.dtype == np.int32 else "int8_t"
        text += _array(ctype, f"op{index}_{k}", np.asarray(a).reshape(-1))
        names.append(f"op{index}_{k}")
    text += f"static const void *const operands{index}[] = {{{', '.join(names)}}};\n"
    entry = (f'{{"{label}", {{{options.grid[0]}, {options.grid[1]}, {len(options.tensors)}, '
             f"{len(options.layers)}, {options.scratch_bytes}, {len(pool)}, pool{index}}}, "
             f"input{index}, {x.size}, expected{index}, {out_bytes}, {in_at}, operands{index}, "
             f"{len(operands)}}}")
    return text, entry, max(in_at + x.size, out_bytes), options.scratch_bytes


def header(cases) -> str:
    """The C header of `cases`: (label, fixture name or None, split, grid, in_place[,
    subbyte seed])."""
    parts, entries, io, scratch = [], [], 0, 0
    for index, (label, name, split, grid, in_place, *subbyte) in enumerate(cases):
        data, operands = stage_case(name, split, grid, in_place, *subbyte)
        text, entry, io_bytes, scratch_bytes = _case_source(index, label, data, operands)
        parts.append(text)
        entries.append(entry)
        io, scratch = max(io, io_bytes), max(scratch, scratch_bytes)
    return ("/* Generated by tests/test_stage_op_cortexm.py from the numpy reference. */\n"
            + "".join(parts) + f"#define QMCU_STAGE_NUM_CASES {len(entries)}\n"
            f"#define QMCU_STAGE_IO_BYTES {io}\n#define QMCU_STAGE_SCRATCH_BYTES {scratch}\n"
            "static const qmcu_stage_case qmcu_stage_cases[] = {\n  "
            + ",\n  ".join(entries) + "};\n")
