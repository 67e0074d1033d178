"""Golden vectors of the numpy reference on emulated Cortex-M4 and Cortex-M7 (QEMU mps2).

The bare-metal program (cmixnn_bridge/test/cortexm) runs every case through the reference,
the optimized (SMLAD) and the dispatching kernels; its exit status counts mismatches.
Skips, saying why, when arm-none-eabi-gcc or qemu-system-arm is missing.
"""
from __future__ import annotations

import importlib.util
import itertools
import pathlib
import sys

import numpy as np
import pytest

from tflite_quantmcu.reference import qmcu_golden as gold

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / "cmixnn_bridge" / "test" / "cortexm" / "qmcu_cortexm.py"
BUILD = ROOT / "cmixnn_bridge" / "build" / "cortexm"
BITS = (8, 4, 2)


def _helper():
    spec = importlib.util.spec_from_file_location("qmcu_cortexm", HELPER)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _conv_specs():
    shapes = [((1, 6, 5, 8), 8, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
              ((1, 7, 6, 16), 4, (3, 3), (2, 1), (1, 1), (1, 1, 1, 0))]
    for (a, w, o), shape in itertools.product(itertools.product(BITS, BITS, BITS), shapes):
        in_shape, c_out, kernel, stride, dil, pads = shape
        yield gold.ConvSpec(in_bits=a, w_bits=w, out_bits=o, in_shape=in_shape, c_out=c_out,
                            kernel=kernel, stride=stride, dilation=dil, pads=pads)
    for a, w, o in itertools.product(BITS, BITS, BITS):
        yield gold.ConvSpec(in_bits=a, w_bits=w, out_bits=o, in_shape=(1, 6, 7, 16), c_out=16,
                            kernel=(3, 3), stride=(2, 1), pads=(1, 1, 1, 1), depthwise=True)
        yield gold.ConvSpec(in_bits=a, w_bits=w, out_bits=o, in_shape=(1, 5, 4, 8), c_out=16,
                            kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), depthwise=True)


def _golden_header() -> str:
    rng = np.random.default_rng(2026)
    convs = [gold.random_conv_case(rng=rng, spec=s) for s in _conv_specs()]
    adds = [gold.random_add_case(rng=rng, bits=b, shape=(1, 3, 4, 8))
            for b in itertools.product(BITS, BITS, BITS)]
    pools = [gold.random_pool_case(rng=rng, in_bits=i, out_bits=o, in_shape=(1, 7, 6, 8),
                                   filt=(3, 3), stride=(2, 2), pads=(1, 1, 1, 0))
             for i, o in [(8, 8), (4, 4), (2, 2), (4, 8), (8, 2)]]
    # the DSP fast path's branches (qmcu_pool_opt.c): whole-row windows with channel groups
    # and half groups, sub-byte byte lanes flushed within a row (22 > 17 4-bit pixels, 90 > 85
    # 2-bit pixels), tail channels, rescaled outputs
    pool_shapes = [((1, 5, 5, 48), (5, 5), (1, 1), (0, 0, 0, 0)),
                   ((1, 4, 25, 8), (1, 22), (1, 1), (0, 0, 0, 0)),
                   ((1, 2, 96, 16), (2, 90), (1, 3), (0, 0, 0, 0)),
                   ((1, 5, 7, 12), (2, 3), (1, 2), (1, 0, 2, 1))]
    for (shape, filt, stride, pads), (i, o, r) in itertools.product(
            pool_shapes, [(8, 8, False), (4, 4, False), (2, 2, False), (8, 4, True),
                          (2, 8, True)]):
        pools.append(gold.random_pool_case(rng=rng, in_bits=i, out_bits=o, in_shape=shape,
                                           filt=filt, stride=stride, pads=pads, rescale=r))
    requants = [gold.random_requant_case(rng=rng, in_bits=i, out_bits=o, shape=(1, 3, 5, 16))
                for i, o in [(8, 4), (8, 2), (4, 8), (2, 8)]]
    return gold.golden_header(convs=convs, adds=adds, pools=pools, requants=requants)


@pytest.fixture(scope="module")
def cortexm():
    helper = _helper()
    missing = helper.missing_tools()
    if missing:
        pytest.skip(f"Cortex-M emulation needs {', '.join(missing)} on PATH "
                    "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "qmcu_golden_cases.h").write_text(_golden_header())
    return helper


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_golden_vectors_on_emulated_cortex_m(cortexm, target):
    t = cortexm.TARGETS[target]
    elf = cortexm.build_elf(target=t, main_source=cortexm.HERE / "qmcu_golden_main.c",
                            include_dirs=[BUILD], out=BUILD / f"golden-{target}.elf")
    result = cortexm.run_elf(target=t, elf=elf, timeout_s=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert " 0 failures (DSP fast paths compiled in)" in output, output[-3000:]
