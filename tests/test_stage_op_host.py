"""QMCU_PATCH_STAGE in C (parser + qmcu_patch_stage, ref and opt paths) against the numpy
reference, bit for bit, on the host; the same module reruns under ASan + UBSan.

The library (cmixnn_bridge/src/*.c and tflm/qmcu_options_parse.cc, which needs only the
flexbuffers header) is built into cmixnn_bridge/build/stage-host-<variant>/ and loaded with
ctypes; buffers come from the C heap so the sanitizers guard them. Stage output and input
share one buffer laid out as the options' `output_gap` says, as TFLite Micro's offline plan
lays them out.
"""
from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fixture_models import fixture_path
from tflite_quantmcu.qmcu_stage_options import (decode_stage_options, stage_pool,
                                                stage_pool_words)
from tflite_quantmcu.reference.qmcu_stage import run_stage

ROOT = pathlib.Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "cmixnn_bridge"
FLEXBUFFERS_H = pathlib.Path("/usr/include/flatbuffers/flexbuffers.h")
VARIANT_ENV = "QMCU_STAGE_HOST_VARIANT"
VARIANT_FLAGS = {
    "plain": ["-O2"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all"],
}
OK, BAD_PARAMS = 0, 1


def _load_cases():
    """cmixnn_bridge/test/cortexm/qmcu_stage_cases.py: the cases, shared with the Cortex-M test."""
    path = BRIDGE / "test" / "cortexm" / "qmcu_stage_cases.py"
    spec = importlib.util.spec_from_file_location("qmcu_stage_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CASES = _load_cases()


class StageParams(ctypes.Structure):
    _fields_ = [(k, ctypes.c_int32) for k in ("grid_rows", "grid_cols", "num_tensors",
                                              "num_layers", "scratch_bytes", "pool_words")] + \
               [("pool", ctypes.c_void_p)]


class StageBuffers(ctypes.Structure):
    _fields_ = [("input", ctypes.c_void_p), ("output", ctypes.c_void_p),
                ("scratch", ctypes.c_void_p), ("operands", ctypes.c_void_p),
                ("num_operands", ctypes.c_int32)]


def _build(*, variant: str) -> pathlib.Path:
    gcc, gxx = shutil.which("gcc"), shutil.which("g++")
    if gcc is None or gxx is None:
        pytest.skip("gcc and g++ are needed for the host build")
    if not FLEXBUFFERS_H.exists():
        pytest.skip(f"{FLEXBUFFERS_H} missing (apt-get install libflatbuffers-dev)")
    out = BRIDGE / "build" / f"stage-host-{variant}"
    out.mkdir(parents=True, exist_ok=True)
    flags = ["-fPIC", "-Wall", "-Wextra", "-Werror", "-DQMCU_USE_OPT",
             f"-I{BRIDGE / 'include'}", f"-I{BRIDGE / 'tflm'}", *VARIANT_FLAGS[variant]]
    objects = []
    for source in sorted((BRIDGE / "src").rglob("*.c")):
        obj = out / (source.stem + ".o")
        _run([gcc, "-std=c99", *flags, "-c", str(source), "-o", str(obj)])
        objects.append(str(obj))
    parser = out / "qmcu_options_parse.o"
    _run([gxx, "-std=c++17", "-DFLATBUFFERS_LOCALE_INDEPENDENT=0", *flags, "-c",
          str(BRIDGE / "tflm" / "qmcu_options_parse.cc"), "-o", str(parser)])
    lib = out / "libqmcu_stage.so"
    _run([gxx, "-shared", *VARIANT_FLAGS[variant], *objects, str(parser), "-o", str(lib)])
    return lib


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"


class Stage:
    """The loaded library, parsing and running one op's options on C-heap buffers."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.libc = ctypes.CDLL(None)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.malloc.argtypes = [ctypes.c_size_t]
        self.libc.free.argtypes = [ctypes.c_void_p]
        lib.qmcu_parse_patch_stage_words.restype = ctypes.c_bool
        lib.qmcu_parse_patch_stage_options.restype = ctypes.c_bool
        self.live: list[int] = []

    def buffer(self, data: bytes = b"", size: int = 0) -> int:
        n = max(len(data), size, 1)
        ptr = self.libc.malloc(n)
        ctypes.memset(ptr, 0xA5, n)
        if data:
            ctypes.memmove(ptr, data, len(data))
        self.live.append(ptr)
        return ptr

    def free_all(self) -> None:
        for ptr in self.live:
            self.libc.free(ptr)
        self.live.clear()

    def words(self, data: bytes) -> int | None:
        words = ctypes.c_size_t(0)
        ok = self.lib.qmcu_parse_patch_stage_words(data, ctypes.c_size_t(len(data)),
                                                   ctypes.byref(words))
        return words.value if ok else None

    def parse(self, data: bytes) -> tuple[StageParams, int]:
        words = self.words(data)
        assert words is not None
        pool = self.buffer(size=4 * words)
        params = StageParams()
        assert self.lib.qmcu_parse_patch_stage_options(data, ctypes.c_size_t(len(data)),
                                                       ctypes.c_void_p(pool),
                                                       ctypes.c_size_t(words),
                                                       ctypes.byref(params))
        return params, pool

    def run(self, *, data: bytes, x: np.ndarray, operands: list[np.ndarray | None],
            use_opt: bool) -> tuple[int, np.ndarray]:
        options = decode_stage_options(data=data)
        params, _ = self.parse(data)
        out_shape = options.tensors[options.output].shape
        out_bytes, in_bytes = int(np.prod(out_shape)), x.size
        gap = options.output_gap if options.output_gap >= 0 else out_bytes
        io = self.buffer(size=max(gap + in_bytes, out_bytes))
        ctypes.memmove(io + gap, x.tobytes(), in_bytes)
        pointers = (ctypes.c_void_p * len(operands))(
            *[None if a is None else self.buffer(np.ascontiguousarray(a).tobytes())
              for a in operands])
        buffers = StageBuffers(input=io + gap, output=io,
                               scratch=self.buffer(size=options.scratch_bytes),
                               operands=ctypes.cast(pointers, ctypes.c_void_p),
                               num_operands=len(operands))
        fn = self.lib.qmcu_patch_stage if use_opt else self.lib.qmcu_patch_stage_ref
        status = fn(ctypes.byref(params), ctypes.byref(buffers))
        result = np.frombuffer(ctypes.string_at(io, out_bytes), dtype=np.int8)
        return status, result.reshape(out_shape)


@pytest.fixture(scope="module")
def stage():
    s = Stage(ctypes.CDLL(str(_build(variant=os.environ.get(VARIANT_ENV, "plain")))))
    yield s
    s.free_all()


def _cases():
    """(label, graph loader, split, grid, in_place, sub-byte seed or None)."""
    mnv2 = "mobilenetv2_w035_r144.tflite"
    int8 = [("mnv2-9-3x3", mnv2, 9, (3, 3), True), ("mnv2-16-2x5", mnv2, 16, (2, 5), True),
            ("mnv2-16-4x1", mnv2, 16, (4, 1), True), ("mnv2-9-2x2-plain", mnv2, 9, (2, 2), False),
            ("resnet8-3-2x2", "resnet8_cifar.tflite", 3, (2, 2), True),
            ("mnv1-5-3x3", "mobilenetv1_w025_r96.tflite", 5, (3, 3), True),
            ("synthetic-6-3x2", None, 6, (3, 2), True), ("synthetic-4-2x3", None, 4, (2, 3), False),
            # PAD layers inside the stage
            ("pad-7-3x2", "synthetic-pad", 7, (3, 2), True),
            ("pad-3-2x3-plain", "synthetic-pad", 3, (2, 3), False)]
    # Per-patch 8/4/2-bit maps with their own ranges (version-2 options, variants).
    subbyte = [("mnv2-9-3x3-subbyte", mnv2, 9, (3, 3), True, 1),
               ("mnv2-16-2x5-subbyte", mnv2, 16, (2, 5), True, 2),
               ("mnv2-9-2x2-plain-subbyte", mnv2, 9, (2, 2), False, 3),
               ("resnet8-3-2x2-subbyte", "resnet8_cifar.tflite", 3, (2, 2), True, 4),
               ("mnv1-5-3x3-subbyte", "mobilenetv1_w025_r96.tflite", 5, (3, 3), True, 5),
               ("synthetic-6-3x2-subbyte", None, 6, (3, 2), True, 6),
               ("pad-7-3x2-subbyte", "synthetic-pad", 7, (3, 2), True, 7)]
    return [c + (None,) for c in int8] + subbyte


def _stage_case(name, split, grid, in_place, subbyte=None):
    """The op's options and operands (None for the stage input) of one case."""
    if name not in (None, "synthetic-pad") and not fixture_path(name).exists():
        pytest.skip(f"{fixture_path(name)} is absent")
    return _CASES.stage_case(name, split, grid, in_place, subbyte)


@pytest.mark.parametrize("case", _cases(), ids=[c[0] for c in _cases()])
def test_c_stage_equals_the_reference(stage, case):
    _, name, split, grid, in_place, subbyte = case
    data, operands = _stage_case(name, split, grid, in_place, subbyte)
    assert decode_stage_options(data=data).version == (1 if subbyte is None else 2)
    options = decode_stage_options(data=data)
    assert stage.words(data) == stage_pool_words(options=options)
    rng = np.random.default_rng(split)
    x = rng.integers(-128, 128, size=options.tensors[0].shape, dtype=np.int8)
    expected = run_stage(options=options, x=x,
                         operands={k: a for k, a in enumerate(operands) if a is not None})
    params, pool = stage.parse(data)
    assert list((ctypes.c_int32 * params.pool_words).from_address(pool)) == \
        stage_pool(options=options)
    for use_opt in (False, True):
        status, got = stage.run(data=data, x=x, operands=operands, use_opt=use_opt)
        assert status == OK
        np.testing.assert_array_equal(got, expected.reshape(got.shape))


def test_bad_options_and_pools_are_refused(stage):
    data, operands = _stage_case("mobilenetv2_w035_r144.tflite", 9, (2, 2), True)
    assert stage.words(data[:len(data) // 2]) is None
    assert stage.words(b"\x00\x01\x02") is None
    params, pool = stage.parse(data)
    assert stage.lib.qmcu_patch_stage_check(ctypes.byref(params), len(operands)) == OK
    assert stage.lib.qmcu_patch_stage_check(ctypes.byref(params), 1) == BAD_PARAMS
    options = decode_stage_options(data=data)
    first_layer = 7 * len(options.tensors) + 2 * 4 * len(options.tensors)
    words = (ctypes.c_int32 * params.pool_words).from_address(pool)
    words[first_layer + 4] = 5          # layer 0 writes tensor 5: not the DAG order
    assert stage.lib.qmcu_patch_stage_check(ctypes.byref(params), len(operands)) == BAD_PARAMS
    assert stage.lib.qmcu_patch_stage(ctypes.byref(params), None) == BAD_PARAMS


@pytest.mark.parametrize("compiler,flags,expected", [
    ("gcc", [], 40), ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb"], 36)])
def test_op_data_size_is_what_the_tail_model_counts(compiler, flags, expected, tmp_path):
    """tflm_tail's QmcuStageData (host64: 40, cortex-m: 36) is sizeof(qmcu_stage_op_data)."""
    from tflite_quantmcu.analysis.tflm_tail import TARGETS
    target = "host64" if compiler == "gcc" else "cortex-m"
    assert TARGETS[target].sizes["QmcuStageData"][0] == expected
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not on PATH")
    source = tmp_path / "size.c"
    source.write_text('#include "qmcu/qmcu_stage.h"\n'
                      f"_Static_assert(sizeof(qmcu_stage_op_data) == {expected}, \"size\");\n")
    result = subprocess.run([compiler, "-std=c11", *flags, f"-I{BRIDGE / 'include'}", "-c",
                             str(source), "-o", str(tmp_path / "size.o")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def _sanitizer_runtime() -> str:
    if shutil.which("gcc") is None:
        return ""
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True, check=False).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else ""


@pytest.mark.skipif(os.environ.get(VARIANT_ENV) is not None, reason="already the sanitizer run")
def test_same_comparisons_under_sanitizers():
    runtime = _sanitizer_runtime()
    if not runtime:
        pytest.skip("gcc's libasan.so not found: cannot run the sanitizer build")
    stdcxx = subprocess.run(["g++", "-print-file-name=libstdc++.so"], capture_output=True,
                            text=True, check=False).stdout.strip()
    env = dict(os.environ, **{VARIANT_ENV: "asan", "LD_PRELOAD": f"{runtime} {stdcxx}",
                              "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
                              "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             __file__, "-k", "not sanitizers and not op_data"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, tail
    assert "passed" in result.stdout and "failed" not in result.stdout, tail


def test_bad_version_2_tables_are_refused(stage):
    """Corrupt each part of version 2's per-patch section: the check refuses the pool."""
    data, operands = _stage_case("mobilenetv2_w035_r144.tflite", 9, (2, 2), True, 3)
    options = decode_stage_options(data=data)
    assert options.version == 2
    patches = options.patches
    pool = stage_pool(options=options)
    base = len(stage_pool(options=dataclasses.replace(
        options, tensors=tuple(dataclasses.replace(t, patch_bits=(), patch_zero_points=())
                               for t in options.tensors),
        layers=tuple(dataclasses.replace(x, variants=(), patch_variants=(), variant_data=-1)
                     for x in options.layers))))
    tensors, layers = len(options.tensors), len(options.layers)
    index = pool[base:base + tensors + 3 * layers]
    table = next(w for w in index[:tensors] if w >= 0)
    layer = next(n for n in range(layers) if index[tensors + 3 * n + 1] >= 0)
    count, vtable, _ = index[tensors + 3 * layer:tensors + 3 * layer + 3]
    record = vtable + patches
    edits = {"bits 3": (table, 3), "zero point": (table + patches, 99),
             "variant index": (vtable, count + 1),
             "variant data operand": (base + tensors + 3 * layer + 2, len(operands)),
             "requant offset": (record + 3, -2), "bias offset": (record + 2, -7),
             "index outside": (base, len(pool) + 5)}
    for what, (word, value) in edits.items():
        params, address = stage.parse(data)
        words = (ctypes.c_int32 * params.pool_words).from_address(address)
        assert stage.lib.qmcu_patch_stage_check(ctypes.byref(params), len(operands)) == OK
        words[word] = value
        assert stage.lib.qmcu_patch_stage_check(ctypes.byref(params), len(operands)) == \
            BAD_PARAMS, what
    # a version-1 map with per-patch tables is no stage map
    from flatbuffers import flexbuffers
    raw = flexbuffers.Loads(data)
    raw["version"] = 1
    assert stage.words(bytes(flexbuffers.Dumps(raw))) is None
