"""Predicted executed instructions of one TFLite Micro `Invoke` on a Cortex-M4.

    table = load_latency_table()
    estimate = predict_instructions(graph=graph, table=table)
    estimate.total, estimate.per_op

Builtin ops run on TFLite Micro's CMSIS-NN kernels (where TFLM has one) or its reference
kernels; `QMCU_*` ops on cmixnn_bridge's optimized kernels. Each op costs
``per_mac * MACs + per_output * outputs + per_input * inputs + per_row * rows +
per_channel * channels + per_call`` (elements; rows = output elements / innermost dimension,
i.e. output pixels for convs; channels = the output's innermost dimension) of
the table's line for its kind, shape class and bit widths, plus the interpreter's per-op
cost. The table
(``tflite_quantmcu/data/latency_cortex_m4.json``) is written by ``bench/latency_table.py``
from measured counts (QEMU, docs/latency_model.md says which and how exact it is); this
module only reads it. Instructions are not cycles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from tflite_quantmcu.analysis.costs import op_macs
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph, Operator, Subgraph
from tflite_quantmcu.qmcu_options import decode_options
from tflite_quantmcu.qmcu_stage_options import decode_stage_options

TABLE_FILE = "latency_cortex_m4.json"
CONV_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D")
QMCU_CONV = {"QMCU_CONV_2D": "CONV_2D", "QMCU_DEPTHWISE_CONV_2D": "DEPTHWISE_CONV_2D"}
FREE = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})   # views: only the interpreter's cost


@dataclass(frozen=True)
class Work:
    """What an op call processes: MACs and elements (rows: output elements / innermost dim)."""

    macs: int = 0
    outputs: int = 0
    inputs: int = 0
    rows: int = 0
    channels: int = 0


@dataclass(frozen=True)
class CostLine:
    """Instructions of one op call, linear in its `Work`."""

    per_mac: float = 0.0
    per_output: float = 0.0
    per_input: float = 0.0
    per_row: float = 0.0
    per_channel: float = 0.0
    per_call: float = 0.0

    def cost(self, work: Work) -> float:
        return (self.per_mac * work.macs + self.per_output * work.outputs
                + self.per_input * work.inputs + self.per_row * work.rows
                + self.per_channel * work.channels + self.per_call)


@dataclass(frozen=True)
class LatencyTable:
    """Cost lines by key (e.g. ``"builtin CONV_2D 1x1"``, ``"qmcu CONV_2D 1x1 4/8/4"``)."""

    target: str
    lines: dict[str, CostLine]
    per_op: float            # the interpreter's own instructions per op (Invoke loop, glue)
    fallback_per_output: float   # ops without a line: per output (or input) element
    sources: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyTable:
        return cls(target=data["target"], per_op=float(data["per_op"]),
                   fallback_per_output=float(data["fallback_per_output"]),
                   lines={k: CostLine(**v["line"]) for k, v in data["lines"].items()},
                   sources=data.get("sources", {}))


@dataclass(frozen=True)
class OpCost:
    index: int
    op: str
    line: str          # the table line used ("fallback" when none matched)
    instructions: float


@dataclass(frozen=True)
class LatencyEstimate:
    total: int
    per_op: tuple[OpCost, ...]

    @property
    def unmodelled(self) -> tuple[str, ...]:
        """Op types costed by the fallback rate (no measured line)."""
        return tuple(sorted({c.op for c in self.per_op if c.line == "fallback"}))

    def by_op_type(self) -> dict[str, int]:
        out: dict[str, float] = {}
        for c in self.per_op:
            out[c.op] = out.get(c.op, 0.0) + c.instructions
        return {k: int(round(v)) for k, v in sorted(out.items())}

    def to_json(self) -> dict:
        return {"instructions": self.total, "by_op_type": self.by_op_type(),
                "unmodelled_ops": list(self.unmodelled)}


def load_latency_table(*, target: str = "cortex-m4") -> LatencyTable:
    """The packaged table for ``target`` (only cortex-m4 is measured)."""
    if target != "cortex-m4":
        raise ConfigError(f"latency table: expected target cortex-m4 (the only measured one), "
                          f"got {target!r}")
    text = resources.files("tflite_quantmcu").joinpath("data", TABLE_FILE).read_text("utf-8")
    return LatencyTable.from_dict(json.loads(text))


def predict_instructions(*, graph: Graph, table: LatencyTable) -> LatencyEstimate:
    """Predicted instructions of one Invoke of the main subgraph."""
    sub = graph.main
    costs = tuple(op_cost(subgraph=sub, index=i, table=table)
                  for i in range(len(sub.operators)))
    return LatencyEstimate(total=int(round(sum(c.instructions for c in costs))), per_op=costs)


def op_cost(*, subgraph: Subgraph, index: int, table: LatencyTable) -> OpCost:
    """One op's predicted instructions, interpreter cost included."""
    op = subgraph.operators[index]
    if op.type == "QMCU_PATCH_STAGE":
        line, cost = "qmcu stage layers", _stage_cost(op=op, table=table)
    elif op.type in FREE:
        line, cost = "view", 0.0
    else:
        line, cost = _line_cost(subgraph=subgraph, op=op, table=table)
    return OpCost(index=index, op=op.type, line=line, instructions=cost + table.per_op)


def _line_cost(*, subgraph: Subgraph, op: Operator, table: LatencyTable) -> tuple[str, float]:
    keys, work = op_lines(subgraph=subgraph, op=op)
    for key in keys:
        if key in table.lines:
            return key, table.lines[key].cost(work)
    return "fallback", table.fallback_per_output * max(work.outputs, work.inputs)


def op_lines(*, subgraph: Subgraph, op: Operator) -> tuple[tuple[str, ...], Work]:
    """(table keys to try in order, work) of one op."""
    kind = op.type
    if kind in QMCU_CONV:
        opts = decode_options(op=kind, data=op.custom_options or b"")
        base = QMCU_CONV[kind]
        shape_class = _conv_class(kind=base, kernel=opts.filter_shape[1:3],
                                  stride=(opts.geometry.stride_h, opts.geometry.stride_w))
        keys = qmcu_conv_keys(kind=base, shape_class=shape_class,
                              bits=(opts.in_bits, opts.w_bits, opts.out_bits))
        return keys, conv_work(macs=op_macs(subgraph=subgraph, op=op), in_shape=opts.in_shape,
                               out_shape=opts.out_shape)
    if kind == "QMCU_ADD":
        opts = decode_options(op=kind, data=op.custom_options or b"")
        return qmcu_add_keys(bits=(opts.in1_bits, opts.in2_bits, opts.out_bits)), \
            conv_work(macs=0, in_shape=opts.shape, out_shape=opts.shape)
    tensors = subgraph.tensors
    if kind in CONV_KINDS:
        filt = tensors[op.inputs[1]].shape
        o = op.options
        shape_class = _conv_class(kind=kind, kernel=filt[1:3], stride=(o.strideH, o.strideW))
        return (f"builtin {kind} {shape_class}", f"builtin {kind} kxk"), conv_work(
            macs=op_macs(subgraph=subgraph, op=op), in_shape=tensors[op.inputs[0]].shape,
            out_shape=tensors[op.outputs[0]].shape)
    outs = [tensors[k].shape for k in op.outputs]
    data_in = [tensors[k].shape for k in op.inputs if k is not None
               and not tensors[k].is_constant]
    return (f"builtin {kind}",), Work(
        macs=op_macs(subgraph=subgraph, op=op), outputs=sum(_elements(s) for s in outs),
        inputs=sum(_elements(s) for s in data_in),
        rows=sum(_elements(s[:-1]) for s in outs if s), channels=sum(s[-1] for s in outs if s))


def conv_work(*, macs: int, in_shape, out_shape) -> Work:
    """Work of a conv-like op (ADD too): rows are output pixels."""
    return Work(macs=macs, outputs=_elements(out_shape), inputs=_elements(in_shape),
                rows=_elements(out_shape[:-1]), channels=int(out_shape[-1]))


def qmcu_conv_keys(*, kind: str, shape_class: str, bits: tuple[int, int, int]) -> tuple[str, ...]:
    """Keys for a QMCU conv-like op: its exact widths, then the measured widths nearest in
    input and weight width (the data movement that dominates), then int8."""
    i, w, o = bits
    tried = [(i, w, o), (i, w, i), (i, 8, o), (i, 8, i), (8, w, o), (8, 8, o), (8, 8, 8)]
    classes = (shape_class, "kxk") if shape_class != "kxk" else ("kxk",)
    return tuple(dict.fromkeys(f"qmcu {kind} {c} {a}/{b}/{d}"
                               for c in classes for a, b, d in tried))


def qmcu_add_keys(*, bits: tuple[int, int, int]) -> tuple[str, ...]:
    a, b, o = bits
    hi, lo = max(a, b), min(a, b)
    tried = [(hi, lo, o), (hi, lo, lo), (lo, lo, o), (8, 8, 8)]
    return tuple(dict.fromkeys(f"qmcu ADD {x}/{y}/{z}" for x, y, z in tried))


def _conv_class(*, kind: str, kernel, stride) -> str:
    kh, kw = int(kernel[0]), int(kernel[1])
    if kind == "CONV_2D":
        return "1x1" if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) else "kxk"
    return "3x3" if (kh, kw) == (3, 3) else "kxk"


def _stage_cost(*, op: Operator, table: LatencyTable) -> float:
    """A QMCU_PATCH_STAGE op: each layer's kernel call per patch by the QMCU lines (window and
    output copies are not modelled: docs/latency_model.md)."""
    opts = decode_stage_options(data=op.custom_options or b"")
    cols = opts.grid[1]
    total = 0.0
    for layer in opts.layers:
        src, out = opts.tensors[layer.inputs[0]], opts.tensors[layer.output]
        for i, (r0, r1) in enumerate(out.rows):
            for j, (c0, c1) in enumerate(out.cols):
                p = i * cols + j
                pixels = (r1 - r0) * (c1 - c0)
                in_pixels = (src.rows[i][1] - src.rows[i][0]) * (src.cols[j][1] - src.cols[j][0])
                work = Work(outputs=pixels * out.shape[3], inputs=in_pixels * src.shape[3],
                            rows=pixels, channels=out.shape[3])
                total += _stage_layer_cost(layer=layer, src=src, work=work,
                                           bits=(src.bits_at(p), out.bits_at(p)), table=table)
    return total


def _stage_layer_cost(*, layer, src, work: Work, bits: tuple[int, int],
                      table: LatencyTable) -> float:
    if layer.kind in CONV_KINDS:
        per_output = layer.kernel[0] * layer.kernel[1] * \
            (src.shape[3] if layer.kind == "CONV_2D" else 1)
        keys = qmcu_conv_keys(kind=layer.kind, shape_class=_conv_class(
            kind=layer.kind, kernel=layer.kernel, stride=layer.stride),
            bits=(bits[0], 8, bits[1]))
        work = Work(macs=work.outputs * per_output, outputs=work.outputs, inputs=work.inputs,
                    rows=work.rows, channels=work.channels)
    elif layer.kind == "ADD":
        keys = qmcu_add_keys(bits=(bits[0], bits[0], bits[1]))
    else:
        keys = (f"builtin {layer.kind}",)
    for key in keys:
        if key in table.lines:
            return table.lines[key].cost(work)
    return table.fallback_per_output * work.outputs


def _elements(shape) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def qmcu_int8_cost(*, subgraph: Subgraph, index: int, table: LatencyTable) -> float | None:
    """Predicted instructions of builtin op `index` run as its 8-bit QMCU op (its measured
    8-bit line only; None if there is none), interpreter cost included."""
    op = subgraph.operators[index]
    if op.type in CONV_KINDS:
        filt = subgraph.tensors[op.inputs[1]].shape
        shape_class = _conv_class(kind=op.type, kernel=filt[1:3],
                                  stride=(op.options.strideH, op.options.strideW))
        key = f"qmcu {op.type} {shape_class} 8/{subgraph.tensors[op.inputs[1]].bits}/8"
        macs = op_macs(subgraph=subgraph, op=op)
    elif op.type == "ADD":
        key, macs = "qmcu ADD 8/8/8", 0
    else:
        return None
    if key not in table.lines:
        return None
    work = conv_work(macs=macs, in_shape=subgraph.tensors[op.inputs[0]].shape,
                     out_shape=subgraph.tensors[op.outputs[0]].shape)
    return table.lines[key].cost(work) + table.per_op
