"""The `convert` pipeline (`tflite-quantmcu convert`, `tflite_quantmcu.convert`): a literal list of steps over one `Conversion` record.

Each step reads what earlier steps left in the record and adds its own part.
Nothing is written until the last step, which writes every output file or
none (a failure anywhere leaves the output directory as it was). The output
directory is locked for the whole run, so a second convert into it is refused
(``output_files`` says how the set is committed and why signals cannot split it).
"""
from __future__ import annotations

import dataclasses
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tflite_quantmcu.analysis.latency import load_latency_table, predict_instructions
from tflite_quantmcu.analysis.model_analysis import ModelAnalysis, analyze_model, arena_bytes
from tflite_quantmcu.codegen.model_data import model_data_header, model_data_source
from tflite_quantmcu.codegen.op_resolver import op_resolver_header
from tflite_quantmcu.errors import (BudgetError, CalibrationDataWarning, ConfigError,
                                    RuntimeCheckError,
                                    UnsupportedModelError)
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file
from tflite_quantmcu.io_types import IoTypes, convert_io_types, dominant_input_hint
from tflite_quantmcu.ir.writer import has_external_buffers, write_model_bytes
from tflite_quantmcu.model_checks import require_int8
from tflite_quantmcu.output_files import (OutputDirectory, json_bytes, lock_output_directory,
                                          write_outputs_atomically)
from tflite_quantmcu.patches.plan import PatchBudgetError, PatchOptions, PatchPlan
from tflite_quantmcu.patches.planner import plan_patches
from tflite_quantmcu.patches.rewrite import apply_patch_plan
from tflite_quantmcu.patches.stage_op import PATCH_NAMESPACE
from tflite_quantmcu.quant.apply_bitwidths import apply_bitwidth_plan
from tflite_quantmcu.quant.bitops_target import plan_for_bitops_ratio
from tflite_quantmcu.quant.accuracy_guard import (COST_SAMPLES, GuardOptions, guard_plan,
                                                  heldout_from_batches, lowerable_costs,
                                                  lowerable_ranges, map_locations,
                                                  plan_drop_judge, selection_costs)
from tflite_quantmcu.quant.calibration_data import (MIN_CALIBRATION_SAMPLES, Batch,
                                                    InputNormalization, data_batches)
from tflite_quantmcu.quant.calibration_split import split_holdout
from tflite_quantmcu.quant.evaluate import top1_counts
from tflite_quantmcu.quant.joint_search import choose_patch_plan
from tflite_quantmcu.quant.instruction_savings import InstructionSavings, instruction_savings
from tflite_quantmcu.quant.kernel_choice import (KERNEL_CHOICES, KernelPlan, check_kernel_choice,
                                                 plan_kernels)
from tflite_quantmcu.quant.memory_fit import (FitOptions, FitProblem, fit_to_budget, problem_total,
                                              fit_record, memory_path, simulated_cost)
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.quant.quantmcu_policy import (QuantMCUOptions, QuantMCUResult,
                                                   collect_patch_statistics, search_quantmcu)
from tflite_quantmcu.quant.rl_policy import RlOptions
from tflite_quantmcu.quant.seed_policies import (LAYER_POLICIES, layer_based_plan,
                                                 search_seed_policy)
from tflite_quantmcu.report import conversion_report
from tflite_quantmcu.report_figures import report_figures
from tflite_quantmcu.report_text import conversion_markdown
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.runtimes.litert import run_litert
from tflite_quantmcu.runtimes.random_inputs import random_inputs
from tflite_quantmcu.runtimes.tflm import measure_arena

POLICIES = ("quantmcu", "patch-int8") + LAYER_POLICIES
VERIFY_SAMPLES = 2
MAX_TEXT_BYTES = 16 << 20   # --plan files (docs/limits.md)
TFLM_WHEEL_TARGET = "host64"  # the tflite-micro wheel that `measure_in_tflm` runs


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked for on the command line."""

    model_path: Path
    out_dir: Path | None
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
    target: str = "cortex-m"
    objective: str = "min-macs"
    max_file_growth: float | None = 0.05
    input_type: str = "keep"
    output_type: str = "keep"
    max_accuracy_drop: float | None = 1.0
    model_bytes: bytes | None = None  # the model itself; model_path then only names it
    input_normalization: InputNormalization | None = None  # --input-mean/--input-std
    # None: builtin, except where memory binds under quantmcu: both forms (_joint_forms)
    patch_form: str | None = None
    rl: RlOptions = RlOptions()
    step_lines: bool = False  # one stderr line per pipeline step (the CLI, when not on a TTY)
    plan: BitwidthPlan | None = None  # a plan given as data (the API; e.g. fine-tuned ranges)
    bitops_ratio: float | None = None  # --bitops-ratio: lower widths to this BitOPs ratio
    kernels: str | None = None   # --kernels: builtin, qmcu or fastest; None: kernel_mode

    @property
    def kernel_mode(self) -> str:
        """The kernel choice: --kernels, else fastest under --objective min-latency (the fewest
        predicted instructions asked for) and builtin otherwise."""
        if self.kernels is not None:
            return self.kernels
        return "fastest" if self.objective == "min-latency" else "builtin"

    def __post_init__(self) -> None:
        """Paths may be given as strings (Python callers); they are stored as Path."""
        if self.kernels is not None:
            check_kernel_choice(self.kernels)
        for name in ("model_path", "out_dir", "plan_path", "calibration", "eval_data"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))


@dataclass
class Conversion:
    """The working record the steps fill in, in pipeline order."""

    options: ConvertOptions
    original_bytes: bytes = b""
    graph: Graph | None = None
    input_graph: Graph | None = None
    input_bytes: bytes = b""
    layer_based: ModelAnalysis | None = None
    patch_plan: PatchPlan | None = None
    planner_time_s: float = 0.0
    patched: Graph | None = None
    search_graph: Graph | None = None   # the graph the bit-width search names maps in
    patched_analysis: ModelAnalysis | None = None
    bitwidth_plan: BitwidthPlan | None = None
    search: QuantMCUResult | None = None
    savings: InstructionSavings | None = None   # min-latency: instructions each map saves
    seed_search: object | None = None
    converted: Graph | None = None
    kernel_plan: KernelPlan | None = None
    latency: dict | None = None   # predicted Cortex-M4 instructions (analysis.latency)
    final: ModelAnalysis | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    heldout: list[Batch] = field(default_factory=list)
    accuracy_drop: dict | None = None
    memory_binds: bool = False   # quantmcu: no int8 patch plan fits; sub-byte maps must
    patch_int8_total: int | None = None   # the lowest total of any int8 patch plan
    memory_fit: dict | None = None
    joint_candidates: list[dict] = field(default_factory=list)
    fit_samples: list[np.ndarray] | None = None   # calibration inputs the search fits on
    model_bytes: bytes = b""
    header: str = ""
    tflm_arenas: dict[str, dict | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    output: OutputDirectory | None = None   # the locked --out folder, set by `convert`

    @property
    def stem(self) -> str:
        return self.options.model_path.stem

    @property
    def model_file(self) -> str:
        """The written model's file name: the input's stem and the policy."""
        return f"{self.stem}.{self.options.policy}.tflite"

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every file name a convert of this model may write, whatever the policy: an
        earlier convert's files that this one does not write again are removed."""
        stem = self.stem
        return (*(f"{stem}.{policy}.tflite" for policy in POLICIES), f"{stem}_op_resolver.h",
                f"{stem}_model_data.h", f"{stem}_model_data.cc", "report.json", "report.md",
                "patch_candidates.json", "memory_per_layer.png", "patch_grid.png",
                "bitwidths.png", f"{stem}.bitwidth_plan.json")


def read_input(conv: Conversion) -> None:
    opts = conv.options
    if opts.model_bytes is None:
        conv.graph = read_model_file(path=opts.model_path)
        conv.original_bytes = opts.model_path.read_bytes()
    else:
        conv.graph = read_model_bytes(data=opts.model_bytes, source=opts.model_path.name)
        conv.original_bytes = opts.model_bytes
    conv.input_graph, conv.input_bytes = conv.graph, conv.original_bytes
    if has_external_buffers(graph=conv.graph):
        # TFLite Micro reads only inline buffer data: measure and write the model inline.
        conv.input_bytes = write_model_bytes(graph=conv.graph, inline_buffers=True)
        conv.notes.append("the input stores weights after the flatbuffer (Buffer.offset); "
                          "TFLite Micro reads only inline data, so the output has them inline")


def check_int8(conv: Conversion) -> None:
    require_int8(graph=conv.graph, source=str(conv.options.model_path))


def measure_layer_based(conv: Conversion) -> None:
    conv.layer_based = analyze_model(graph=conv.graph, target=conv.options.target)


def set_io_types(conv: Conversion) -> None:
    opts = conv.options
    if (opts.input_type, opts.output_type) == ("keep", "keep"):
        return
    conv.graph = convert_io_types(graph=conv.graph, options=IoTypes(
        input_type=opts.input_type, output_type=opts.output_type))
    conv.original_bytes = write_model_bytes(graph=conv.graph)


def plan_patch_stage(conv: Conversion) -> None:
    opts = conv.options
    start = time.perf_counter()
    if opts.policy in LAYER_POLICIES:
        conv.patch_plan = layer_based_plan(graph=conv.graph, options=opts)
        return
    try:
        conv.patch_plan = plan_patches(graph=conv.graph, options=PatchOptions(
            sram_budget=opts.sram_budget, max_mac_overhead=opts.max_mac_overhead,
            split=opts.split_after, grid=opts.patch_grid, max_file_growth=opts.max_file_growth,
            target=opts.target, objective=opts.objective, form=opts.patch_form or "builtin"))
    except PatchBudgetError as err:
        if opts.policy == "quantmcu" and opts.plan_path is None:
            _plan_lowest_int8(conv=conv, err=err)
            conv.planner_time_s = time.perf_counter() - start
            return
        hint = dominant_input_hint(graph=conv.graph, peak_tensors=err.peak_tensors)
        if not hint:
            raise
        raise PatchBudgetError(f"{err}{hint}", best_peak=err.best_peak,
                               peak_tensors=err.peak_tensors, budget=err.budget) from err
    conv.planner_time_s = time.perf_counter() - start
    if conv.patch_plan.reason:
        conv.notes.append(f"layer-based kept: {conv.patch_plan.reason}")


def _plan_lowest_int8(*, conv: Conversion, err: PatchBudgetError) -> None:
    """quantmcu when no int8 plan fits: the int8 candidate, of every patch form the joint
    search screens (:func:`_joint_forms`), whose sub-byte peak maps fit the budget most cheaply
    (joint_search); the fit_arena step then lowers its peak maps."""
    opts = conv.options
    forms = _joint_forms(opts)
    patch_options = PatchOptions(
        sram_budget=None, max_mac_overhead=opts.max_mac_overhead, split=opts.split_after,
        grid=opts.patch_grid, max_file_growth=opts.max_file_growth, target=opts.target,
        objective="min-memory", form="builtin")
    # the builtin planner's records hold every (split, grid) it scored: both forms' candidates
    lowest = plan_patches(graph=conv.graph, options=patch_options)
    firsts = [plan_patches(graph=conv.graph, options=dataclasses.replace(patch_options, form=f))
              for f in forms if f != "builtin"]
    choice = choose_patch_plan(graph=conv.graph, first=lowest, options=patch_options,
                               calibration=_fit_samples(conv=conv, keep=True), quantmcu=opts.quantmcu,
                               fit=FitOptions(budget=opts.sram_budget, target=opts.target,
                                              candidates=tuple(opts.quantmcu.candidates)),
                               forms=forms, firsts=firsts)
    if choice is None:
        raise err
    conv.patch_plan = choice.plan
    # patch-int8's best over the forms searched: the planners' lowest or a candidate's int8 plan
    conv.patch_int8_total = choice.patch_int8_total
    conv.joint_candidates = [s.to_dict() for s in choice.screened]
    conv.memory_binds = True
    conv.notes.append(f"no int8 patch plan of the {opts.patch_form or 'builtin'} form fits "
                      f"{opts.sram_budget} B: the joint search screened "
                      f"{len(choice.screened)} candidates of the {' and '.join(forms)} forms "
                      f"(patch-int8's best over them {conv.patch_int8_total} B on "
                      f"{opts.target}) and chose the {choice.plan.form} form")


def _joint_forms(opts: ConvertOptions) -> tuple[str, ...]:
    """The patch forms the joint memory search screens where memory binds. Without
    ``--patch-form`` (and with ``auto``): both, builtin and stage-op, since a quantmcu model
    whose maps go sub-byte needs cmixnn_bridge's QMCU ops, QMCU_PATCH_STAGE among them, and
    the stage-op form keeps the stage in one scratch with its op data once per layer; an
    explicit ``builtin`` or ``stage-op`` screens that form only. A model whose stage has no
    stage-op form gets builtin candidates only (joint_search)."""
    if opts.patch_form in ("builtin", "stage-op"):
        return (opts.patch_form,)
    return ("builtin", "stage-op")


def _fit_samples(*, conv: Conversion, keep: bool = False):
    """The calibration inputs the search fits on (the rest is held out): a stream read once,
    or with ``keep`` a list kept for later steps (the joint screen reads them twice)."""
    opts = conv.options
    if conv.fit_samples is not None:
        return conv.fit_samples
    if opts.calibration is None:
        raise ConfigError("--policy quantmcu needs --calibration FILE (or --plan plan.json)")
    fit, conv.heldout = split_holdout(batches=data_batches(
        source=_data_source(opts.calibration), graph=conv.graph,
        limit=opts.calibration_limit, progress=opts.progress,
        normalization=opts.input_normalization))
    if keep:
        conv.fit_samples = list(fit)
        return conv.fit_samples
    return fit


def rewrite_patch_stage(conv: Conversion) -> None:
    plan = conv.patch_plan
    conv.patched = apply_patch_plan(graph=conv.graph, plan=plan) if plan.is_patched \
        else conv.graph
    conv.patched_analysis = analyze_model(graph=conv.patched, target=conv.options.target)
    conv.search_graph = conv.patched
    if plan.form == "stage-op" and conv.options.policy == "quantmcu":
        # QuantMCU names a stage map per patch as the builtin form does (p{i}_{j}/{k}); the
        # stage op runs the same widths inside (apply_bitwidths), bit for bit.
        conv.search_graph = apply_patch_plan(graph=conv.graph,
                                             plan=dataclasses.replace(plan, form="builtin"))


def choose_bitwidths(conv: Conversion) -> None:
    """quantmcu: replay --plan, or calibrate and search (VDPC + VDQS); rusci / rl: their
    search on the layer-based graph; else all 8-bit."""
    opts = conv.options
    if opts.policy in LAYER_POLICIES and opts.plan_path is None:
        conv.seed_search = search_seed_policy(graph=conv.patched, options=opts)
        conv.bitwidth_plan = conv.seed_search.plan
        return
    if opts.policy not in ("quantmcu",) + LAYER_POLICIES:
        return
    if opts.plan is not None:
        conv.bitwidth_plan = opts.plan
        return
    if opts.plan_path is not None:
        conv.bitwidth_plan = BitwidthPlan.from_json(_read_text(opts.plan_path, "--plan"))
        return
    start = time.perf_counter()
    fit = _fit_samples(conv=conv)
    statistics = collect_patch_statistics(graph=conv.graph, patch_plan=conv.patch_plan,
                                          calibration=fit)
    check = collect_patch_statistics(graph=conv.graph, patch_plan=conv.patch_plan,
                                     calibration=[b.x for b in conv.heldout]) \
        if conv.heldout else None
    collected = time.perf_counter() - start
    total = next(iter(statistics.values())).num_samples + sum(b.x.shape[0] for b in conv.heldout)
    if total < MIN_CALIBRATION_SAMPLES:   # as calibration_batches warns
        warnings.warn(f"only {total} calibration sample(s); ranges and entropies from fewer "
                      f"than {MIN_CALIBRATION_SAMPLES} are noisy (use a few hundred)",
                      CalibrationDataWarning, stacklevel=2)
    heldout_x = np.concatenate([b.x for b in conv.heldout]) if conv.heldout else None
    options = search_options(opts)
    if options.measure == "instructions":
        conv.savings = instruction_savings(graph=conv.search_graph, table=load_latency_table(),
                                           kernels=opts.kernel_mode)
    search = search_quantmcu(graph=conv.graph, patch_plan=conv.patch_plan,
                             patched_graph=conv.search_graph, calibration=None,
                             sram_budget=None if conv.memory_binds else opts.sram_budget,
                             options=options, statistics=statistics, check_statistics=check,
                             heldout_x=heldout_x, savings=conv.savings)
    conv.search = dataclasses.replace(search, statistics_time_s=collected)
    conv.bitwidth_plan = conv.search.plan


def search_options(opts: ConvertOptions) -> QuantMCUOptions:
    """The QuantMCU options of a convert: ``--objective min-latency`` makes VDQS (and the
    guard) weigh predicted Cortex-M4 instructions instead of BitOPs."""
    if opts.objective == "min-latency":
        return dataclasses.replace(opts.quantmcu, measure="instructions")
    return opts.quantmcu


def guard_accuracy(conv: Conversion) -> None:
    """--max-accuracy-drop: raise the costliest sub-byte maps to int8 until the top-1 drop on
    the held-out calibration samples holds the bound (a replayed --plan is kept as it is)."""
    bound = conv.options.max_accuracy_drop
    if bound is None or conv.search is None:
        return
    if not conv.heldout:
        conv.notes.append("accuracy guard not run: no held-out calibration sample (give at "
                          "least 2 calibration samples)")
        return
    start = time.perf_counter()
    guarded = guard_plan(graph=conv.graph, patch_plan=conv.patch_plan,
                         patched_graph=conv.search_graph, plan=conv.bitwidth_plan,
                         heldout=heldout_from_batches(batches=conv.heldout),
                         options=GuardOptions(max_drop_pts=bound),
                         known_costs=selection_costs(plan=conv.bitwidth_plan,
                                                     selection=conv.search.selection),
                         lowerable=lowerable_ranges(selection=conv.search.selection),
                         lowerable_costs=lowerable_costs(selection=conv.search.selection),
                         savings=conv.savings)
    conv.bitwidth_plan = guarded.plan
    conv.search = dataclasses.replace(conv.search, plan=guarded.plan,
                                      search_time_s=conv.search.search_time_s
                                      + time.perf_counter() - start)
    if not guarded.record["held"]:
        conv.notes.append(f"accuracy guard: {guarded.record['note']}")


def target_bitops(conv: Conversion) -> None:
    """--bitops-ratio: lower the searched plan's map and filter widths until BitOPs are R x
    below patch-int8."""
    ratio = conv.options.bitops_ratio
    if ratio is None or conv.search is None:
        return
    conv.bitwidth_plan = plan_for_bitops_ratio(patched=conv.search_graph,
                                               start=conv.bitwidth_plan, ratio=ratio)
    conv.search = dataclasses.replace(conv.search, plan=conv.bitwidth_plan)


def fit_arena(conv: Conversion) -> None:
    """quantmcu: lower the maps live at the arena peak to 4/2 bits until the total arena fits
    --sram, cheapest accuracy cost first, within --max-accuracy-drop (memory_fit)."""
    opts = conv.options
    if conv.search is None or opts.policy != "quantmcu":
        return
    plan = conv.bitwidth_plan
    reasons = {k: "bitops" for k, b in plan.bits.items() if b < 8}
    conv.bitwidth_plan = plan = dataclasses.replace(plan, reasons=reasons)
    fit_options = FitOptions(budget=opts.sram_budget, target=opts.target,
                             max_drop_pts=opts.max_accuracy_drop,
                             candidates=tuple(opts.quantmcu.candidates))
    problem = _fit_problem(conv=conv)
    int8_total = conv.patch_plan.total_bytes
    # where memory binds, a VDQS plan that already fits still meets the int8 path: the fitting
    # plan with the smaller held-out drop wins (fit_to_budget), not the first one found
    if not conv.memory_binds and problem_total(
            problem=problem, plan=plan, target=opts.target) <= opts.sram_budget:
        path = memory_path(problem=problem, options=fit_options, start=plan)
        conv.memory_fit = fit_record(problem=problem, options=fit_options, path=path, moves=0,
                                     plan=plan, int8_total=int8_total, drop=None,
                                     patch_int8_total=conv.patch_int8_total)
        return
    start = time.perf_counter()
    fitted = fit_to_budget(problem=problem, options=fit_options, plan=plan, int8_total=int8_total,
                           patch_int8_total=conv.patch_int8_total)
    conv.memory_fit = fitted.record
    guard = plan.guard
    if guard is not None and fitted.record["drop_pts"] is not None:
        guard = {**guard, "drop_before_memory_fit_pts": guard.get("drop_pts"),
                 "drop_pts": fitted.record["drop_pts"]}
    conv.bitwidth_plan = dataclasses.replace(fitted.plan, guard=guard)
    conv.search = dataclasses.replace(conv.search, plan=conv.bitwidth_plan,
                                      search_time_s=conv.search.search_time_s
                                      + time.perf_counter() - start)


def _fit_problem(*, conv: Conversion) -> FitProblem:
    """The memory fit's inputs: ranges and outlier branches from the search, costs and drops
    on the held-out calibration samples (none: no cost, no bound)."""
    drop = cost = None
    if conv.heldout:
        heldout = heldout_from_batches(batches=conv.heldout)
        # the stricter judge (losses only): the fit picks among plans that change many answers
        drop = plan_drop_judge(graph=conv.graph, patched_graph=conv.search_graph, heldout=heldout,
                               losses_only=True)
        cost = simulated_cost(graph=conv.graph, x=heldout.x[:COST_SAMPLES],
                              locations=map_locations(graph=conv.graph,
                                                      patch_plan=conv.patch_plan,
                                                      patched_graph=conv.search_graph))
    if conv.options.max_accuracy_drop is None:
        drop = None
    selection = conv.search.selection
    return FitProblem(graph=conv.graph, patch_plan=conv.patch_plan,
                      patched_graph=conv.search_graph,
                      ranges={} if selection is None else dict(selection.ranges),
                      outlier_branches=conv.search.outlier_branches,
                      cost=cost or (lambda key, bits, subbyte: 0.0), drop=drop)


def apply_bitwidths(conv: Conversion) -> None:
    """The plan's widths: per-patch stage maps inside QMCU_PATCH_STAGE (stage-op form; the
    op is rebuilt with them), every other map by the QMCU_* ops of `apply_bitwidth_plan`."""
    if conv.bitwidth_plan is None:
        conv.converted = conv.patched
        return
    graph, plan = _bitwidth_input(conv)
    conv.converted = apply_bitwidth_plan(graph=graph, plan=plan)


def _bitwidth_input(conv: Conversion) -> tuple[Graph, BitwidthPlan]:
    """The graph `apply_bitwidth_plan` converts and the plan it applies (no plan: all 8-bit)."""
    plan = conv.bitwidth_plan
    if plan is None:
        return conv.patched, BitwidthPlan(policy=conv.options.policy, options={}, bits={})
    graph = conv.patched
    if conv.patch_plan.form == "stage-op" and conv.patch_plan.is_patched:
        stage_keys = {k for k in plan.bits if PATCH_NAMESPACE.match(k)}
        if stage_keys:
            graph = apply_patch_plan(graph=conv.graph, plan=conv.patch_plan, bitwidths=plan)
            plan = dataclasses.replace(
                plan, bits={k: v for k, v in plan.bits.items() if k not in stage_keys},
                ranges={k: v for k, v in plan.ranges.items() if k not in stage_keys})
    return graph, plan


def choose_kernels(conv: Conversion) -> None:
    """--kernels: the int8 layers that run as QMCU ops (kernel_choice); every choice's
    predicted Cortex-M4 instructions and arena go to the report (latency model)."""
    opts = conv.options
    table = load_latency_table()
    graph, plan = _bitwidth_input(conv)
    choices = {}
    for mode in KERNEL_CHOICES:
        kernel_plan = plan_kernels(graph=graph, mode=mode, table=table)
        converted = conv.converted if not kernel_plan.outputs else \
            apply_bitwidth_plan(graph=graph, plan=plan, custom_outputs=kernel_plan.outputs)
        if mode == opts.kernel_mode:
            conv.kernel_plan, chosen = kernel_plan, converted
        choices[mode] = {
            "instructions": predict_instructions(graph=converted, table=table).total,
            "arena_total_bytes": arena_bytes(graph=converted, target=opts.target).total,
            "qmcu_int8_layers": len(kernel_plan.outputs)}
    if chosen is not conv.converted:
        _check_same_outputs(before=conv.converted, after=chosen)
        conv.converted = chosen
    conv.latency = {
        "target": table.target,
        "what": "predicted executed instructions of one TFLite Micro Invoke (builtin ops on "
                "CMSIS-NN kernels, QMCU ops on cmixnn_bridge's) from the measured latency "
                "table (docs/latency_model.md)",
        **{name: predict_instructions(graph=g, table=table).to_json() for name, g in (
            ("layer_based", conv.graph), ("patch_based", conv.patched),
            ("final", conv.converted))},
        "kernels": {"chosen": opts.kernel_mode, "choices": choices}}


def _check_same_outputs(*, before: Graph, after: Graph) -> None:
    """A kernel choice must not change numerics: reference executor, random inputs."""
    inputs = random_inputs(graph=before, samples=VERIFY_SAMPLES, seed=0)
    for j, (a, b) in enumerate(zip(run_graph(graph=before, inputs=inputs),
                                   run_graph(graph=after, inputs=inputs))):
        if not np.array_equal(a, b):
            raise UnsupportedModelError(
                f"internal check failed: output {j} changes when int8 layers run as QMCU ops "
                f"(--kernels); nothing was written")


def evaluate_accuracy(conv: Conversion) -> None:
    """Top-1 of the int8 input model and of the final model, by the reference executor, on
    --eval-data (reported only: nothing is tuned on it); else the guard's hold-out figure."""
    data = conv.options.eval_data
    guard = None if conv.bitwidth_plan is None else conv.bitwidth_plan.guard
    if data is None:
        if guard is not None:
            conv.accuracy_drop = {"data": guard["data"], "samples": guard["samples"],
                                  "metric": guard["metric"], "drop_pts": guard["drop_pts"]}
        return
    progress, norm = conv.options.progress, conv.options.input_normalization
    correct8, total = top1_counts(graph=conv.graph, data=_data_source(data), progress=progress,
                                  normalization=norm)
    correct, _ = top1_counts(graph=conv.converted, data=_data_source(data), progress=progress,
                             normalization=norm)
    conv.accuracy = {"int8": correct8 / total, "final": correct / total}
    conv.accuracy_drop = {"data": _data_label(data), "samples": total,
                          "metric": "top-1 accuracy (labels)",
                          "drop_pts": 100.0 * (correct8 - correct) / total}


def verify_equivalence(conv: Conversion) -> None:
    """The input must run in LiteRT, and the rewrite must not change numerics: LiteRT
    reference kernels (the reference executor for the stage-op form), random inputs."""
    if not conv.options.verify:
        return
    inputs = random_inputs(graph=conv.graph, samples=VERIFY_SAMPLES, seed=0)
    before = _litert_outputs(model_bytes=conv.original_bytes, inputs=inputs, what="input model")
    if conv.patched is conv.graph:
        return
    if conv.patch_plan.form == "stage-op":   # a custom op: the reference executor is the oracle
        runtime = "the reference executor"
        before = run_graph(graph=conv.graph, inputs=inputs)
        after = run_graph(graph=conv.patched, inputs=inputs)
    else:
        runtime = "LiteRT"
        after = _litert_outputs(model_bytes=write_model_bytes(graph=conv.patched),
                                inputs=inputs, what="rewritten model")
    for j, (a, b) in enumerate(zip(before, after)):
        if not np.array_equal(a, b):
            raise UnsupportedModelError(
                f"internal check failed: output {j} of the rewritten model differs from the "
                f"original in {runtime} (max {np.abs(a.astype(int) - b.astype(int)).max()} "
                f"steps); nothing was written")


def _litert_outputs(*, model_bytes: bytes, inputs: list, what: str) -> list:
    """LiteRT's outputs; its errors (ValueError/RuntimeError) become a typed error."""
    try:
        return run_litert(model_bytes=model_bytes, inputs=inputs)
    except (ValueError, RuntimeError) as err:
        message = " ".join(str(err).split())  # LiteRT's messages span lines; ours take one
        raise RuntimeCheckError(f"LiteRT rejects the {what}: {message} (--no-verify skips "
                                f"this check)") from err


def check_budgets(conv: Conversion) -> None:
    opts = conv.options
    conv.final = analyze_model(graph=conv.converted, target=opts.target)
    arena = conv.final.arena
    if arena.total > opts.sram_budget:
        raise BudgetError(
            f"SRAM budget {opts.sram_budget} B cannot be met: the converted model's arena "
            f"needs {arena.total} B on {opts.target} (head {arena.head} B + tail "
            f"{arena.tail} B); live at the peak: {', '.join(conv.final.peak_tensors)}"
            f"{dominant_input_hint(graph=conv.converted, peak_tensors=conv.final.peak_tensors)}")
    if opts.flash_budget is not None and conv.final.flash_bytes > opts.flash_budget:
        raise BudgetError(
            f"flash budget {opts.flash_budget} B cannot be met: the converted model needs "
            f"{conv.final.flash_bytes} B (weights {conv.final.weight_bytes} B)")


def serialize_outputs(conv: Conversion) -> None:
    conv.model_bytes = write_model_bytes(graph=conv.converted, inline_buffers=True)
    conv.header = op_resolver_header(graph=conv.converted, stem=conv.stem,
                                     arena=conv.final.arena, model_file=conv.model_file)


def measure_in_tflm(conv: Conversion) -> None:
    """The whole arena the tflite-micro wheel (a 64-bit host build) allocates, beside
    our host64 figure, for the layer-based and the patched model (builtin ops only)."""
    if not conv.options.measure_tflm:
        return
    patched = conv.model_bytes if conv.converted is conv.patched else \
        write_model_bytes(graph=conv.patched, inline_buffers=True)
    for name, data, graph in (("layer_based", conv.input_bytes, conv.input_graph),
                              ("patch_based", patched, conv.patched)):
        if name == "patch_based" and conv.patch_plan.form == "stage-op":
            conv.tflm_arenas[name] = None
            conv.notes.append("TFLM arena of the stage-op model not measured: the wheel has "
                              "no QMCU_PATCH_STAGE kernel")
            continue
        try:
            tflm = measure_arena(model_bytes=data)
        except UnsupportedModelError as err:
            conv.tflm_arenas[name] = None
            conv.notes.append(f"TFLM arena of the {name} model not measured: {err}")
            continue
        ours = arena_bytes(graph=graph, target=TFLM_WHEEL_TARGET)
        conv.tflm_arenas[name] = {"tflm": {"head": tflm.head, "tail": tflm.tail,
                                           "total": tflm.total},
                                  "ours": ours.to_json()}


def output_files(*, conv: Conversion) -> dict[str, bytes]:
    """Every output file of a finished conversion: name -> bytes."""
    figures = report_figures(conv=conv)
    files = {
        conv.model_file: conv.model_bytes,
        f"{conv.stem}_op_resolver.h": conv.header.encode("utf-8"),
        f"{conv.stem}_model_data.h": model_data_header(
            stem=conv.stem, size=len(conv.model_bytes)).encode("utf-8"),
        f"{conv.stem}_model_data.cc": model_data_source(
            stem=conv.stem, data=conv.model_bytes).encode("utf-8"),
        "report.json": json_bytes(data=conversion_report(conv=conv)),
        "report.md": conversion_markdown(conv=conv, figures=tuple(figures)).encode("utf-8"),
        "patch_candidates.json": json_bytes(data=[c.to_json() for c in
                                                  conv.patch_plan.candidates]),
        **figures,
    }
    if conv.bitwidth_plan is not None:
        files[f"{conv.stem}.bitwidth_plan.json"] = json_bytes(data=conv.bitwidth_plan.to_dict())
    return files


def write_outputs(conv: Conversion) -> None:
    if conv.options.out_dir is None:   # the Python API: ConversionResult.save writes them
        return
    files = output_files(conv=conv)
    if conv.output is None:   # a step run outside `run_pipeline`
        write_outputs_atomically(directory=conv.options.out_dir, files=files)
    else:   # also removes what an earlier convert left (e.g. a plan of another policy)
        conv.output.commit(files=files, replaces=conv.output_names)


Step = Callable[[Conversion], None]

PIPELINE: tuple[Step, ...] = (
    read_input,            # parse and validate the file (only the reader touches flatbuffers)
    check_int8,            # every policy here is defined for int8-quantized models
    measure_layer_based,   # the baseline figures (whole arena on the target) of the input model
    set_io_types,          # --input-type/--output-type: drop or retype the float I/O ops
    plan_patch_stage,      # split point and grid under the arena budget (or keep layers)
    rewrite_patch_stage,   # run the memory-heavy stage patch by patch, sharing the weights
    verify_equivalence,    # a rewrite must not change numerics: LiteRT (stage-op: reference)
    choose_bitwidths,      # QuantMCU: VDPC -> VDQS; rusci: rules M2/M1; rl: agent (or --plan)
    guard_accuracy,        # --max-accuracy-drop: raise costly sub-byte maps on held-out calibration
    fit_arena,             # quantmcu: peak maps to 4/2 bits until the total arena fits --sram
    target_bitops,         # --bitops-ratio: lower widths until BitOPs reach the requested ratio
    apply_bitwidths,       # packed 4/2-bit maps and filters and the QMCU_* ops that use them
    choose_kernels,        # --kernels: int8 layers on QMCU kernels; predicted instructions
    evaluate_accuracy,     # top-1 before/after on --eval-data (reference executor = TFLM)
    check_budgets,         # final whole-arena and flash figures against the user's budgets
    serialize_outputs,     # model bytes and op resolver header, in memory
    measure_in_tflm,       # the arena the tflite-micro wheel allocates, beside our host64 figure
    write_outputs,         # all output files or none (none when out_dir is None: the API)
)


def _data_label(source) -> str:
    """How the report names evaluation data: the file, or what kind of object it was."""
    if isinstance(source, (str, Path)):
        return f"--eval-data {Path(source).name}"
    return f"eval_data ({type(source).__name__})"


def _data_source(source):
    """A file path as the data readers take it; arrays and iterables as given."""
    return str(source) if isinstance(source, (str, Path)) else source


def _read_text(path: Path, option: str) -> str:
    """A UTF-8 text file of at most MAX_TEXT_BYTES (a plan is a few KB)."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigError(f"{option} {path}: not a regular file")
            data = handle.read(MAX_TEXT_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot be read ({err.strerror})") from err
    if len(data) > MAX_TEXT_BYTES:
        raise ConfigError(f"{option} {path}: larger than {MAX_TEXT_BYTES:,} B, the limit for "
                          "a plan file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{option} {path}: not UTF-8 text (byte {err.start}: "
                          f"{err.reason})") from err


def run_pipeline(*, options: ConvertOptions) -> Conversion:
    conv = Conversion(options=options)
    if options.out_dir is None:
        _run_steps(conv=conv)
        return conv
    with lock_output_directory(directory=options.out_dir) as conv.output:
        _run_steps(conv=conv)
    conv.output = None
    return conv


def _run_steps(*, conv: Conversion) -> None:
    start = time.perf_counter()
    for number, step in enumerate(PIPELINE, start=1):
        if conv.options.step_lines:
            print(f"convert [{number}/{len(PIPELINE)}] {step.__name__.replace('_', ' ')} "
                  f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        step(conv)
