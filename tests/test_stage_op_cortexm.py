"""QMCU_PATCH_STAGE on emulated Cortex-M4 and Cortex-M7 (QEMU mps2): the C kernel, reference and
optimized paths, against the numpy reference, bit for bit.

The pool the TFLM glue would parse is written by `stage_pool` (the host test checks it against
the C parser), with inputs, operands and the reference's outputs, into a generated header; the
bare-metal program (cmixnn_bridge/test/cortexm/qmcu_stage_main.c) exits with the mismatch count.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / "cmixnn_bridge" / "test" / "cortexm" / "qmcu_cortexm.py"
CASES_HELPER = ROOT / "cmixnn_bridge" / "test" / "cortexm" / "qmcu_stage_cases.py"
BUILD = ROOT / "cmixnn_bridge" / "build" / "cortexm-stage"
CASES = [("mnv2_9_3x3", "mobilenetv2_w035_r144.tflite", 9, (3, 3), True),
         ("mnv2_16_4x1", "mobilenetv2_w035_r144.tflite", 16, (4, 1), True),
         ("resnet8_3_2x2", "resnet8_cifar.tflite", 3, (2, 2), True),
         ("synthetic_6_3x2", None, 6, (3, 2), True), ("synthetic_4_2x3", None, 4, (2, 3), False),
         # per-patch 8/4/2-bit maps (version-2 options, variants from constant operands)
         ("mnv2_9_3x3_subbyte", "mobilenetv2_w035_r144.tflite", 9, (3, 3), True, 1),
         ("resnet8_3_2x2_subbyte", "resnet8_cifar.tflite", 3, (2, 2), True, 4),
         ("synthetic_6_3x2_subbyte", None, 6, (3, 2), True, 6),
         ("pad_7_3x2", "synthetic-pad", 7, (3, 2), True),
         ("pad_7_3x2_subbyte", "synthetic-pad", 7, (3, 2), True, 7)]


def _helper(path=HELPER, name="qmcu_cortexm"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cortexm():
    helper = _helper()
    missing = helper.missing_tools()
    if missing:
        pytest.skip(f"Cortex-M emulation needs {', '.join(missing)} on PATH")
    BUILD.mkdir(parents=True, exist_ok=True)
    cases = _helper(CASES_HELPER, "qmcu_stage_cases")
    (BUILD / "qmcu_stage_cases.h").write_text(cases.header(CASES))
    return helper


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_stage_op_on_emulated_cortex_m(cortexm, target):
    t = cortexm.TARGETS[target]
    elf = cortexm.build_elf(target=t, main_source=cortexm.HERE / "qmcu_stage_main.c",
                            include_dirs=[BUILD], out=BUILD / f"stage-{target}.elf")
    result = cortexm.run_elf(target=t, elf=elf, timeout_s=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"stage: {len(CASES)} cases, 0 failures" in output, output[-3000:]
