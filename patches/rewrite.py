"""Rewrite a model so its patch stage runs patch by patch, as flat builtin ops.

Form chosen: flat ops in the main subgraph (runs unmodified in TFLite Micro
and LiteRT, no control flow). For each patch, in row-major order, and each
stage op in the original order:
- the op's input region is cut from the producer's patch tensor with a
  STRIDED_SLICE when the producer computed more than this op needs (stage
  input; residual branches feeding several ops);
- where the region reaches over the image border, an explicit PAD (input
  zero point, as the int8 conv kernels' implicit padding) or PADV2 with the
  type's lowest value (MAX_POOL_2D) adds exactly the original padding;
- the op runs with VALID padding on the original weight/bias tensors (same
  tensor keys, so the same `Buffer` objects: weights are not copied);
- a PAD op of the model becomes a per-patch PAD that pads only at the image
  border (no op at all where a patch needs no padding).
Patch outputs of a row are concatenated along W right after the row's last
patch (CONCATENATION, max 10 inputs in TFLM, so at most 8 x 8 patches), row
strips along H into the original stage-output tensor, so later ops are
untouched. Row strips are contiguous in NHWC memory: with `in_place` the
rewrite adds TFLM's `OfflineMemoryAllocation` metadata that puts each strip
at its final place inside the stage output (the H concatenation then copies
every byte onto itself) and plans every other tensor online.
The input graph is never mutated; untouched tensors are copied, sharing buffers.

Tensor keys (and names) of the patched graph, relied on by `branches.py`:
`p{i}_{j}/{k}` is the output of original stage op k for patch (row i, col j);
helpers carry a suffix: `p{i}_{j}/{k}s{n}` the STRIDED_SLICE of input n of op k,
`p{i}_{j}/{k}p{n}` its border PAD/PADV2; `r{i}` the row strip of row i (when
cols > 1); `c{n}` shared int32 constants (slice bounds, paddings). A model PAD
that pads nothing for a patch is skipped: that patch has no `p{i}_{j}/{k}` for it
and its consumers read the PAD's input tensor.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from tflite_quantmcu.analysis.memory import OFFLINE_PLAN_METADATA, offline_offsets, tensor_bytes
from tflite_quantmcu.errors import ConfigError, UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import (Buffer, Graph, Metadata, OpCode, Operator, Subgraph,
                                      Tensor)
from tflite_quantmcu.patches.plan import PatchPlan
from tflite_quantmcu.patches.receptive_field import (BORDER_LOWEST, BORDER_NONE,
                                                     BORDER_PAD_OP, BORDER_SAME_FIT,
                                                     BORDER_ZERO_POINT, Interval, same_axis_fit,
                                                     OpSpatialMap, Region, pad_amounts)
from tflite_quantmcu.patches.stage import (COLS_AXIS, ROWS_AXIS, Stage, axis_intervals,
                                           empty_part, make_stage, patch_regions)

fb = schema.fb
Op = schema.BuiltinOperator
MAX_CONCAT_INPUTS = 10
_LOWEST = {schema.TensorType.INT8: -128, schema.TensorType.UINT8: 0,
           schema.TensorType.INT16: -32768, schema.TensorType.FLOAT32: -3.4028234e38}


def apply_patch_plan(*, graph: Graph, plan: PatchPlan, bitwidths=None) -> Graph:
    """A new Graph computing the plan's stage patch by patch (a copy if not patched), in the
    plan's form: flat builtin ops (this module) or one QMCU_PATCH_STAGE op (stage_op.py).

    bitwidths (stage-op form only): a BitwidthPlan whose per-patch keys give the stage's maps
    sub-byte widths inside the op (`stage_op.apply_stage_op`)."""
    if not plan.is_patched:
        return copy_graph(graph=graph)
    stage = make_stage(subgraph=graph.main, split=plan.split_op)
    if stage.output_key != plan.split_tensor:
        raise UnsupportedOpError(
            f"plan splits after {plan.split_tensor!r} but {graph.main.op_label(plan.split_op)} "
            f"writes {stage.output_key!r}: the plan was made for another model")
    if plan.form == "stage-op":
        from tflite_quantmcu.patches.stage_op import apply_stage_op  # stage_op imports this module
        return apply_stage_op(graph=graph, stage=stage, row_bounds=plan.row_bounds,
                              col_bounds=plan.col_bounds, in_place=plan.in_place,
                              bitwidths=bitwidths)
    if plan.form != "builtin":
        raise ConfigError(f"patch plan form {plan.form!r}: expected builtin or stage-op")
    if bitwidths is not None:
        raise ConfigError("the builtin patch form takes bit widths from apply_bitwidth_plan")
    return build_patched_graph(graph=graph, stage=stage, row_bounds=plan.row_bounds,
                               col_bounds=plan.col_bounds, in_place=plan.in_place)


def copy_graph(*, graph: Graph) -> Graph:
    """A structural copy: new subgraphs, tensors and ops, the same Buffer objects."""
    subgraphs = [_copy_subgraph(sub) for sub in graph.subgraphs]
    return dataclasses.replace(graph, subgraphs=subgraphs, metadata=list(graph.metadata),
                               signature_defs=copy.deepcopy(graph.signature_defs),
                               metadata_buffers=list(graph.metadata_buffers),
                               extra=dict(graph.extra))


def _copy_subgraph(sub: Subgraph) -> Subgraph:
    return Subgraph(name=sub.name, tensors={k: _copy_tensor(t) for k, t in sub.tensors.items()},
                    inputs=list(sub.inputs), outputs=list(sub.outputs),
                    operators=[_copy_op(op) for op in sub.operators], extra=dict(sub.extra))


def _copy_tensor(tensor: Tensor) -> Tensor:
    return dataclasses.replace(tensor, extra=dict(tensor.extra))


def _copy_op(op: Operator) -> Operator:
    return dataclasses.replace(op, inputs=list(op.inputs), outputs=list(op.outputs),
                               options=copy.copy(op.options),
                               intermediates=list(op.intermediates), extra=dict(op.extra))


def build_patched_graph(*, graph: Graph, stage: Stage, row_bounds: tuple[int, ...],
                        col_bounds: tuple[int, ...], in_place: bool) -> Graph:
    """The patched graph for a stage and the part bounds of its output."""
    _check_bounds(graph=graph, stage=stage, row_bounds=row_bounds, col_bounds=col_bounds)
    result = copy_graph(graph=graph)
    builder = _PatchBuilder(original=graph.main, target=result.main, stage=stage)
    strips = builder.emit_stage(row_bounds=row_bounds, col_bounds=col_bounds)
    builder.finish()
    kept = [offline_offsets(graph=graph, subgraph_index=i) for i in range(len(graph.subgraphs))]
    placed = {}
    if in_place and len(row_bounds) > 2 and not any(kept):
        placed = _strip_offsets(subgraph=result.main, stage=stage, strips=strips,
                                row_bounds=row_bounds)
    has_plan = any(m.name == OFFLINE_PLAN_METADATA for m in graph.metadata)
    if placed or has_plan:  # an entry with only -1s must still follow the new tensor lists
        kept[0] = {**kept[0], **placed}
        result.metadata = with_offline_plan(graph=result, offsets=kept)
    return result


def _check_bounds(*, graph: Graph, stage: Stage, row_bounds: tuple[int, ...],
                  col_bounds: tuple[int, ...]) -> None:
    shape = graph.main.tensors[stage.output_key].shape
    for name, bounds, size in (("row", row_bounds, shape[1]), ("col", col_bounds, shape[2])):
        parts = len(bounds) - 1
        if (parts < 1 or parts > MAX_CONCAT_INPUTS or bounds[0] != 0 or bounds[-1] != size
                or any(a >= b for a, b in zip(bounds[:-1], bounds[1:]))):
            raise ConfigError(
                f"{name} bounds {list(bounds)} of {graph.main.op_label(stage.split)}: expected "
                f"1..{MAX_CONCAT_INPUTS} increasing parts of [0, {size})")


class _PatchBuilder:
    """Emits the per-patch ops of one stage into the target subgraph."""

    def __init__(self, *, original: Subgraph, target: Subgraph, stage: Stage) -> None:
        self.original = original
        self.target = target
        self.stage = stage
        self.ops: list[Operator] = []
        self.constants: dict[tuple, str] = {}
        self.opcodes = {op.opcode.builtin: op.opcode for op in original.operators}

    # -- the whole stage -------------------------------------------------------------------
    def emit_stage(self, *, row_bounds: tuple[int, ...],
                   col_bounds: tuple[int, ...]) -> list[str]:
        rows = axis_intervals(subgraph=self.original, stage=self.stage, axis=ROWS_AXIS,
                              bounds=row_bounds)
        cols = axis_intervals(subgraph=self.original, stage=self.stage, axis=COLS_AXIS,
                              bounds=col_bounds)
        for parts in (rows, cols):
            problem = empty_part(subgraph=self.original, parts=parts)
            if problem is not None:
                raise ConfigError(f"cannot cut the stage ending at "
                                  f"{self.original.op_label(self.stage.split)}: {problem}")
        patches = patch_regions(rows=rows, cols=cols)
        strips = []
        for i in range(len(rows)):
            row = [self._emit_patch(regions=patches[i * len(cols) + j], tag=f"p{i}_{j}")
                   for j in range(len(cols))]
            strips.append(self._join(row, axis=COLS_AXIS, tag=f"r{i}",
                                     last=len(rows) == 1))
        self._join(strips, axis=ROWS_AXIS, tag="rows", last=True)
        return strips

    def finish(self) -> None:
        internal = {key for i in self.stage.op_indices
                    for key in self.original.operators[i].outputs} - {self.stage.output_key}
        for key in internal:
            del self.target.tensors[key]
        later = self.target.operators[self.stage.split + 1:]
        self.target.operators = self.ops + later

    # -- one patch ---------------------------------------------------------------------------
    def _emit_patch(self, *, regions: dict[str, Region], tag: str) -> str:
        keys = {self.stage.input_key: self.stage.input_key}
        have = dict(regions)
        have[self.stage.input_key] = self._full_region(self.stage.input_key)
        for smap in self.stage.maps:
            op = self.original.operators[smap.op_index]
            out = regions.get(op.outputs[0])
            if out is None:
                continue
            last = smap.op_index == self.stage.split
            keys[op.outputs[0]] = self._emit_op(smap=smap, out=out, keys=keys, have=have,
                                                tag=f"{tag}/{smap.op_index}", last=last)
        return keys[self.stage.output_key]

    def _full_region(self, key: str) -> Region:
        shape = self.original.tensors[key].shape
        return Region(Interval(0, shape[1]), Interval(0, shape[2]))

    def _emit_op(self, *, smap: OpSpatialMap, out: Region, keys: dict[str, str],
                 have: dict[str, Region], tag: str, last: bool) -> str:
        op = self.original.operators[smap.op_index]
        inputs = list(op.inputs)
        for m in smap.inputs:
            src = op.inputs[m.position]
            need = m.needed(out)
            shape = self.original.tensors[src].shape
            clipped = Region(need.rows.clip(size=shape[1]), need.cols.clip(size=shape[2]))
            key = self._slice(key=keys[src], have=have[src], want=clipped,
                              tag=f"{tag}s{m.position}")
            pads = (pad_amounts(needed=need.rows, size=shape[1]),
                    pad_amounts(needed=need.cols, size=shape[2]))
            if smap.border == BORDER_PAD_OP:
                return self._emit_pad_op(op=op, key=key, pads=pads, out=out, tag=tag, last=last)
            if smap.border == BORDER_SAME_FIT and any(sum(pads, ())):
                return self._emit_same_fit(op=op, smap=smap, key=key, out=out, tag=tag)
            inputs[m.position] = self._border_pad(smap=smap, key=key, pads=pads,
                                                  tag=f"{tag}p{m.position}")
        return self._emit_copy(op=op, inputs=inputs, out=out, tag=tag)

    # -- emitted ops -------------------------------------------------------------------------
    def _emit_copy(self, *, op: Operator, inputs: list[str | None], out: Region,
                   tag: str) -> str:
        options = copy.copy(op.options)
        if hasattr(options, "padding"):
            options.padding = schema.Padding.VALID
        result = self._feature_tensor(like=op.outputs[0], region=out, tag=tag)
        self.ops.append(dataclasses.replace(op, inputs=inputs, outputs=[result], options=options,
                                            intermediates=list(op.intermediates),
                                            extra=dict(op.extra)))
        return result

    def _emit_same_fit(self, *, op: Operator, smap: OpSpatialMap, key: str, out: Region,
                       tag: str) -> str:
        """A border patch of a SAME average pool: dummies, SAME pool, slice off surplus."""
        window = smap.inputs[0]
        src_shape = self.original.tensors[op.inputs[0]].shape
        rows = same_axis_fit(window=window.rows, out=out.rows, size=src_shape[1])
        cols = same_axis_fit(window=window.cols, out=out.cols, size=src_shape[2])
        dummies = ((rows.before, rows.after), (cols.before, cols.after))
        if any(sum(dummies, ())):
            src = self.target.tensors[key]
            shape = (1, src.shape[1] + sum(dummies[0]), src.shape[2] + sum(dummies[1]),
                     src.shape[3])
            padded = self._new_tensor(like=src, shape=shape, tag=f"{tag}d0")
            self.ops.append(self._op("PAD", [key, self._paddings(dummies)], padded,
                                     fb.BuiltinOptions.PadOptions, fb.PadOptionsT(), src.dtype))
            key = padded
        full = Region(Interval(0, rows.outputs), Interval(0, cols.outputs))
        wanted = Region(Interval(rows.skip, rows.skip + out.rows.size),
                        Interval(cols.skip, cols.skip + out.cols.size))
        tensor_tag = tag if full == wanted else f"{tag}f"
        result = self._feature_tensor(like=op.outputs[0], region=full, tag=tensor_tag)
        self.ops.append(dataclasses.replace(op, inputs=[key], outputs=[result],
                                            options=copy.copy(op.options),
                                            intermediates=[], extra=dict(op.extra)))
        if full == wanted:
            return result
        return self._slice(key=result, have=full, want=wanted, tag=tag)

    def _emit_pad_op(self, *, op: Operator, key: str, pads: tuple, out: Region, tag: str,
                     last: bool) -> str:
        if not any(sum(pads, ())) and not last:
            return key
        inputs = [key, self._paddings(pads)] + list(op.inputs[2:])
        result = self._feature_tensor(like=op.outputs[0], region=out, tag=tag)
        self.ops.append(dataclasses.replace(op, inputs=inputs, outputs=[result],
                                            options=copy.copy(op.options),
                                            intermediates=[], extra=dict(op.extra)))
        return result

    def _border_pad(self, *, smap: OpSpatialMap, key: str, pads: tuple, tag: str) -> str:
        if not any(sum(pads, ())):
            return key
        if smap.border == BORDER_NONE:
            raise UnsupportedOpError(
                f"{self.original.op_label(smap.op_index)} would need border padding per patch")
        src = self.target.tensors[key]
        shape = (1, src.shape[1] + sum(pads[0]), src.shape[2] + sum(pads[1]), src.shape[3])
        result = self._new_tensor(like=src, shape=shape, tag=tag)
        if smap.border == BORDER_ZERO_POINT:
            self.ops.append(self._op("PAD", [key, self._paddings(pads)], result,
                                     fb.BuiltinOptions.PadOptions, fb.PadOptionsT(), src.dtype))
        elif smap.border == BORDER_LOWEST:
            inputs = [key, self._paddings(pads), self._lowest_value(src)]
            self.ops.append(self._op("PADV2", inputs, result, fb.BuiltinOptions.PadV2Options,
                                     fb.PadV2OptionsT(), src.dtype))
        return result

    def _slice(self, *, key: str, have: Region, want: Region, tag: str) -> str:
        if have == want:
            return key
        src = self.target.tensors[key]
        begin = (0, want.rows.start - have.rows.start, want.cols.start - have.cols.start, 0)
        end = (1, begin[1] + want.rows.size, begin[2] + want.cols.size, src.shape[3])
        result = self._new_tensor(like=src, shape=(1, want.rows.size, want.cols.size,
                                                   src.shape[3]), tag=tag)
        inputs = [key, self._int32_constant(begin), self._int32_constant(end),
                  self._int32_constant((1, 1, 1, 1))]
        self.ops.append(self._op("STRIDED_SLICE", inputs, result,
                                 fb.BuiltinOptions.StridedSliceOptions,
                                 fb.StridedSliceOptionsT(), src.dtype))
        return result

    def _join(self, parts: list[str], *, axis: int, tag: str, last: bool) -> str:
        if len(parts) == 1 and not last:
            return parts[0]
        if len(parts) == 1:
            if parts[0] != self.stage.output_key:
                self._rename_output(parts[0])
            return self.stage.output_key
        like = self.original.tensors[self.stage.output_key]
        if last:
            result = self.stage.output_key
        else:
            shapes = [self.target.tensors[k].shape for k in parts]
            shape = (1, shapes[0][1], sum(s[2] for s in shapes), like.shape[3])
            result = self._new_tensor(like=like, shape=shape, tag=tag)
        options = fb.ConcatenationOptionsT()
        options.axis = axis
        self.ops.append(self._op("CONCATENATION", parts, result,
                                 fb.BuiltinOptions.ConcatenationOptions, options, like.dtype))
        return result

    def _rename_output(self, key: str) -> None:
        """A 1-patch axis: the last patch op writes the stage output directly."""
        for op in self.ops:
            op.outputs = [self.stage.output_key if k == key else k for k in op.outputs]
            op.inputs = [self.stage.output_key if k == key else k for k in op.inputs]
        del self.target.tensors[key]

    # -- tensors and op codes ----------------------------------------------------------------
    def _feature_tensor(self, *, like: str, region: Region, tag: str) -> str:
        original = self.original.tensors[like]
        shape = (1, region.rows.size, region.cols.size, original.shape[3])
        return self._new_tensor(like=original, shape=shape, tag=tag)

    def _new_tensor(self, *, like: Tensor, shape: tuple[int, ...], tag: str) -> str:
        tensor = Tensor(name=tag, shape=shape, dtype=like.dtype, quantization=like.quantization)
        return self.target.add_tensor(tensor=tensor, key=tag)

    def _int32_constant(self, values: tuple[int, ...]) -> str:
        return self._constant(np.asarray(values, dtype="<i4"), schema.TensorType.INT32, None)

    def _paddings(self, pads: tuple) -> str:
        values = np.array([[0, 0], list(pads[0]), list(pads[1]), [0, 0]], dtype="<i4")
        return self._constant(values, schema.TensorType.INT32, None)

    def _lowest_value(self, like: Tensor) -> str:
        dtype = schema.TENSOR_TYPE_NUMPY[like.dtype]
        value = np.array([_LOWEST[like.dtype]], dtype=dtype)
        return self._constant(value, like.dtype, like.quantization)

    def _constant(self, values: np.ndarray, dtype: int, quantization: object) -> str:
        cache_key = (dtype, values.shape, values.tobytes(), id(quantization))
        key = self.constants.get(cache_key)
        if key is None:
            tensor = Tensor(name="c", shape=values.shape, dtype=dtype,
                            buffer=Buffer(data=values.tobytes()), quantization=quantization)
            key = self.target.add_tensor(tensor=tensor, key=f"c{len(self.constants)}")
            self.constants[cache_key] = key
        return key

    def _op(self, kind: str, inputs: list[str], output: str, options_type: int,
            options: object, dtype: int) -> Operator:
        builtin = getattr(Op, kind)
        opcode = self.opcodes.get(builtin) or OpCode(builtin=builtin,
                                                     version=_op_version(kind, dtype))
        self.opcodes[builtin] = opcode
        return Operator(opcode=opcode, inputs=inputs, outputs=[output],
                        options_type=options_type, options=options)


def _op_version(kind: str, dtype: int) -> int:
    if dtype in (schema.TensorType.INT8, schema.TensorType.UINT8):
        return 2 if kind != "CONCATENATION" or dtype == schema.TensorType.INT8 else 1
    return 1


def _strip_offsets(*, subgraph: Subgraph, stage: Stage, strips: list[str],
                   row_bounds: tuple[int, ...]) -> dict[str, int]:
    """Offline offsets putting each row strip at its place inside the stage output."""
    output = subgraph.tensors[stage.output_key]
    row_bytes = tensor_bytes(tensor=output) // output.shape[1]
    placed = {stage.output_key: 0}
    for key, start in zip(strips, row_bounds[:-1]):
        placed[key] = start * row_bytes
    return placed


def with_offline_plan(*, graph: Graph, offsets: list[dict[str, int]]) -> list[Metadata]:
    """The graph's metadata with an `OfflineMemoryAllocation` entry for `offsets`."""
    values = [0, len(graph.subgraphs), sum(len(s.tensors) for s in graph.subgraphs)]
    for sub, known in zip(graph.subgraphs, offsets):
        values += [known.get(k, -1) for k in sub.tensors]
    data = np.asarray(values, dtype="<i4").tobytes()
    kept = [m for m in graph.metadata if m.name != OFFLINE_PLAN_METADATA]
    return kept + [Metadata(name=OFFLINE_PLAN_METADATA, buffer=Buffer(data=data))]
