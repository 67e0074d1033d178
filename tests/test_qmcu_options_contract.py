"""Options contract: every QMCU_* option written by Python arrives in C with the same value.

A module fixture builds ``cmixnn_bridge/test/options_contract_main.cc`` with the C++ parsers
``cmixnn_bridge/tflm/qmcu_options_parse.cc`` (the ones the TFLM glue calls) against Debian's
``libflatbuffers-dev`` headers, into ``cmixnn_bridge/build/options_contract/``. The driver
parses a blob and prints every parsed field as JSON, keyed by the option names of
docs/qmcu_ops.md. The tests then check:

* a grid of valid options per op (every bit-width combination, SAME/VALID/EXPLICIT geometry
  with strides, dilations and asymmetric pads, zero points at the ends of their ranges, full
  and clamped act ranges, negative and positive shifts, rescale true/false), encoded with
  ``encode_options``: the blob holds exactly the dataclass keys, and C returns each of them;
* the same maps with a distinct int32 in every int key (extremes included), so that two keys
  read into each other's fields cannot hide behind equal values;
* rejection: every required key missing, a wrong or missing version, wrong types, values
  outside int32, non-map roots, truncated and corrupted blobs (never a crash).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import random
import shutil
import subprocess

import pytest
from flatbuffers import flexbuffers

from tflite_quantmcu import qmcu_options as qo

ROOT = pathlib.Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "cmixnn_bridge"
FLEXBUFFERS_H = pathlib.Path("/usr/include/flatbuffers/flexbuffers.h")
SOURCES = (BRIDGE / "test" / "options_contract_main.cc",
           BRIDGE / "tflm" / "qmcu_options_parse.cc")
PARSED, REJECTED = 0, 3  # the driver's exit codes
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
# Keys a parser may do without (docs §5 lists no dilation for the pool; the parser defaults 1).
OPTIONAL_KEYS = {"QMCU_AVERAGE_POOL_2D": {"dilation_h": 1, "dilation_w": 1}}
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer"]
SANITIZER_ENV = {"ASAN_OPTIONS": "exitcode=86:detect_leaks=0", "UBSAN_OPTIONS": "exitcode=87"}


@pytest.fixture(scope="module")
def driver() -> pathlib.Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ on PATH: the options-contract driver cannot be built")
    if not FLEXBUFFERS_H.exists():
        pytest.skip(f"{FLEXBUFFERS_H} missing (apt-get install libflatbuffers-dev)")
    out_dir = BRIDGE / "build" / "options_contract"
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "options_contract"
    tmp = out_dir / f".options_contract.{os.getpid()}"
    # FLATBUFFERS_LOCALE_INDEPENDENT=0 as TFLM builds flatbuffers: header-only, no libflatbuffers.
    cmd = [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
           "-DFLATBUFFERS_LOCALE_INDEPENDENT=0", f"-I{BRIDGE / 'include'}",
           f"-I{BRIDGE / 'tflm'}", *map(str, SOURCES), "-o", str(tmp)]
    # Sanitized where the toolchain has the runtimes, so a read past a damaged blob fails.
    result = subprocess.run([*cmd, *SANITIZE], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{result.stderr}"
    os.replace(tmp, exe)  # atomic, so parallel sessions never run a half-written file
    return exe


def run_driver(driver: pathlib.Path, tmp_path: pathlib.Path, *, op: str,
               blob: bytes) -> tuple[int, dict | None]:
    path = tmp_path / "options.bin"
    path.write_bytes(blob)
    result = subprocess.run([str(driver), str(path), op], capture_output=True, text=True,
                            check=False, timeout=10, env={**os.environ, **SANITIZER_ENV})
    # A crash (negative: a signal), a sanitizer report (86, 87) or a usage error (2) is never
    # an answer.
    assert result.returncode in (PARSED, REJECTED), (
        f"{op}: driver exited {result.returncode}\n{result.stderr}")
    if result.returncode != PARSED:
        return result.returncode, None
    return PARSED, json.loads(result.stdout)


def expected_fields(options) -> dict:
    """Every key the dataclass (geometry flattened) stands for, with its value, plus version."""
    out = {"version": qo.FORMAT_VERSION}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if isinstance(value, qo.Geometry):
            out.update({g.name: getattr(value, g.name) for g in dataclasses.fields(value)})
        elif isinstance(value, tuple):
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def c_extras(op: str) -> dict:
    """Fields the C struct has beyond the options: conv's depth_multiplier, always 1."""
    return {"depth_multiplier": 1} if op == "QMCU_CONV_2D" else {}


# ---------------------------------------------------------------- the grid of valid options
def zero_points(bits: int) -> tuple[int, ...]:
    lo, hi = qo.act_range(bits=bits)
    return (lo, hi, (lo + hi) // 2 + 1)


def act_ranges(bits: int, zero_point: int) -> tuple[tuple[int, int], ...]:
    lo, hi = qo.act_range(bits=bits)
    return ((lo, hi), (max(lo, zero_point), hi), (max(lo, zero_point), max(lo, zero_point)))


def geometry(kind: str, *, in_hw: tuple[int, int], k_hw: tuple[int, int],
             dilation: bool) -> tuple[qo.Geometry, int, int]:
    """A geometry of ``kind`` with its output size; strides differ per axis, and so do pads."""
    stride = {"VALID": (2, 1), "SAME": (1, 2), "EXPLICIT": (2, 3)}[kind]
    dil = {"VALID": (1, 2), "SAME": (2, 1), "EXPLICIT": (3, 1)}[kind] if dilation else (1, 1)
    pads, outs = [], []
    for axis in range(2):
        if kind == "SAME":
            out, before, after = qo.same_padding(size=in_hw[axis], kernel=k_hw[axis],
                                                 stride=stride[axis], dilation=dil[axis])
        else:
            before, after = {"VALID": ((0, 0), (0, 0)), "EXPLICIT": ((2, 1), (1, 0))}[kind][axis]
            out = qo.conv_out_size(size=in_hw[axis], kernel=k_hw[axis], stride=stride[axis],
                                   dilation=dil[axis], pad_before=before, pad_after=after)
        pads += [before, after]
        outs.append(out)
    geo = qo.Geometry(stride_h=stride[0], stride_w=stride[1], dilation_h=dil[0],
                      dilation_w=dil[1], padding=kind, pad_top=pads[0], pad_bottom=pads[1],
                      pad_left=pads[2], pad_right=pads[3])
    return geo, outs[0], outs[1]


GEOMETRIES = ("VALID", "SAME", "EXPLICIT")


def conv_cases():
    for i, (in_bits, out_bits, w_bits) in enumerate(
            itertools.product(qo.ACT_BITS, qo.ACT_BITS, qo.WEIGHT_BITS)):
        kind = GEOMETRIES[i % 3]
        in_zp = zero_points(in_bits)[i % 3]
        out_zp = zero_points(out_bits)[(i + 1) % 3]
        act_min, act_max = act_ranges(out_bits, out_zp)[i % 3]
        geo, oh, ow = geometry(kind, in_hw=(9, 11), k_hw=(3, 2), dilation=True)
        yield "QMCU_CONV_2D", qo.Conv2DOptions(
            in_bits=in_bits, out_bits=out_bits, w_bits=w_bits, in_zero_point=in_zp,
            out_zero_point=out_zp, in_shape=(2, 9, 11, 8), filter_shape=(12, 3, 2, 8),
            out_shape=(2, oh, ow, 12), act_min=act_min, act_max=act_max, geometry=geo)
        geo, oh, ow = geometry(GEOMETRIES[(i + 1) % 3], in_hw=(10, 7), k_hw=(2, 3),
                               dilation=True)
        multiplier = (1, 2, 3)[i % 3]
        yield "QMCU_DEPTHWISE_CONV_2D", qo.DepthwiseConv2DOptions(
            in_bits=in_bits, out_bits=out_bits, w_bits=w_bits, in_zero_point=in_zp,
            out_zero_point=out_zp, in_shape=(1, 10, 7, 8), filter_shape=(1, 2, 3, 8 * multiplier),
            out_shape=(1, oh, ow, 8 * multiplier), act_min=act_min, act_max=act_max,
            depth_multiplier=multiplier, geometry=geo)


# (multiplier, shift) pairs: negative, zero and positive shifts, extreme multipliers.
REQUANTS = ((1073741824, -1), (2147483647, -31), (1518500250, 3), (0, 0), (1431655765, -20),
            (1717986918, 0), (1073741824, 30))


def add_cases():
    for i, (b1, b2, bo) in enumerate(itertools.product(qo.ACT_BITS, repeat=3)):
        out_zp = zero_points(bo)[i % 3]
        act_min, act_max = act_ranges(bo, out_zp)[(i + 2) % 3]
        m = [REQUANTS[(i + k) % len(REQUANTS)] for k in range(3)]
        yield "QMCU_ADD", qo.AddOptions(
            in1_bits=b1, in2_bits=b2, out_bits=bo, in1_zero_point=zero_points(b1)[(i + 1) % 3],
            in2_zero_point=zero_points(b2)[(i + 2) % 3], out_zero_point=out_zp,
            in1_multiplier=m[0][0], in1_shift=m[0][1], in2_multiplier=m[1][0],
            in2_shift=m[1][1], out_multiplier=m[2][0], out_shift=m[2][1], act_min=act_min,
            act_max=act_max, shape=(3, 5, 7, 8), left_shift=qo.ADD_LEFT_SHIFT if i % 2 else 7)


def pool_cases():
    i = 0
    for in_bits, out_bits in itertools.product(qo.ACT_BITS, repeat=2):
        for rescale in ((False, True) if in_bits == out_bits else (True,)):
            for kind in GEOMETRIES:
                geo, oh, ow = geometry(kind, in_hw=(9, 8), k_hw=(3, 2), dilation=False)
                out_zp = zero_points(out_bits)[i % 3]
                in_zp = out_zp if not rescale else zero_points(in_bits)[(i + 1) % 3]
                act_min, act_max = act_ranges(out_bits, out_zp)[i % 3]
                multiplier, shift = REQUANTS[i % len(REQUANTS)] if rescale else (0, 0)
                i += 1
                yield "QMCU_AVERAGE_POOL_2D", qo.AveragePool2DOptions(
                    in_bits=in_bits, out_bits=out_bits, in_zero_point=in_zp,
                    out_zero_point=out_zp, in_shape=(2, 9, 8, 16), out_shape=(2, oh, ow, 16),
                    filter_h=3, filter_w=2, act_min=act_min, act_max=act_max, rescale=rescale,
                    multiplier=multiplier, shift=shift, geometry=geo)


def requant_cases():
    for i, (bits, (multiplier, shift)) in enumerate(itertools.product((4, 2), REQUANTS)):
        yield "QMCU_PACK", qo.RequantOptions(
            in_bits=8, out_bits=bits, in_zero_point=zero_points(8)[i % 3],
            out_zero_point=zero_points(bits)[(i + 1) % 3], multiplier=multiplier, shift=shift,
            shape=(1, 3, 5, 4 * (i % 3 + 1)))
        yield "QMCU_UNPACK", qo.RequantOptions(
            in_bits=bits, out_bits=8, in_zero_point=zero_points(bits)[(i + 2) % 3],
            out_zero_point=zero_points(8)[i % 3], multiplier=multiplier, shift=-shift,
            shape=(4, 1, 2, 8))


def all_cases():
    return [*conv_cases(), *add_cases(), *pool_cases(), *requant_cases()]


def one_per_op():
    seen = {}
    for op, options in all_cases():
        seen.setdefault(op, options)
    return seen


def test_grid_covers_every_op_and_bit_width():
    cases = all_cases()
    assert {op for op, _ in cases} == set(qo.OP_OPTIONS)
    conv = [o for op, o in cases if op == "QMCU_CONV_2D"]
    assert {(o.in_bits, o.out_bits, o.w_bits) for o in conv} == set(
        itertools.product(qo.ACT_BITS, qo.ACT_BITS, qo.WEIGHT_BITS))
    pool = [o for op, o in cases if op == "QMCU_AVERAGE_POOL_2D"]
    assert {o.rescale for o in pool} == {False, True}
    geos = [o.geometry for op, o in cases if hasattr(o, "geometry")]
    assert {g.padding for g in geos} == set(qo.PADDINGS)


def test_every_key_round_trips(driver, tmp_path):
    for op, options in all_cases():
        blob = qo.encode_options(options=options)
        expected = expected_fields(options)
        # encode_options writes exactly the dataclass keys...
        assert set(flexbuffers.Loads(blob)) == set(expected), op
        # ...and C reads back every one of them with the same value.
        status, parsed = run_driver(driver, tmp_path, op=op, blob=blob)
        assert status == PARSED, f"{op} rejected valid options {options}"
        assert parsed == {**expected, **c_extras(op)}, f"{op}: {options}"
        assert type(parsed.get("rescale", False)) is bool


def distinct_values(fields: dict, rng: random.Random) -> dict:
    """The same map with a distinct int32 in every int (shape entries included)."""
    pool = [INT32_MIN, INT32_MAX, -1, 0, 1, 2, 255, -129, 65536, -70000]
    pool += rng.sample(range(INT32_MIN, INT32_MAX), 60)
    rng.shuffle(pool)
    values = iter(pool)
    out = {}
    for key, value in fields.items():
        if key == "version" or isinstance(value, (bool, str)):
            out[key] = value
        elif isinstance(value, list):
            out[key] = [next(values) for _ in value]
        else:
            out[key] = next(values)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_distinct_values_land_in_their_own_fields(driver, tmp_path, seed):
    rng = random.Random(seed)
    for op, options in one_per_op().items():
        fields = distinct_values(expected_fields(options), rng)
        if "padding" in fields:
            fields["padding"] = qo.PADDINGS[seed % 3]
        if "rescale" in fields:
            fields["rescale"] = bool(seed % 2)
        expected = {**fields, **c_extras(op)}
        status, parsed = run_driver(driver, tmp_path, op=op, blob=flexbuffers.Dumps(fields))
        assert status == PARSED, op
        assert parsed == expected, op


def encode_variant(fields: dict, variant: str) -> bytes:
    """The map written with other legal flexbuffer encodings than ``flexbuffers.Dumps``'s."""
    builder = flexbuffers.Builder()
    with builder.Map():
        for key, value in fields.items():
            builder.Key(key)
            if isinstance(value, list):
                {"typed": builder.TypedVectorFromElements,
                 "fixed": builder.FixedTypedVectorFromElements}.get(
                     variant, builder.VectorFromElements)(value)
            elif isinstance(value, (bool, str)):
                builder.Add(value)
            elif variant == "uint" and value >= 0:
                builder.UInt(value)
            elif variant == "indirect":
                builder.IndirectInt(value)
            else:
                builder.Int(value)
    return bytes(builder.Finish())


@pytest.mark.parametrize("variant", ["typed", "fixed", "uint", "indirect"])
def test_other_integer_and_vector_encodings(driver, tmp_path, variant):
    """Typed and fixed-size vectors, unsigned and indirect ints carry the same values."""
    rng = random.Random(variant)
    for op, options in one_per_op().items():
        fields = distinct_values(expected_fields(options), rng)
        status, parsed = run_driver(driver, tmp_path, op=op,
                                    blob=encode_variant(fields, variant))
        assert status == PARSED, op
        assert parsed == {**fields, **c_extras(op)}, op


def test_every_required_key_is_required(driver, tmp_path):
    for op, options in one_per_op().items():
        fields = expected_fields(options)
        for key in fields:
            partial = {k: v for k, v in fields.items() if k != key}
            status, parsed = run_driver(driver, tmp_path, op=op, blob=flexbuffers.Dumps(partial))
            if key in OPTIONAL_KEYS.get(op, {}):
                assert status == PARSED and parsed[key] == OPTIONAL_KEYS[op][key], (op, key)
            else:
                assert status == REJECTED, f"{op} accepted options without {key!r}"


@pytest.mark.parametrize("version", [None, 0, 2, -1, 1 << 32, "1", 1.0, [1]])
def test_wrong_version_is_rejected(driver, tmp_path, version):
    for op, options in one_per_op().items():
        fields = expected_fields(options)
        if version is None:
            del fields["version"]
        else:
            fields["version"] = version
        status, _ = run_driver(driver, tmp_path, op=op, blob=flexbuffers.Dumps(fields))
        assert status == REJECTED, f"{op} accepted version {version!r}"


def bad_values(fields: dict):
    """(key, value) pairs a parser must refuse."""
    some_int = next(k for k, v in fields.items() if k != "version" and type(v) is int)
    some_shape = next(k for k, v in fields.items() if isinstance(v, list))
    yield some_int, INT32_MAX + 1
    yield some_int, INT32_MIN - 1
    yield some_int, "3"
    yield some_int, 3.0
    yield some_int, [3]
    yield some_shape, fields[some_shape][:3]
    yield some_shape, fields[some_shape] + [1]
    yield some_shape, [1, 2, 3, INT32_MAX + 1]
    yield some_shape, [1.0, 2.0, 3.0, 4.0]
    yield some_shape, {"n": 1}
    yield some_shape, "1,2,3,4"
    if "padding" in fields:
        for value in ("same", "FULL", "", 0):
            yield "padding", value
    if "rescale" in fields:
        for value in (2, -1, "true"):
            yield "rescale", value


def test_wrong_types_and_ranges_are_rejected(driver, tmp_path):
    for op, options in one_per_op().items():
        fields = expected_fields(options)
        for key, value in bad_values(fields):
            blob = flexbuffers.Dumps({**fields, key: value})
            status, _ = run_driver(driver, tmp_path, op=op, blob=blob)
            assert status == REJECTED, f"{op} accepted {key}={value!r}"


def test_unknown_keys_are_ignored_and_rescale_may_be_an_int(driver, tmp_path):
    for op, options in one_per_op().items():
        fields = {**expected_fields(options), "zz_future": 7, "a_future": "x"}
        if "rescale" in fields:
            fields["rescale"] = 1
        status, parsed = run_driver(driver, tmp_path, op=op, blob=flexbuffers.Dumps(fields))
        assert status == PARSED, op
        assert "zz_future" not in parsed
        if "rescale" in fields:
            assert parsed["rescale"] is True


def test_options_of_another_op_are_rejected(driver, tmp_path):
    """The requant keys (PACK) lack what conv, add and pool need, and vice versa."""
    blobs = {op: qo.encode_options(options=o) for op, o in one_per_op().items()}
    for op, blob in blobs.items():
        for other, other_blob in blobs.items():
            if other == op or {op, other} == {"QMCU_PACK", "QMCU_UNPACK"}:
                continue
            if op == "QMCU_DEPTHWISE_CONV_2D" and other == "QMCU_CONV_2D":
                continue  # depthwise options are conv options plus depth_multiplier
            status, _ = run_driver(driver, tmp_path, op=other, blob=blob)
            assert status == REJECTED, f"{other} accepted the options of {op}"


@pytest.mark.parametrize("blob", [b"", b"\x00", b"\x01\x04", flexbuffers.Dumps([1, 2, 3]),
                                  flexbuffers.Dumps(1), flexbuffers.Dumps("version"),
                                  flexbuffers.Dumps({}), b"\xff" * 64])
def test_non_maps_are_rejected(driver, tmp_path, blob):
    for op in qo.OP_OPTIONS:
        status, _ = run_driver(driver, tmp_path, op=op, blob=blob)
        assert status == REJECTED, op


def test_truncated_and_corrupted_blobs_never_crash(driver, tmp_path):
    """Verified before use: a damaged blob is rejected or parsed, never read out of bounds."""
    op = "QMCU_AVERAGE_POOL_2D"
    blob = qo.encode_options(options=one_per_op()[op])
    for n in range(len(blob)):
        status, _ = run_driver(driver, tmp_path, op=op, blob=blob[:n])
        assert status == REJECTED, f"accepted the first {n} bytes"
    rng = random.Random(0)
    for pos in rng.sample(range(len(blob)), min(len(blob), 60)):
        damaged = bytearray(blob)
        damaged[pos] ^= rng.choice((0x01, 0x80, 0xFF))
        run_driver(driver, tmp_path, op=op, blob=bytes(damaged))  # asserts exit 0 or 1
