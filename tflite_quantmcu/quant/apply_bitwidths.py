"""Apply a `BitwidthPlan` to a (patched) graph: sub-byte feature maps and `QMCU_*` ops.

    candidates = subbyte_candidates(graph=patched)      # key -> widths it may take
    quantized = apply_bitwidth_plan(graph=patched, plan=plan)

A feature map planned at 4 or 2 bits becomes, as docs/qmcu_ops.md §1.1 defines, a
packed ``UINT8`` tensor whose innermost dimension is the packed byte count
``C * bits / 8``; its ``quantization`` holds the b-bit scale and zero point and, as
``details``, a CustomQuantization flexbuffer map ``{bits, logical_shape}``.

**Scale and zero point.** A sub-byte map takes the plan's range for it
(``BitwidthPlan.ranges``, chosen from calibration data by :mod:`ranges`); a map without one
takes the int8 tensor's whole real range, ``[scale8 * (-128 - zp8), scale8 * (127 - zp8)]``,
by ``subbyte_quant_params`` (docs §1.5). Every requantization into and out of the map
(conv/depthwise requant constants and rescaled biases, ADD multipliers, average-pool
rescale, fused-activation bounds) is computed from that (scale, zero point).

Every op that reads or writes a sub-byte tensor becomes the matching custom op
(``QMCU_CONV_2D``, ``QMCU_DEPTHWISE_CONV_2D``, ``QMCU_ADD``, ``QMCU_AVERAGE_POOL_2D``)
with its flexbuffer options, the requant ``INT32 [2, C_out]`` constant of docs §1.3
(from the float32 scales, in double) and the original weight tensors (same keys, so
the same `Buffer` objects). A conv whose input scale changes gets a new bias at the
scale ``s_in * s_w`` (docs §1.2): ``round(bias * s_in8 / s_in_b)``, half away from zero.
A zero-point ``PAD`` feeding only such convs is removed and its amounts become the
convs' explicit pads. ``force_custom=True`` converts every op that has a QMCU form,
even at 8 bits (then the graph computes exactly what the builtin graph computes).

Which widths a feature map may take (`subbyte_candidates`): 4 and 2 bits only when
its producer and every reader have a QMCU form (or the reader is a foldable PAD),
it is neither a graph input/output nor a CONCATENATION input (patch outputs stay
int8), and its channel count is a multiple of ``8 / bits``. No QMCU_PACK/UNPACK op
is ever needed. A filter key planned at 4 or 2 bits (``weight_cuts``: only filters
read solely by conv-like ops with a QMCU form) turns every op reading it into its QMCU
form with the packed, re-quantized filter, its requant from the new scales and its bias
at the new scale ``s_in * s_w'[c]``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from flatbuffers import flexbuffers

from tflite_quantmcu.analysis.memory import OFFLINE_PLAN_METADATA, offline_offsets
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import (Buffer, Graph, Metadata, OpCode, Operator, Quantization,
                                      Subgraph, Tensor)
from tflite_quantmcu.patches.rewrite import copy_graph
from tflite_quantmcu.qmcu_options import (ADD_LEFT_SHIFT, AddOptions, AveragePool2DOptions,
                                          Conv2DOptions, DepthwiseConv2DOptions, Geometry,
                                          act_range, encode_options, same_padding,
                                          subbyte_quant_params)
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.weight_cuts import (channel_axis, cut_bias, packed_filter,
                                               weight_candidates, weight_cuts)
from tflite_quantmcu.reference.requantize import INT32_MAX, INT32_MIN, quantize_multiplier

fb = schema.fb
INT8 = schema.TensorType.INT8
ALL_WIDTHS = (8, 4, 2)
QMCU_NAMES = {"CONV_2D": "QMCU_CONV_2D", "DEPTHWISE_CONV_2D": "QMCU_DEPTHWISE_CONV_2D",
              "ADD": "QMCU_ADD", "AVERAGE_POOL_2D": "QMCU_AVERAGE_POOL_2D"}
CONV_TYPES = ("CONV_2D", "DEPTHWISE_CONV_2D")
_ACTIVATIONS = {schema.ActivationFunctionType.NONE: "NONE",
                schema.ActivationFunctionType.RELU: "RELU",
                schema.ActivationFunctionType.RELU6: "RELU6"}


# ---- the view of a subgraph both entry points need ------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Source:
    """What a conv-like op reads after PAD folding: a tensor key and extra pads (t, b, l, r)."""

    key: str
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)


class _View:
    """Producers, consumers, QMCU forms and foldable PADs of one subgraph (read-only)."""

    def __init__(self, *, subgraph: Subgraph) -> None:
        self.subgraph = subgraph
        self.producers = subgraph.producers()
        self.consumers = subgraph.consumers()
        self.form_problems = {i: qmcu_form_problem(subgraph=subgraph, index=i)
                              for i in range(len(subgraph.operators))}
        self.pad_problems = {i: self._pad_fold_problem(index=i)
                             for i, op in enumerate(subgraph.operators) if op.type == "PAD"}

    def has_form(self, index: int) -> bool:
        return self.form_problems[index] is None

    def foldable_pad(self, index: int) -> bool:
        return self.pad_problems.get(index, "not a PAD") is None

    def source(self, index: int) -> _Source:
        """Input 0 of op `index`, looking through a foldable PAD for conv-like ops."""
        op = self.subgraph.operators[index]
        key = op.inputs[0]
        producer = self.producers.get(key)
        if op.type in CONV_TYPES and producer is not None and self.foldable_pad(producer):
            pad_op = self.subgraph.operators[producer]
            return _Source(key=pad_op.inputs[0], pads=pad_amounts(subgraph=self.subgraph,
                                                                   op=pad_op))
        return _Source(key=key)

    def _pad_fold_problem(self, *, index: int) -> str | None:
        sub = self.subgraph
        op = sub.operators[index]
        problem = pad_op_problem(subgraph=sub, op=op)
        if problem is not None:
            return problem
        out = op.outputs[0]
        if out in sub.outputs:
            return "its output is a graph output"
        for reader in self.consumers.get(out, []):
            reader_op = sub.operators[reader]
            if reader_op.type not in CONV_TYPES or not self.has_form(reader):
                return f"{sub.op_label(reader)} reads it and is no QMCU conv"
            if reader_op.inputs[0] != out or out in reader_op.inputs[1:]:
                return f"{sub.op_label(reader)} reads it other than as its input 0"
        return None if self.consumers.get(out) else "nothing reads it"


def pad_amounts(*, subgraph: Subgraph, op: Operator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a PAD op with constant NHWC paddings."""
    values = subgraph.tensors[op.inputs[1]].array().reshape(4, 2)
    return tuple(int(v) for v in (values[1, 0], values[1, 1], values[2, 0], values[2, 1]))


def pad_op_problem(*, subgraph: Subgraph, op: Operator) -> str | None:
    """Why a PAD op cannot be folded into a conv's explicit pads (None if it can)."""
    paddings = subgraph.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] else None
    if paddings is None or not paddings.is_constant or paddings.num_elements != 8:
        return "its paddings are not a constant [4, 2] tensor"
    values = paddings.array().reshape(4, 2)
    if values[0].any() or values[3].any() or (values < 0).any():
        return "it pads the batch or channel axis (or by a negative amount)"
    src, out = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]
    if src.dtype != INT8 or out.dtype != INT8:
        return "it is not int8"
    if _per_tensor(src) is None or _per_tensor(src) != _per_tensor(out):
        return "its input and output quantization differ"
    return None


def _per_tensor(tensor: Tensor) -> tuple[float, int] | None:
    """(float32 scale, zero point) of a per-tensor quantized tensor, else None."""
    q = tensor.quantization
    if q is None or len(q.scale) != 1 or len(q.zero_point) > 1:
        return None
    return float(np.float32(q.scale[0])), int(q.zero_point[0]) if q.zero_point else 0


# ---- QMCU form of an op ----------------------------------------------------------------------

def qmcu_form_ops(*, graph: Graph) -> tuple[int, ...]:
    """Indices of the main subgraph's ops that have a QMCU form (with their current tensors)."""
    view = _View(subgraph=graph.main)
    return tuple(i for i in range(len(graph.main.operators)) if view.has_form(i))


def qmcu_form_problem(*, subgraph: Subgraph, index: int) -> str | None:
    """Why op `index` has no QMCU form (None if it has one)."""
    op = subgraph.operators[index]
    if op.type not in QMCU_NAMES:
        return f"{op.type} has no QMCU form"
    activation = getattr(op.options, "fusedActivationFunction", None)
    if activation not in _ACTIVATIONS:
        return f"fused activation {activation} is not NONE/RELU/RELU6"
    keys = [op.inputs[0]] + ([op.inputs[1]] if op.type == "ADD" else []) + list(op.outputs)
    for key in keys:
        tensor = subgraph.tensors[key] if key is not None else None
        if tensor is None or tensor.dtype != INT8 or len(tensor.shape) != 4 \
                or _per_tensor(tensor) is None:
            return "an activation is not a per-tensor int8 4-D tensor"
    if op.type in CONV_TYPES:
        return _conv_problem(subgraph=subgraph, op=op)
    if op.type == "ADD" and not (subgraph.tensors[keys[0]].shape == subgraph.tensors[keys[1]].shape
                                 == subgraph.tensors[keys[2]].shape):
        return "ADD broadcasts"
    return None


def _conv_problem(*, subgraph: Subgraph, op: Operator) -> str | None:
    weights = subgraph.tensors[op.inputs[1]]
    if weights.dtype != INT8 or not weights.is_constant or len(weights.shape) != 4:
        return "the filter is not a constant int8 4-D tensor"
    channels = weights.shape[0] if op.type == "CONV_2D" else weights.shape[3]
    if len(weights.quantization.scale) not in (1, channels) or any(weights.quantization.zero_point):
        return "the filter is not symmetric per-channel or per-tensor"
    bias_key = op.inputs[2] if len(op.inputs) > 2 else None
    if bias_key is not None:
        bias = subgraph.tensors[bias_key]
        if bias.dtype != schema.TensorType.INT32 or not bias.is_constant \
                or bias.num_elements != channels:
            return "the bias is not a constant int32 vector of C_out values"
    return None


# ---- candidates ------------------------------------------------------------------------------

def subbyte_candidates(*, graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every activation tensor of the main subgraph -> the bit widths it may take.

    (8, 4, 2) minus the widths the packing rule forbids when its producer and every
    reader have a QMCU form (or the reader is a foldable zero-point PAD) and it is not
    a graph input/output nor a CONCATENATION input; (8,) for other int8 tensors; the
    tensor's own width (e.g. (32,)) for other types.
    """
    return {key: widths for key, (widths, _) in candidate_reasons(graph=graph).items()}


def candidate_reasons(*, graph: Graph) -> dict[str, tuple[tuple[int, ...], str]]:
    """Like `subbyte_candidates`, each with why sub-byte widths are ruled out ('' if not)."""
    view = _View(subgraph=graph.main)
    return {key: _tensor_candidates(view=view, key=key)
            for key, tensor in graph.main.tensors.items() if not tensor.is_constant}


def _tensor_candidates(*, view: _View, key: str) -> tuple[tuple[int, ...], str]:
    tensor = view.subgraph.tensors[key]
    if tensor.dtype != INT8:
        return (tensor.bits,), f"it is {tensor.type_name}, not INT8"
    problem = _subbyte_problem(view=view, key=key)
    if problem is not None:
        return (8,), problem
    channels = tensor.shape[-1]
    widths = tuple(b for b in ALL_WIDTHS if b == 8 or channels % (8 // b) == 0)
    dropped = [b for b in ALL_WIDTHS if b not in widths]
    return widths, (f"{channels} channels are not a multiple of "
                    f"{' / '.join(str(8 // b) for b in dropped)}" if dropped else "")


def _subbyte_problem(*, view: _View, key: str) -> str | None:
    sub = view.subgraph
    if key in sub.inputs or key in sub.outputs:
        return "it is a graph input or output"
    producer = view.producers.get(key)
    if producer is None:
        return "no op produces it"
    if not view.has_form(producer):
        return f"its producer {sub.op_label(producer)} has no QMCU form " \
               f"({view.form_problems[producer]})"
    for reader in view.consumers.get(key, []):
        problem = _reader_problem(view=view, reader=reader)
        if problem is not None:
            return problem
    return None


def _reader_problem(*, view: _View, reader: int) -> str | None:
    sub = view.subgraph
    op = sub.operators[reader]
    if op.type == "CONCATENATION":
        return f"{sub.op_label(reader)} reads it (patch outputs stay int8)"
    if op.type == "PAD":
        problem = view.pad_problems[reader]
        return None if problem is None else f"{sub.op_label(reader)} cannot be folded: {problem}"
    if not view.has_form(reader):
        return (f"{sub.op_label(reader)} reads it and has no QMCU form "
                f"({view.form_problems[reader]})")
    return None


def filter_candidates(*, graph: Graph) -> dict[str, tuple[int, ...]]:
    """Cuttable filter keys of the main subgraph -> the widths they may take
    (``weight_cuts.weight_candidates`` with this module's QMCU forms)."""
    view = _View(subgraph=graph.main)
    return weight_candidates(subgraph=graph.main, has_form=view.has_form)


def mac_sources(*, graph: Graph) -> dict[int, str]:
    """Op index -> the activation key each op with an input 0 and a filter reads once a plan
    is applied: a conv-like op reading a foldable zero-point PAD reads the PAD's input
    (folded whenever that map is sub-byte; at 8 bits both have 8 bits)."""
    view = _View(subgraph=graph.main)
    out = {}
    for index, op in enumerate(graph.main.operators):
        if len(op.inputs) > 1 and op.inputs[0] is not None:
            out[index] = view.source(index).key if view.has_form(index) else op.inputs[0]
    return out


# ---- plan checks -----------------------------------------------------------------------------

def checked_bits(*, graph: Graph, plan: BitwidthPlan) -> dict[str, int]:
    """The plan's bits after checking every key and width; `ConfigError` otherwise."""
    if not isinstance(plan, BitwidthPlan) or not isinstance(plan.bits, Mapping):
        raise ConfigError(f"bit-width plan: expected a BitwidthPlan with a `bits` mapping, "
                          f"got {type(plan).__name__}")
    reasons = candidate_reasons(graph=graph)
    view = _View(subgraph=graph.main)
    reasons.update({key: (widths, "the filter's innermost axis does not pack")
                    for key, widths in weight_candidates(subgraph=graph.main,
                                                         has_form=view.has_form).items()})
    tensors = graph.main.tensors
    for key, bits in plan.bits.items():
        if not isinstance(key, str) or key not in tensors:
            raise ConfigError(f"bit-width plan: {key!r} is not a tensor of the main subgraph "
                              f"(expected a tensor key such as {next(iter(reasons), '?')!r})")
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
            raise ConfigError(f"bit-width plan: tensor {key!r}: expected an int bit width, "
                              f"got {bits!r}")
        _check_width(key=key, bits=int(bits), tensor=tensors[key], reasons=reasons)
    return {key: int(bits) for key, bits in plan.bits.items()}


def checked_ranges(*, graph: Graph, plan: BitwidthPlan) -> dict[str, tuple[float, int]]:
    """Key -> (float32 scale, zero point) of the plan's sub-byte ranges, checked against the
    plan's widths; `ConfigError` otherwise."""
    out = {}
    for key, subbyte in getattr(plan, "ranges", {}).items():
        if key not in graph.main.tensors or plan.bits.get(key) != subbyte.bits:
            raise ConfigError(f"bit-width plan: range of {key!r} is for {subbyte.bits} bits, but "
                              f"the tensor is planned at {plan.bits.get(key)!r} bits")
        out[key] = (float(np.float32(subbyte.scale)), int(subbyte.zero_point))
    return out


def _check_width(*, key: str, bits: int, tensor: Tensor, reasons: Mapping) -> None:
    if tensor.is_constant and key not in reasons:
        if bits != 8:
            raise ConfigError(f"bit-width plan: tensor {key!r} is a constant (weights); this "
                              f"pass sets feature-map widths only: expected 8, got {bits}")
        return
    widths, why = reasons[key]
    if bits not in widths:
        raise ConfigError(f"bit-width plan: tensor {key!r} ({tensor.name}) may take "
                          f"{widths} bits, got {bits}: {why}")


# ---- the rewrite -----------------------------------------------------------------------------

def apply_bitwidth_plan(*, graph: Graph, plan: BitwidthPlan,
                        force_custom: bool = False,
                        custom_outputs: frozenset[str] = frozenset()) -> Graph:
    """A new graph with the plan's sub-byte feature maps packed and read/written by QMCU ops.

    `force_custom`: convert every op with a QMCU form, even when all its tensors are
    8-bit; `custom_outputs`: convert the ops with a QMCU form that write one of these keys
    (``--kernels``: the QMCU kernel for an int8 layer). The input graph is never mutated;
    weights stay shared (same `Buffer`s).
    """
    bits = checked_bits(graph=graph, plan=plan)
    ranges = checked_ranges(graph=graph, plan=plan)
    result = copy_graph(graph=graph)
    converter = _Converter(subgraph=result.main, bits=bits, ranges=ranges,
                           force_custom=force_custom, custom_outputs=custom_outputs)
    converter.convert()
    if any(m.name == OFFLINE_PLAN_METADATA for m in graph.metadata):
        result.metadata = _remapped_offline_plan(original=graph, result=result)
    return result


class _Converter:
    """Converts one subgraph in place (it is already a copy)."""

    def __init__(self, *, subgraph: Subgraph, bits: Mapping[str, int],
                 ranges: Mapping[str, tuple[float, int]], force_custom: bool,
                 custom_outputs: frozenset[str] = frozenset()) -> None:
        self.subgraph = subgraph
        self.bits = bits
        self.ranges = ranges
        self.view = _View(subgraph=subgraph)
        self.constants: dict[tuple, str] = {}
        self.quant = {key: _per_tensor(t) for key, t in subgraph.tensors.items()
                      if not t.is_constant and t.dtype == INT8}
        self.cuts = weight_cuts(subgraph=subgraph, bits=bits)
        self.qmcu = {i for i in range(len(subgraph.operators))
                     if self.view.has_form(i) and (force_custom or self._touches_subbyte(i)
                                                   or subgraph.operators[i].outputs[0]
                                                   in custom_outputs)}
        self.folded = {i for i in self.view.pad_problems if self.view.foldable_pad(i)
                       and all(r in self.qmcu for r in self.view.consumers[
                           subgraph.operators[i].outputs[0]])}

    def width(self, key: str) -> int:
        return self.bits.get(key, 8)

    def _touches_subbyte(self, index: int) -> bool:
        op = self.subgraph.operators[index]
        keys = [self.view.source(index).key] + list(op.outputs)
        if op.type in CONV_TYPES:
            keys.append(op.inputs[1])
        if op.type == "ADD":
            keys.append(op.inputs[1])
        return any(self.width(k) < 8 for k in keys)

    def source(self, index: int) -> _Source:
        found = self.view.source(index)
        producer = self.view.producers.get(self.subgraph.operators[index].inputs[0])
        return found if producer in self.folded else _Source(
            key=self.subgraph.operators[index].inputs[0])

    def quant_at(self, key: str) -> tuple[float, int]:
        """(scale, zero point) of a feature map at its planned width: the plan's range, else
        the whole int8 range (docs §1.5)."""
        if self.width(key) < 8 and key in self.ranges:
            return self.ranges[key]
        scale8, zp8 = self.quant[key]
        return subbyte_quant_params(scale8=scale8, zero_point8=zp8, bits=self.width(key))

    def convert(self) -> None:
        sub = self.subgraph
        before = list(sub.operators)
        ops = []
        for i, op in enumerate(before):
            if i in self.folded:
                continue
            ops.append(self._converted(index=i) if i in self.qmcu else op)
        sub.operators = ops
        for key, cut in self.cuts.items():
            details = fb.CustomQuantizationT()
            details.custom = np.frombuffer(subbyte_details(
                bits=cut.bits, logical_shape=tuple(sub.tensors[key].shape)), dtype=np.uint8)
            reader = next(op for op in before if op.inputs[1:2] == [key])
            axis = channel_axis(op_type=reader.type)
            sub.tensors[key] = packed_filter(tensor=sub.tensors[key], cut=cut, axis=axis,
                                             details=details)
        for key, bits in self.bits.items():
            if bits < 8 and key not in self.cuts:
                sub.tensors[key] = packed_tensor(tensor=sub.tensors[key], bits=bits,
                                                 quant=self.quant_at(key))
        _drop_unreferenced(subgraph=sub, candidates={k for op in before for k in op.inputs
                                                     + op.outputs if k is not None})

    def _converted(self, *, index: int) -> Operator:
        op = self.subgraph.operators[index]
        if op.type in CONV_TYPES:
            return self._conv(index=index)
        if op.type == "ADD":
            return self._add(op=op)
        return self._average_pool(index=index)

    # -- conv and depthwise ------------------------------------------------------------------
    def _conv(self, *, index: int) -> Operator:
        op = self.subgraph.operators[index]
        source = self.source(index)
        weights = self.subgraph.tensors[op.inputs[1]]
        s_in, zp_in = self.quant_at(source.key)
        s_out, zp_out = self.quant_at(op.outputs[0])
        channels = weights.shape[0] if op.type == "CONV_2D" else weights.shape[3]
        requant = conv_requant(in_scale=s_in, filter_scales=self.filter_scales(op.inputs[1]),
                               out_scale=s_out, channels=channels)
        out_name = self.subgraph.tensors[op.outputs[0]].name
        requant_key = self._constant(name=f"{out_name}/requant", values=requant)
        bias_key = self._bias(op=op, source=source, s_in=s_in)
        options = self._conv_options(index=index, source=source, zp_in=zp_in,
                                     out=(s_out, zp_out))
        return _custom_op(op=op, inputs=[source.key, op.inputs[1], bias_key, requant_key],
                          options=options)

    def filter_scales(self, key: str) -> tuple[float, ...]:
        """The filter's scales at its planned width (the cut's when it is cut)."""
        cut = self.cuts.get(key)
        return cut.scales if cut is not None else \
            tuple(self.subgraph.tensors[key].quantization.scale)

    def _conv_options(self, *, index: int, source: _Source, zp_in: int,
                      out: tuple[float, int]):
        op = self.subgraph.operators[index]
        o = op.options
        weights = self.subgraph.tensors[op.inputs[1]]
        out_key = op.outputs[0]
        lo, hi = activation_range(activation=o.fusedActivationFunction,
                                  bits=self.width(out_key), scale=out[0], zero_point=out[1])
        geometry = window_geometry(
            options=o, in_shape=self.subgraph.tensors[op.inputs[0]].shape,
            kernel=tuple(weights.shape[1:3]),
            dilation=(o.dilationHFactor or 1, o.dilationWFactor or 1), extra=source.pads)
        common = dict(in_bits=self.width(source.key), out_bits=self.width(out_key),
                      w_bits=self.width(op.inputs[1]),
                      in_zero_point=zp_in, out_zero_point=out[1],
                      in_shape=tuple(self.subgraph.tensors[source.key].shape),
                      filter_shape=tuple(weights.shape),
                      out_shape=tuple(self.subgraph.tensors[out_key].shape),
                      act_min=lo, act_max=hi, geometry=geometry)
        if op.type == "CONV_2D":
            return Conv2DOptions(**common)
        return DepthwiseConv2DOptions(**common, depth_multiplier=o.depthMultiplier or 1)

    def _bias(self, *, op: Operator, source: _Source, s_in: float) -> str | None:
        """The bias key: the original one, or a rescaled copy when the input scale changed."""
        key = op.inputs[2] if len(op.inputs) > 2 else None
        cut = self.cuts.get(op.inputs[1])
        if key is None or (self.width(source.key) == 8 and cut is None):
            return key
        bias = self.subgraph.tensors[key]
        values = rescaled_bias(bias=bias.array(), old_scale=self.quant[source.key][0],
                               new_scale=s_in)
        weights = self.subgraph.tensors[op.inputs[1]]
        if cut is not None:
            values = _checked_int32(cut_bias(
                bias=bias.array(), new_scales=np.asarray(cut.scales, dtype=np.float64) * s_in,
                old_scales=np.broadcast_to(np.asarray(weights.quantization.scale, np.float64)
                                           * self.quant[source.key][0], (len(cut.scales),))))
        scales = tuple(float(np.float32(s_in * float(np.float32(s))))
                       for s in self.filter_scales(op.inputs[1]))
        quant = Quantization(scale=scales, zero_point=(0,) * len(scales) if cut is None else (),
                             quantized_dimension=0)
        suffix = "" if cut is None else f"w{cut.bits}"
        return self._constant(name=f"{bias.name}/in{self.width(source.key)}bit{suffix}",
                              values=values,
                              quantization=quant)

    # -- add and average pool ----------------------------------------------------------------
    def _add(self, *, op: Operator) -> Operator:
        (s1, z1), (s2, z2) = self.quant_at(op.inputs[0]), self.quant_at(op.inputs[1])
        so, zo = self.quant_at(op.outputs[0])
        twice = 2 * max(s1, s2)
        (m1, h1), (m2, h2), (mo, ho) = (quantize_multiplier(r) for r in (
            s1 / twice, s2 / twice, twice / ((1 << ADD_LEFT_SHIFT) * so)))
        out_bits = self.width(op.outputs[0])
        lo, hi = activation_range(activation=op.options.fusedActivationFunction, bits=out_bits,
                                  scale=so, zero_point=zo)
        options = AddOptions(
            in1_bits=self.width(op.inputs[0]), in2_bits=self.width(op.inputs[1]),
            out_bits=out_bits, in1_zero_point=z1, in2_zero_point=z2, out_zero_point=zo,
            in1_multiplier=m1, in1_shift=h1, in2_multiplier=m2, in2_shift=h2,
            out_multiplier=mo, out_shift=ho, act_min=lo, act_max=hi,
            shape=tuple(self.subgraph.tensors[op.outputs[0]].shape))
        return _custom_op(op=op, inputs=list(op.inputs[:2]), options=options)

    def _average_pool(self, *, index: int) -> Operator:
        op = self.subgraph.operators[index]
        o = op.options
        in_key, out_key = op.inputs[0], op.outputs[0]
        (s_in, z_in), (s_out, z_out) = self.quant_at(in_key), self.quant_at(out_key)
        in_bits, out_bits = self.width(in_key), self.width(out_key)
        rescale = (in_bits, s_in, z_in) != (out_bits, s_out, z_out)
        multiplier, shift = quantize_multiplier(s_in / s_out) if rescale else (0, 0)
        lo, hi = activation_range(activation=o.fusedActivationFunction, bits=out_bits,
                                  scale=s_out, zero_point=z_out)
        in_shape = tuple(self.subgraph.tensors[in_key].shape)
        options = AveragePool2DOptions(
            in_bits=in_bits, out_bits=out_bits, in_zero_point=z_in, out_zero_point=z_out,
            in_shape=in_shape, out_shape=tuple(self.subgraph.tensors[out_key].shape),
            filter_h=o.filterHeight, filter_w=o.filterWidth, act_min=lo, act_max=hi,
            rescale=rescale, multiplier=multiplier, shift=shift,
            geometry=window_geometry(options=o, in_shape=in_shape,
                                     kernel=(o.filterHeight, o.filterWidth)))
        return _custom_op(op=op, inputs=[in_key], options=options)

    def _constant(self, *, name: str, values: np.ndarray,
                  quantization: Quantization | None = None) -> str:
        """An INT32 constant; equal ones (e.g. of one conv in every patch) are one tensor."""
        data = values.astype("<i4").tobytes()
        quant_key = None if quantization is None else (quantization.scale,
                                                       quantization.zero_point)
        cache_key = (tuple(values.shape), data, quant_key)
        if cache_key in self.constants:
            return self.constants[cache_key]
        tensor = Tensor(name=name, shape=tuple(values.shape), dtype=schema.TensorType.INT32,
                        buffer=Buffer(data=data), quantization=quantization)
        key = self.subgraph.add_tensor(tensor=tensor, key=name)
        tensor.name = key
        self.constants[cache_key] = key
        return key


# ---- formulas of docs/qmcu_ops.md ------------------------------------------------------------

def conv_requant(*, in_scale: float, filter_scales, out_scale: float,
                 channels: int) -> np.ndarray:
    """INT32 [2, C_out]: per channel, (multiplier, shift) of s_in * s_w[c] / s_out in double."""
    scales = np.broadcast_to(np.asarray(filter_scales, dtype=np.float32), (channels,))
    pairs = [quantize_multiplier(float(np.float32(in_scale)) * float(s)
                                 / float(np.float32(out_scale))) for s in scales]
    return np.array([[m for m, _ in pairs], [s for _, s in pairs]], dtype=np.int32)


def rescaled_bias(*, bias: np.ndarray, old_scale: float, new_scale: float) -> np.ndarray:
    """Bias at input scale `new_scale`: round(bias * old / new), half away from zero, int32."""
    real = np.asarray(bias, dtype=np.float64) * (float(old_scale) / float(new_scale))
    rounded = np.sign(real) * np.floor(np.abs(real) + 0.5)
    if rounded.size and (rounded.min() < INT32_MIN or rounded.max() > INT32_MAX):
        raise ConfigError("rescaled bias leaves the int32 range")
    return rounded.astype(np.int32)


def _checked_int32(values: np.ndarray) -> np.ndarray:
    if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
        raise ConfigError("rescaled bias leaves the int32 range")
    return values.astype(np.int32)


def activation_range(*, activation: int, bits: int, scale: float,
                     zero_point: int) -> tuple[int, int]:
    """Clamp bounds of a fused activation in the output's own integer domain (docs §1.4)."""
    qmin, qmax = act_range(bits=bits)
    if activation == schema.ActivationFunctionType.NONE:
        return qmin, qmax
    low = max(qmin, zero_point)
    if activation == schema.ActivationFunctionType.RELU:
        return low, qmax
    six = float(np.float32(6.0) / np.float32(scale))
    return low, min(qmax, zero_point + int(np.sign(six) * np.floor(abs(six) + 0.5)))


def window_geometry(*, options, in_shape, kernel: tuple[int, int],
                    dilation: tuple[int, int] = (1, 1),
                    extra: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Geometry:
    """Explicit geometry of a builtin window op reading `in_shape`, plus folded PAD amounts."""
    same = options.padding == schema.Padding.SAME
    own = []
    for size, k, stride, d in zip(in_shape[1:3], kernel, (options.strideH, options.strideW),
                                  dilation):
        own += list(same_padding(size=size, kernel=k, stride=stride, dilation=d)[1:]) \
            if same else [0, 0]
    pads = [a + b for a, b in zip(own, extra)]
    padding = "EXPLICIT" if any(extra) else ("SAME" if same else "VALID")
    return Geometry(stride_h=options.strideH, stride_w=options.strideW, dilation_h=dilation[0],
                    dilation_w=dilation[1], padding=padding, pad_top=pads[0],
                    pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])


def packed_tensor(*, tensor: Tensor, bits: int, quant: tuple[float, int]) -> Tensor:
    """The packed UINT8 form of a feature map at `bits` (docs §1.1)."""
    logical = tuple(tensor.shape)
    packed = logical[:-1] + (logical[-1] * bits // 8,)
    signature = None if tensor.shape_signature is None else \
        tuple(tensor.shape_signature[:-1]) + (packed[-1],)
    details = fb.CustomQuantizationT()
    details.custom = np.frombuffer(subbyte_details(bits=bits, logical_shape=logical),
                                   dtype=np.uint8)
    quantization = Quantization(scale=(quant[0],), zero_point=(quant[1],),
                                details_type=fb.QuantizationDetails.CustomQuantization,
                                details=details)
    return dataclasses.replace(tensor, shape=packed, dtype=schema.TensorType.UINT8,
                               quantization=quantization, shape_signature=signature,
                               extra=dict(tensor.extra))


def subbyte_details(*, bits: int, logical_shape: tuple[int, ...]) -> bytes:
    """The CustomQuantization flexbuffer map of a packed tensor: {bits, logical_shape}."""
    return bytes(flexbuffers.Dumps({"bits": int(bits),
                                    "logical_shape": [int(d) for d in logical_shape]}))


def _custom_op(*, op: Operator, inputs: list[str | None], options) -> Operator:
    name = QMCU_NAMES[op.type]
    return Operator(opcode=OpCode(builtin=schema.BuiltinOperator.CUSTOM, custom=name),
                    inputs=inputs, outputs=list(op.outputs),
                    custom_options=encode_options(options=options))


def _drop_unreferenced(*, subgraph: Subgraph, candidates: set[str]) -> None:
    """Removes tensors among `candidates` that no op, input or output refers to any more."""
    used = {k for op in subgraph.operators for k in op.inputs + op.outputs + op.intermediates
            if k is not None} | set(subgraph.inputs) | set(subgraph.outputs)
    for key in candidates - used:
        del subgraph.tensors[key]


def _remapped_offline_plan(*, original: Graph, result: Graph) -> list[Metadata]:
    """The `OfflineMemoryAllocation` entry rewritten for the result's tensor lists."""
    values = [0, len(result.subgraphs), sum(len(s.tensors) for s in result.subgraphs)]
    for index, sub in enumerate(result.subgraphs):
        known = offline_offsets(graph=original, subgraph_index=index)
        values += [known.get(key, -1) for key in sub.tensors]
    data = np.asarray(values, dtype="<i4").tobytes()
    kept = [m for m in result.metadata if m.name != OFFLINE_PLAN_METADATA]
    return kept + [Metadata(name=OFFLINE_PLAN_METADATA, buffer=Buffer(data=data))]
