"""Structure-aware mutations of valid `.tflite` models, for the reader fuzzers.

`mutated_model(rng=...)` picks a seed model, unpacks it with the schema's object
API, changes one to three fields the way a corrupt or hostile file would (shapes,
types, indices, quantization arrays, options, op order, names, buffers, metadata,
QMCU custom options), packs it again and sometimes flips raw bytes of the result.
It is shared by tests/test_fuzz_reader.py (hypothesis) and bench/fuzz_reader.py.

Test code may build flatbuffers directly; the package itself only does so in
ir/reader.py and ir/writer.py.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from tflite_quantmcu.ir import schema

fb = schema.fb
TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
SEED_FILES = ("conv_chain.tflite", "resnet8_cifar.tflite")
INVALID_UTF8 = (b"\xff\xfe", b"ok\xc3(", b"\xed\xa0\x80", b"\x80abc")
FLEX_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeDecodeError,
               RecursionError, AttributeError, struct.error)
_NOT_APPLICABLE = (TypeError, IndexError, ValueError, AttributeError, struct.error)
ODD_INTS = (-(2 ** 31), -5, -2, -1, 0, 1, 2, 3, 7, 255, 65536, 2 ** 31 - 1)


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    sram_budget: int    # a budget under its layer-based arena, so convert plans patches


@lru_cache(maxsize=1)
def seed_models() -> tuple[Seed, ...]:
    """The committed fixtures plus a synthetic model with QMCU_* ops (built in code)."""
    seeds = [Seed(name, (TESTDATA / name).read_bytes(), budget)
             for name, budget in zip(SEED_FILES, (14 * 1024, 48 * 1024))]
    return tuple(seeds) + (Seed("synthetic_qmcu", _qmcu_model(), 8 * 1024),)


def _qmcu_model() -> bytes:
    from testdata.synthetic_models import Conv, DepthwiseConv, ModelSpec, Pool, Residual, \
        build_int8_graph
    from tflite_quantmcu.ir.writer import write_model_bytes
    from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan, subbyte_candidates
    from tflite_quantmcu.quant.plan import BitwidthPlan

    graph = build_int8_graph(spec=ModelSpec(input_shape=(8, 8, 4), seed=2, layers=(
        Conv(filters=8, kernel=(3, 3)), DepthwiseConv(kernel=(3, 3)),
        Conv(filters=8, kernel=(1, 1), activation="NONE"), Residual(source=1),
        Pool(kind="AVG", size=(2, 2), stride=(2, 2)), Conv(filters=4, kernel=(1, 1)))))
    candidates = subbyte_candidates(graph=graph)
    capable = [k for k, widths in candidates.items() if len(widths) > 1]
    bits = {key: (4, 2)[i % 2] if (4, 2)[i % 2] in candidates[key] else 8
            for i, key in enumerate(capable)}
    plan = BitwidthPlan(policy="fuzz-seed", options={}, bits=bits)
    return write_model_bytes(graph=apply_bitwidth_plan(graph=graph, plan=plan))


def mutated_model(*, rng: random.Random) -> tuple[Seed, bytes, list[str]]:
    """A seed, its mutated bytes and the names of the mutations applied."""
    seed = rng.choice(seed_models())
    model = fb.ModelT.InitFromPackedBuf(seed.data, 0)
    applied = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name, mutate = rng.choice(MUTATIONS)
        try:
            mutate(model, rng)
        except _NOT_APPLICABLE:  # e.g. a subgraph without tensors after an earlier mutation
            continue
        applied.append(name)
    try:
        data = _pack(model)
    except _NOT_APPLICABLE:      # a value the schema's field type cannot hold
        data, applied = seed.data, applied + ["unpackable:seed"]
    if rng.random() < 0.15:
        data, how = _byte_mutation(data, rng)
        applied.append(how)
    return seed, data, applied


def _pack(model: object) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _byte_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    kind = rng.choice(("flip", "int32", "truncate", "zero"))
    pos = rng.randrange(len(buf))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "int32" and pos + 4 <= len(buf):
        buf[pos:pos + 4] = rng.choice(ODD_INTS + (rng.getrandbits(32) - 2 ** 31,)).to_bytes(
            4, "little", signed=True)
    elif kind == "truncate":
        del buf[max(pos, 8):]
    else:
        buf[pos:pos + rng.randint(1, 64)] = bytes(len(buf[pos:pos + 64]))[:rng.randint(1, 64)]
    return bytes(buf), f"bytes:{kind}"


# ---- helpers -----------------------------------------------------------------------------
def _sub(model, rng):
    return rng.choice(model.subgraphs)


def _tensor(model, rng):
    sub = _sub(model, rng)
    return sub, rng.randrange(len(sub.tensors)), rng.choice(sub.tensors)


def _op(model, rng):
    sub = _sub(model, rng)
    if not sub.operators:
        return sub, None
    return sub, rng.choice(sub.operators)


def _odd_int(rng, n: int) -> int:
    return rng.choice(ODD_INTS + (n, n - 1, n + 1, rng.randrange(-3, n + 3)))


def _odd_uint(rng, n: int) -> int:
    """An odd value for an unsigned 32-bit field (-1 becomes 0xFFFFFFFF)."""
    return _odd_int(rng, n) & 0xFFFFFFFF


def _array(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


# ---- field mutations ---------------------------------------------------------------------
def m_shape(model, rng):
    _, _, t = _tensor(model, rng)
    shape = list(t.shape) if t.shape is not None else []
    kind = rng.random()
    if kind < 0.5 and shape:
        shape[rng.randrange(len(shape))] = rng.choice((-1, -7, 0, 1, 3, 2 ** 20, 2 ** 31 - 1))
    elif kind < 0.75:
        shape.append(rng.choice((1, 2, -1)))
    elif shape:
        shape.pop(rng.randrange(len(shape)))
    t.shape = _array(shape, np.int32)


def m_type(model, rng):
    _, _, t = _tensor(model, rng)
    t.type = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                         19, 20, 21, 99))


def m_buffer_index(model, rng):
    _, _, t = _tensor(model, rng)
    t.buffer = _odd_uint(rng, len(model.buffers))


def m_name(model, rng):
    target = rng.random()
    bad = rng.choice(INVALID_UTF8)
    if target < 0.5:
        _, _, t = _tensor(model, rng)
        t.name = bad
    elif target < 0.65:
        _sub(model, rng).name = bad
    elif target < 0.8 and model.metadata:
        rng.choice(model.metadata).name = bad
    elif target < 0.9:
        model.description = bad
    else:
        _, _, t = _tensor(model, rng)
        t.name = b""


def m_quantization(model, rng):
    _, _, t = _tensor(model, rng)
    q = t.quantization or fb.QuantizationParametersT()
    t.quantization = q
    scale = list(q.scale) if q.scale is not None else [0.5]
    zero = list(q.zeroPoint) if q.zeroPoint is not None else [0]
    kind = rng.randrange(8)
    if kind == 0:
        scale = scale + [0.25] * rng.randint(1, 3)
    elif kind == 1:
        zero = zero + [0] * rng.randint(1, 3)
    elif kind == 2:
        scale = scale[:-1]
    elif kind == 3:
        scale[rng.randrange(len(scale))] = rng.choice((0.0, -1.0, float("nan"), float("inf"),
                                                       1e-45, 1e38))
    elif kind == 4 and zero:
        zero[rng.randrange(len(zero))] = rng.choice((-129, 128, 256, -(2 ** 40), 2 ** 40))
    elif kind == 5:
        q.quantizedDimension = rng.choice((-1, 1, 2, 3, 4, 7))
    elif kind == 6:
        t.quantization = None
        return
    else:
        q.detailsType = 1
        custom = fb.CustomQuantizationT()
        custom.custom = _array(list(rng.randbytes(rng.randint(0, 12))), np.uint8)
        q.details = custom
    q.scale = _array(scale, np.float32) if scale else None
    q.zeroPoint = _array(zero, np.int64) if zero else None


def m_variable(model, rng):
    _, _, t = _tensor(model, rng)
    t.isVariable = not t.isVariable


def m_op_input(model, rng):
    sub, op = _op(model, rng)
    if op is None:
        return
    inputs = list(op.inputs) if op.inputs is not None else []
    kind = rng.random()
    if kind < 0.5 and inputs:
        inputs[rng.randrange(len(inputs))] = _odd_int(rng, len(sub.tensors))
    elif kind < 0.7 and inputs:
        inputs.pop(rng.randrange(len(inputs)))
    elif kind < 0.85:
        inputs.append(rng.choice((-1, rng.randrange(len(sub.tensors)))))
    elif inputs:
        inputs[rng.randrange(len(inputs))] = -1
    op.inputs = _array(inputs, np.int32)


def m_op_output(model, rng):
    sub, op = _op(model, rng)
    if op is None:
        return
    outputs = list(op.outputs) if op.outputs is not None else []
    kind = rng.random()
    if kind < 0.6 and outputs:
        outputs[rng.randrange(len(outputs))] = _odd_int(rng, len(sub.tensors))
    elif kind < 0.8 and outputs:
        outputs.pop()
    else:
        outputs.append(rng.randrange(len(sub.tensors)))
    op.outputs = _array(outputs, np.int32)


def m_op_order(model, rng):
    sub = _sub(model, rng)
    ops = sub.operators or []
    if len(ops) < 2:
        return
    i, j = rng.sample(range(len(ops)), 2)
    kind = rng.random()
    if kind < 0.5:
        ops[i], ops[j] = ops[j], ops[i]
    elif kind < 0.75:
        del ops[i]
    else:
        ops.insert(j, ops[i])


def m_opcode(model, rng):
    kind = rng.random()
    if kind < 0.4:
        _, op = _op(model, rng)
        if op is not None:
            op.opcodeIndex = _odd_uint(rng, len(model.operatorCodes))
        return
    code = rng.choice(model.operatorCodes)
    if kind < 0.7:
        code.builtinCode = rng.choice((0, 1, 2, 3, 4, 9, 17, 22, 25, 32, 40, 49, 83, 99, 161,
                                       250, 1000))
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    elif kind < 0.85:
        code.builtinCode = 32
        code.deprecatedBuiltinCode = 32
        code.customCode = rng.choice((b"QMCU_CONV_2D", b"QMCU_ADD", b"QMCU_PACK", b"FOO",
                                      b"QMCU_PATCH_STAGE", rng.choice(INVALID_UTF8)))
    else:
        code.version = rng.choice((-1, 0, 1, 2, 99))


def m_options(model, rng):
    sub, op = _op(model, rng)
    if op is None:
        return
    kind = rng.random()
    if kind < 0.3:
        op.builtinOptionsType = 0
        op.builtinOptions = None
    elif kind < 0.7:
        other = rng.choice(sub.operators)
        op.builtinOptionsType, op.builtinOptions = other.builtinOptionsType, other.builtinOptions
    elif kind < 0.85 and op.builtinOptions is not None:
        fields = [k for k, v in vars(op.builtinOptions).items() if isinstance(v, int)]
        if fields:
            setattr(op.builtinOptions, rng.choice(fields), _odd_int(rng, 4))
    else:
        op.builtinOptionsType = rng.choice((1, 2, 5, 9, 20, 120, 200))


def m_custom_options(model, rng):
    sub, op = _op(model, rng)
    if op is None:
        return
    raw = bytes(np.asarray(op.customOptions, dtype=np.uint8)) if op.customOptions is not None \
        else b""
    kind = rng.randrange(6)
    if kind == 0:
        raw = rng.randbytes(rng.randint(0, 40))
    elif kind == 1 and raw:
        raw = raw[:rng.randrange(len(raw))]
    elif kind == 2 and raw:
        buf = bytearray(raw)
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        raw = bytes(buf)
    else:
        raw = _edited_flexbuffer(raw, rng, kind)
    op.customOptions = _array(list(raw), np.uint8)


def _edited_flexbuffer(raw: bytes, rng, kind: int) -> bytes:
    try:
        value = flexbuffers.Loads(raw) if raw else {}
    except FLEX_ERRORS:
        value = {}
    if not isinstance(value, dict):
        value = {}
    if kind == 3:
        value["version"] = rng.choice((2, 0, -1, "1", None))
    elif kind == 4 and value:
        del value[rng.choice(sorted(value))]
    elif value:
        key = rng.choice(sorted(value))
        value[key] = rng.choice((-1, 0, 3, 2 ** 40, [1, 2], [], "x", 1.5, True))
    value = {k: v for k, v in value.items() if v is not None}
    return bytes(flexbuffers.Dumps(value))


def m_subgraph_io(model, rng):
    sub = _sub(model, rng)
    field = rng.choice(("inputs", "outputs"))
    values = list(getattr(sub, field)) if getattr(sub, field) is not None else []
    kind = rng.random()
    if kind < 0.5 and values:
        values[rng.randrange(len(values))] = _odd_int(rng, len(sub.tensors))
    elif kind < 0.7:
        values = []
    else:
        values.append(rng.randrange(len(sub.tensors)))
    setattr(sub, field, _array(values, np.int32))


def m_buffer(model, rng):
    index = rng.randrange(len(model.buffers))
    buf = model.buffers[index]
    kind = rng.random()
    if kind < 0.3 and buf.data is not None and len(buf.data):
        buf.data = buf.data[:rng.randrange(len(buf.data))]
    elif kind < 0.5:
        buf.data = _array(list(rng.randbytes(rng.randint(1, 64))), np.uint8)
    elif kind < 0.8:
        buf.offset = rng.choice((1, 2, 8, 2 ** 20, 2 ** 40))
        buf.size = rng.choice((0, 1, 16, 2 ** 20, 2 ** 40))
    else:
        buf.data = None


def m_offline_plan(model, rng):
    tensors = sum(len(s.tensors) for s in model.subgraphs)
    values = [0, len(model.subgraphs), tensors] + [-1] * tensors
    kind = rng.randrange(4)
    if kind == 1:
        values[rng.randrange(3)] = _odd_int(rng, tensors)
    elif kind == 2:
        values = values[:-1]
    elif kind == 3 and tensors:
        values[3 + rng.randrange(tensors)] = rng.choice((-2, 0, 16, 2 ** 31 - 1))
    data = np.asarray(values, dtype="<i4").tobytes()
    if rng.random() < 0.3:
        data = data[:-rng.randint(1, 3)]
    buf = fb.BufferT()
    buf.data = _array(list(data), np.uint8)
    model.buffers.append(buf)
    meta = fb.MetadataT()
    meta.name = b"OfflineMemoryAllocation"
    meta.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or [])
                      if m.name != b"OfflineMemoryAllocation"] + [meta]


def m_metadata(model, rng):
    if model.metadata and rng.random() < 0.5:
        rng.choice(model.metadata).buffer = _odd_uint(rng, len(model.buffers))
    else:
        model.metadataBuffer = _array([_odd_int(rng, len(model.buffers))], np.int32)


def m_subgraphs(model, rng):
    kind = rng.random()
    if kind < 0.4:
        model.subgraphs.append(model.subgraphs[0])
    elif kind < 0.6:
        model.subgraphs.append(fb.SubGraphT())
    elif kind < 0.8:
        model.subgraphs = []
    else:
        model.subgraphs.insert(0, fb.SubGraphT())


def m_signature(model, rng):
    if not model.signatureDefs:
        return
    sig = rng.choice(model.signatureDefs)
    if rng.random() < 0.5:
        sig.subgraphIndex = _odd_uint(rng, len(model.subgraphs))
    elif sig.inputs:
        rng.choice(sig.inputs).tensorIndex = _odd_uint(rng, len(model.subgraphs[0].tensors))


def m_shape_signature(model, rng):
    _, _, t = _tensor(model, rng)
    t.shapeSignature = _array([rng.choice((-1, -3, 1, 5)) for _ in range(rng.randint(0, 4))],
                              np.int32)


MUTATIONS = tuple((name[2:], fn) for name, fn in sorted(globals().items())
                  if name.startswith("m_") and callable(fn))
# Weight the common failure sources higher: shapes, indices, quantization, options.
MUTATIONS = MUTATIONS + tuple(m for m in MUTATIONS if m[0] in (
    "shape", "op_input", "op_output", "quantization", "options", "custom_options", "type",
    "op_order"))
