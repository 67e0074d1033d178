"""The TFLM glue compiles cleanly under TFLite Micro's own warning flags.

No registry ships TFLM's headers, so the glue is compiled (not linked) against
`tests/tflm_api_stub/`, declarations of the TFLM API it calls, with the -W flags of
TFLM's Makefile and -Werror, for the host and, when present, for Cortex-M4. The real
build against tflite-micro 90b983c2 (host and Cortex-M4 under QEMU) is in the README.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GLUE = ROOT / "cmixnn_bridge" / "tflm" / "qmcu_tflm_ops.cc"
TFLM_WARNINGS = ["-Wall", "-Wextra", "-Wsign-compare", "-Wdouble-promotion", "-Wshadow",
                 "-Wunused-variable", "-Wunused-function", "-Wmissing-field-initializers",
                 "-Wstrict-aliasing", "-Wno-unused-parameter", "-Werror"]
COMPILERS = {"host": ("g++", []),
             "cortex-m4": ("arm-none-eabi-g++", ["-mcpu=cortex-m4", "-mthumb",
                                                 "-mfloat-abi=soft"])}


def _compile(*, compiler: str, flags: list[str], source: Path, tmp: Path):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not on PATH (make test installs it as root)")
    return subprocess.run(
        [compiler, "-std=c++17", "-fno-rtti", "-fno-exceptions", "-O2", *flags, *TFLM_WARNINGS,
         f"-I{ROOT / 'tests' / 'tflm_api_stub'}", f"-I{ROOT / 'cmixnn_bridge' / 'include'}",
         f"-I{ROOT / 'cmixnn_bridge' / 'tflm'}", "-c", str(source), "-o", str(tmp / "glue.o")],
        capture_output=True, text=True, check=False)


@pytest.mark.parametrize("target", sorted(COMPILERS))
def test_glue_compiles_with_tflm_warning_flags(target, tmp_path):
    compiler, flags = COMPILERS[target]
    proc = _compile(compiler=compiler, flags=flags, source=GLUE, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_the_check_catches_an_unused_function(tmp_path):
    planted = tmp_path / "planted.cc"
    planted.write_text(GLUE.read_text().replace(
        "namespace {", "namespace {\nint UnusedHelper() { return 0; }", 1))
    proc = _compile(compiler="g++", flags=[], source=planted, tmp=tmp_path)
    assert proc.returncode != 0 and "UnusedHelper" in proc.stderr
