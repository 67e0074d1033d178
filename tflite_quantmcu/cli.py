"""The `tflite-quantmcu` command line.

Every failure the user can cause prints one line `error: ...` and exits 2.
Ctrl-C (SIGINT) or SIGTERM print `error: interrupted ...` and exit 128 + the signal
number (130, 143); outputs are all or nothing either way (`output_files`).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from tflite_quantmcu import __version__
from tflite_quantmcu.analysis.model_analysis import ModelAnalysis, analyze_model, arena_bytes
from tflite_quantmcu.analysis.tflm_tail import DEFAULT_TARGET, TARGETS
from tflite_quantmcu.io_types import IO_TYPES
from tflite_quantmcu.patches.plan import PATCH_FORMS
from tflite_quantmcu.patches.planner import OBJECTIVES
from tflite_quantmcu.pipeline import POLICIES, Conversion, ConvertOptions, run_pipeline
from tflite_quantmcu.errors import ConfigError, QuantMCUError, UnsupportedModelError
from tflite_quantmcu.quant.calibration_data import parse_normalization
from tflite_quantmcu.quant.kernel_choice import KERNEL_CHOICES
from tflite_quantmcu.quant.quantmcu_policy import DEFAULT_RANGE_RULES, QuantMCUOptions
from tflite_quantmcu.quant.ranges import RANGE_RULES
from tflite_quantmcu.quant.rl_policy import RlOptions
from tflite_quantmcu.ir.reader import read_model_file
from tflite_quantmcu.model_checks import require_int8
from tflite_quantmcu.bridge_export import export_bridge
from tflite_quantmcu.output_files import write_bytes_atomically, write_json_atomically
from tflite_quantmcu.run_model import RUNTIMES, RunOptions, agreement, outputs_file_bytes, run_model
from tflite_quantmcu.report_text import percent, short_name
from tflite_quantmcu.runtimes.tflm import measure_arena
from tflite_quantmcu.sizes import format_size, parse_size

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_SIGNAL_BASE = 128


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that cleanup runs (`finally`, context managers)."""

    signum = signal.SIGTERM


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the block (main thread only: Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tflite-quantmcu",
        description="Make int8 TFLite models fit and run fast on microcontrollers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    analyze = commands.add_parser("analyze", help="per-layer memory, MACs and BitOPs of a model")
    analyze.add_argument("model", help="int8 .tflite model")
    analyze.add_argument("--json", metavar="OUT.json", help="also write the figures as JSON")
    analyze.add_argument("--tflm", action="store_true",
                         help="also measure the arena in the tflite-micro wheel (host64) "
                              "and compare")
    _add_target(analyze)
    _add_convert_parser(commands)
    _add_run_parser(commands)
    bridge = commands.add_parser("bridge", help="export the C kernels and TFLite Micro glue "
                                                "(cmixnn_bridge/) for a firmware")
    bridge.add_argument("--out", required=True, metavar="DIR",
                        help="writes DIR/cmixnn_bridge/")
    return parser


def _add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="run a model (builtin and QMCU ops) on data")
    run.add_argument("model", help=".tflite model, e.g. one that convert wrote")
    run.add_argument("--data", required=True, metavar="FILE",
                     help="inputs: .npy, .npz (x[, y] labels) or a directory of images")
    run.add_argument("--compare", metavar="ORIGINAL.tflite",
                     help="also run this model (the one converted from) and report agreement")
    run.add_argument("--runtime", default="reference", choices=RUNTIMES,
                     help="reference (numpy, bit-exact with TFLite Micro; default) or tflm "
                          "(the tflite-micro wheel; builtin ops only)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    run.add_argument("--save", metavar="OUT.npy",
                     help="write the outputs: .npy (one output) or .npz (output_0, ...)")


def _add_target(parser) -> None:
    parser.add_argument("--target", default=DEFAULT_TARGET, choices=tuple(TARGETS),
                        help="TFLite Micro build whose whole arena (head + tail) is counted: "
                             "cortex-m (32-bit MCU, default) or host64 (the tflite-micro "
                             "Python wheel)")


def _add_convert_parser(commands) -> None:
    convert = commands.add_parser("convert", help="rewrite a model to fit an MCU budget")
    convert.add_argument("model", help="int8 .tflite model")
    convert.add_argument("--out", required=True, metavar="DIR", help="output directory")
    convert.add_argument("--sram", required=True,
                         help="SRAM budget for TFLite Micro's whole arena, e.g. 256KB")
    convert.add_argument("--flash", help="flash budget, e.g. 1MB")
    convert.add_argument("--policy", default="quantmcu", choices=POLICIES,
                         help="quantmcu (default): patches + VDPC/VDQS sub-byte feature maps; "
                              "patch-int8: patches only; rusci: Rusci et al.'s memory-driven "
                              "rules (activations for --sram, weights for --flash), "
                              "layer-based; rl: a policy-gradient agent picks 8/4/2-bit "
                              "weights and activations per layer under --sram/--flash")
    convert.add_argument("--calibration", metavar="FILE",
                         help="calibration data: .npy, .npz (x[, y]) or a directory of images")
    convert.add_argument("--calibration-limit", type=int, metavar="N",
                         help="use only the first N calibration samples")
    convert.add_argument("--eval-data", metavar="FILE",
                         help=".npz with x and y: report top-1 of the int8 and the final model")
    convert.add_argument("--input-mean", metavar="M[,M,...]",
                         help="with --input-std: uint8 pixels (and float data) become "
                              "(value - mean) / std before quantization; one value or one per "
                              "channel (default for uint8 pixels: mean 0, std 255)")
    convert.add_argument("--input-std", metavar="S[,S,...]",
                         help="see --input-mean, e.g. --input-mean 127.5 --input-std 127.5")
    convert.add_argument("--plan", metavar="PLAN.json",
                         help="replay a saved bit-width plan instead of searching")
    convert.add_argument("--phi", type=float, default=0.96, help="VDPC central mass (0.96)")
    convert.add_argument("--lambda", dest="lam", type=float, default=0.6,
                         help="VDQS accuracy weight (0.6)")
    convert.add_argument("--bins", type=int, default=16, help="VDQS entropy bins k (16)")
    convert.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="PTS",
                         help="accuracy guard: after the search, raise the costliest sub-byte "
                              "maps to int8 until top-1 on held-out calibration samples is at "
                              "most PTS points below int8 (1.0)")
    convert.add_argument("--no-accuracy-guard", action="store_true",
                         help="keep the searched plan whatever its accuracy")
    convert.add_argument("--bitops-ratio", type=float, default=None, metavar="R",
                         help="after the search (and guard), lower feature-map and filter "
                              "widths until BitOPs are R x below patch-int8 (a start for QAT "
                              "fine-tuning, "
                              "see docs/qat.md; the accuracy guard is not rerun)")
    convert.add_argument("--range-rules", default=",".join(DEFAULT_RANGE_RULES), metavar="RULES",
                         help="sub-byte range rules to choose among per map, comma-separated "
                              f"(of {','.join(RANGE_RULES)}; default "
                              f"{','.join(DEFAULT_RANGE_RULES)}; 'full' alone = the whole int8 "
                              "range)")
    convert.add_argument("--no-search-tail", action="store_true",
                         help="search only the patch branches; layers after the patch stage "
                              "stay 8-bit")
    convert.add_argument("--rl-episodes", type=int, default=30, metavar="N",
                         help="--policy rl: episodes of the search (30)")
    convert.add_argument("--rl-seed", type=int, default=0, help="--policy rl: seed (0)")
    convert.add_argument("--patch-grid", metavar="RxC", help="force the patch grid, e.g. 4x4")
    convert.add_argument("--split-after", metavar="OP",
                         help="force the last op of the patch stage: its index or output tensor name")
    convert.add_argument("--max-mac-overhead", type=float, metavar="FRACTION",
                         help="cap on redundant MACs, e.g. 0.2 for +20 %%")
    convert.add_argument("--objective", default="min-macs", choices=OBJECTIVES,
                         help="min-macs (default): the patch plan that fits with the fewest "
                              "extra MACs; min-memory: the smallest arena; min-latency: the "
                              "fewest predicted Cortex-M4 instructions (latency model), and "
                              "--policy quantmcu weighs predicted instructions instead of "
                              "BitOPs when it picks bit widths")
    convert.add_argument("--kernels", default=None, choices=KERNEL_CHOICES,
                         help="int8 layers: builtin (the default) keeps builtin ops (CMSIS-NN "
                              "on Cortex-M); qmcu runs every conv/depthwise/ADD/pool on its QMCU "
                              "kernel; fastest only where the latency model predicts fewer "
                              "instructions (the default with --objective min-latency; the "
                              "report gives each choice's cost)")
    convert.add_argument("--patch-form", default=None, choices=PATCH_FORMS,
                         help="builtin (default): per-patch builtin ops, any TFLite Micro; "
                              "stage-op: the stage as one QMCU_PATCH_STAGE op (link "
                              "cmixnn_bridge); auto: the lower total arena. Unset, quantmcu "
                              "screens both forms where no int8 plan fits --sram")
    convert.add_argument("--max-file-growth", type=float, default=0.05, metavar="FRACTION",
                         help="cap on the growth of the .tflite file by patching (0.05)")
    convert.add_argument("--input-type", default="keep", choices=IO_TYPES,
                         help="model input type: keep (default), int8 (drop the float "
                              "QUANTIZE), uint8")
    convert.add_argument("--output-type", default="keep", choices=IO_TYPES,
                         help="model output type: keep (default), int8 (drop the float "
                              "DEQUANTIZE), uint8")
    _add_target(convert)
    convert.add_argument("--no-verify", action="store_true",
                         help="skip the LiteRT equivalence check of the rewrite")
    convert.add_argument("--no-tflm", action="store_true",
                         help="do not measure the arenas in the tflite-micro wheel")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {"analyze": _analyze, "convert": _convert, "run": _run, "bridge": _bridge}
    try:
        with _sigterm_as_interrupt():
            return commands[args.command](args)
    except QuantMCUError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"error: interrupted by {signal.Signals(signum).name}; outputs are written "
              "whole or not at all", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signum
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `analyze ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 (the one last-resort handler: never a traceback)
        print(f"error: internal: {type(err).__name__}: {err} (please report this with the "
              f"model)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _run(args: argparse.Namespace) -> int:
    options = RunOptions(runtime=args.runtime, limit=args.limit, progress=sys.stderr.isatty())
    graph = read_model_file(path=args.model)
    result = run_model(graph=graph, data=args.data, options=options)
    lines = [f"model: {Path(args.model).name}  samples: {result.samples}  runtime: "
             f"{args.runtime}"]
    if result.top1 is not None:
        lines.append(f"top-1: {result.top1 * 100:.2f} %")
    if args.compare:
        original = run_model(graph=read_model_file(path=args.compare), data=args.data,
                             options=options)
        match = agreement(converted=result, original=original)
        lines.append(f"vs {Path(args.compare).name}: {match.identical_samples}/{match.samples} "
                     f"samples bit-identical, top-1 agreement {match.top1_agreement * 100:.2f} %,"
                     f" largest output difference {match.max_abs_difference}")
        if original.top1 is not None:
            lines.append(f"top-1 of {Path(args.compare).name}: {original.top1 * 100:.2f} %")
    if args.save:
        write_bytes_atomically(data=outputs_file_bytes(run=result,
                                                       path_suffix=Path(args.save).suffix),
                               path=args.save)
        lines.append(f"wrote {args.save}")
    print("\n".join(lines))
    return 0


def _bridge(args: argparse.Namespace) -> int:
    target = export_bridge(out_dir=args.out)
    print(f"wrote {target}/ (C99 kernels, TFLite Micro glue, docs/qmcu_ops.md)")
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. too few calibration samples) as one `warning: ...` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def _analyze(args: argparse.Namespace) -> int:
    graph = read_model_file(path=args.model)
    require_int8(graph=graph, source=args.model)
    result = analyze_model(graph=graph, target=args.target)
    print(format_analysis(analysis=result, title=Path(args.model).name))
    if args.tflm or result.arena.lower_bound:
        _print_tflm_comparison(model_path=args.model, analysis=result)
    if args.json:
        write_json_atomically(data=result.to_json(), path=args.json)
        print(f"wrote {args.json}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    options = ConvertOptions(
        model_path=Path(args.model), out_dir=Path(args.out),
        sram_budget=parse_size(text=args.sram, option="--sram"),
        flash_budget=parse_size(text=args.flash, option="--flash") if args.flash else None,
        policy=args.policy, patch_grid=_parse_grid(args.patch_grid),
        split_after=_parse_split(args.split_after),
        max_mac_overhead=args.max_mac_overhead, verify=not args.no_verify,
        measure_tflm=not args.no_tflm,
        calibration=Path(args.calibration) if args.calibration else None,
        calibration_limit=args.calibration_limit,
        eval_data=Path(args.eval_data) if args.eval_data else None,
        input_normalization=parse_normalization(mean=args.input_mean, std=args.input_std),
        plan_path=Path(args.plan) if args.plan else None,
        quantmcu=QuantMCUOptions(phi=args.phi, lam=args.lam, bins=args.bins,
                                 search_tail=not args.no_search_tail,
                                 range_rules=_parse_rules(args.range_rules)),
        max_accuracy_drop=None if args.no_accuracy_guard else args.max_accuracy_drop,
        bitops_ratio=args.bitops_ratio,
        progress=sys.stderr.isatty(), step_lines=not sys.stderr.isatty(),
        target=args.target, objective=args.objective,
        max_file_growth=args.max_file_growth, input_type=args.input_type,
        output_type=args.output_type, patch_form=args.patch_form, kernels=args.kernels,
        rl=RlOptions(episodes=args.rl_episodes, seed=args.rl_seed))
    with warnings.catch_warnings():   # restores warnings.showwarning on exit
        warnings.showwarning = _print_warning
        result = run_pipeline(options=options)
    print(format_conversion(conv=result))
    return 0


_GRID = re.compile(r"([0-9]{1,4})[xX]([0-9]{1,4})", re.ASCII)
_OP_INDEX = re.compile(r"#?([0-9]{1,9})", re.ASCII)


def _parse_grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = _GRID.fullmatch(text)
    if match is None or 0 in (int(match.group(1)), int(match.group(2))):
        raise ConfigError(f"--patch-grid: cannot read {text!r}; expected ROWSxCOLS of ASCII "
                          "digits, 1 to 9999 each, such as 4x4")
    return int(match.group(1)), int(match.group(2))


def _parse_rules(text: str) -> tuple[str, ...]:
    rules = tuple(r.strip() for r in text.split(",") if r.strip())
    if not rules or any(r not in RANGE_RULES for r in rules) or len(set(rules)) != len(rules):
        raise ConfigError(f"--range-rules: expected distinct names from {','.join(RANGE_RULES)}, "
                          f"got {text!r}")
    return rules


def _parse_split(text: str | None) -> int | str | None:
    """An op index (`12` or `#12`, ASCII digits) or else an output tensor name."""
    if text is None:
        return None
    match = _OP_INDEX.fullmatch(text)
    return int(match.group(1)) if match else text


def format_conversion(*, conv: Conversion) -> str:
    """The summary `convert` prints."""
    plan = conv.patch_plan
    lines = [f"model: {conv.options.model_path.name}  policy: {conv.options.policy}"]
    if plan.is_patched:
        lines.append(f"patch stage: ops #0..#{plan.split_op} (ends at {short_name(plan.split_tensor)}), "
                     f"grid {plan.grid[0]}x{plan.grid[1]}, redundant MACs "
                     f"{plan.redundant_macs:,} ({percent(plan.mac_overhead)})")
    before, after = conv.layer_based.arena, conv.final.arena
    bound = " (lower bound)" if after.lower_bound else ""
    lines.append(f"arena ({after.target}): layer-based {before.total:,} B -> "
                 f"{after.total:,} B{bound} = head {after.head:,} + tail {after.tail:,} "
                 f"(budget {conv.options.sram_budget:,} B)")
    wheel = conv.tflm_arenas
    if wheel.get("patch_based") is not None and wheel.get("layer_based") is not None:
        lines.append(f"tflite-micro wheel (host64) arena: {wheel['layer_based']['tflm']['total']:,}"
                     f" B -> {wheel['patch_based']['tflm']['total']:,} B (patch int8)")
    lines.append(f"MACs: {conv.layer_based.macs:,} -> {conv.final.macs:,}")
    if conv.latency is not None:
        lines.append(f"predicted {conv.latency['target']} instructions (TFLite Micro + CMSIS-NN): "
                     f"layer-based {conv.latency['layer_based']['instructions']:,}, patch-based "
                     f"{conv.latency['patch_based']['instructions']:,}, final "
                     f"{conv.latency['final']['instructions']:,} (--kernels "
                     f"{conv.options.kernel_mode})")
    lines.append(f"BitOPs: layer-based {conv.layer_based.bitops:,}, patch int8 "
                 f"{conv.patched_analysis.bitops:,}, final {conv.final.bitops:,}")
    if conv.bitwidth_plan is not None:
        counts = {b: sum(1 for v in conv.bitwidth_plan.bits.values() if v == b) for b in (8, 4, 2)}
        lines.append(f"feature maps: {counts[8]} at 8 bits, {counts[4]} at 4, {counts[2]} at 2")
    if conv.search is not None:
        classes = conv.search.to_dict()["class_counts"]
        lines.append(f"VDPC: {classes['outlier']} outlier / {classes['non_outlier']} non-outlier "
                     f"branches; search {conv.search.search_time_s:.2f} s")
    if conv.seed_search is not None:
        lines.append(f"{conv.options.policy} search: {conv.seed_search.search_time_s:.2f} s")
    if conv.accuracy:
        lines.append(f"top-1: int8 {conv.accuracy['int8'] * 100:.2f} %, final "
                     f"{conv.accuracy['final'] * 100:.2f} %")
    guard = None if conv.bitwidth_plan is None else conv.bitwidth_plan.guard
    if guard is not None:
        lines.append(f"accuracy guard: drop {guard['drop_before_pts']:.2f} -> "
                     f"{guard['drop_pts']:.2f} pt (bound {guard['bound_pts']:g}) on "
                     f"{guard['samples']} held-out calibration samples, "
                     f"{len(guard['raised'])} maps raised to int8")
    lines += [f"note: {note}" for note in conv.notes]
    plan_file = f", {conv.stem}.bitwidth_plan.json" if conv.bitwidth_plan is not None else ""
    lines.append(f"wrote {conv.options.out_dir}/{conv.model_file}, {conv.stem}_op_resolver.h, "
                 f"{conv.stem}_model_data.h/.cc, report.json{plan_file}")
    return "\n".join(lines)


def _print_tflm_comparison(*, model_path: str, analysis: ModelAnalysis) -> None:
    try:
        tflm = measure_arena(model_bytes=Path(model_path).read_bytes())
    except UnsupportedModelError as err:
        print(f"tflite-micro wheel arena: not measured ({err})")
        return
    ours = arena_bytes(graph=read_model_file(path=model_path), target="host64")
    print(f"tflite-micro wheel (host64) arena: head {tflm.head} + tail {tflm.tail} = "
          f"{tflm.total} B; ours for host64: {ours.head} + {ours.tail} = {ours.total} B")
    if analysis.arena.lower_bound:
        print("  ours leaves out the scratch or persistent data of: "
              + ", ".join(analysis.arena.unmodelled)
              + " (no model of what these kernels allocate)")


def format_analysis(*, analysis: ModelAnalysis, title: str) -> str:
    """The per-layer table and totals printed by `analyze`."""
    header = f"{'#':>4} {'op':<24} {'output shape':<18} {'bytes':>9} {'MACs':>12} " \
             f"{'live B':>9} {'arena end':>10}"
    lines = [f"model: {title}", header, "-" * len(header)]
    for layer in analysis.layers:
        mark = " <- peak" if layer.index == analysis.peak_op else ""
        shape = "x".join(str(d) for d in layer.output_shape)
        lines.append(f"{layer.index:>4} {layer.op:<24} {shape:<18} {layer.output_bytes:>9} "
                     f"{layer.macs:>12} {layer.live_bytes:>9} {layer.arena_end_bytes:>10}{mark}")
    arena = analysis.arena
    bound = " (LOWER BOUND: " + ", ".join(arena.unmodelled) + " not modelled)" \
        if arena.lower_bound else ""
    lines += [
        "-" * len(header),
        f"arena ({arena.target}): {arena.total} B ({format_size(arena.total)}){bound}",
        *(["  the larger of TFLM's kernel builds: " + ", ".join(
            f"{k} {v} B" for k, v in arena.build_totals.items()) + f"; below: {arena.kernels}"]
          if len(arena.build_totals) > 1 else []),
        f"  head {arena.head} B (activations and scratch, TFLM greedy plan; peak at op "
        f"#{analysis.peak_op})",
        f"  tail {arena.tail} B (persistent: "
        + ", ".join(f"{k} {v}" for k, v in arena.tail_parts.items()) + ")",
        f"  made by: {', '.join(short_name(t) for t in analysis.peak_tensors)}",
        f"flash (model file): {analysis.flash_bytes} B ({format_size(analysis.flash_bytes)}), "
        f"weights {analysis.weight_bytes} B",
        f"MACs: {analysis.macs:,}   BitOPs: {analysis.bitops:,}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
