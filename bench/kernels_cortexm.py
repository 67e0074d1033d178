"""Executed instructions of the QMCU kernels on an emulated Cortex-M4 (QEMU TCG plugin).

For typical MobileNetV2 layer shapes, every variant is cross-built with its golden output,
run on qemu-system-arm (mps2-an386) with cmixnn_bridge/test/cortexm/qmcu_icount_plugin.c,
and the instructions executed between qmcu_bench_begin() and qmcu_bench_end() (minus the
markers' own overhead, measured on an empty region) are printed as a table. Counts are
instructions, not cycles. Each run also checks the kernel output against the numpy reference.

    python bench/kernels_cortexm.py [--target cortex-m4|cortex-m7] [--jobs 2]

With --extra: the shape classes neither bench model has (EXTRA_LAYERS).

With --add / --pool: QMCU_ADD per element / QMCU_AVERAGE_POOL_2D per output element, beside
CMSIS-NN's int8 kernel (arm_elementwise_add_s8 / arm_avgpool_s8, recorded figures).

With --stage: QMCU_PATCH_STAGE (optimized build) on MobileNetV2-style stages: the whole
op's instructions against the sum of its layer kernel calls alone (the same calls, per patch,
counted with markers around each call: QMCU_STAGE_BENCH_HOOKS), i.e. what the stage adds for
window copies, output copies and per-patch parameter setup.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np

from tflite_quantmcu.reference import qmcu_golden as gold

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORTEXM = ROOT / "cmixnn_bridge" / "test" / "cortexm"
BUILD = ROOT / "cmixnn_bridge" / "build" / "bench"

@dataclasses.dataclass(frozen=True)
class Layer:
    """One conv / depthwise layer shape (explicit pads: top, bottom, left, right)."""
    in_shape: tuple[int, int, int, int]
    c_out: int
    kernel: tuple[int, int]
    pads: tuple[int, int, int, int]
    depthwise: bool
    relu: bool = False
    stride: tuple[int, int] = (1, 1)

    @property
    def key(self) -> str:
        """Shape key of the recorded CMSIS-NN figures (bench/data/cmsis_nn_cortex_m4.json)."""
        _, h, w, c = self.in_shape
        kind = "dw" if self.depthwise else "conv"
        return (f"{kind} {self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}x{self.stride[1]} "
                f"{h}x{w}x{c}->{self.c_out} pads {','.join(map(str, self.pads))}"
                + (" relu" if self.relu else ""))


LAYERS = {
    "1x1 expand 48x48x16->96": Layer((1, 48, 48, 16), 96, (1, 1), (0, 0, 0, 0), False),
    "3x3 depthwise 48x48x96": Layer((1, 48, 48, 96), 96, (3, 3), (1, 1, 1, 1), True),
    "1x1 project 48x48x96->24": Layer((1, 48, 48, 96), 24, (1, 1), (0, 0, 0, 0), False),
    "1x1 expand 24x24x32->192": Layer((1, 24, 24, 32), 192, (1, 1), (0, 0, 0, 0), False),
    # ReLU with the random output zero point: act_min > -128, so the kernel clamps
    "1x1 expand 24x24x32->192 ReLU": Layer((1, 24, 24, 32), 192, (1, 1), (0, 0, 0, 0), False,
                                           relu=True),
    "1x1 project 24x24x192->32": Layer((1, 24, 24, 192), 32, (1, 1), (0, 0, 0, 0), False),
    "1x1 expand 24x24x24->144": Layer((1, 24, 24, 24), 144, (1, 1), (0, 0, 0, 0), False),
    "3x3 depthwise 24x24x144": Layer((1, 24, 24, 144), 144, (3, 3), (1, 1, 1, 1), True),
    "1x1 project 24x24x144->24": Layer((1, 24, 24, 144), 24, (1, 1), (0, 0, 0, 0), False),
    "1x1 expand 12x12x64->384": Layer((1, 12, 12, 64), 384, (1, 1), (0, 0, 0, 0), False),
    "1x1 project 12x12x384->64": Layer((1, 12, 12, 384), 64, (1, 1), (0, 0, 0, 0), False),
}
# Shape classes the converter emits as QMCU ops that neither bench model has (issue 19):
# depthwise 5x5 / 7x7 at stride 1 and 2, kxk conv mid-network, 1x1 stride 2 (the kxk class);
# SAME padding written out as TFLite computes it
EXTRA_LAYERS = {
    "dw 5x5 s1 24x24x32": Layer((1, 24, 24, 32), 32, (5, 5), (2, 2, 2, 2), True),
    "dw 5x5 s2 24x24x32": Layer((1, 24, 24, 32), 32, (5, 5), (1, 2, 1, 2), True,
                                stride=(2, 2)),
    "dw 7x7 s1 12x12x64": Layer((1, 12, 12, 64), 64, (7, 7), (3, 3, 3, 3), True),
    "dw 7x7 s2 24x24x32": Layer((1, 24, 24, 32), 32, (7, 7), (2, 3, 2, 3), True,
                                stride=(2, 2)),
    "conv 3x3 s1 24x24x32->32": Layer((1, 24, 24, 32), 32, (3, 3), (1, 1, 1, 1), False),
    "conv 3x3 s2 48x48x16->32": Layer((1, 48, 48, 16), 32, (3, 3), (0, 1, 0, 1), False,
                                      stride=(2, 2)),
    "conv 1x1 s2 24x24x32->64": Layer((1, 24, 24, 32), 64, (1, 1), (0, 0, 0, 0), False,
                                      stride=(2, 2)),
    "conv 5x5 s1 12x12x16->16": Layer((1, 12, 12, 16), 16, (5, 5), (2, 2, 2, 2), False),
}
MODELS = {
    "bundled": ROOT / "testdata" / "fashion_mnv2_r96_int8.tflite",
    "mnv2": ROOT / "testdata" / "mobilenetv2_w035_r144.tflite",
    "digits": ROOT / "testdata" / "digits_mnv1_w025_r64_int8.tflite",
}
CMSIS_NN = ROOT / "bench" / "data" / "cmsis_nn_cortex_m4.json"
VARIANTS = {
    # name: (in_bits, w_bits, out_bits, path) with path 0 = reference, 2 = the switch
    "int8 ref": (8, 8, 8, 0),
    "int8 opt": (8, 8, 8, 2),
    "a4 (w8, out 4)": (4, 8, 4, 2),
    "a2 (w8, out 2)": (2, 8, 2, 2),
    "w4 (a8, out 8)": (8, 4, 8, 2),
    # the mixed widths QuantMCU plans produce where a map enters or leaves sub-byte
    "a8->4 (w8)": (8, 8, 4, 2),
    "a4->8 (w8)": (4, 8, 8, 2),
}
WIDE_VARIANTS = ("int8 ref", "int8 opt", "a4 (w8, out 4)", "a2 (w8, out 2)", "w4 (a8, out 8)")


@dataclasses.dataclass(frozen=True)
class Result:
    layer: str
    key: str
    variant: str
    path: str
    macs: int
    insns: int
    outputs: int = 0
    bits: tuple[int, ...] = ()


def _helper():
    spec = importlib.util.spec_from_file_location("qmcu_cortexm", CORTEXM / "qmcu_cortexm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def build_plugin(*, out_dir: pathlib.Path) -> pathlib.Path:
    """Compile the icount plugin for the host."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit("no host C compiler to build the QEMU plugin")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libqmcu_icount.so"
    subprocess.run([compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC",
                    "-shared", "-fvisibility=hidden", str(CORTEXM / "qmcu_icount_plugin.c"),
                    "-o", str(lib)], check=True)
    return lib


def _spec(*, layer: Layer, variant: str) -> tuple[gold.ConvSpec, int]:
    a, w, o, path = VARIANTS[variant]
    return gold.ConvSpec(in_bits=a, w_bits=w, out_bits=o, in_shape=layer.in_shape,
                         c_out=layer.c_out, kernel=layer.kernel, stride=layer.stride,
                         pads=layer.pads, depthwise=layer.depthwise, relu=layer.relu), path


def _macs(case: gold.ConvCase, spec: gold.ConvSpec) -> int:
    n, oh, ow, c_out = case.options.out_shape
    per_out = spec.kernel[0] * spec.kernel[1] * (1 if spec.depthwise else spec.in_shape[3])
    return n * oh * ow * c_out * per_out


def model_layers(*, path: pathlib.Path) -> dict[str, Layer]:
    """The distinct CONV_2D / DEPTHWISE_CONV_2D shapes of an int8 model, in model order
    (SAME padding made explicit as TFLite computes it); names carry the repeat count."""
    from tflite_quantmcu.ir.reader import read_model_file
    from tflite_quantmcu.qmcu_options import same_padding

    sub = read_model_file(path=path).subgraphs[0]
    found: dict[Layer, int] = {}
    for op in sub.operators:
        if op.type not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        in_shape = tuple(sub.tensors[op.inputs[0]].shape)
        kh, kw = sub.tensors[op.inputs[1]].shape[1:3]
        c_out = sub.tensors[op.outputs[0]].shape[3]
        o = op.options
        pads = (0, 0, 0, 0)
        if o.padding == 0:  # SAME
            _, top, bottom = same_padding(size=in_shape[1], kernel=kh, stride=o.strideH,
                                          dilation=o.dilationHFactor)
            _, left, right = same_padding(size=in_shape[2], kernel=kw, stride=o.strideW,
                                          dilation=o.dilationWFactor)
            pads = (top, bottom, left, right)
        layer = Layer(in_shape=in_shape, c_out=c_out, kernel=(kh, kw), pads=pads,
                      depthwise=op.type == "DEPTHWISE_CONV_2D", stride=(o.strideH, o.strideW))
        found[layer] = found.get(layer, 0) + 1
    return {f"{layer.key} (x{count})": layer for layer, count in found.items()}


def _symbol(*, elf: pathlib.Path, name: str) -> int:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(rf"^([0-9a-fA-F]+) T {name}$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{name} not found in {elf}")
    return int(match.group(1), 16)


def run_one(*, helper, target, plugin: pathlib.Path, name: str, layer: Layer,
            variant: str) -> Result | None:
    """Build, run and count one (layer, variant); None where the variant cannot pack."""
    spec, path = _spec(layer=layer, variant=variant)
    try:
        case = gold.random_conv_case(rng=np.random.default_rng(7), spec=spec)
    except ValueError:  # e.g. 3 input channels cannot be packed at 4 or 2 bits
        return None
    work = BUILD / re.sub(r"[^a-z0-9]+", "_", f"{target.name} {layer.key} {variant}".lower())
    work.mkdir(parents=True, exist_ok=True)
    (work / "qmcu_bench_case.h").write_text(f"#define QMCU_BENCH_PATH {path}\n"
                                            + gold.golden_header(convs=[case]))
    elf = helper.build_elf(target=target, main_source=CORTEXM / "qmcu_bench_main.c",
                           include_dirs=[work], out=work / "bench.elf")
    begin = _symbol(elf=elf, name="qmcu_bench_begin")
    end = _symbol(elf=elf, name="qmcu_bench_end")
    result = helper.run_elf(target=target, elf=elf, timeout_s=600,
                            plugin=f"{plugin},begin={begin:#x},end={end:#x}")
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{name} / {variant} failed:\n{log[-2000:]}")
    regions = [int(v) for v in re.findall(r"qmcu_icount region=\d+ insns=(\d+)", log)]
    if len(regions) != 2:
        raise RuntimeError(f"expected 2 counted regions, got {regions}:\n{log[-2000:]}")
    used = re.search(r"path=(\w+)", log).group(1)
    return Result(layer=name, key=layer.key, variant=variant, path=used,
                  macs=_macs(case, spec), insns=regions[1] - regions[0],
                  outputs=int(np.prod(case.options.out_shape)), bits=VARIANTS[variant][:3])


ADD_SHAPES = [(1, 48, 48, 16), (1, 24, 24, 24), (1, 12, 12, 32),  # the bundled model's ADDs
              (1, 36, 36, 8), (1, 18, 18, 16), (1, 9, 9, 24), (1, 9, 9, 32),
              (1, 5, 5, 56)]  # and MobileNetV2 w0.35 r144's
ADD_VARIANTS = {
    # name: (in1_bits, in2_bits, out_bits, path)
    "int8 ref": (8, 8, 8, 0),
    "int8 opt": (8, 8, 8, 2),
    "a4 (4 + 4 -> 4)": (4, 4, 4, 2),
    "a2 (2 + 2 -> 2)": (2, 2, 2, 2),
    "mixed (8 + 4 -> 4)": (8, 4, 4, 2),
}


def add_key(shape) -> str:
    return "add " + "x".join(str(v) for v in shape[1:])


def run_add(*, helper, target, plugin: pathlib.Path, shape, variant: str) -> Result:
    """Build, run and count one QMCU_ADD call; MACs here means elements."""
    b1, b2, bo, path = ADD_VARIANTS[variant]
    case = gold.random_add_case(rng=np.random.default_rng(7), bits=(b1, b2, bo), shape=shape)
    work = BUILD / re.sub(r"[^a-z0-9]+", "_", f"{target.name} {add_key(shape)} {variant}".lower())
    work.mkdir(parents=True, exist_ok=True)
    (work / "qmcu_bench_case.h").write_text(f"#define QMCU_BENCH_PATH {path}\n"
                                            "#define QMCU_BENCH_ADD 1\n"
                                            + gold.golden_header(adds=[case]))
    elf = helper.build_elf(target=target, main_source=CORTEXM / "qmcu_bench_main.c",
                           include_dirs=[work], out=work / "bench.elf")
    regions = _regions(helper=helper, target=target, plugin=plugin, elf=elf)
    elements = int(np.prod(shape))
    return Result(layer=add_key(shape), key=add_key(shape), variant=variant,
                  path="ref" if path == 0 else "opt", macs=elements,
                  insns=regions[1] - regions[0], outputs=elements, bits=(b1, b2, bo))


@dataclasses.dataclass(frozen=True)
class PoolLayer:
    """One AVERAGE_POOL_2D shape (explicit pads: top, bottom, left, right)."""
    in_shape: tuple[int, int, int, int]
    filt: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]

    @property
    def key(self) -> str:
        """Shape key of the recorded CMSIS-NN figures (bench/data/cmsis_nn_cortex_m4.json)."""
        _, h, w, c = self.in_shape
        return (f"avgpool {self.filt[0]}x{self.filt[1]} s{self.stride[0]}x{self.stride[1]} "
                f"{h}x{w}x{c} pads {','.join(map(str, self.pads))}")


POOL_LAYERS = {
    # Neither the bundled model nor MobileNetV2 w0.35 r144 has an AVERAGE_POOL_2D: both end in
    # a global MEAN (not a QMCU op); these are those MEANs written as a global average pool
    "global 6x6x128 (bundled model's MEAN)": PoolLayer((1, 6, 6, 128), (6, 6), (1, 1),
                                                       (0, 0, 0, 0)),
    "global 5x5x1280 (MobileNetV2's MEAN)": PoolLayer((1, 5, 5, 1280), (5, 5), (1, 1),
                                                      (0, 0, 0, 0)),
    # testdata/conv_chain.tflite's AVERAGE_POOL_2D (SAME)
    "3x3 s2 22x26x8 (conv_chain)": PoolLayer((1, 22, 26, 8), (3, 3), (2, 2), (0, 1, 0, 1)),
    # typical mid-network pools
    "2x2 s2 24x24x32": PoolLayer((1, 24, 24, 32), (2, 2), (2, 2), (0, 0, 0, 0)),
    "3x3 s1 24x24x32 SAME": PoolLayer((1, 24, 24, 32), (3, 3), (1, 1), (1, 1, 1, 1)),
}
POOL_VARIANTS = {
    # name: (in_bits, out_bits, rescale, path); same bits and quantization: no rescale, the
    # TFLite int8 arithmetic (what arm_avgpool_s8 computes)
    "int8 ref": (8, 8, False, 0),
    "int8 opt": (8, 8, False, 2),
    "a4 (4 -> 4)": (4, 4, False, 2),
    "a2 (2 -> 2)": (2, 2, False, 2),
    # where a map changes width at the pool the converter requantizes (rescale)
    "a8->4 (rescale)": (8, 4, True, 2),
}


def pool_case(*, layer: PoolLayer, variant: str):
    """The golden case of one (pool layer, variant): random input, numpy reference output."""
    in_bits, out_bits, rescale, _ = POOL_VARIANTS[variant]
    return gold.random_pool_case(rng=np.random.default_rng(7), in_bits=in_bits,
                                 out_bits=out_bits, in_shape=layer.in_shape, filt=layer.filt,
                                 stride=layer.stride, pads=layer.pads, rescale=rescale)


def run_pool(*, helper, target, plugin: pathlib.Path, name: str, layer: PoolLayer,
             variant: str) -> Result:
    """Build, run and count one QMCU_AVERAGE_POOL_2D call; MACs here means output elements."""
    path = POOL_VARIANTS[variant][3]
    case = pool_case(layer=layer, variant=variant)
    work = BUILD / re.sub(r"[^a-z0-9]+", "_", f"{target.name} {layer.key} {variant}".lower())
    work.mkdir(parents=True, exist_ok=True)
    (work / "qmcu_bench_case.h").write_text(f"#define QMCU_BENCH_PATH {path}\n"
                                            "#define QMCU_BENCH_POOL 1\n"
                                            + gold.golden_header(pools=[case]))
    elf = helper.build_elf(target=target, main_source=CORTEXM / "qmcu_bench_main.c",
                           include_dirs=[work], out=work / "bench.elf")
    regions = _regions(helper=helper, target=target, plugin=plugin, elf=elf)
    outputs = int(np.prod(case.options.out_shape))
    in_bits, out_bits = POOL_VARIANTS[variant][:2]
    return Result(layer=name, key=layer.key, variant=variant,
                  path="ref" if path == 0 else "opt", macs=outputs,
                  insns=regions[1] - regions[0], outputs=outputs, bits=(in_bits, out_bits))


STAGE_CASES = [
    # (label, fixture, split, grid, in_place[, sub-byte seed])
    ("MobileNetV2 w0.35 r144, blocks 0-2 (#9), 3x3", "mobilenetv2_w035_r144.tflite", 9,
     (3, 3), True),
    ("MobileNetV2 w0.35 r144, blocks 0-3 (#16), 4x1", "mobilenetv2_w035_r144.tflite", 16,
     (4, 1), True),
    ("ResNet-8 CIFAR, first block (#3), 2x2", "resnet8_cifar.tflite", 3, (2, 2), True),
    # (..., sub-byte seed): per-patch 8/4/2-bit maps with their own ranges (version 2)
    ("MobileNetV2 w0.35 r144, #9, 3x3, mixed 8/4/2-bit patches", "mobilenetv2_w035_r144.tflite",
     9, (3, 3), True, 1),
    ("ResNet-8 CIFAR, #3, 2x2, mixed 8/4/2-bit patches", "resnet8_cifar.tflite", 3, (2, 2),
     True, 4),
]


def _regions(*, helper, target, plugin: pathlib.Path, elf: pathlib.Path) -> list[int]:
    begin = _symbol(elf=elf, name="qmcu_bench_begin")
    end = _symbol(elf=elf, name="qmcu_bench_end")
    result = helper.run_elf(target=target, elf=elf, timeout_s=600,
                            plugin=f"{plugin},begin={begin:#x},end={end:#x}")
    log = result.stdout + result.stderr
    if result.returncode != 0 or "output matches the reference" not in log:
        raise RuntimeError(f"{elf} failed:\n{log[-2000:]}")
    return [int(v) for v in re.findall(r"qmcu_icount region=\d+ insns=(\d+)", log)]


def run_stage_case(*, helper, cases, target, plugin: pathlib.Path, case) -> tuple[int, int, int]:
    """(stage op instructions, sum of its kernel calls, number of kernel calls)."""
    work = BUILD / re.sub(r"[^a-z0-9]+", "_", f"{target.name} stage {case[0]}".lower())
    work.mkdir(parents=True, exist_ok=True)
    (work / "qmcu_stage_cases.h").write_text(cases.header([case]))
    counts = []
    for defines in (("QMCU_USE_OPT",), ("QMCU_USE_OPT", "QMCU_STAGE_BENCH_HOOKS")):
        elf = helper.build_elf(target=target, main_source=CORTEXM / "qmcu_stage_bench_main.c",
                               include_dirs=[work], defines=defines,
                               out=work / f"stage{len(counts)}.elf")
        counts.append(_regions(helper=helper, target=target, plugin=plugin, elf=elf))
    whole, kernels = counts
    overhead = whole[0]
    return whole[1] - overhead, sum(k - overhead for k in kernels[1:]), len(kernels) - 1


def stage_table(*, helper, target, plugin: pathlib.Path) -> str:
    spec = importlib.util.spec_from_file_location("qmcu_stage_cases",
                                                  CORTEXM / "qmcu_stage_cases.py")
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    lines = [f"QMCU_PATCH_STAGE on {target.name} (QEMU TCG plugin, optimized build)", "",
             "| stage | kernel calls | sum of layer kernel calls | stage op | ratio |",
             "|---|---:|---:|---:|---:|"]
    for case in STAGE_CASES:
        whole, kernels, calls = run_stage_case(helper=helper, cases=cases, target=target,
                                               plugin=plugin, case=case)
        lines.append(f"| {case[0]} | {calls} | {kernels:,} | {whole:,} | "
                     f"{whole / kernels:.3f}x |")
    return "\n".join(lines)


def load_cmsis_nn(*, path: pathlib.Path = CMSIS_NN) -> dict:
    """The recorded CMSIS-NN figures: {"commit": ..., "layers": {key: {"macs", "insns"}}}."""
    import json

    return json.loads(path.read_text()) if path.exists() else {"commit": "", "layers": {}}


def format_table(*, results: list[Result], target: str, cmsis: dict | None = None,
                 base_variant: str = "int8 opt", unit: str = "MAC") -> str:
    """Markdown table; "vs int8 opt" compares with the layer's optimized int8 run, "vs CMSIS-NN"
    with CMSIS-NN's int8 kernel on the same layer shape (recorded figures, Cortex-M4 only)."""
    base = {r.layer: r.insns / r.macs for r in results if r.variant == base_variant}
    base = {r.layer: base.get(r.layer, float("nan")) for r in results}
    layers = (cmsis or {}).get("layers", {}) if target == "cortex-m4" else {}
    lines = [f"Executed instructions on {target} (QEMU TCG plugin), per layer call", ""]
    if layers:
        lines += [f"CMSIS-NN int8: ARM-software/CMSIS-NN {cmsis['commit']}, "
                  f"{cmsis.get('kernels', '')}, same QEMU, flags and plugin", ""]
    lines += [f"| layer | variant | path | {unit}s | instructions | instr/{unit} | vs int8 opt "
              f"| CMSIS-NN int8 instr/{unit} | vs CMSIS-NN |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        per_mac = r.insns / r.macs
        ref = layers.get(r.key)
        theirs = ref["insns"] / ref["macs"] if ref else None
        vs_base = per_mac / base[r.layer]
        lines.append(f"| {r.layer} | {r.variant} | {r.path} | {r.macs:,} | {r.insns:,} | "
                     f"{per_mac:.3f} | " + ("- | " if vs_base != vs_base else f"{vs_base:.2f}x | ")
                     + (f"{theirs:.3f} | {per_mac / theirs:.2f}x |" if theirs else "- | - |"))
    return "\n".join(lines)


def format_wide(*, results: list[Result], target: str, cmsis: dict | None = None,
                unit: str = "MAC") -> str:
    """One row per layer: CMSIS-NN int8 beside every variant's instr/MAC, each with its ratio
    to CMSIS-NN in brackets (the layout of docs/cmsis_nn_comparison.md), then the totals."""
    layers = (cmsis or {}).get("layers", {}) if target == "cortex-m4" else {}
    variants = list(dict.fromkeys(r.variant for r in results))
    rows: dict[str, dict[str, Result]] = {}
    for r in results:
        rows.setdefault(r.layer, {})[r.variant] = r
    lines = [f"instructions per {unit} on {target} (QEMU TCG plugin); in brackets: / CMSIS-NN int8",
             "", "| layer | CMSIS-NN int8 | " + " | ".join(variants) + " |",
             "|---|---:|" + "---:|" * len(variants)]
    for name, by_variant in rows.items():
        key = next(iter(by_variant.values())).key
        ref = layers.get(key)
        theirs = ref["insns"] / ref["macs"] if ref else None
        cells = []
        for v in variants:
            r = by_variant.get(v)
            if r is None:
                cells.append("-")
                continue
            per = r.insns / r.macs
            cells.append(f"{per:.3f} ({per / theirs:.2f}x)" if theirs else f"{per:.3f}")
        lines.append(f"| {name} | " + (f"{theirs:.3f}" if theirs else "-") + " | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines + _totals(rows=rows, variants=variants, layers=layers))


def _totals(*, rows: dict, variants: list[str], layers: dict) -> list[str]:
    """Instructions of all listed layers, each times its repeat count ("(xN)" in its name),
    for CMSIS-NN and every variant that ran on all of them (else the 8-bit run stands in)."""
    def repeats(name: str) -> int:
        match = re.search(r"\(x(\d+)\)$", name)
        return int(match.group(1)) if match else 1

    theirs = sum(layers[next(iter(v.values())).key]["insns"] * repeats(n)
                 for n, v in rows.items() if next(iter(v.values())).key in layers)
    out = ["", f"All layers above, times their repeats: CMSIS-NN int8 {theirs:,}"]
    for variant in variants:
        total = 0
        for name, by_variant in rows.items():
            r = by_variant.get(variant) or next(iter(by_variant.values()))
            total += r.insns * repeats(name)
        ratio = f" ({total / theirs:.2f}x)" if theirs else ""
        out[-1] += f"; {variant} {total:,}{ratio}"
    return out


def record(*, helper, target, plugin: pathlib.Path, jobs: int, out: pathlib.Path) -> None:
    """Every optimized variant on the distinct layer and ADD shapes of the MODELS, as JSON
    rows {key, variant, bits, macs, outputs, insns} (ADD: macs = outputs = elements); rows
    already in `out` are kept and not measured again."""
    import json

    layers: dict[str, Layer] = {}
    for path in MODELS.values():
        for layer in model_layers(path=path).values():
            layers.setdefault(layer.key, layer)
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    done = {(row["key"], row["variant"]) for row in old}
    conv_jobs = [(key, v) for key in layers for v in VARIANTS
                 if VARIANTS[v][3] != 0 and (key, v) not in done]
    add_jobs = [(shape, v) for shape in ADD_SHAPES for v in ADD_VARIANTS
                if ADD_VARIANTS[v][3] != 0 and (add_key(shape), v) not in done]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, helper=helper, target=target, plugin=plugin, name=key,
                               layer=layers[key], variant=v) for key, v in conv_jobs]
        futures += [pool.submit(run_add, helper=helper, target=target, plugin=plugin,
                                shape=shape, variant=v) for shape, v in add_jobs]
        results = [r for r in (f.result() for f in futures) if r is not None]
    rows = old + [{"key": r.key, "variant": r.variant, "bits": list(r.bits), "macs": r.macs,
                   "outputs": r.outputs, "insns": r.insns} for r in results]
    out.write_text(json.dumps({
        "what": "Executed instructions of one optimized QMCU kernel call (cmixnn_bridge, "
                "QMCU_USE_OPT) per layer shape and bit widths (conv/depthwise: in, w, out; "
                "ADD: in1, in2, out), QEMU TCG plugin, written by "
                "bench/kernels_cortexm.py --record",
        "target": target.name, "rows": rows}, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cortex-m4", choices=["cortex-m4", "cortex-m7"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--layer", action="append", default=[],
                        help="only layers whose name contains this (repeatable)")
    parser.add_argument("--variant", action="append", default=[],
                        help="only variants whose name contains this (repeatable)")
    parser.add_argument("--model", choices=sorted(MODELS),
                        help="the distinct conv / depthwise layers of a bundled model instead")
    parser.add_argument("--extra", action="store_true",
                        help="the shape classes neither model has (EXTRA_LAYERS: depthwise "
                             "5x5 / 7x7, kxk conv mid-network, 1x1 stride 2) instead")
    parser.add_argument("--wide", action="store_true",
                        help="one row per layer, variants as columns, ratios to CMSIS-NN")
    parser.add_argument("--add", action="store_true",
                        help="QMCU_ADD on the bundled models' residual shapes (per element)")
    parser.add_argument("--pool", action="store_true",
                        help="QMCU_AVERAGE_POOL_2D on global and mid-network pool shapes "
                             "(per output element)")
    parser.add_argument("--stage", action="store_true",
                        help="QMCU_PATCH_STAGE against the sum of its layer kernel calls")
    parser.add_argument("--record", metavar="JSON",
                        help="measure every optimized variant on both models' conv, depthwise "
                             "and ADD shapes and write the counts as JSON (the latency table's "
                             "input: bench/latency_table.py)")
    args = parser.parse_args(argv)
    helper = _helper()
    missing = helper.missing_tools()
    if missing:
        print(f"skipped: {', '.join(missing)} not on PATH")
        return 0
    plugin = build_plugin(out_dir=BUILD)
    target = helper.TARGETS[args.target]
    if args.stage:
        print(stage_table(helper=helper, target=target, plugin=plugin))
        return 0
    if args.add:
        jobs = [(shape, v) for shape in ADD_SHAPES for v in ADD_VARIANTS
                if not args.variant or any(f in v for f in args.variant)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_add, helper=helper, target=target, plugin=plugin,
                                   shape=shape, variant=v) for shape, v in jobs]
            results = [f.result() for f in futures]
        fmt = format_wide if args.wide else format_table
        print(fmt(results=results, target=args.target, cmsis=load_cmsis_nn(), unit="element"))
        return 0
    if args.pool:
        jobs = [(name, v) for name in POOL_LAYERS for v in POOL_VARIANTS
                if (not args.layer or any(f in name for f in args.layer))
                and (not args.variant or any(f in v for f in args.variant))]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_pool, helper=helper, target=target, plugin=plugin,
                                   name=name, layer=POOL_LAYERS[name], variant=v)
                       for name, v in jobs]
            results = [f.result() for f in futures]
        fmt = format_wide if args.wide else format_table
        print(fmt(results=results, target=args.target, cmsis=load_cmsis_nn(), unit="output"))
        return 0
    if args.record:
        record(helper=helper, target=target, plugin=plugin, jobs=args.jobs,
               out=pathlib.Path(args.record))
        return 0
    layers = (model_layers(path=MODELS[args.model]) if args.model
              else EXTRA_LAYERS if args.extra else LAYERS)
    names = list(VARIANTS) if args.variant else list(WIDE_VARIANTS)
    jobs = [(name, variant) for name in layers for variant in names
            if (not args.layer or any(f in name for f in args.layer))
            and (not args.variant or any(f in variant for f in args.variant))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, helper=helper, target=target, plugin=plugin, name=n,
                               layer=layers[n], variant=v) for n, v in jobs]
        results = [r for r in (f.result() for f in futures) if r is not None]
    fmt = format_wide if args.wide else format_table
    print(fmt(results=results, target=args.target, cmsis=load_cmsis_nn()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
