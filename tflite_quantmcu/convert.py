"""The `convert` pipeline: a literal list of steps over one `Conversion` record.

Each step reads what earlier steps left in the record and adds its own part.
Nothing is written until the last step, which writes every output file or
none (a failure anywhere leaves the output directory as it was).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tflite_quantmcu.analysis.model_analysis import ModelAnalysis, analyze_model
from tflite_quantmcu.codegen.op_resolver import op_resolver_header
from tflite_quantmcu.errors import BudgetError, ConfigError, UnsupportedModelError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.model_checks import require_int8
from tflite_quantmcu.output_files import json_bytes, write_outputs_atomically
from tflite_quantmcu.patches.plan import PatchOptions, PatchPlan
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan
from tflite_quantmcu.quant.calibration_data import calibration_batches
from tflite_quantmcu.quant.evaluate import top1_accuracy
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import QuantMCUOptions, QuantMCUResult, search_quantmcu
from tflite_quantmcu.report import conversion_report
from tflite_quantmcu.runtimes.litert import run_litert
from tflite_quantmcu.runtimes.random_inputs import random_inputs
from tflite_quantmcu.runtimes.tflm import measure_arena

POLICIES = ("quantmcu", "patch-int8")
VERIFY_SAMPLES = 2


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked for on the command line."""

    model_path: Path
    out_dir: Path
    sram_budget: int
    flash_budget: int | None = None
    policy: str = "quantmcu"
    patch_grid: tuple[int, int] | None = None
    split_after: str | None = None
    max_mac_overhead: float | None = None
    verify: bool = True
    measure_tflm: bool = True
    calibration: Path | None = None
    eval_data: Path | None = None
    plan_path: Path | None = None
    quantmcu: QuantMCUOptions = QuantMCUOptions()
    calibration_limit: int | None = None
    progress: bool = False


@dataclass
class Conversion:
    """The working record the steps fill in, in pipeline order."""

    options: ConvertOptions
    original_bytes: bytes = b""
    graph: Graph | None = None
    layer_based: ModelAnalysis | None = None
    patch_plan: PatchPlan | None = None
    planner_time_s: float = 0.0
    patched: Graph | None = None
    patched_analysis: ModelAnalysis | None = None
    bitwidth_plan: BitwidthPlan | None = None
    search: QuantMCUResult | None = None
    converted: Graph | None = None
    final: ModelAnalysis | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    model_bytes: bytes = b""
    header: str = ""
    tflm_heads: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.options.model_path.stem


def read_input(conv: Conversion) -> None:
    conv.graph = read_model_file(path=conv.options.model_path)
    conv.original_bytes = conv.options.model_path.read_bytes()


def check_int8(conv: Conversion) -> None:
    require_int8(graph=conv.graph, source=str(conv.options.model_path))


def measure_layer_based(conv: Conversion) -> None:
    conv.layer_based = analyze_model(graph=conv.graph)


def plan_patch_stage(conv: Conversion) -> None:
    opts = conv.options
    start = time.perf_counter()
    conv.patch_plan = plan_patches(graph=conv.graph, options=PatchOptions(
        sram_budget=opts.sram_budget, max_mac_overhead=opts.max_mac_overhead,
        split=opts.split_after, grid=opts.patch_grid))
    conv.planner_time_s = time.perf_counter() - start
    if conv.patch_plan.reason:
        conv.notes.append(f"layer-based kept: {conv.patch_plan.reason}")


def rewrite_patch_stage(conv: Conversion) -> None:
    plan = conv.patch_plan
    conv.patched = apply_patch_plan(graph=conv.graph, plan=plan) if plan.is_patched \
        else conv.graph
    conv.patched_analysis = analyze_model(graph=conv.patched)


def choose_bitwidths(conv: Conversion) -> None:
    """quantmcu: replay --plan, or calibrate and search (VDPC + VDQS); else all 8-bit."""
    opts = conv.options
    if opts.policy != "quantmcu":
        return
    if opts.plan_path is not None:
        conv.bitwidth_plan = BitwidthPlan.from_json(_read_text(opts.plan_path, "--plan"))
        return
    if opts.calibration is None:
        raise ConfigError("--policy quantmcu needs --calibration FILE (or --plan plan.json)")
    batches = calibration_batches(source=str(opts.calibration), graph=conv.graph,
                                  limit=opts.calibration_limit, progress=opts.progress)
    conv.search = search_quantmcu(graph=conv.graph, patch_plan=conv.patch_plan,
                                  patched_graph=conv.patched, calibration=batches,
                                  sram_budget=opts.sram_budget, options=opts.quantmcu)
    conv.bitwidth_plan = conv.search.plan


def apply_bitwidths(conv: Conversion) -> None:
    plan = conv.bitwidth_plan
    conv.converted = conv.patched if plan is None else \
        apply_bitwidth_plan(graph=conv.patched, plan=plan)


def evaluate_accuracy(conv: Conversion) -> None:
    """Top-1 of the int8 input model and of the final model, by the reference executor."""
    data = conv.options.eval_data
    if data is None:
        return
    progress = conv.options.progress
    conv.accuracy = {"int8": top1_accuracy(graph=conv.graph, data=str(data), progress=progress),
                     "final": top1_accuracy(graph=conv.converted, data=str(data),
                                            progress=progress)}


def verify_equivalence(conv: Conversion) -> None:
    """The rewrite must not change numerics: LiteRT reference kernels, random inputs."""
    if not conv.options.verify or conv.patched is conv.graph:
        return
    rewritten = write_model_bytes(graph=conv.patched)
    inputs = random_inputs(graph=conv.graph, samples=VERIFY_SAMPLES, seed=0)
    before = run_litert(model_bytes=conv.original_bytes, inputs=inputs)
    after = run_litert(model_bytes=rewritten, inputs=inputs)
    for j, (a, b) in enumerate(zip(before, after)):
        if not np.array_equal(a, b):
            raise UnsupportedModelError(
                f"internal check failed: output {j} of the rewritten model differs from the "
                f"original in LiteRT (max {np.abs(a.astype(int) - b.astype(int)).max()} steps); "
                f"nothing was written")


def check_budgets(conv: Conversion) -> None:
    conv.final = analyze_model(graph=conv.converted)
    opts = conv.options
    if opts.flash_budget is not None and conv.final.flash_bytes > opts.flash_budget:
        raise BudgetError(
            f"flash budget {opts.flash_budget} B cannot be met: the converted model needs "
            f"{conv.final.flash_bytes} B (weights {conv.final.weight_bytes} B)")


def serialize_outputs(conv: Conversion) -> None:
    conv.model_bytes = write_model_bytes(graph=conv.converted)
    conv.header = op_resolver_header(graph=conv.converted, stem=conv.stem)


def measure_in_tflm(conv: Conversion) -> None:
    if not conv.options.measure_tflm:
        return
    patched = conv.model_bytes if conv.converted is conv.patched else \
        write_model_bytes(graph=conv.patched)
    for name, data in (("layer_based", conv.original_bytes), ("patch_based", patched)):
        try:
            conv.tflm_heads[name] = measure_arena(model_bytes=data).head
        except UnsupportedModelError as err:
            conv.tflm_heads[name] = None
            conv.notes.append(f"TFLM arena of the {name} model not measured: {err}")


def write_outputs(conv: Conversion) -> None:
    out = conv.options.out_dir
    files = {
        f"{conv.stem}.quantmcu.tflite": conv.model_bytes,
        f"{conv.stem}_op_resolver.h": conv.header.encode("utf-8"),
        "report.json": json_bytes(data=conversion_report(conv=conv)),
    }
    if conv.bitwidth_plan is not None:
        files[f"{conv.stem}.bitwidth_plan.json"] = json_bytes(data=conv.bitwidth_plan.to_dict())
    write_outputs_atomically(directory=out, files=files)


Step = Callable[[Conversion], None]

PIPELINE: tuple[Step, ...] = (
    read_input,            # parse and validate the file (only the reader touches flatbuffers)
    check_int8,            # every policy here is defined for int8-quantized models
    measure_layer_based,   # the baseline figures the report and the planner compare against
    plan_patch_stage,      # choose split point and grid under the SRAM budget (or keep layers)
    rewrite_patch_stage,   # run the memory-heavy stage patch by patch, sharing the weights
    verify_equivalence,    # a rewrite must not change numerics: compare outputs in LiteRT
    choose_bitwidths,      # QuantMCU: calibration -> VDPC -> VDQS per branch (or --plan replay)
    apply_bitwidths,       # packed 4/2-bit feature maps and the QMCU_* ops that use them
    evaluate_accuracy,     # top-1 before/after on --eval-data (reference executor = TFLM)
    check_budgets,         # final peak and flash figures against the user's budgets
    serialize_outputs,     # model bytes and op resolver header, in memory
    measure_in_tflm,       # the arena heads TFLite Micro itself reports, for the report
    write_outputs,         # all output files or none
)


def _read_text(path: Path, option: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot be read ({err.strerror})") from err


def convert(*, options: ConvertOptions) -> Conversion:
    conv = Conversion(options=options)
    for step in PIPELINE:
        step(conv)
    return conv
