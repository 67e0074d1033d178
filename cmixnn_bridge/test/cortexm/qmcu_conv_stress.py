"""Stress the QMCU_CONV_2D fast path on emulated Cortex-M4/M7 against the numpy reference.

Beyond the golden vectors of tests/test_cmixnn_cortexm.py: every bit-width combination with
fused ReLU clamps and clamps inside the range, odd channel counts, pixel counts that leave partial tiles and micro-tiles,
K / 2 not a multiple of the unrolled loop, KxK with padding, and per-channel requantization
that must leave the fused form (shift >= 0, shift -31, multiplier 0, biases near the int32
limits). Runs the reference, optimized and dispatching kernels through qmcu_golden_main.c.

    python cmixnn_bridge/test/cortexm/qmcu_conv_stress.py [--seed 1] [--cases 60]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import pathlib
import sys

import numpy as np

from tflite_quantmcu.reference import qmcu_golden as gold
from tflite_quantmcu.reference import qmcu_kernels as qk

HERE = pathlib.Path(__file__).resolve().parent
BUILD = HERE.parents[1] / "build" / "stress"
SHAPES = [
    # in_shape, c_out, kernel, stride, pads
    ((1, 11, 13, 32), 8, (1, 1), (1, 1), (0, 0, 0, 0)),     # 143 px: partial tile + micro-tile
    ((2, 5, 7, 16), 12, (1, 1), (1, 1), (0, 0, 0, 0)),
    ((1, 4, 5, 96), 4, (1, 1), (1, 1), (0, 0, 0, 0)),       # K/2 = 48
    ((1, 6, 6, 16), 8, (3, 3), (2, 1), (1, 1, 1, 0)),       # K = 144, padding
    ((1, 7, 5, 48), 4, (1, 1), (2, 2), (0, 0, 0, 0)),       # K/2 = 24: enters the loop part way
    ((1, 3, 4, 16), 4, (5, 5), (1, 1), (2, 2, 2, 2)),       # K = 400
    ((1, 6, 5, 6), 8, (2, 2), (1, 1), (1, 0, 0, 1)),        # C_in % 4 != 0, K = 24
]


def _helper():
    spec = importlib.util.spec_from_file_location("qmcu_cortexm", HERE / "qmcu_cortexm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _odd_requant(*, rng, case: gold.ConvCase) -> gold.ConvCase:
    """Some channels leave the fused form; recompute the expected output."""
    req = case.requant.copy()
    bias = case.bias.copy()
    c_out = req.shape[1]
    for c in range(c_out):
        pick = rng.integers(0, 8)
        if pick == 0:
            req[1, c] = 0                       # shift 0: r = 0
        elif pick == 1:
            req[1, c] = 1                       # left shift
        elif pick == 2:
            req[1, c] = -31
        elif pick == 3:
            req[0, c] = 0
        elif pick == 4:
            bias[c] = int(rng.choice([2**31 - 2 * 10**7, -2**31 + 2 * 10**7, 2**30, -2**30 + 5]))
    o = case.options
    expected = qk.conv_2d(input=case.input, filter=case.filter, bias=bias, requant=req, options=o)
    return gold.ConvCase(options=o, input=case.input, filter=case.filter, bias=bias,
                         requant=req, expected=expected)


def _relu6_like(*, rng, case: gold.ConvCase) -> gold.ConvCase:
    """A clamp below the top of the output range on both sides (as ReLU6 can give)."""
    o = case.options
    hi = (1 << o.out_bits) - 1 if o.out_bits < 8 else 127
    lo = 0 if o.out_bits < 8 else -128
    act_min = int(rng.integers(lo, lo + (hi - lo) // 3 + 1))
    act_max = int(rng.integers(act_min + 1, hi))
    o = dataclasses.replace(o, act_min=act_min, act_max=act_max)
    expected = qk.conv_2d(input=case.input, filter=case.filter, bias=case.bias,
                          requant=case.requant, options=o)
    return gold.ConvCase(options=o, input=case.input, filter=case.filter, bias=case.bias,
                         requant=case.requant, expected=expected)


def cases(*, seed: int, count: int) -> list[gold.ConvCase]:
    rng = np.random.default_rng(seed)
    out = []
    combos = list(itertools.product((8, 4, 2), (8, 4, 2), (8, 4, 2)))
    for i in range(count):
        a, w, o = combos[i % len(combos)]
        in_shape, c_out, kernel, stride, pads = SHAPES[(i // len(combos) + i) % len(SHAPES)]
        c_in = in_shape[3]
        if (kernel[0] * kernel[1] * c_in) % (32 // w) or c_in % (8 // a):
            c_in = 32
        c_out = c_out if o == 8 and i % 3 else max(4, c_out)
        if o == 8 and i % 5 == 0:
            c_out = c_out + 1                   # odd: the last channel alone
        spec = gold.ConvSpec(in_bits=a, w_bits=w, out_bits=o,
                             in_shape=(*in_shape[:3], c_in), c_out=c_out, kernel=kernel,
                             stride=stride, pads=pads, relu=bool(i % 2))
        case = gold.random_conv_case(rng=rng, spec=spec)
        if i % 4 == 3:
            case = _odd_requant(rng=rng, case=case)
        if i % 6 == 2:
            case = _relu6_like(rng=rng, case=case)
        out.append(case)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=60)
    args = parser.parse_args(argv)
    helper = _helper()
    if helper.missing_tools():
        print("skipped: cross tools missing")
        return 0
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "qmcu_golden_cases.h").write_text(
        gold.golden_header(convs=cases(seed=args.seed, count=args.cases)))
    fails = 0
    for name in ("cortex-m4", "cortex-m7"):
        target = helper.TARGETS[name]
        elf = helper.build_elf(target=target, main_source=HERE / "qmcu_golden_main.c",
                               include_dirs=[BUILD], out=BUILD / f"stress-{name}.elf")
        result = helper.run_elf(target=target, elf=elf, timeout_s=600)
        log = result.stdout + result.stderr
        print(f"{name}: exit {result.returncode}: {log.strip().splitlines()[-1]}")
        if result.returncode != 0:
            print(log[-3000:])
            fails += 1
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
