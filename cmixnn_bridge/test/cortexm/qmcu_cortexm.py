"""Cross-build and run bare-metal QMCU programs on QEMU's Cortex-M boards.

Used by tests/test_cmixnn_cortexm.py and bench/kernels_cortexm.py (loaded by path).
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess

HERE = pathlib.Path(__file__).resolve().parent
BRIDGE = HERE.parents[1]
CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    machine: str
    cpu_flags: tuple[str, ...]


TARGETS = {
    "cortex-m4": Target(name="cortex-m4", machine="mps2-an386",
                        cpu_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                                   "-mfpu=fpv4-sp-d16")),
    "cortex-m7": Target(name="cortex-m7", machine="mps2-an500",
                        cpu_flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard",
                                   "-mfpu=fpv5-d16")),
}


def missing_tools() -> list[str]:
    """Names of the cross tools that are not on PATH."""
    return [tool for tool in (CC, QEMU) if shutil.which(tool) is None]


def library_sources() -> list[str]:
    return sorted(str(p) for p in (BRIDGE / "src").rglob("*.c"))


def build_elf(*, target: Target, main_source: pathlib.Path, include_dirs: list[pathlib.Path],
              out: pathlib.Path, defines: tuple[str, ...] = ("QMCU_USE_OPT",),
              opt_level: str = "-O2") -> pathlib.Path:
    """Compile and link one bare-metal program; raises RuntimeError with the compiler output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [CC, *target.cpu_flags, "-std=c99", "-Wall", "-Wextra", "-Werror", opt_level, "-g",
           "-ffunction-sections", "-fdata-sections", *[f"-D{d}" for d in defines],
           f"-I{BRIDGE / 'include'}", *[f"-I{d}" for d in include_dirs],
           *library_sources(), str(HERE / "startup.c"), str(main_source),
           "-T", str(HERE / "mps2.ld"), "--specs=nano.specs", "--specs=rdimon.specs",
           "-nostartfiles", "-Wl,--gc-sections", "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cross build failed:\n{' '.join(cmd)}\n{result.stderr}")
    return out


def qemu_command(*, target: Target, elf: pathlib.Path, plugin: str = "") -> list[str]:
    cmd = [QEMU, "-M", target.machine, "-nographic", "-semihosting",
           "-icount", "shift=0,align=off,sleep=off", "-kernel", str(elf)]
    if plugin:
        cmd += ["-plugin", plugin, "-d", "plugin"]
    return cmd


def run_elf(*, target: Target, elf: pathlib.Path, timeout_s: float = 300.0,
            plugin: str = "") -> subprocess.CompletedProcess:
    """Run on QEMU; the guest's exit status becomes the return code."""
    return subprocess.run(qemu_command(target=target, elf=elf, plugin=plugin),
                          capture_output=True, text=True, timeout=timeout_s, check=False)
