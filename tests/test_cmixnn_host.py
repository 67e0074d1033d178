"""The C kernels (cmixnn_bridge) against the numpy reference, bit for bit, on the host.

A session fixture compiles the library into cmixnn_bridge/build/<variant>/ and loads it with
ctypes. ``test_same_comparisons_under_sanitizers`` reruns this module in a subprocess with an
AddressSanitizer + UndefinedBehaviorSanitizer build (QMCU_HOST_VARIANT=asan).
"""
from __future__ import annotations

import ctypes
import dataclasses
import itertools
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tflite_quantmcu.reference import qmcu_golden as gold

ROOT = pathlib.Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "cmixnn_bridge"
VARIANT_ENV = "QMCU_HOST_VARIANT"
VARIANT_FLAGS = {
    "plain": ["-O2"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all"],
}
BAD_PARAMS = 1


class Dims(ctypes.Structure):
    _fields_ = [(k, ctypes.c_int32) for k in ("n", "h", "w", "c")]


class Geometry(ctypes.Structure):
    _fields_ = [(k, ctypes.c_int32) for k in ("stride_h", "stride_w", "dilation_h", "dilation_w",
                                              "pad_top", "pad_bottom", "pad_left", "pad_right")]


class ConvParams(ctypes.Structure):
    _fields_ = ([("input", Dims), ("filter", Dims), ("output", Dims)]
                + [(k, ctypes.c_int32) for k in ("in_bits", "w_bits", "out_bits", "in_zero_point",
                                                 "out_zero_point", "act_min", "act_max",
                                                 "depth_multiplier")]
                + [("geometry", Geometry)])


class ConvBuffers(ctypes.Structure):
    _fields_ = [("input", ctypes.c_void_p), ("filter", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("multiplier", ctypes.c_void_p), ("shift", ctypes.c_void_p),
                ("output", ctypes.c_void_p), ("scratch", ctypes.c_void_p)]


class AddParams(ctypes.Structure):
    _fields_ = [("shape", Dims)] + [(k, ctypes.c_int32) for k in (
        "in1_bits", "in2_bits", "out_bits", "in1_zero_point", "in2_zero_point", "out_zero_point",
        "left_shift", "in1_multiplier", "in1_shift", "in2_multiplier", "in2_shift",
        "out_multiplier", "out_shift", "act_min", "act_max")]


class AddBuffers(ctypes.Structure):
    _fields_ = [("input1", ctypes.c_void_p), ("input2", ctypes.c_void_p),
                ("output", ctypes.c_void_p)]


class PoolParams(ctypes.Structure):
    _fields_ = ([("input", Dims), ("output", Dims)]
                + [(k, ctypes.c_int32) for k in ("filter_h", "filter_w", "in_bits", "out_bits",
                                                 "in_zero_point", "out_zero_point", "act_min",
                                                 "act_max", "rescale", "multiplier", "shift")]
                + [("geometry", Geometry)])


class UnaryBuffers(ctypes.Structure):
    _fields_ = [("input", ctypes.c_void_p), ("output", ctypes.c_void_p)]


class RequantParams(ctypes.Structure):
    _fields_ = [("shape", Dims)] + [(k, ctypes.c_int32) for k in (
        "in_bits", "out_bits", "in_zero_point", "out_zero_point", "multiplier", "shift")]


def _build(*, variant: str) -> pathlib.Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no host C compiler (gcc or cc) on PATH")
    out_dir = BRIDGE / "build" / f"host-{variant}"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libqmcu.so"
    sources = sorted(str(p) for p in (BRIDGE / "src").rglob("*.c"))
    cmd = [compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
           "-DQMCU_USE_OPT", f"-I{BRIDGE / 'include'}", *VARIANT_FLAGS[variant], *sources,
           "-o", str(lib)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{result.stderr}"
    return lib


class Kernels:
    """The loaded library plus C-heap buffers (so ASan guards them)."""

    def __init__(self, *, lib: ctypes.CDLL):
        self.lib = lib
        self.libc = ctypes.CDLL(None)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.malloc.argtypes = [ctypes.c_size_t]
        self.libc.free.argtypes = [ctypes.c_void_p]
        self._live: list[int] = []
        for name in ("conv_2d_scratch_size", "conv_2d_opt_scratch_size",
                     "depthwise_conv_2d_scratch_size", "depthwise_conv_2d_opt_scratch_size"):
            getattr(lib, f"qmcu_{name}").restype = ctypes.c_size_t

    def buffer(self, *, data=None, size: int = 0) -> int:
        """A malloc'ed buffer holding ``data`` (or ``size`` bytes of 0xA5)."""
        raw = b"" if data is None else np.ascontiguousarray(data).tobytes()
        n = max(len(raw), size)
        ptr = self.libc.malloc(max(n, 1))
        ctypes.memset(ptr, 0xA5, max(n, 1))
        if raw:
            ctypes.memmove(ptr, raw, len(raw))
        self._live.append(ptr)
        return ptr

    def read(self, *, ptr: int, size: int) -> bytes:
        return ctypes.string_at(ptr, size)

    def free_all(self) -> None:
        for ptr in self._live:
            self.libc.free(ptr)
        self._live.clear()


@pytest.fixture(scope="session")
def kernels():
    variant = os.environ.get(VARIANT_ENV, "plain")
    k = Kernels(lib=ctypes.CDLL(str(_build(variant=variant))))
    yield k
    k.free_all()


def _dims(shape) -> Dims:
    return Dims(*[int(v) for v in shape])


def _geometry(g) -> Geometry:
    return Geometry(g.stride_h, g.stride_w, g.dilation_h, g.dilation_w, g.pad_top, g.pad_bottom,
                    g.pad_left, g.pad_right)


def conv_params(options) -> ConvParams:
    o = options
    return ConvParams(_dims(o.in_shape), _dims(o.filter_shape), _dims(o.out_shape), o.in_bits,
                      o.w_bits, o.out_bits, o.in_zero_point, o.out_zero_point, o.act_min,
                      o.act_max, getattr(o, "depth_multiplier", 1), _geometry(o.geometry))


def _run_conv(*, k: Kernels, case: gold.ConvCase, fn: str, scratch_fn: str) -> bytes:
    params = conv_params(case.options)
    scratch = getattr(k.lib, scratch_fn)(ctypes.byref(params))
    out_size = case.expected.nbytes
    bufs = ConvBuffers(k.buffer(data=case.input), k.buffer(data=case.filter),
                       k.buffer(data=case.bias), k.buffer(data=case.requant[0].copy()),
                       k.buffer(data=case.requant[1].copy()), k.buffer(size=out_size),
                       k.buffer(size=scratch) if scratch else None)
    status = getattr(k.lib, fn)(ctypes.byref(params), ctypes.byref(bufs))
    assert status == 0, f"{fn} returned {status}"
    return k.read(ptr=bufs.output, size=out_size)


# ------------------------------------------------------------------ grids
BITS = (8, 4, 2)
CONV_SHAPES = [
    # in_shape, c_out, kernel, stride, dilation, pads
    ((1, 6, 6, 8), 8, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((1, 7, 5, 16), 4, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((1, 9, 8, 8), 6, (3, 3), (2, 2), (1, 1), (0, 1, 1, 1)),
    ((2, 5, 7, 8), 4, (3, 2), (1, 2), (2, 1), (2, 1, 0, 3)),
    ((1, 5, 5, 4), 3, (1, 1), (2, 1), (1, 1), (0, 0, 0, 0)),
    ((1, 3, 3, 12), 4, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),
    # K = 27 and 45, not multiples of 4: the fast path pads K with zeros (8-bit weights)
    ((1, 11, 10, 3), 16, (3, 3), (2, 2), (1, 1), (0, 1, 0, 1)),
    ((1, 6, 7, 5), 6, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
]
DW_SHAPES = [
    ((1, 6, 5, 8), 8, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((1, 7, 6, 16), 16, (3, 3), (2, 1), (1, 1), (1, 1, 0, 2)),
    ((2, 5, 4, 32), 32, (5, 5), (1, 1), (2, 1), (3, 2, 1, 0)),
    ((1, 9, 8, 8), 16, (3, 3), (2, 2), (1, 1), (0, 1, 0, 1)),
    ((2, 7, 6, 4), 4, (5, 3), (1, 2), (1, 2), (2, 2, 0, 3)),
]


def _conv_spec(*, bits, shape, depthwise) -> gold.ConvSpec:
    in_shape, c_out, kernel, stride, dil, pads = shape
    return gold.ConvSpec(in_bits=bits[0], w_bits=bits[1], out_bits=bits[2], in_shape=in_shape,
                         c_out=c_out, kernel=kernel, stride=stride, dilation=dil, pads=pads,
                         depthwise=depthwise, relu=bits[2] == 8 and stride == (2, 2))


def _packable(*, spec: gold.ConvSpec) -> bool:
    in_c, c_out = spec.in_shape[3], spec.c_out
    w_axis = c_out if spec.depthwise else in_c
    return (in_c % (8 // spec.in_bits) == 0 and c_out % (8 // spec.out_bits) == 0
            and w_axis % (8 // spec.w_bits) == 0)


def _conv_cases(*, shapes, depthwise):
    for i, (bits, shape) in enumerate(itertools.product(itertools.product(BITS, BITS, BITS),
                                                        shapes)):
        spec = _conv_spec(bits=bits, shape=shape, depthwise=depthwise)
        if _packable(spec=spec):
            yield pytest.param(spec, i, id=f"a{bits[0]}w{bits[1]}o{bits[2]}-s{shapes.index(shape)}")


@pytest.mark.parametrize("spec,seed", _conv_cases(shapes=CONV_SHAPES, depthwise=False))
def test_conv_2d_paths_equal_reference(kernels, spec, seed):
    case = gold.random_conv_case(rng=np.random.default_rng(seed), spec=spec)
    want = case.expected.tobytes()
    assert _run_conv(k=kernels, case=case, fn="qmcu_conv_2d_ref",
                     scratch_fn="qmcu_conv_2d_scratch_size") == want
    assert _run_conv(k=kernels, case=case, fn="qmcu_conv_2d",
                     scratch_fn="qmcu_conv_2d_scratch_size") == want
    if kernels.lib.qmcu_conv_2d_opt_supported(ctypes.byref(conv_params(case.options))):
        assert _run_conv(k=kernels, case=case, fn="qmcu_conv_2d_opt",
                         scratch_fn="qmcu_conv_2d_opt_scratch_size") == want


@pytest.mark.parametrize("spec,seed", _conv_cases(shapes=DW_SHAPES, depthwise=True))
def test_depthwise_paths_equal_reference(kernels, spec, seed):
    case = gold.random_conv_case(rng=np.random.default_rng(seed), spec=spec)
    want = case.expected.tobytes()
    for fn in ("qmcu_depthwise_conv_2d_ref", "qmcu_depthwise_conv_2d"):
        assert _run_conv(k=kernels, case=case, fn=fn,
                         scratch_fn="qmcu_depthwise_conv_2d_scratch_size") == want
    if kernels.lib.qmcu_depthwise_conv_2d_opt_supported(ctypes.byref(conv_params(case.options))):
        assert _run_conv(k=kernels, case=case, fn="qmcu_depthwise_conv_2d_opt",
                         scratch_fn="qmcu_depthwise_conv_2d_opt_scratch_size") == want


@pytest.mark.parametrize("bits", [(8, 8, 8), (4, 8, 4), (4, 2, 2)])
@pytest.mark.parametrize("bias_scale", [5 << 28, -(5 << 28)])
def test_depthwise_fused_bounds_fall_back_exactly(kernels, bits, bias_scale):
    """Biases above 2^30 leave the fused requantization's accumulator bound (opt path, 3x3):
    the generic form must take those layers, still bit-exact."""
    from tflite_quantmcu.reference import qmcu_kernels as qk

    spec = _conv_spec(bits=bits, shape=DW_SHAPES[0], depthwise=True)
    case = gold.random_conv_case(rng=np.random.default_rng(11), spec=spec)
    bias = case.bias.astype(np.int64)
    bias[::2] = bias[::2] + bias_scale
    bias = bias.astype(np.int32)
    expected = qk.depthwise_conv_2d(input=case.input, filter=case.filter, bias=bias,
                                    requant=case.requant, options=case.options)
    case = dataclasses.replace(case, bias=bias, expected=expected)
    assert kernels.lib.qmcu_depthwise_conv_2d_opt_supported(ctypes.byref(conv_params(case.options)))
    assert _run_conv(k=kernels, case=case, fn="qmcu_depthwise_conv_2d_opt",
                     scratch_fn="qmcu_depthwise_conv_2d_opt_scratch_size") == expected.tobytes()


def test_fast_paths_take_int8_and_subbyte(kernels):
    for bits in ((8, 8, 8), (4, 8, 4), (2, 4, 8), (8, 4, 2)):
        spec = _conv_spec(bits=bits, shape=CONV_SHAPES[0], depthwise=False)
        params = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
        assert kernels.lib.qmcu_conv_2d_opt_supported(ctypes.byref(params)) == 1
        assert kernels.lib.qmcu_conv_2d_scratch_size(ctypes.byref(params)) > 0
    for bits in ((8, 8, 8), (8, 8, 4)):  # K = 27: padded to 28
        spec = _conv_spec(bits=bits, shape=CONV_SHAPES[6], depthwise=False)
        params = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
        assert kernels.lib.qmcu_conv_2d_opt_supported(ctypes.byref(params)) == 1
    for bits in ((8, 8, 8), (4, 8, 4), (2, 4, 8)):
        spec = _conv_spec(bits=bits, shape=DW_SHAPES[2], depthwise=True)
        params = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
        assert kernels.lib.qmcu_depthwise_conv_2d_opt_supported(ctypes.byref(params)) == 1


@pytest.mark.parametrize("bits", list(itertools.product(BITS, BITS, BITS)),
                         ids=lambda b: "a%dw%do%d" % b)
def test_add_equals_reference(kernels, bits):
    case = gold.random_add_case(rng=np.random.default_rng(sum(bits)), bits=bits,
                                shape=(1, 3, 5, 8))
    o = case.options
    params = AddParams(_dims(o.shape), o.in1_bits, o.in2_bits, o.out_bits, o.in1_zero_point,
                       o.in2_zero_point, o.out_zero_point, o.left_shift, o.in1_multiplier,
                       o.in1_shift, o.in2_multiplier, o.in2_shift, o.out_multiplier, o.out_shift,
                       o.act_min, o.act_max)
    for fn in ("qmcu_add_ref", "qmcu_add", "qmcu_add_opt"):
        bufs = AddBuffers(kernels.buffer(data=case.input1), kernels.buffer(data=case.input2),
                          kernels.buffer(size=case.expected.nbytes))
        assert getattr(kernels.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0
        assert kernels.read(ptr=bufs.output, size=case.expected.nbytes) == case.expected.tobytes()


@pytest.mark.parametrize("bits", [(8, 8, 8), (8, 4, 4), (2, 8, 2), (4, 4, 8), (8, 8, 4),
                                  # one 8-bit and one sub-byte input: every (sub width, out)
                                  (8, 4, 8), (4, 8, 2), (8, 2, 8), (2, 8, 4), (8, 2, 2)],
                         ids=lambda b: "a%dw%do%d" % b)
@pytest.mark.parametrize("seed", range(3))
def test_add_opt_every_code_pair_coarse_scales(kernels, bits, seed):
    """Every pair of input codes, with small left shifts and multipliers near 1, so that each
    rounding step of the terms and of the sum reaches the output (the fused and table forms
    of qmcu_add_opt against the numpy reference)."""
    from tflite_quantmcu import qmcu_options as qo
    from tflite_quantmcu.reference import qmcu_kernels as qk

    rng = np.random.default_rng(100 + seed)
    b1, b2, bo = bits
    codes1 = np.arange(1 << b1) - (128 if b1 == 8 else 0)
    codes2 = np.arange(1 << b2) - (128 if b2 == 8 else 0)
    a1, a2 = (v.ravel() for v in np.meshgrid(codes1, codes2, indexing="ij"))
    shape = (1, 1, a1.size // 8, 8)
    zps = [int(rng.integers(-128, 128)) if b == 8 else int(rng.integers(0, 1 << b))
           for b in bits]
    mult = [int(rng.integers(1 << 30, (1 << 31) - 1)) for _ in range(3)]
    shifts = [int(rng.integers(-3, 1)), int(rng.integers(-3, 1)), int(rng.integers(-4, 0))]
    lo, hi = qo.act_range(bits=bo)
    o = qo.AddOptions(in1_bits=b1, in2_bits=b2, out_bits=bo, in1_zero_point=zps[0],
                      in2_zero_point=zps[1], out_zero_point=zps[2], left_shift=int(seed),
                      in1_multiplier=mult[0], in1_shift=shifts[0], in2_multiplier=mult[1],
                      in2_shift=shifts[1], out_multiplier=mult[2], out_shift=shifts[2],
                      act_min=lo, act_max=hi, shape=shape)
    x1 = qo.pack_bits(values=a1.reshape(shape), bits=b1) if b1 < 8 else \
        a1.astype(np.int8).reshape(shape)
    x2 = qo.pack_bits(values=a2.reshape(shape), bits=b2) if b2 < 8 else \
        a2.astype(np.int8).reshape(shape)
    want = qk.add(input1=x1, input2=x2, options=o)
    params = AddParams(_dims(o.shape), o.in1_bits, o.in2_bits, o.out_bits, o.in1_zero_point,
                       o.in2_zero_point, o.out_zero_point, o.left_shift, o.in1_multiplier,
                       o.in1_shift, o.in2_multiplier, o.in2_shift, o.out_multiplier, o.out_shift,
                       o.act_min, o.act_max)
    bufs = AddBuffers(kernels.buffer(data=x1), kernels.buffer(data=x2),
                      kernels.buffer(size=want.nbytes))
    assert kernels.lib.qmcu_add_opt(ctypes.byref(params), ctypes.byref(bufs)) == 0
    assert kernels.read(ptr=bufs.output, size=want.nbytes) == want.tobytes()


POOL_GRID = [
    ((1, 6, 6, 8), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((1, 7, 5, 4), (3, 3), (2, 1), (1, 1, 1, 1)),
    ((2, 5, 5, 8), (5, 5), (1, 1), (0, 0, 0, 0)),
    ((1, 4, 6, 8), (3, 2), (1, 2), (1, 2, 0, 1)),
]


@pytest.mark.parametrize("in_bits,out_bits,rescale", [(8, 8, False), (8, 8, True),
                                                      (4, 4, False), (2, 2, False), (4, 8, True),
                                                      (8, 4, True), (2, 4, True), (4, 2, True)])
@pytest.mark.parametrize("geometry", range(len(POOL_GRID)))
def test_average_pool_equals_reference(kernels, in_bits, out_bits, rescale, geometry):
    in_shape, filt, stride, pads = POOL_GRID[geometry]
    case = gold.random_pool_case(rng=np.random.default_rng(geometry * 10 + in_bits),
                                 in_bits=in_bits, out_bits=out_bits, in_shape=in_shape,
                                 filt=filt, stride=stride, pads=pads, rescale=rescale)
    o = case.options
    params = PoolParams(_dims(o.in_shape), _dims(o.out_shape), o.filter_h, o.filter_w, o.in_bits,
                        o.out_bits, o.in_zero_point, o.out_zero_point, o.act_min, o.act_max,
                        int(o.rescale), o.multiplier, o.shift, _geometry(o.geometry))
    for fn in ("qmcu_average_pool_2d_ref", "qmcu_average_pool_2d"):
        bufs = UnaryBuffers(kernels.buffer(data=case.input),
                            kernels.buffer(size=case.expected.nbytes))
        assert getattr(kernels.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0
        assert kernels.read(ptr=bufs.output, size=case.expected.nbytes) == case.expected.tobytes()


# Shapes that reach every branch of qmcu_average_pool_2d_opt: channel groups (8 for 8 and 4
# bits, 16 for 2 bits), half groups and single tail channels; windows covering whole rows (one
# run of pixels), windows clipped by padding; sub-byte byte lanes flushed every few rows, or
# within a row longer than they hold (more than 17 4-bit or 85 2-bit pixels); batches.
POOL_OPT_GRID = [
    ((1, 6, 6, 32), (6, 6), (1, 1), (0, 0, 0, 0)),       # global, whole rows
    ((2, 5, 5, 24), (5, 5), (1, 1), (0, 0, 0, 0)),       # global, 16 + 8 channels, batch 2
    ((1, 9, 9, 12), (5, 5), (1, 2), (2, 2, 1, 1)),       # 8 + 4 channels, clipped windows
    ((1, 7, 6, 4), (3, 3), (2, 2), (1, 1, 1, 0)),        # half group only
    ((1, 4, 25, 8), (1, 22), (1, 1), (0, 0, 0, 0)),      # 4-bit row of 22 > 17 pixels
    ((1, 2, 96, 16), (2, 90), (1, 3), (0, 0, 0, 0)),     # 2-bit row of 90 > 85 pixels
    ((1, 17, 15, 16), (17, 15), (1, 1), (0, 0, 0, 0)),   # int8 window 255: the 16-bit lanes' limit
    ((1, 5, 7, 6), (2, 3), (1, 2), (1, 0, 2, 1)),        # int8 4 + 2 tail; 4-bit 4 + 2; 2-bit 4
]


def _pool_params(o) -> PoolParams:
    return PoolParams(_dims(o.in_shape), _dims(o.out_shape), o.filter_h, o.filter_w, o.in_bits,
                      o.out_bits, o.in_zero_point, o.out_zero_point, o.act_min, o.act_max,
                      int(o.rescale), o.multiplier, o.shift, _geometry(o.geometry))


POOL_WIDTHS = [(8, 8, False), (4, 4, False), (2, 2, False), (8, 8, True), (8, 4, True),
               (8, 2, True), (4, 8, True), (4, 4, True), (4, 2, True), (2, 8, True),
               (2, 4, True), (2, 2, True)]
# only the geometries whose channels pack at both widths (a partial byte is no valid map)
POOL_OPT_CASES = [(i, o, r, g) for i, o, r in POOL_WIDTHS for g in range(len(POOL_OPT_GRID))
                  if POOL_OPT_GRID[g][0][3] % (8 // min(i, o)) == 0]


@pytest.mark.parametrize("in_bits,out_bits,rescale,geometry", POOL_OPT_CASES)
@pytest.mark.parametrize("inputs", ["random", "extremes", "clamped"])
def test_average_pool_opt_equals_reference(kernels, in_bits, out_bits, rescale, inputs,
                                           geometry):
    """qmcu_average_pool_2d_opt (16-bit lane sums, byte lanes for sub-byte codes) against the
    numpy reference: random codes, every code at the range's ends (the largest lane sums, the
    sign of the int8 rounding), and an activation range that cuts the averages (the clamp)."""
    from tflite_quantmcu import qmcu_options as qo
    from tflite_quantmcu.reference import qmcu_kernels as qk

    in_shape, filt, stride, pads = POOL_OPT_GRID[geometry]
    rng = np.random.default_rng(1000 + geometry * 7 + in_bits + out_bits)
    case = gold.random_pool_case(rng=rng, in_bits=in_bits, out_bits=out_bits, in_shape=in_shape,
                                 filt=filt, stride=stride, pads=pads, rescale=rescale)
    o, x = case.options, case.input
    lo, hi = qo.act_range(bits=in_bits)
    if inputs == "extremes":
        values = np.where(rng.random(in_shape) < 0.5, lo, hi)
        values[..., 0] = lo  # whole windows at either end
        values[..., 1] = hi
        x = qo.pack_bits(values=values, bits=in_bits)
    elif inputs == "clamped":
        out_lo, out_hi = qo.act_range(bits=out_bits)
        span = out_hi - out_lo
        o = dataclasses.replace(o, act_min=out_lo + span // 3, act_max=out_hi - span // 4)
    want = qk.average_pool_2d(input=x, options=o)
    params = _pool_params(o)
    assert kernels.lib.qmcu_average_pool_2d_opt_supported(ctypes.byref(params)) == 1
    for fn in ("qmcu_average_pool_2d_opt", "qmcu_average_pool_2d"):
        bufs = UnaryBuffers(kernels.buffer(data=x), kernels.buffer(size=want.nbytes))
        assert getattr(kernels.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0
        assert kernels.read(ptr=bufs.output, size=want.nbytes) == want.tobytes(), fn


def test_average_pool_opt_leaves_windows_past_its_lanes_to_the_reference(kernels):
    """An int8 window of 256 pixels could overflow a 16-bit lane sum: the fast path declines it
    and the switch runs the reference path (same output as numpy)."""
    case = gold.random_pool_case(rng=np.random.default_rng(5), in_bits=8, out_bits=8,
                                 in_shape=(1, 16, 16, 8), filt=(16, 16), stride=(1, 1),
                                 pads=(0, 0, 0, 0))
    params = _pool_params(case.options)
    assert kernels.lib.qmcu_average_pool_2d_opt_supported(ctypes.byref(params)) == 0
    bufs = UnaryBuffers(kernels.buffer(data=case.input), kernels.buffer(size=case.expected.nbytes))
    assert kernels.lib.qmcu_average_pool_2d_opt(ctypes.byref(params), ctypes.byref(bufs)) == 2
    assert kernels.lib.qmcu_average_pool_2d(ctypes.byref(params), ctypes.byref(bufs)) == 0
    assert kernels.read(ptr=bufs.output, size=case.expected.nbytes) == case.expected.tobytes()


@pytest.mark.parametrize("in_bits,out_bits", [(8, 4), (8, 2), (4, 8), (2, 8)])
def test_pack_unpack_equal_reference(kernels, in_bits, out_bits):
    case = gold.random_requant_case(rng=np.random.default_rng(in_bits * 3 + out_bits),
                                    in_bits=in_bits, out_bits=out_bits, shape=(2, 3, 5, 16))
    o = case.options
    params = RequantParams(_dims(o.shape), o.in_bits, o.out_bits, o.in_zero_point,
                           o.out_zero_point, o.multiplier, o.shift)
    for fn in (f"qmcu_{case.op}_ref", f"qmcu_{case.op}"):
        bufs = UnaryBuffers(kernels.buffer(data=case.input),
                            kernels.buffer(size=case.expected.nbytes))
        assert getattr(kernels.lib, fn)(ctypes.byref(params), ctypes.byref(bufs)) == 0
        assert kernels.read(ptr=bufs.output, size=case.expected.nbytes) == case.expected.tobytes()


def test_bad_params_are_rejected(kernels):
    spec = _conv_spec(bits=(4, 8, 8), shape=CONV_SHAPES[0], depthwise=False)
    good = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
    assert kernels.lib.qmcu_conv_2d_check(ctypes.byref(good)) == 0
    odd_channels = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
    odd_channels.input.c = odd_channels.filter.c = 7
    wrong_size = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
    wrong_size.output.h = 5
    bad_zp = conv_params(gold.conv_options(spec=spec, in_zp=0, out_zp=0))
    bad_zp.in_zero_point = -1
    for params in (odd_channels, wrong_size, bad_zp):
        assert kernels.lib.qmcu_conv_2d_check(ctypes.byref(params)) == BAD_PARAMS
        assert kernels.lib.qmcu_conv_2d(ctypes.byref(params), None) == BAD_PARAMS


def _sanitizer_runtime() -> str:
    compiler = shutil.which("gcc")
    if compiler is None:
        return ""
    path = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True,
                          text=True, check=False).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else ""


@pytest.mark.skipif(os.environ.get(VARIANT_ENV) is not None, reason="already the sanitizer run")
def test_same_comparisons_under_sanitizers():
    runtime = _sanitizer_runtime()
    if not runtime:
        pytest.skip("gcc's libasan.so not found: cannot run the sanitizer build")
    env = dict(os.environ, **{VARIANT_ENV: "asan", "LD_PRELOAD": runtime,
                              "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
                              "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             __file__, "-k", "not sanitizers"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, tail
    assert "passed" in result.stdout and "failed" not in result.stdout, tail


SCRATCH_SHAPES = CONV_SHAPES + [((1, 4, 4, 32), 8, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
                                ((1, 3, 3, 160), 16, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
                                ((1, 3, 3, 96), 8, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))]


@pytest.mark.parametrize("depthwise", [False, True])
def test_python_scratch_sizes_equal_the_c_library(kernels, depthwise):
    """The arena figures use analysis/qmcu_scratch.py; the C library is the oracle."""
    from tflite_quantmcu.analysis.qmcu_scratch import conv_scratch_bytes, depthwise_scratch_bytes

    shapes = DW_SHAPES if depthwise else SCRATCH_SHAPES
    fn = kernels.lib.qmcu_depthwise_conv_2d_scratch_size if depthwise else \
        kernels.lib.qmcu_conv_2d_scratch_size
    fn.restype = ctypes.c_size_t
    compared = nonzero = 0
    for bits in itertools.product(BITS, BITS, BITS):
        for shape in shapes:
            spec = _conv_spec(bits=bits, shape=shape, depthwise=depthwise)
            if not _packable(spec=spec):
                continue
            o = gold.random_conv_case(rng=np.random.default_rng(0), spec=spec).options
            if depthwise:
                ours = depthwise_scratch_bytes(filter_shape=o.filter_shape,
                                               in_channels=o.in_shape[3],
                                               out_channels=o.out_shape[3], in_bits=o.in_bits,
                                               depth_multiplier=o.depth_multiplier)
            else:
                ours = conv_scratch_bytes(filter_shape=o.filter_shape, in_channels=o.in_shape[3],
                                          w_bits=o.w_bits)
            assert ours == fn(ctypes.byref(conv_params(o))), (bits, shape)
            compared += 1
            nonzero += ours > 0
    assert compared > 20 and nonzero > 5
