"""The stage-op patch form: the whole patch stage as one ``QMCU_PATCH_STAGE`` op.

    graph2 = apply_stage_op(graph=graph, stage=stage, row_bounds=..., col_bounds=...)

The same stage and bounds as the builtin form (`rewrite.py`), the same per-axis regions
(`stage.axis_intervals`), but instead of per-patch builtin ops the stage's layers go into
the op's options (docs/qmcu_ops.md §8) and every per-patch intermediate lives in one
scratch buffer, at offsets this module plans:

- every stage tensor but the input gets a slot of its largest patch part; a layer input
  is read in place when the part the layer needs has the held part's columns (rows are
  a pointer offset), otherwise its window is first copied to a staging slot;
- the stage output is written in place when its patches span whole rows (one grid
  column), else through a slot and a row copy;
- kernel scratch (the optimized C path's) is a slot of its layer;
- in-place depthwise (and conv): a depthwise or conv layer whose input dies with it
  writes its output over the input, the output slot starting `gap` bytes before the
  input slot, the smallest gap such that output row oy never reaches an input row still
  to be read (row-major kernels; any kernel size, stride and dilation). It pays most for
  depthwise (input and output of one size: only about a row of gap) and for 1x1
  projections; an expanding 1x1 conv still saves most of its input. Each candidate
  layer (in layer order) goes in place only if that lowers the scratch size;
- slots are placed like TFLite Micro's greedy planner (largest first, lowest offset
  that overlaps no slot alive at the same layer), in layer steps of one patch.
- output over input: the stage output is placed (TFLite Micro's offline memory plan) so
  that the two overlap: output at offset 0, input at `output_gap`, the smallest gap such that the output rows of patch
  row i end before the first input row patch row i reads (later rows read later input).
The op reads the stage input and the layers' weight and bias tensors (the original
tensors, so the original buffers) and writes the stage output; later ops are untouched.

Sub-byte branches (`bitwidths=`, format version 2): a BitwidthPlan keyed like the builtin
form (``p{i}_{j}/{k}``) gives each patch's maps their widths and ranges; slots are sized per
patch at those widths, and each layer gets one variant per distinct quantization of its
patches (clamp, requant and rescaled-bias constants computed as `apply_bitwidths` does for
the per-patch QMCU op), so the op computes what the builtin form's QMCU ops compute.
PAD layers run inside the op (kind 5); a PAD's output takes its input's widths.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from tflite_quantmcu.analysis.memory import ARENA_ALIGNMENT, offline_offsets
from tflite_quantmcu.analysis.qmcu_scratch import conv_scratch_bytes, depthwise_scratch_bytes
from tflite_quantmcu.errors import ConfigError, UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import Buffer, Graph, OpCode, Operator, Quantization, Subgraph, Tensor
from tflite_quantmcu.patches.receptive_field import Interval, spatial_map
from tflite_quantmcu.patches.rewrite import copy_graph, with_offline_plan
from tflite_quantmcu.patches.stage import (COLS_AXIS, ROWS_AXIS, Stage, axis_intervals,
                                           empty_part)
from tflite_quantmcu.qmcu_stage_options import (LAYER_KINDS, NO_SLOT, SLOT_ALIGNMENT,
                                                STAGE_OP, StageLayer, StageOptions, StageTensor,
                                                StageVariant, add_quant, encode_stage_options,
                                                held_part, input_cut)
from tflite_quantmcu.qmcu_options import subbyte_quant_params
from tflite_quantmcu.quant.apply_bitwidths import (activation_range, conv_requant,
                                                   qmcu_form_problem, rescaled_bias)
from tflite_quantmcu.reference.requantize import quantize_multiplier

INT8 = schema.TensorType.INT8
IN_PLACE_KINDS = ("DEPTHWISE_CONV_2D", "CONV_2D")
_ACTIVATIONS = (schema.ActivationFunctionType.NONE, schema.ActivationFunctionType.RELU,
                schema.ActivationFunctionType.RELU6)


# -- which stages the op can run -------------------------------------------------------------
def stage_op_problem(*, subgraph: Subgraph, stage: Stage) -> str | None:
    """Why the stage cannot be one QMCU_PATCH_STAGE op (None when it can)."""
    if subgraph.tensors[stage.input_key].dtype != INT8:
        return f"the stage input {subgraph.tensors[stage.input_key].name!r} is not int8"
    for index in stage.op_indices:
        problem = _layer_problem(subgraph=subgraph, index=index)
        if problem is not None:
            return f"{subgraph.op_label(index)}: {problem}"
    return None


def _layer_problem(*, subgraph: Subgraph, index: int) -> str | None:
    op = subgraph.operators[index]
    if op.type not in LAYER_KINDS:
        return f"{op.type} is not a layer kind of {STAGE_OP} ({', '.join(LAYER_KINDS)})"
    if op.type == "MAX_POOL_2D":
        return _max_pool_problem(subgraph=subgraph, op=op)
    if op.type == "PAD":
        return _pad_problem(subgraph=subgraph, op=op)
    problem = qmcu_form_problem(subgraph=subgraph, index=index)
    if problem is None and op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if subgraph.tensors[op.inputs[1]].dtype != INT8:
            return "the filter is not int8"
    if problem is None and op.type == "ADD" and any(
            subgraph.tensors[k].is_constant for k in op.inputs[:2]):
        return "ADD of a constant"
    return problem


def _max_pool_problem(*, subgraph: Subgraph, op: Operator) -> str | None:
    src, out = (subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]])
    if src.dtype != INT8 or out.dtype != INT8:
        return "MAX_POOL_2D is not int8"
    if op.options.fusedActivationFunction not in _ACTIVATIONS:
        return "fused activation is not NONE/RELU/RELU6"
    return None


def _pad_problem(*, subgraph: Subgraph, op: Operator) -> str | None:
    src, out = (subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]])
    if src.dtype != INT8 or out.dtype != INT8:
        return "PAD is not int8"
    if (tuple(src.quantization.scale), tuple(src.quantization.zero_point)) != \
            (tuple(out.quantization.scale), tuple(out.quantization.zero_point)):
        return "PAD changes the quantization"
    return None


# -- the rewrite -----------------------------------------------------------------------------
def apply_stage_op(*, graph: Graph, stage: Stage, row_bounds: tuple[int, ...],
                   col_bounds: tuple[int, ...], in_place: bool = True,
                   bitwidths=None) -> Graph:
    """A new Graph whose stage is one QMCU_PATCH_STAGE op (the input graph is untouched).

    in_place: in-place layers in the buffer plan and, when the model has no offline
    memory plan of its own, the stage output over the stage input.
    bitwidths: a BitwidthPlan whose per-patch keys (``p{i}_{j}/{k}``, as the builtin form
    names the maps) give stage maps sub-byte widths per patch (version-2 options; the
    plan's other keys are not this pass's); None: all int8."""
    problem = stage_op_problem(subgraph=graph.main, stage=stage)
    if problem is not None:
        raise UnsupportedOpError(f"patch form stage-op: {problem}")
    overlap = in_place and not any(offline_offsets(graph=graph, subgraph_index=i)
                                   for i in range(len(graph.subgraphs)))
    widths = stage_widths(subgraph=graph.main, stage=stage, plan=bitwidths,
                          grid=(len(row_bounds) - 1, len(col_bounds) - 1))
    constants: dict[str, Tensor] = {}
    options, inputs = stage_options(subgraph=graph.main, stage=stage, row_bounds=row_bounds,
                                    col_bounds=col_bounds, in_place=in_place,
                                    overlap_output=overlap, widths=widths,
                                    constants=constants)
    result = copy_graph(graph=graph)
    sub = result.main
    for key, tensor in constants.items():
        sub.tensors[key] = tensor
    internal = {key for i in stage.op_indices for key in sub.operators[i].outputs}
    internal.discard(stage.output_key)
    op = Operator(opcode=OpCode(builtin=schema.BuiltinOperator.CUSTOM, custom=STAGE_OP),
                  inputs=inputs, outputs=[stage.output_key],
                  custom_options=encode_stage_options(options=options))
    sub.operators = [op] + sub.operators[stage.split + 1:]
    used = {k for o in sub.operators for k in o.inputs + o.outputs if k is not None}
    for key in internal | {k for i in stage.op_indices for k in graph.main.operators[i].inputs
                           if k is not None}:
        if key not in used and key not in sub.inputs and key not in sub.outputs \
                and key in sub.tensors:
            del sub.tensors[key]
    if options.output_gap >= 0:
        offsets = [{} for _ in result.subgraphs]
        offsets[0] = {stage.output_key: 0, stage.input_key: options.output_gap}
        result.metadata = with_offline_plan(graph=result, offsets=offsets)
    return result


def stage_options(*, subgraph: Subgraph, stage: Stage, row_bounds: tuple[int, ...],
                  col_bounds: tuple[int, ...], in_place: bool = True,
                  overlap_output: bool = False,
                  widths: Mapping[tuple[str, int], tuple[int, float, int]] | None = None,
                  constants: dict[str, Tensor] | None = None
                  ) -> tuple[StageOptions, list[str]]:
    """The op's options and its input tensor keys (stage input, then weights and biases, then
    the sub-byte variants' requant and rescaled-bias constants, which go to `constants`).

    widths: (stage map key, patch index) -> (bits, scale, zero point) of the maps planned
    below 8 bits (`stage_widths`); absent pairs are int8."""
    widths = widths or {}
    constants = {} if constants is None else constants
    _check_bounds(subgraph=subgraph, stage=stage, row_bounds=row_bounds, col_bounds=col_bounds)
    rows = axis_intervals(subgraph=subgraph, stage=stage, axis=ROWS_AXIS, bounds=row_bounds)
    cols = axis_intervals(subgraph=subgraph, stage=stage, axis=COLS_AXIS, bounds=col_bounds)
    for parts in (rows, cols):
        problem = empty_part(subgraph=subgraph, parts=parts)
        if problem is not None:
            raise ConfigError(f"cannot cut the stage ending at {subgraph.op_label(stage.split)}"
                              f": {problem}")
    live_ops = [i for i in stage.op_indices if subgraph.operators[i].outputs[0] in rows[0]]
    keys = [stage.input_key] + [subgraph.operators[i].outputs[0] for i in live_ops]
    ids = {key: n for n, key in enumerate(keys)}
    patches = len(rows) * len(cols)
    tensors = [_stage_tensor(subgraph=subgraph, key=key, rows=rows, cols=cols,
                             widths=widths) for key in keys]
    inputs = [stage.input_key]
    layers = [_layer(subgraph=subgraph, index=i, ids=ids, inputs=inputs) for i in live_ops]
    if any(t.patch_bits for t in tensors):
        sites = _VariantSites(subgraph=subgraph, widths=widths, inputs=inputs,
                              constants=constants, patches=patches)
        layers = [sites.with_variants(layer=layer, index=i)
                  for layer, i in zip(layers, live_ops)]
    try:
        draft = StageOptions(grid=(len(rows), len(cols)), tensors=tuple(tensors),
                             layers=tuple(layers), scratch_bytes=0)
    except ValueError as err:
        raise ConfigError(f"{STAGE_OP} ending at {subgraph.op_label(stage.split)}: {err}") \
            from err
    options = plan_buffers(options=draft, in_place=in_place)
    if overlap_output and 0 not in options.layers[-1].inputs:
        options = dataclasses.replace(options, output_gap=output_gap(options=options))
    return options, inputs


def output_gap(*, options: StageOptions) -> int:
    """Smallest arena gap (16-byte aligned) between the stage output placed first and the
    stage input after it, such that no patch row's output reaches input it still reads."""
    src, out = options.tensors[0], options.tensors[options.output]
    in_row = src.shape[2] * src.pixel_bytes
    out_row = out.shape[2] * out.pixel_bytes
    gap = max(max(0, out.rows[i][1] * out_row - src.rows[i][0] * in_row)
              for i in range(options.grid[0]))
    return (gap + ARENA_ALIGNMENT - 1) // ARENA_ALIGNMENT * ARENA_ALIGNMENT


def _check_bounds(*, subgraph: Subgraph, stage: Stage, row_bounds: tuple[int, ...],
                  col_bounds: tuple[int, ...]) -> None:
    shape = subgraph.tensors[stage.output_key].shape
    for name, bounds, size in (("row", row_bounds, shape[1]), ("col", col_bounds, shape[2])):
        if (len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != size
                or any(a >= b for a, b in zip(bounds[:-1], bounds[1:]))):
            raise ConfigError(f"{name} bounds {list(bounds)} of {subgraph.op_label(stage.split)}"
                              f": expected increasing parts of [0, {size})")


def _stage_tensor(*, subgraph: Subgraph, key: str, rows: list[dict[str, Interval]],
                  cols: list[dict[str, Interval]],
                  widths: Mapping[tuple[str, int], tuple[int, float, int]]) -> StageTensor:
    tensor = subgraph.tensors[key]
    zero_point = int(tensor.quantization.zero_point[0])
    patches = range(len(rows) * len(cols))
    planned = [widths.get((key, p)) for p in patches]
    return StageTensor(shape=tuple(tensor.shape), bits=8, zero_point=zero_point,
                       rows=tuple((p[key].start, p[key].stop) for p in rows),
                       cols=tuple((p[key].start, p[key].stop) for p in cols),
                       patch_bits=tuple(8 if w is None else w[0] for w in planned)
                       if any(planned) else (),
                       patch_zero_points=tuple(zero_point if w is None else w[2]
                                               for w in planned) if any(planned) else ())


# -- sub-byte widths per patch (version 2) ---------------------------------------------------
PATCH_KEY = re.compile(r"^p(\d+)_(\d+)/(\d+)$")
PATCH_NAMESPACE = re.compile(r"^p\d+_\d+/\d+")   # maps and the builtin form's helpers


def stage_widths(*, subgraph: Subgraph, stage: Stage, plan,
                 grid: tuple[int, int]) -> dict[tuple[str, int], tuple[int, float, int]]:
    """(stage map key, patch index) -> (bits, float32 scale, zero point) of every map a
    BitwidthPlan puts below 8 bits under the builtin form's per-patch key ``p{i}_{j}/{k}``
    (k: the original op writing the map): the plan's range, else the int8 map's whole range
    (docs §1.5), exactly as `apply_bitwidths` quantizes that per-patch tensor."""
    if plan is None:
        return {}
    out = {}
    for pkey, bits in plan.bits.items():
        match = PATCH_KEY.match(pkey)
        if match is None and PATCH_NAMESPACE.match(pkey) and bits != 8:
            raise ConfigError(f"bit-width plan: {pkey!r} is a helper tensor of the builtin "
                              f"form (border PAD / slice), not a feature map: expected 8, "
                              f"got {bits}")
        if match is None or bits == 8:
            continue
        i, j, k = (int(g) for g in match.groups())
        if i >= grid[0] or j >= grid[1] or k not in stage.op_indices:
            raise ConfigError(f"bit-width plan: {pkey!r} is no map of the {grid[0]}x{grid[1]} "
                              f"stage ending at {subgraph.op_label(stage.split)}")
        key = subgraph.operators[k].outputs[0]
        chosen = plan.range_of(pkey)
        if chosen is not None:
            quant = (float(np.float32(chosen.scale)), int(chosen.zero_point))
        else:
            q = subgraph.tensors[key].quantization
            quant = subbyte_quant_params(scale8=float(np.float32(q.scale[0])),
                                         zero_point8=int(q.zero_point[0]), bits=bits)
        out[key, i * grid[1] + j] = (int(bits),) + tuple(quant)
    for index in stage.op_indices:      # a PAD copies: its output at its input's widths
        op = subgraph.operators[index]
        if op.type == "PAD":
            for p in range(grid[0] * grid[1]):
                if (op.inputs[0], p) in out:
                    out[op.outputs[0], p] = out[op.inputs[0], p]
    return out


class _VariantSites:
    """Builds each layer's version-2 variants: per patch whose maps are not all int8 the
    clamp, requant and (input rescaled) bias that `apply_bitwidths` gives the per-patch QMCU
    op; equal variants are one, and a layer's requant and bias words are one INT32 constant
    (its `variant_data` op input; equal runs of words stored once)."""

    def __init__(self, *, subgraph: Subgraph, widths: Mapping, inputs: list[str],
                 constants: dict[str, Tensor], patches: int) -> None:
        self.subgraph = subgraph
        self.widths = widths
        self.inputs = inputs
        self.constants = constants
        self.patches = patches
        self.words: list[int] = []           # the current layer's variant data
        self.offsets: dict[tuple[int, ...], int] = {}

    def quant(self, key: str, p: int) -> tuple[int, float, int]:
        if (key, p) in self.widths:
            return self.widths[key, p]
        q = self.subgraph.tensors[key].quantization
        return 8, float(np.float32(q.scale[0])), int(q.zero_point[0])

    def with_variants(self, *, layer: StageLayer, index: int) -> StageLayer:
        op = self.subgraph.operators[index]
        if op.type == "PAD":       # a copy: its fill is each patch's zero point (docs §8.4)
            return layer
        variants: list[StageVariant] = []
        chosen = []
        self.words, self.offsets = [], {}
        for p in range(self.patches):
            keys = [op.inputs[0]] + ([op.inputs[1]] if op.type == "ADD" else []) + \
                [op.outputs[0]]
            if all(self.quant(k, p)[0] == 8 for k in keys):
                chosen.append(0)
                continue
            variant = self._variant(op=op, p=p)
            if variant not in variants:
                variants.append(variant)
            chosen.append(variants.index(variant) + 1)
        if not variants:
            return layer
        name = self.subgraph.tensors[op.outputs[0]].name
        data = self._constant(name=f"{name}/stage_variants",
                              values=np.array(self.words, dtype=np.int32))
        return dataclasses.replace(layer, variants=tuple(variants), patch_variants=tuple(chosen),
                                   variant_data=data)

    def _variant(self, *, op: Operator, p: int) -> StageVariant:
        out_bits, s_out, z_out = self.quant(op.outputs[0], p)
        lo, hi = activation_range(activation=op.options.fusedActivationFunction,
                                  bits=out_bits, scale=s_out, zero_point=z_out)
        in_bits, s_in, z_in = self.quant(op.inputs[0], p)
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weights = self.subgraph.tensors[op.inputs[1]]
            out = self.subgraph.tensors[op.outputs[0]]
            requant = conv_requant(in_scale=s_in, filter_scales=weights.quantization.scale,
                                   out_scale=s_out, channels=out.shape[3])
            return StageVariant(act_min=lo, act_max=hi,
                                bias=self._bias(op=op, in_bits=in_bits, s_in=s_in),
                                requant=self._words(requant))
        if op.type == "ADD":
            _, s2, _ = self.quant(op.inputs[1], p)
            multipliers, shifts = add_quant(s1=s_in, s2=s2, s_out=s_out,
                                            quantize_multiplier=quantize_multiplier)
            values = np.array([multipliers, shifts], dtype=np.int32)
            return StageVariant(act_min=lo, act_max=hi, requant=self._words(values))
        if op.type == "AVERAGE_POOL_2D" and (in_bits, s_in, z_in) != (out_bits, s_out, z_out):
            values = np.array([[m] for m in quantize_multiplier(s_in / s_out)], dtype=np.int32)
            return StageVariant(act_min=lo, act_max=hi, requant=self._words(values))
        return StageVariant(act_min=lo, act_max=hi)

    def _bias(self, *, op: Operator, in_bits: int, s_in: float) -> int:
        """Word offset of the bias rescaled to the input scale s_in; -1: the layer's own
        bias operand (an int8 input: the original bias, or none)."""
        key = op.inputs[2] if len(op.inputs) > 2 else None
        if key is None or in_bits == 8:
            return -1
        q8 = self.subgraph.tensors[op.inputs[0]].quantization
        return self._words(rescaled_bias(bias=self.subgraph.tensors[key].array(),
                                         old_scale=float(np.float32(q8.scale[0])),
                                         new_scale=s_in))

    def _words(self, values: np.ndarray) -> int:
        """Offset of `values` (flattened) in the layer's variant data; equal runs once."""
        flat = tuple(int(v) for v in np.asarray(values).reshape(-1))
        if flat not in self.offsets:
            self.offsets[flat] = len(self.words)
            self.words += flat
        return self.offsets[flat]

    def _constant(self, *, name: str, values: np.ndarray) -> int:
        """Op input index of a new INT32 constant."""
        key = name
        counter = 1
        while key in self.subgraph.tensors or key in self.constants:
            key = f"{name}#{counter}"
            counter += 1
        self.constants[key] = Tensor(name=key, shape=tuple(np.shape(values)),
                                     dtype=schema.TensorType.INT32,
                                     buffer=Buffer(data=np.asarray(values).astype("<i4").tobytes()))
        return _operand(key, self.inputs)


def _scale(subgraph: Subgraph, key: str) -> float:
    return float(subgraph.tensors[key].quantization.scale[0])


def _operand(key: str | None, inputs: list[str]) -> int:
    """Index of a constant among the op's inputs (appended once), -1 for None."""
    if key is None:
        return -1
    if key not in inputs:
        inputs.append(key)
    return inputs.index(key)


def _layer(*, subgraph: Subgraph, index: int, ids: dict[str, int],
           inputs: list[str]) -> StageLayer:
    op = subgraph.operators[index]
    out = subgraph.tensors[op.outputs[0]]
    activation = schema.ActivationFunctionType.NONE if op.type == "PAD" else \
        op.options.fusedActivationFunction
    lo, hi = activation_range(activation=activation, bits=8,
                              scale=_scale(subgraph, op.outputs[0]),
                              zero_point=int(out.quantization.zero_point[0]))
    common = dict(kind=op.type, output=ids[op.outputs[0]], act_min=lo, act_max=hi)
    if op.type == "ADD":
        multipliers, shifts = add_quant(
            s1=_scale(subgraph, op.inputs[0]), s2=_scale(subgraph, op.inputs[1]),
            s_out=_scale(subgraph, op.outputs[0]), quantize_multiplier=quantize_multiplier)
        return StageLayer(**common, inputs=(ids[op.inputs[0]], ids[op.inputs[1]]),
                          multiplier=multipliers, shift=shifts, staging=(NO_SLOT, NO_SLOT))
    window = _window(subgraph=subgraph, index=index)
    if op.type == "PAD":       # fills with the output zero point (TFLite's int8 PAD)
        return StageLayer(**common, inputs=(ids[op.inputs[0]],), staging=(NO_SLOT,),
                          multiplier=(int(out.quantization.zero_point[0]),), shift=(0,),
                          **window)
    if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        weights = subgraph.tensors[op.inputs[1]]
        requant = conv_requant(in_scale=_scale(subgraph, op.inputs[0]),
                               filter_scales=weights.quantization.scale,
                               out_scale=_scale(subgraph, op.outputs[0]),
                               channels=out.shape[3])
        bias = op.inputs[2] if len(op.inputs) > 2 else None
        window.update(filter=_operand(op.inputs[1], inputs), bias=_operand(bias, inputs),
                      multiplier=tuple(int(v) for v in requant[0]),
                      shift=tuple(int(v) for v in requant[1]),
                      depth_multiplier=(op.options.depthMultiplier or 1)
                      if op.type == "DEPTHWISE_CONV_2D" else 1)
    return StageLayer(**common, inputs=(ids[op.inputs[0]],), staging=(NO_SLOT,), **window)


def _window(*, subgraph: Subgraph, index: int) -> dict:
    """Kernel, stride, dilation and own padding of a window layer (its spatial map)."""
    smap = spatial_map(subgraph=subgraph, index=index).inputs[0]
    return dict(kernel=(smap.rows.kernel, smap.cols.kernel),
                stride=(smap.rows.stride, smap.cols.stride),
                dilation=(smap.rows.dilation, smap.cols.dilation),
                pad_top=smap.rows.pad_before, pad_left=smap.cols.pad_before)


# -- the buffer plan ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Slot:
    """A scratch buffer of one patch: alive from layer step `first` to `last`."""

    name: str
    size: int
    first: int
    last: int


def _align(n: int) -> int:
    return (n + SLOT_ALIGNMENT - 1) // SLOT_ALIGNMENT * SLOT_ALIGNMENT


def plan_buffers(*, options: StageOptions, in_place: bool = True) -> StageOptions:
    """`options` with staging decisions, slot offsets and the scratch size filled in."""
    staged = {(n, k): _needs_staging(options=options, n=n, k=k)
              for n, layer in enumerate(options.layers) for k in range(len(layer.inputs))}
    out_slot = _output_needs_slot(options=options)
    slots = _slots(options=options, staged=staged, out_slot=out_slot)
    offsets, total = _place(slots=slots, joints={})
    kept: dict[str, tuple[str, int]] = {}
    candidates = _in_place_joints(options=options, staged=staged, slots=slots) \
        if in_place else {}
    for _ in range(3):                       # passes: a joint may pay once another is in
        improved = False
        for dst, joint in candidates.items():
            if dst in kept:
                continue
            trial = {name: candidates[name] for name in candidates if name in kept or name == dst}
            tried = _place(slots=slots, joints=trial)
            if tried[1] < total:
                kept[dst] = joint
                offsets, total = tried
                improved = True
        if not improved:
            break
    tensors = [dataclasses.replace(t, offset=offsets.get(f"t{n}", NO_SLOT))
               for n, t in enumerate(options.tensors)]
    layers = [dataclasses.replace(
        layer, staging=tuple(offsets.get(f"s{n}.{k}", NO_SLOT) for k in range(len(layer.inputs))),
        kernel_scratch=offsets.get(f"k{n}", NO_SLOT),
        kernel_scratch_bytes=_kernel_scratch(options=options, layer=layer))
        for n, layer in enumerate(options.layers)]
    return StageOptions(grid=options.grid, tensors=tuple(tensors), layers=tuple(layers),
                        scratch_bytes=total)


def _patches(options: StageOptions):
    return [(i, j) for i in range(options.grid[0]) for j in range(options.grid[1])]


def _needs_staging(*, options: StageOptions, n: int, k: int) -> bool:
    """Input k of layer n: True when some patch reads columns the held part does not span."""
    layer = options.layers[n]
    src = options.tensors[layer.inputs[k]]
    for i, j in _patches(options):
        out = options.tensors[layer.output]
        cut = input_cut(layer=layer, axis=1, out=out.cols[j], size=src.shape[2])
        held = held_part(options=options, t=layer.inputs[k], i=i, j=j)
        if (cut.start, cut.stop) != held[2:]:
            return True
    return False


def _output_needs_slot(*, options: StageOptions) -> bool:
    out = options.tensors[options.output]
    return any(c != (0, out.shape[2]) for c in out.cols)


def _region_bytes(*, options: StageOptions, t: int) -> int:
    """The largest patch part of tensor t, in bytes at each patch's own width."""
    tensor = options.tensors[t]
    cols = options.grid[1]
    return max((r[1] - r[0]) * (c[1] - c[0]) * tensor.pixel_bytes_at(i * cols + j)
               for i, r in enumerate(tensor.rows) for j, c in enumerate(tensor.cols))


def _slots(*, options: StageOptions, staged: dict, out_slot: bool) -> list[_Slot]:
    last_use = {}
    for n, layer in enumerate(options.layers):
        for t in layer.inputs:
            last_use[t] = n
    slots = []
    for n, layer in enumerate(options.layers):
        t = layer.output
        if t != options.output or out_slot:
            slots.append(_Slot(f"t{t}", _align(_region_bytes(options=options, t=t)), n,
                               last_use.get(t, n)))
        for k, src in enumerate(layer.inputs):
            if staged[n, k]:
                size = max(_cut_bytes(options=options, layer=layer, k=k, i=i, j=j)
                           for i, j in _patches(options))
                slots.append(_Slot(f"s{n}.{k}", _align(size), n, n))
        need = _kernel_scratch(options=options, layer=layer)
        if need:
            slots.append(_Slot(f"k{n}", _align(need), n, n))
    return slots


def _cut_bytes(*, options: StageOptions, layer: StageLayer, k: int, i: int, j: int) -> int:
    src = options.tensors[layer.inputs[k]]
    out = options.tensors[layer.output]
    r = input_cut(layer=layer, axis=0, out=out.rows[i], size=src.shape[1])
    c = input_cut(layer=layer, axis=1, out=out.cols[j], size=src.shape[2])
    return (r.stop - r.start) * (c.stop - c.start) * src.pixel_bytes_at(i * options.grid[1] + j)


def _kernel_scratch(*, options: StageOptions, layer: StageLayer) -> int:
    """Bytes of the optimized C kernel's scratch (qmcu_*_opt_scratch_size), 0 if none."""
    src = options.tensors[layer.inputs[0]]
    out = options.tensors[layer.output]
    if layer.kind == "CONV_2D":
        return conv_scratch_bytes(filter_shape=(out.shape[3],) + layer.kernel + (src.shape[3],),
                                  in_channels=src.shape[3], w_bits=8)
    if layer.kind == "DEPTHWISE_CONV_2D":
        widths = {src.bits_at(p) for p in range(options.patches)}
        return max(depthwise_scratch_bytes(filter_shape=(1,) + layer.kernel + (out.shape[3],),
                                           in_channels=src.shape[3], out_channels=out.shape[3],
                                           in_bits=bits, depth_multiplier=layer.depth_multiplier)
                   for bits in widths)
    return 0


def _in_place_joints(*, options: StageOptions, staged: dict,
                     slots: list[_Slot]) -> dict[str, tuple[str, int]]:
    """Output slot -> (input slot, gap) of in-place layers: the output starts `gap` bytes
    before the input it overwrites."""
    names = {s.name for s in slots}
    last = {s.name: s.last for s in slots}
    joints = {}
    for n, layer in enumerate(options.layers):
        src, dst = layer.inputs[0], layer.output
        if layer.kind not in IN_PLACE_KINDS or staged[n, 0] or src == 0 \
                or f"t{dst}" not in names or last[f"t{src}"] != n:
            continue
        joints[f"t{dst}"] = (f"t{src}", _align(in_place_gap(options=options, n=n)))
    return joints


def in_place_gap(*, options: StageOptions, n: int) -> int:
    """Smallest gap (bytes) between the output and input slot of (depthwise) conv layer n such
    that writing output rows in order never overwrites an input row still to be read."""
    layer = options.layers[n]
    src, out = options.tensors[layer.inputs[0]], options.tensors[layer.output]
    gap = 0
    for i, j in _patches(options):
        held = held_part(options=options, t=layer.inputs[0], i=i, j=j)
        rows = input_cut(layer=layer, axis=0, out=out.rows[i], size=src.shape[1])
        p = i * options.grid[1] + j
        in_row = (held[3] - held[2]) * src.pixel_bytes_at(p)
        out_row = (out.cols[j][1] - out.cols[j][0]) * out.pixel_bytes_at(p)
        skip = rows.start - held[0]
        for oy in range(out.rows[i][1] - out.rows[i][0]):
            first = max(oy * layer.stride[0] - rows.pad_before, 0) + skip
            gap = max(gap, (oy + 1) * out_row - first * in_row)
    return gap


def _place(*, slots: list[_Slot], joints: dict[str, tuple[str, int]]) -> tuple[dict, int]:
    """Offsets of every slot and the scratch size.

    Slots joined by in-place layers form one unit (a chain expand -> depthwise ->
    project is one unit) with fixed relative offsets; units are placed largest first,
    each at the lowest offset where none of its slots overlaps a placed slot alive at
    the same layer step (TFLite Micro's greedy rule, slot by slot)."""
    by_name = {s.name: s for s in slots}
    rel = {s.name: 0 for s in slots}
    root = {s.name: s.name for s in slots}
    for dst, (src, gap) in joints.items():     # in layer order: src is placed before dst
        root[dst] = root[src]
        rel[dst] = rel[src] - gap
    groups: dict[str, list[str]] = {}
    for slot in slots:
        groups.setdefault(root[slot.name], []).append(slot.name)
    units = []
    for names in groups.values():
        low = min(rel[n] for n in names)
        units.append(tuple((by_name[n], rel[n] - low) for n in names))
    placed: list[tuple[int, _Slot]] = []
    offsets: dict[str, int] = {}
    for unit in sorted(units, key=lambda u: -max(r + m.size for m, r in u)):
        offset = _first_fit(unit=unit, placed=placed)
        for member, shift in unit:
            placed.append((offset + shift, member))
            offsets[member.name] = offset + shift
    total = max((off + m.size for off, m in placed), default=0)
    return offsets, total


def _first_fit(*, unit: tuple[tuple[_Slot, int], ...],
               placed: list[tuple[int, _Slot]]) -> int:
    """Lowest offset of the unit at which no member overlaps a placed slot of its steps."""
    pairs = [(member, shift, off, other) for member, shift in unit for off, other in placed
             if other.first <= member.last and member.first <= other.last]
    candidates = sorted({0} | {off + other.size - shift for _, shift, off, other in pairs
                               if off + other.size >= shift})
    for candidate in candidates:
        if all(off + other.size <= candidate + shift
               or candidate + shift + member.size <= off
               for member, shift, off, other in pairs):
            return candidate
    raise AssertionError("unreachable: the highest candidate is above every placed slot")
