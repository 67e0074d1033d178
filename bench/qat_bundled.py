"""PTQ vs quantization-aware fine-tuning (QAT) of the bundled model at several BitOPs ratios.

    python3 bench/qat_bundled.py                        # defaults below
    python3 bench/qat_bundled.py --ratios 2.2 --train-images 9600

Keras source: ``testdata/make_bundled_model.py``'s ``build_model`` with the weights of the
committed ``fashion_mnv2_r96_int8.tflite`` put back (int8 weights dequantized into the convs,
the folded BN bias into the BN's beta, BN set to identity; BN stays frozen while
fine-tuning). Retraining from scratch (10-17 min on 2 idle cores) was not affordable on
the shared machine; this gives the same network in seconds.

Per ratio: the plan is ``plan_for_bitops_ratio`` from all-int8 (greedy, BitOPs relative to
the patched int8 model; feature maps and filters, ``--greedy four-bits-first`` by default:
every allowed 8 -> 4 step before any 4 -> 2 step; ``--activations-only``: maps only).
PTQ = that plan applied to the int8 conversion (sub-byte maps on the whole int8 range, rule
``full``; filters cut by ``weight_cuts``' per-channel MSE clip); QAT = ``finetune`` from the
same Keras model and plan (learned map ranges, rule ``qat``; fake-quantized filters,
exported as trained), deployed by the convert pipeline. Every top-1 is the deployed integer
model's, by the reference executor (bit-exact with TFLM), on the first ``--test-images``
images of the Fashion-MNIST test set (all 10,000 by default), upscaled ``--eval-batch`` at
a time. Training batches are upscaled on the fly (``UpscaledBatches``). Prints a markdown
table and writes ``build/qat_bundled.png`` (top-1 vs BitOPs ratio, PTQ and QAT).

Runs of one ratio each can go in parallel and be merged into one table::

    python3 bench/qat_bundled.py --ratios 2.2 --json build/r22.json
    python3 bench/qat_bundled.py --ratios 2.0 --skip-int8 --json build/r20.json
    python3 bench/qat_bundled.py --merge build/r22.json,build/r20.json

On a loaded machine the 10,000-image evaluations dominate; ``--stage`` splits one ratio
into processes that can run side by side (same plan, same training, same figures)::

    python3 bench/qat_bundled.py --stage train --ratios 2.2 --train-images 3200
    python3 bench/qat_bundled.py --stage int8 --ratios 2.2 --shard 0/1
    python3 bench/qat_bundled.py --stage ptq --ratios 2.2 --shard 0/2   # and 1/2
    python3 bench/qat_bundled.py --stage qat --ratios 2.2 --shard 0/2   # after train; and 1/2
    python3 bench/qat_bundled.py --stage table --ratios 2.2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "testdata"))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import fashion_mnist  # noqa: E402
import make_bundled_model as bundled  # noqa: E402  (imports TensorFlow)
from tflite_quantmcu.analysis.model_analysis import analyze_model  # noqa: E402
from tflite_quantmcu.api import convert  # noqa: E402
from tflite_quantmcu.errors import ConfigError  # noqa: E402
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file  # noqa: E402
from tflite_quantmcu.keras import (FinetuneOptions, finetune, keras_layer_of,  # noqa: E402
                                   keras_to_int8)
from tflite_quantmcu.quant.bitops_target import plan_bitops, plan_for_bitops_ratio  # noqa: E402
from tflite_quantmcu.quant.evaluate import top1_counts  # noqa: E402
from tflite_quantmcu.quant.plan import BitwidthPlan  # noqa: E402

SRAM = "256KB"
BUNDLED = os.path.join(ROOT, "testdata", bundled.TFLITE_NAME)
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def keras_from_bundled():
    """build_model() with the committed int8 model's weights (module docstring)."""
    keras = bundled.keras
    model = bundled.build_model()
    graph = read_model_file(path=BUNDLED)
    sub = graph.main
    kernels = [layer.name for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                     keras.layers.Dense))]
    for op in sub.operators:
        if op.type not in WEIGHT_OPS:
            continue
        w, b = sub.tensors[op.inputs[1]], sub.tensors[op.inputs[2]]
        name = _kernel_layer(w.name, kernels) if op.type != "FULLY_CONNECTED" else "logits"
        scale = np.asarray(w.quantization.scale, dtype=np.float32)
        wf = w.array().astype(np.float32)
        bias = b.array().astype(np.float64) * np.asarray(b.quantization.scale, dtype=np.float64)
        layer = model.get_layer(name)
        if op.type == "CONV_2D":
            kernel = (wf * scale[:, None, None, None]).transpose(1, 2, 3, 0)
        elif op.type == "DEPTHWISE_CONV_2D":
            kernel = (wf * scale[None, None, None, :])[0][:, :, :, None]
        else:
            kernel = (wf * scale[:, None]).T if scale.size > 1 else (wf * scale[0]).T
            layer.set_weights([kernel, bias.astype(np.float32)])
            continue
        layer.set_weights([kernel])
        bn = model.get_layer(f"{name[:-5]}_bn" if name.endswith("_conv") else f"{name}_bn")
        eps = np.float32(bn.epsilon)
        ones = np.ones(kernel.shape[-2] if op.type == "DEPTHWISE_CONV_2D" else kernel.shape[-1],
                       dtype=np.float32)
        bn.set_weights([ones, bias.astype(np.float32), 0 * ones, ones - eps])
    return model


def _kernel_layer(name: str, kernels: list[str]) -> str:
    for part in name.split(";"):
        try:
            return keras_layer_of(tensor_name=part, layer_names=kernels)
        except ConfigError:
            continue
    raise SystemExit(f"no kernel layer in {name!r}")


def data(*, train_images: int, test_images: int, batch_size: int):
    """Calibration samples, training batches made on the fly (``UpscaledBatches``), and the
    first `test_images` test images (28x28) with labels."""
    train_x, train_y = fashion_mnist.load_split(split="train")
    test_x, test_y = fashion_mnist.load_split(split="test")
    calib_x, _ = bundled.calibration_set(train_x=train_x, train_y=train_y)
    pick = fashion_mnist.stratified_indices(labels=train_y, total=train_images,
                                            seed=bundled.SEED + 7)
    calib = [fashion_mnist.to_model_input(images=calib_x[k:k + 1]) for k in range(len(calib_x))]
    train = bundled.UpscaledBatches(images=train_x[pick], labels=train_y[pick],
                                    batch_size=batch_size, seed=bundled.SEED + 8, shuffle=True)
    return calib, train, (test_x[:test_images], test_y[:test_images])


def top1(*, graph, test, batch: int) -> float:
    """Top-1 of a graph by the reference executor, test images upscaled batch by batch."""
    images, labels = test
    pairs = ((fashion_mnist.to_model_input(images=images[k:k + batch]), labels[k:k + batch])
             for k in range(0, len(labels), batch))
    correct, total = top1_counts(graph=graph, data=pairs, batch_size=batch, progress=False)
    return correct / total


def _counts(*, graph, plan) -> dict:
    """Sub-byte maps and filters of a plan, by width."""
    tensors = graph.main.tensors
    out = {}
    for what, constant in (("maps", False), ("filters", True)):
        widths = [b for k, b in plan.bits.items() if tensors[k].is_constant == constant]
        out[what] = " ".join(f"{widths.count(w)}x{w}b" for w in (4, 2) if widths.count(w)) \
            or "-"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="1.6,2.0,2.2")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--eval-batch", type=int, default=250)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--greedy", choices=("four-bits-first", "saving"),
                        default="four-bits-first",
                        help="plan_for_bitops_ratio's order (four_bits_first or by saving only)")
    parser.add_argument("--activations-only", action="store_true",
                        help="lower feature-map widths only (no weight cuts)")
    parser.add_argument("--skip-int8", action="store_true",
                        help="no int8 evaluation (for runs merged with one that has it)")
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "qat_bundled.json"))
    parser.add_argument("--merge", default=None,
                        help="comma-separated JSON files of earlier runs: print one table")
    parser.add_argument("--stage", choices=("train", "int8", "ptq", "qat", "table"),
                        default=None, help="staged runs for a loaded machine: 'train' fine-tunes "
                        "one ratio and saves the model and plan under --save-dir; 'int8', 'ptq' "
                        "and 'qat' evaluate --shard I/N of the test images; 'table' merges")
    parser.add_argument("--save-dir", default=os.path.join(ROOT, "build", "qat_stages"))
    parser.add_argument("--shard", default="0/1")
    args = parser.parse_args(argv)
    if args.merge:
        return _merge(paths=args.merge.split(","), out=args.json)
    if args.stage is not None:
        return staged(args=args)
    bundled.setup_determinism()
    calib, train, test = data(train_images=args.train_images, test_images=args.test_images,
                              batch_size=args.batch_size)
    model = keras_from_bundled()
    gen = lambda: ([c] for c in calib)  # noqa: E731
    int8 = keras_to_int8(model, samples=calib)
    common = {"measure_tflm": False, "verify": False}
    base = convert(int8, sram=SRAM, policy="patch-int8", **common)
    patched = base.conversion.patched
    reference = plan_bitops(graph=patched, bits={})
    int8_top1 = float("nan") if args.skip_int8 else \
        top1(graph=base.conversion.graph, test=test, batch=args.eval_batch)
    rows = [{"setting": "int8 (patch-int8)", "ratio": 1.0, "ptq": int8_top1, "qat": None,
             "arena": base.report["arena_bytes"]["final"]["total"], "train_s": None,
             "maps": "-", "filters": "-"}]
    print(f"int8 (patch-int8) top-1 {int8_top1:.4f}", flush=True)
    for ratio in [float(r) for r in args.ratios.split(",")]:
        plan = plan_for_bitops_ratio(patched=patched, start=None, ratio=ratio,
                                     weights=not args.activations_only,
                                     four_bits_first=args.greedy == "four-bits-first")
        got = reference / plan_bitops(graph=patched, bits=plan.bits)
        ptq = convert(int8, sram=SRAM, policy="quantmcu", plan=plan,
                      patch_grid=base.conversion.patch_plan.grid,
                      split_after=base.conversion.patch_plan.split_tensor, **common)
        ptq_top1 = top1(graph=ptq.conversion.converted, test=test, batch=args.eval_batch)
        print(f"ratio {ratio:g}: PTQ top-1 {ptq_top1:.4f}", flush=True)
        tuned = finetune(model, plan=plan, train_data=train, epochs=args.epochs,
                         representative_dataset=gen, sram=SRAM,
                         options=FinetuneOptions(learning_rate=args.learning_rate, seed=0),
                         **common)
        qat = tuned.deploy(sram=SRAM, **common)
        written = analyze_model(graph=read_model_bytes(data=qat.model_bytes)).bitops
        row = {"setting": f"ratio {ratio:g}", "ratio": got,
               "ratio_written": analyze_model(graph=qat.conversion.patched).bitops / written,
               "ptq": ptq_top1,
               "qat": top1(graph=qat.conversion.converted, test=test, batch=args.eval_batch),
               "arena": qat.report["arena_bytes"]["final"]["total"],
               "train_s": tuned.train_time_s, **_counts(graph=patched, plan=plan),
               "filters_exact": all(v["values_equal"] for v in tuned.weight_check.values())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    _print_table(rows=rows, args=vars(args))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump({"rows": rows, "args": vars(args)}, handle, indent=1)
    _plot(rows=rows, path=os.path.join(os.path.dirname(args.json), "qat_bundled.png"))
    return 0


def _deploy_settings(base) -> dict:
    return {"measure_tflm": False, "verify": False,
            "patch_grid": base.conversion.patch_plan.grid}


def staged(*, args) -> int:
    """The same measurements as `main`, one ratio, split into processes (module doc)."""
    os.makedirs(args.save_dir, exist_ok=True)
    ratio = float(args.ratios.split(",")[0])
    tag = os.path.join(args.save_dir, f"r{ratio:g}")
    if args.stage == "table":
        return _staged_table(tag=tag, args=args, ratio=ratio)
    bundled.setup_determinism()
    index, count = (int(v) for v in args.shard.split("/"))
    calib, train, test = data(train_images=args.train_images, test_images=args.test_images,
                              batch_size=args.batch_size)
    shard = (test[0][index::count], test[1][index::count])
    model = keras_from_bundled()
    int8 = keras_to_int8(model, samples=calib)
    common = {"measure_tflm": False, "verify": False}
    base = convert(int8, sram=SRAM, policy="patch-int8", **common)
    patched = base.conversion.patched
    if args.stage == "int8":
        graph = base.conversion.graph
    elif args.stage in ("ptq", "train"):
        plan = plan_for_bitops_ratio(patched=patched, start=None, ratio=ratio,
                                     weights=not args.activations_only,
                                     four_bits_first=args.greedy == "four-bits-first")
        if args.stage == "train":
            return _staged_train(tag=tag, args=args, model=model, plan=plan, train=train,
                                 calib=calib, patched=patched)
        graph = convert(int8, sram=SRAM, policy="quantmcu", plan=plan,
                        patch_grid=base.conversion.patch_plan.grid,
                        split_after=base.conversion.patch_plan.split_tensor,
                        **common).conversion.converted
    else:
        info = json.load(open(f"{tag}.train.json"))
        with open(f"{tag}.qat.tflite", "rb") as handle:
            tflite = handle.read()
        plan = BitwidthPlan.from_json(open(f"{tag}.qat.plan.json").read())
        graph = convert(tflite, sram=SRAM, policy="quantmcu", plan=plan,
                        patch_grid=tuple(info["patch_grid"]), split_after=info["split_after"],
                        name="qat.tflite", **common).conversion.converted
    images, labels = shard
    pairs = ((fashion_mnist.to_model_input(images=images[k:k + args.eval_batch]),
              labels[k:k + args.eval_batch]) for k in range(0, len(labels), args.eval_batch))
    correct, total = top1_counts(graph=graph, data=pairs, batch_size=args.eval_batch,
                                 progress=False)
    with open(f"{tag}.{args.stage}.{index}of{count}.json", "w") as handle:
        json.dump({"correct": correct, "total": total}, handle)
    print(f"{args.stage} shard {index}/{count}: {correct}/{total}", flush=True)
    return 0


def _staged_train(*, tag, args, model, plan, train, calib, patched) -> int:
    gen = lambda: ([c] for c in calib)  # noqa: E731
    tuned = finetune(model, plan=plan, train_data=train, epochs=args.epochs,
                     representative_dataset=gen, sram=SRAM,
                     options=FinetuneOptions(learning_rate=args.learning_rate, seed=0),
                     measure_tflm=False, verify=False)
    qat = tuned.deploy(sram=SRAM, measure_tflm=False, verify=False)
    written = analyze_model(graph=read_model_bytes(data=qat.model_bytes)).bitops
    with open(f"{tag}.qat.tflite", "wb") as handle:
        handle.write(tuned.tflite_bytes)
    with open(f"{tag}.qat.plan.json", "w") as handle:
        handle.write(tuned.plan.to_json())
    reference = plan_bitops(graph=patched, bits={})
    info = {"ratio": reference / plan_bitops(graph=patched, bits=plan.bits),
            "ratio_written": analyze_model(graph=qat.conversion.patched).bitops / written,
            "arena": qat.report["arena_bytes"]["final"]["total"],
            "train_s": tuned.train_time_s, **_counts(graph=patched, plan=plan),
            "filters_exact": all(v["values_equal"] for v in tuned.weight_check.values()),
            "patch_grid": list(tuned.patch_grid), "split_after": tuned.split_after,
            "history": tuned.history, "args": vars(args)}
    with open(f"{tag}.train.json", "w") as handle:
        json.dump(info, handle, indent=1)
    print(json.dumps({k: v for k, v in info.items() if k not in ("history", "args")}),
          flush=True)
    return 0


def _staged_table(*, tag, args, ratio) -> int:
    import glob
    info = json.load(open(f"{tag}.train.json"))
    top = {}
    for what in ("int8", "ptq", "qat"):
        parts = [json.load(open(p)) for p in sorted(glob.glob(f"{tag}.{what}.*of*.json"))]
        top[what] = sum(p["correct"] for p in parts) / max(sum(p["total"] for p in parts), 1)
        print(f"{what}: {sum(p['correct'] for p in parts)}/{sum(p['total'] for p in parts)} "
              f"from {len(parts)} shard(s)")
    rows = [{"setting": "int8 (patch-int8)", "ratio": 1.0, "ptq": top["int8"], "qat": None,
             "arena": None, "train_s": None, "maps": "-", "filters": "-"},
            {"setting": f"ratio {ratio:g}", "ratio": info["ratio"], "ptq": top["ptq"],
             "qat": top["qat"], "arena": info["arena"], "train_s": info["train_s"],
             "maps": info["maps"], "filters": info["filters"]}]
    _print_table(rows=rows, args=info["args"])
    print(f"filters exact: {info['filters_exact']}; written model's ratio "
          f"{info['ratio_written']:.3f}x")
    with open(f"{tag}.table.json", "w") as handle:
        json.dump({"rows": rows, "args": info["args"]}, handle, indent=1)
    return 0


def _merge(*, paths, out: str) -> int:
    """One table (and PNG) from several runs' JSON files (the int8 row of the first)."""
    runs = [json.load(open(path)) for path in paths]
    rows = [runs[0]["rows"][0]] + [r for run in runs for r in run["rows"][1:]]
    for run in runs:
        _print_table(rows=[], args=run["args"])
    _print_table(rows=rows, args=None)
    _plot(rows=sorted(rows, key=lambda r: r["ratio"]),
          path=os.path.join(os.path.dirname(out), "qat_bundled.png"))
    return 0


def _print_table(*, rows, args) -> None:
    if args is not None:
        print(f"\ntop-1 on the first {args['test_images']} test images (deployed integer "
              f"model, reference executor); QAT: {args['epochs']} epoch(s) on "
              f"{args['train_images']} training images, batch {args['batch_size']}, Adam lr "
              f"{args['learning_rate']}; plans: {args['greedy']}"
              f"{', activations only' if args['activations_only'] else ''}; "
              f"ratios {args['ratios']}\n")
    if not rows:
        return
    print("| plan | BitOPs below patch-int8 | maps | filters | PTQ top-1 | QAT top-1 "
          "| arena (M4) B | training s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        qat = "-" if r["qat"] is None else f"{100 * r['qat']:.2f} %"
        train = "-" if r["train_s"] is None else f"{r['train_s']:.0f}"
        arena = "-" if r["arena"] is None else r["arena"]
        print(f"| {r['setting']} | {r['ratio']:.3f}x | {r['maps']} | {r.get('filters', '-')} "
              f"| {100 * r['ptq']:.2f} % | {qat} | {arena} | {train} |")


def _plot(*, rows, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ratios = [r["ratio"] for r in rows]
    ax.plot(ratios, [100 * r["ptq"] for r in rows], "o-", label="PTQ (full int8 range)")
    ax.plot(ratios, [100 * (r["qat"] if r["qat"] is not None else r["ptq"]) for r in rows],
            "s-", label="QAT (learned ranges)")
    ax.axhline(100 * rows[0]["ptq"] - 1.0, color="grey", ls="--", lw=0.8, label="int8 - 1 pt")
    ax.set_xlabel("BitOPs below patch-int8 (x)")
    ax.set_ylabel("top-1 (%) deployed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
