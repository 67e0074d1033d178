"""Applying a bit-width plan: QMCU ops, packed sub-byte tensors, PAD folding.

Oracles: LiteRT's reference kernels on the builtin patched model (8-bit QMCU graph
must equal it bit for bit); the formulas of docs/qmcu_ops.md recomputed here by
hand (sub-byte scale/zero point with exact fractions, requant multipliers, bias
rescale, activation clamps) and fed to the numpy QMCU kernels; hand-computed
packed sizes and arena peaks; the reader for the written file.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from flatbuffers import flexbuffers

from fixture_models import fixture_path, random_inputs
from testdata.synthetic_models import (Conv, DepthwiseConv, Mean, ModelSpec, Pad, Pool, Residual,
                                       build_int8_graph)
from tflite_quantmcu.analysis.memory import plan_memory, tensor_bytes
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.patches.plan import PatchOptions
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.qmcu_options import decode_options, pack_bits, unpack_bits
from tflite_quantmcu.quant.apply_bitwidths import (activation_range, apply_bitwidth_plan,
                                                    subbyte_candidates)
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.reference import qmcu_kernels
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.reference.requantize import quantize_multiplier
from tflite_quantmcu.runtimes.litert import run_litert

UINT8 = schema.TensorType.UINT8
CONV_LIKE = ("QMCU_CONV_2D", "QMCU_DEPTHWISE_CONV_2D")
FORMS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D"}
SYNTHETIC = ModelSpec(input_shape=(12, 14, 3), seed=3, layers=(
    Conv(filters=16, kernel=(3, 3), stride=(2, 2)),       # 0
    Pad(top=1, bottom=0, left=0, right=1),                # 1  folded into layer 2
    DepthwiseConv(kernel=(3, 3), padding="VALID"),        # 2
    Conv(filters=16, kernel=(1, 1), activation="NONE"),   # 3
    Residual(source=2),                                   # 4  ADD
    Pool(kind="AVG", size=(2, 2), stride=(2, 2)),         # 5
    Conv(filters=8, kernel=(1, 1)),                       # 6
    Mean(),
))


def plan_of(bits: dict) -> BitwidthPlan:
    return BitwidthPlan(policy="test", options={}, bits=dict(bits))


def load_patched(name: str):
    path = fixture_path(name)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    graph = read_model_file(path=path)
    plan = plan_patches(graph=graph, options=PatchOptions(max_file_growth=None))
    if not plan.is_patched and name == "conv_chain.tflite":
        # too small for patches to lower its whole arena; the rewrite is what is tested here
        plan = plan_patches(graph=graph, options=PatchOptions(max_file_growth=None, split=11,
                                                              grid=(5, 6)))
    assert plan.is_patched, plan.reason
    return apply_patch_plan(graph=graph, plan=plan)


def mixed_bits(*, candidates: dict, pattern=(4, 2, 8)) -> dict[str, int]:
    """A deterministic mixed plan: cycle through `pattern` over the sub-byte-capable maps."""
    bits = {}
    capable = [key for key, widths in candidates.items() if len(widths) > 1]
    for i, key in enumerate(capable):
        want = pattern[i % len(pattern)]
        bits[key] = want if want in candidates[key] else 8
    return bits


def observed(*, graph, inputs) -> dict[str, np.ndarray]:
    values = {key: value.reshape((value.shape[0],) + graph.main.tensors[key].shape)
              for key, value in zip(graph.main.inputs, inputs)}
    run_graph(graph=graph, inputs=inputs, observer=lambda i, op, out: values.update(out))
    return values


@pytest.fixture(scope="module")
def conv_chain_patched():
    return load_patched("conv_chain.tflite")


@pytest.fixture(scope="module")
def synthetic():
    return build_int8_graph(spec=SYNTHETIC)


# ---- (a) 8-bit QMCU graph == LiteRT reference kernels on the builtin patched model ----------

@pytest.mark.parametrize("name", ["conv_chain.tflite", "mobilenetv2_w035_r144.tflite",
                                  "fashion_mnv2_r96_int8.tflite"])
def test_forced_8bit_qmcu_graph_equals_litert_reference(name):
    patched = load_patched(name)
    before = write_model_bytes(graph=patched)
    converted = apply_bitwidth_plan(graph=patched, plan=plan_of({}), force_custom=True)
    assert write_model_bytes(graph=patched) == before, "the input graph was mutated"
    kinds = [op.type for op in converted.main.operators]
    assert not FORMS & set(kinds), "an op with a QMCU form stayed builtin"
    assert kinds.count("QMCU_CONV_2D") == sum(op.type == "CONV_2D"
                                              for op in patched.main.operators)
    folded = [op for op in patched.main.operators if op.type == "PAD"
              and all(patched.main.operators[r].type in ("CONV_2D", "DEPTHWISE_CONV_2D")
                      for r in patched.main.consumers()[op.outputs[0]])]
    assert kinds.count("PAD") == sum(op.type == "PAD" for op in patched.main.operators) \
        - len(folded)
    _check_weights_shared(original=patched, converted=converted)
    convs = [op for op in converted.main.operators if op.opcode.custom in CONV_LIKE]
    assert len({op.inputs[3] for op in convs}) == len({op.inputs[1] for op in convs}), \
        "one requant tensor per original conv (patches share it)"
    inputs = random_inputs(graph=patched, samples=3, seed=7)
    expected = run_litert(model_bytes=before, inputs=inputs)
    got = run_graph(graph=converted, inputs=inputs)
    for want, have in zip(expected, got):
        assert np.array_equal(have, want.reshape(have.shape))


def _check_weights_shared(*, original, converted) -> None:
    shared = 0
    for op in converted.main.operators:
        if op.opcode.custom in CONV_LIKE:
            key = op.inputs[1]
            assert converted.main.tensors[key].buffer is original.main.tensors[key].buffer
            shared += 1
    assert shared > 0


# ---- (b) sub-byte plans: packed tensors and every QMCU op by the documented formulas --------

def doc_quant(*, tensor8, bits: int) -> tuple[float, int]:
    """docs §1.5 with exact fractions: same real range, 2^bits - 1 steps."""
    scale8 = float(np.float32(tensor8.quantization.scale[0]))
    zp8 = tensor8.quantization.zero_point[0]
    if bits == 8:
        return scale8, zp8
    levels = (1 << bits) - 1
    scale = float(np.float32(scale8 * 255.0 / levels))
    zero_point = math.floor(Fraction(zp8 + 128) * levels / 255 + Fraction(1, 2))
    return scale, zero_point


def doc_clamp(*, activation: int, bits: int, scale: float, zero_point: int) -> tuple[int, int]:
    """docs §1.4 (TFLite's CalculateActivationRangeQuantized, float32 division)."""
    lo, hi = (-128, 127) if bits == 8 else (0, (1 << bits) - 1)
    if activation == schema.ActivationFunctionType.NONE:
        return lo, hi
    six = float(np.float32(6.0) / np.float32(scale))
    top = zero_point + int(math.copysign(math.floor(abs(six) + 0.5), six))
    return max(lo, zero_point), hi if activation == schema.ActivationFunctionType.RELU \
        else min(hi, top)


class DocCheck:
    """Recomputes each QMCU op of `converted` from the 8-bit graph and the plan."""

    def __init__(self, *, base, converted, bits, values) -> None:
        self.base, self.converted, self.bits, self.values = base, converted, bits, values
        self.base_ops = {op.outputs[0]: op for op in base.main.operators}

    def width(self, key: str) -> int:
        return self.bits.get(key, 8)

    def quant(self, key: str) -> tuple[float, int]:
        return doc_quant(tensor8=self.base.main.tensors[key], bits=self.width(key))

    def stored(self, key: str, sample: int) -> np.ndarray:
        """One sample of a tensor as stored, re-packed from its unpacked logical values."""
        tensor = self.converted.main.tensors[key]
        value = self.values[key][sample]
        if self.width(key) == 8:
            return value
        channels = self.base.main.tensors[key].shape[-1]
        logical = unpack_bits(packed=value, bits=self.width(key), channels=channels)
        assert logical.min() >= 0 and logical.max() < (1 << self.width(key))
        assert value.dtype == np.uint8 and tensor.dtype == UINT8
        return pack_bits(values=logical, bits=self.width(key))

    def check(self, op) -> None:
        options = decode_options(op=op.opcode.custom, data=op.custom_options)
        base_op = self.base_ops[op.outputs[0]]
        if op.opcode.custom in CONV_LIKE:
            self._conv(op=op, options=options, base_op=base_op)
        elif op.opcode.custom == "QMCU_ADD":
            self._add(op=op, options=options, base_op=base_op)
        else:
            self._pool(op=op, options=options, base_op=base_op)

    def _common(self, *, op, options, activation: int) -> dict:
        (_, zp_in), (s_out, zp_out) = self.quant(op.inputs[0]), self.quant(op.outputs[0])
        lo, hi = doc_clamp(activation=activation, bits=self.width(op.outputs[0]), scale=s_out,
                           zero_point=zp_out)
        return dict(in_bits=self.width(op.inputs[0]), out_bits=self.width(op.outputs[0]),
                    in_zero_point=zp_in, out_zero_point=zp_out, act_min=lo, act_max=hi)

    def _conv(self, *, op, options, base_op) -> None:
        expected = self._common(op=op, options=options,
                                activation=base_op.options.fusedActivationFunction)
        assert {k: getattr(options, k) for k in expected} == expected
        (s_in, _), (s_out, _) = self.quant(op.inputs[0]), self.quant(op.outputs[0])
        weights = self.base.main.tensors[base_op.inputs[1]]
        channels = options.out_shape[3]
        scales = np.broadcast_to(np.asarray(weights.quantization.scale, np.float32), (channels,))
        pairs = [quantize_multiplier(s_in * float(s) / s_out) for s in scales]
        requant = np.array([[m for m, _ in pairs], [s for _, s in pairs]], dtype=np.int32)
        assert np.array_equal(self.converted.main.tensors[op.inputs[3]].array(), requant)
        bias = self._bias(base_op=base_op, in_key=op.inputs[0], s_in=s_in)
        if op.inputs[2] is not None:
            assert np.array_equal(self.converted.main.tensors[op.inputs[2]].array(), bias)
        kernel = qmcu_kernels.conv_2d if op.opcode.custom == "QMCU_CONV_2D" \
            else qmcu_kernels.depthwise_conv_2d
        self._compare(op=op, compute=lambda n: kernel(
            input=self.stored(op.inputs[0], n), filter=weights.array(), bias=bias,
            requant=requant, options=options))

    def _bias(self, *, base_op, in_key: str, s_in: float) -> np.ndarray | None:
        if len(base_op.inputs) < 3 or base_op.inputs[2] is None:
            return None
        bias8 = self.base.main.tensors[base_op.inputs[2]].array().astype(np.int64)
        ratio = float(np.float32(self.base.main.tensors[in_key].quantization.scale[0])) / s_in
        return np.array([int(math.copysign(math.floor(abs(b * ratio) + 0.5), b))
                         for b in bias8], dtype=np.int64)

    def _add(self, *, op, options, base_op) -> None:
        (s1, z1), (s2, z2) = self.quant(op.inputs[0]), self.quant(op.inputs[1])
        so, zo = self.quant(op.outputs[0])
        twice = 2 * max(s1, s2)
        (m1, h1), (m2, h2), (mo, ho) = (quantize_multiplier(r) for r in (
            s1 / twice, s2 / twice, twice / (2 ** 20 * so)))
        lo, hi = doc_clamp(activation=base_op.options.fusedActivationFunction,
                           bits=self.width(op.outputs[0]), scale=so, zero_point=zo)
        expected = dataclasses.replace(
            options, in1_bits=self.width(op.inputs[0]), in2_bits=self.width(op.inputs[1]),
            out_bits=self.width(op.outputs[0]), in1_zero_point=z1, in2_zero_point=z2,
            out_zero_point=zo, in1_multiplier=m1, in1_shift=h1, in2_multiplier=m2,
            in2_shift=h2, out_multiplier=mo, out_shift=ho, act_min=lo, act_max=hi)
        assert options == expected
        self._compare(op=op, compute=lambda n: qmcu_kernels.add(
            input1=self.stored(op.inputs[0], n), input2=self.stored(op.inputs[1], n),
            options=expected))

    def _pool(self, *, op, options, base_op) -> None:
        expected = self._common(op=op, options=options,
                                activation=base_op.options.fusedActivationFunction)
        (s_in, _), (s_out, _) = self.quant(op.inputs[0]), self.quant(op.outputs[0])
        same = (expected["in_bits"], s_in, expected["in_zero_point"]) == \
            (expected["out_bits"], s_out, expected["out_zero_point"])
        multiplier, shift = (0, 0) if same else quantize_multiplier(s_in / s_out)
        expected.update(rescale=not same, multiplier=multiplier, shift=shift)
        assert {k: getattr(options, k) for k in expected} == expected
        self._compare(op=op, compute=lambda n: qmcu_kernels.average_pool_2d(
            input=self.stored(op.inputs[0], n), options=options))

    def _compare(self, *, op, compute) -> None:
        got = self.values[op.outputs[0]]
        for n in range(got.shape[0]):
            want = compute(n)
            assert np.array_equal(got[n].view(np.uint8), np.asarray(want).view(np.uint8)), \
                f"{op.opcode.custom} -> {op.outputs[0]}, sample {n}"


def check_packed_tensors(*, base, converted, bits) -> None:
    """Packed UINT8 tensors: C * bits / 8 bytes per pixel, quantization and details map."""
    for key, width in bits.items():
        tensor, tensor8 = converted.main.tensors[key], base.main.tensors[key]
        if width == 8:
            assert tensor.shape == tensor8.shape and tensor.dtype == tensor8.dtype
            continue
        logical = tensor8.shape
        assert tensor.dtype == UINT8
        assert tensor.shape == logical[:-1] + (logical[-1] * width // 8,)
        assert tensor_bytes(tensor=tensor) == np.prod(logical[:-1]) * logical[-1] * width // 8
        scale, zero_point = doc_quant(tensor8=tensor8, bits=width)
        assert tensor.quantization.scale == (scale,)
        assert tensor.quantization.zero_point == (zero_point,)
        details = flexbuffers.Loads(bytes(np.asarray(tensor.quantization.details.custom,
                                                     dtype=np.uint8)))
        assert details == {"bits": width, "logical_shape": list(logical)}


def run_doc_checks(*, base, bits, samples: int = 2, seed: int = 5):
    converted = apply_bitwidth_plan(graph=base, plan=plan_of(bits))
    check_packed_tensors(base=base, converted=converted, bits=bits)
    values = observed(graph=converted, inputs=random_inputs(graph=base, samples=samples,
                                                            seed=seed))
    checker = DocCheck(base=base, converted=converted, bits=bits, values=values)
    checked = 0
    for op in converted.main.operators:
        if op.opcode.custom is not None:
            checker.check(op)
            checked += 1
        else:
            assert all(bits.get(k, 8) == 8 for k in op.inputs + op.outputs if k is not None), \
                f"builtin {op.type} touches a sub-byte tensor"
    return converted, values, checked


@pytest.mark.parametrize("pattern", [(4, 2, 8), (2, 4), (4,)])
def test_subbyte_plan_on_synthetic_model_follows_the_doc(synthetic, pattern):
    candidates = subbyte_candidates(graph=synthetic)
    bits = mixed_bits(candidates=candidates, pattern=pattern)
    assert any(b < 8 for b in bits.values())
    converted, _, checked = run_doc_checks(base=synthetic, bits=bits)
    kinds = {op.type for op in converted.main.operators}
    assert {"QMCU_ADD", "QMCU_AVERAGE_POOL_2D", "QMCU_DEPTHWISE_CONV_2D"} <= kinds
    assert "PAD" not in kinds and checked >= 5


def test_subbyte_plan_on_patched_model_follows_the_doc(conv_chain_patched):
    candidates = subbyte_candidates(graph=conv_chain_patched)
    bits = mixed_bits(candidates=candidates)
    converted, _, checked = run_doc_checks(base=conv_chain_patched, bits=bits)
    assert checked > 100
    assert sum(b < 8 for b in bits.values()) > 50


def test_subbyte_maps_keep_the_real_values(conv_chain_patched):
    """Where a sub-byte map is computed from the same 8-bit inputs as in the builtin graph,
    its real values are within one sub-byte step (plus one 8-bit step) of the int8 ones."""
    base = conv_chain_patched
    bits = {k: 4 for k, widths in subbyte_candidates(graph=base).items() if 4 in widths}
    converted = apply_bitwidth_plan(graph=base, plan=plan_of(bits))
    inputs = random_inputs(graph=base, samples=2, seed=11)
    values8, values = observed(graph=base, inputs=inputs), observed(graph=converted,
                                                                    inputs=inputs)
    compared = 0
    for op in converted.main.operators:
        out = op.outputs[0]
        ins = [k for k in op.inputs if k is not None and k in values8 and k in values]
        if bits.get(out, 8) == 8 or not ins or \
                not all(np.array_equal(values[k], values8[k]) for k in ins):
            continue
        t8, t4 = base.main.tensors[out], converted.main.tensors[out]
        s8, z8 = t8.quantization.scale[0], t8.quantization.zero_point[0]
        s4, z4 = t4.quantization.scale[0], t4.quantization.zero_point[0]
        real8 = s8 * (values8[out].astype(np.float64) - z8)
        logical = unpack_bits(packed=values[out], bits=4, channels=t8.shape[-1])
        real4 = s4 * (logical.reshape(real8.shape) - z4)
        assert np.abs(real4 - real8).max() <= s4 + s8
        compared += 1
    assert compared >= 10


def test_relu6_bound_inside_the_range_follows_the_doc(synthetic):
    """A RELU6 output whose scale covers far more than 6: the clamp bound binds."""
    graph = read_model_bytes(data=write_model_bytes(graph=synthetic))
    key, padded = (graph.main.operators[i].outputs[0] for i in (0, 1))
    quantization = dataclasses.replace(graph.main.tensors[key].quantization, scale=(0.1,),
                                       zero_point=(-100,))
    for name in (key, padded):      # conv output and the PAD after it
        graph.main.tensors[name].quantization = quantization
    converted, _, _ = run_doc_checks(base=graph, bits={key: 4})
    options = decode_options(op="QMCU_CONV_2D", data=converted.main.operators[0].custom_options)
    # 4 bits: scale 0.1 * 255 / 15 = 1.7, zp = round((28 * 15) / 255) = 2, 6 / 1.7 -> 4.
    assert (options.out_zero_point, options.act_min, options.act_max) == (2, 2, 6)


@pytest.mark.parametrize("activation, bits, scale, zero_point, expected", [
    (schema.ActivationFunctionType.NONE, 4, 0.5, 3, (0, 15)),
    (schema.ActivationFunctionType.RELU, 2, 0.5, 1, (1, 3)),
    (schema.ActivationFunctionType.RELU6, 4, 0.8, 2, (2, 10)),     # 6 / 0.8 = 7.5 -> 8
    (schema.ActivationFunctionType.RELU6, 8, 0.1, -100, (-100, -40)),
    (schema.ActivationFunctionType.RELU6, 4, 0.1, 0, (0, 15)),
])
def test_activation_range_hand_values(activation, bits, scale, zero_point, expected):
    assert activation_range(activation=activation, bits=bits, scale=scale,
                            zero_point=zero_point) == expected


# ---- (c) peak SRAM ----------------------------------------------------------------------------

def test_peak_drops_by_the_packed_bytes_on_a_chain():
    graph = build_int8_graph(spec=ModelSpec(input_shape=(8, 8, 8), seed=2, layers=(
        Conv(filters=32, kernel=(1, 1)), Conv(filters=32, kernel=(3, 3)),
        Conv(filters=8, kernel=(1, 1)), Mean())))
    first, second = (op.outputs[0] for op in graph.main.operators[:2])
    before = plan_memory(graph=graph).peak_bytes
    converted = apply_bitwidth_plan(graph=graph, plan=plan_of({first: 4, second: 2}))
    after = plan_memory(graph=converted).peak_bytes
    # 8x8 pixels: 32 channels are 2048 B at 8 bits, 1024 B at 4, 512 B at 2; 8 channels 512 B.
    assert before == 2048 + 2048
    assert after == max(512 + 1024, 1024 + 512, 512 + 512)
    assert before - after == (2048 - 1024) + (2048 - 512)


def test_peak_of_patched_model_matches_the_planner_view(conv_chain_patched):
    base = conv_chain_patched
    bits = mixed_bits(candidates=subbyte_candidates(graph=base), pattern=(2, 4))
    forced8 = apply_bitwidth_plan(graph=base, plan=plan_of({}), force_custom=True)
    packed = apply_bitwidth_plan(graph=base, plan=plan_of(bits), force_custom=True)
    def activations(graph):
        return [k for k, t in graph.main.tensors.items() if not t.is_constant]
    assert activations(forced8) == activations(packed)
    peak8 = plan_memory(graph=forced8).peak_bytes
    peak = plan_memory(graph=packed).peak_bytes
    assert peak == plan_memory(graph=forced8, bitwidths=bits).peak_bytes
    assert peak < peak8 <= plan_memory(graph=base).peak_bytes


# ---- (d) file round trip ----------------------------------------------------------------------

def test_written_file_rereads_equal_and_is_deterministic(synthetic):
    bits = mixed_bits(candidates=subbyte_candidates(graph=synthetic))
    converted = apply_bitwidth_plan(graph=synthetic, plan=plan_of(bits))
    written = write_model_bytes(graph=converted)
    assert write_model_bytes(graph=converted) == written
    again = apply_bitwidth_plan(graph=synthetic, plan=plan_of(bits))
    assert write_model_bytes(graph=again) == written
    reread = read_model_bytes(data=written)
    assert write_model_bytes(graph=reread) == written
    named = read_model_bytes(data=write_model_bytes(graph=synthetic))
    assert reread == apply_bitwidth_plan(graph=named, plan=plan_of(bits))
    inputs = random_inputs(graph=synthetic, samples=2, seed=3)
    for a, b in zip(run_graph(graph=reread, inputs=inputs),
                    run_graph(graph=converted, inputs=inputs)):
        assert np.array_equal(a, b)


def test_offline_memory_plan_is_remapped():
    path = fixture_path("mobilenetv2_w035_r144.tflite")
    graph = read_model_file(path=path)
    # split #5, 2x4 rows in place: the plan bench/patch_memory.py reports for this model
    plan = plan_patches(graph=graph, options=PatchOptions(max_file_growth=None, split=5,
                                                          grid=(2, 4), in_place=True))
    patched = apply_patch_plan(graph=graph, plan=plan)
    assert any(m.name == "OfflineMemoryAllocation" for m in patched.metadata), \
        "a forced in-place plan must carry the offline memory plan"
    bits = mixed_bits(candidates=subbyte_candidates(graph=patched))
    converted = apply_bitwidth_plan(graph=patched, plan=plan_of(bits), force_custom=True)
    from tflite_quantmcu.analysis.memory import offline_offsets
    old = offline_offsets(graph=patched, subgraph_index=0)
    new = offline_offsets(graph=converted, subgraph_index=0)
    assert new == {k: v for k, v in old.items() if k in converted.main.tensors} and new
    entry = next(m for m in converted.metadata if m.name == "OfflineMemoryAllocation")
    assert len(entry.buffer.data) // 4 == 3 + len(converted.main.tensors)


# ---- candidates -------------------------------------------------------------------------------

def test_candidates_follow_the_rules(conv_chain_patched):
    sub = conv_chain_patched.main
    candidates = subbyte_candidates(graph=conv_chain_patched)
    consumers, producers = sub.consumers(), sub.producers()
    assert set(candidates) == {k for k, t in sub.tensors.items() if not t.is_constant}
    for key in sub.inputs + sub.outputs:
        assert candidates[key] == (8,)
    for op in sub.operators:
        if op.type in ("CONCATENATION", "STRIDED_SLICE", "MAX_POOL_2D"):
            assert all(candidates[k] == (8,) for k in op.inputs if k in candidates)
        if op.type in ("PAD", "STRIDED_SLICE", "CONCATENATION"):
            assert candidates[op.outputs[0]] == (8,)
    conv_to_conv = [k for k, readers in consumers.items() if k in producers
                    and sub.operators[producers[k]].type == "CONV_2D"
                    and all(sub.operators[r].type == "CONV_2D" for r in readers)]
    assert conv_to_conv and all(candidates[k] == (8, 4, 2) for k in conv_to_conv)


@pytest.mark.parametrize("filters, widths", [(6, (8, 4)), (3, (8,)), (12, (8, 4, 2))])
def test_candidates_drop_widths_the_packing_rule_forbids(filters, widths):
    graph = build_int8_graph(spec=ModelSpec(input_shape=(6, 6, 4), layers=(
        Conv(filters=filters, kernel=(3, 3)), Conv(filters=4, kernel=(1, 1)), Mean())))
    key = graph.main.operators[0].outputs[0]
    assert subbyte_candidates(graph=graph)[key] == widths


# ---- (e) errors -------------------------------------------------------------------------------

def _error(graph, bits) -> str:
    with pytest.raises(ConfigError) as info:
        apply_bitwidth_plan(graph=graph, plan=plan_of(bits))
    return str(info.value)


def test_plan_key_that_is_no_tensor(synthetic):
    assert "'no/such/tensor'" in _error(synthetic, {"no/such/tensor": 4})


def test_width_not_allowed_names_tensor_and_widths(synthetic):
    sub = synthetic.main
    message = _error(synthetic, {sub.inputs[0]: 4})
    assert repr(sub.inputs[0]) in message and "(8,)" in message and "graph input" in message
    mean = next(op for op in sub.operators if op.type == "MEAN")
    message = _error(synthetic, {mean.inputs[0]: 2})
    assert "MEAN" in message and "no QMCU form" in message


def test_channel_rule_error():
    graph = build_int8_graph(spec=ModelSpec(input_shape=(6, 6, 4), layers=(
        Conv(filters=6, kernel=(3, 3)), Conv(filters=4, kernel=(1, 1)), Mean())))
    key = graph.main.operators[0].outputs[0]
    message = _error(graph, {key: 2})
    assert "(8, 4)" in message and "6 channels" in message


def test_weight_keys_and_malformed_plans(synthetic):
    weights = synthetic.main.operators[0].inputs[1]
    assert "does not pack" in _error(synthetic, {weights: 4})   # 3 input channels
    assert "constant" in _error(synthetic, {synthetic.main.operators[0].inputs[2]: 4})
    apply_bitwidth_plan(graph=synthetic, plan=plan_of({weights: 8}))
    key = synthetic.main.operators[0].outputs[0]
    assert "int bit width" in _error(synthetic, {key: "4"})
    assert "int bit width" in _error(synthetic, {key: True})
    assert "may take" in _error(synthetic, {key: 3})
    with pytest.raises(ConfigError, match="BitwidthPlan"):
        apply_bitwidth_plan(graph=synthetic, plan={key: 4})
