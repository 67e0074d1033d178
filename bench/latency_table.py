"""The latency table (instructions per op on Cortex-M4) and its error against whole models.

Fits one cost line ``per_mac * MACs + per_output * outputs + per_call`` per op kind, shape
class and bit widths, from measured counts, and writes
``tflite_quantmcu/data/latency_cortex_m4.json`` (read by ``tflite_quantmcu.analysis.latency``):

- QMCU kernels: ``bench/data/qmcu_kernels_cortex_m4.json`` (``bench/kernels_cortexm.py
  --record``: every optimized variant on the conv, depthwise and ADD shapes of the bundled
  model and MobileNetV2 w0.35 r144, isolated kernel calls);
- CMSIS-NN's int8 kernels: ``bench/data/cmsis_nn_cortex_m4.json`` (isolated calls, recorded
  from a session check; docs/cmsis_nn_comparison.md);
- TFLite Micro itself (the other builtin ops and the interpreter's cost per op): the per-op
  counts of the *fit* models in ``bench/data/tflm_cortex_m4_models.json``
  (whole-model runs in a real TFLM + CMSIS-NN Cortex-M4 build, recorded from a session check).

Then every recorded model is rebuilt (converted with its recorded options; the sha256 must
match the measured file) and its predicted instructions are printed beside the measured
`Invoke` count. Models marked *check* took no part in the fit.

    python bench/latency_table.py            # fit, write the table, print both tables
    python bench/latency_table.py --no-write # print only
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
TABLE = ROOT / "tflite_quantmcu" / "data" / "latency_cortex_m4.json"
KEY = re.compile(r"(conv|dw) (\d+)x(\d+) s(\d+)x(\d+) (\d+)x(\d+)x(\d+)->(\d+) pads (\d+),(\d+),(\d+),(\d+)")
ADD_KEY = re.compile(r"add (\d+)x(\d+)x(\d+)")
MIN_POINTS_FULL = 6   # fewer points: the first two non-zero features only


def key_work(key: str, *, macs: int):
    """(kind, shape class, Work) of a layer key of kernels_cortexm.py ("add HxWxC": ADD)."""
    from tflite_quantmcu.analysis.latency import Work, _conv_class, conv_work

    m = ADD_KEY.match(key)
    if m is not None:
        h, w, c = (int(g) for g in m.groups())
        return "ADD", "", conv_work(macs=0, in_shape=(1, h, w, c), out_shape=(1, h, w, c))
    m = KEY.match(key)
    if m is None:
        raise ValueError(f"not a layer key: {key!r}")
    kind = "CONV_2D" if m.group(1) == "conv" else "DEPTHWISE_CONV_2D"
    kh, kw, sh, sw, h, w, c_in, c_out, top, bottom, left, right = (int(g) for g in m.groups()[1:])
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    work = conv_work(macs=macs, in_shape=(1, h, w, c_in), out_shape=(1, oh, ow, c_out))
    return kind, _conv_class(kind=kind, kernel=(kh, kw), stride=(sh, sw)), work


FEATURES = ("per_mac", "per_output", "per_input", "per_row", "per_channel", "per_call")
WORK = ("macs", "outputs", "inputs", "rows", "channels")


def fit_line(points: list) -> dict:
    """Least squares of instructions on the work (MACs, outputs, inputs, rows, channels, 1) with
    non-negative coefficients (a negative one is dropped and the rest refitted); with fewer
    than MIN_POINTS_FULL points only the first two non-zero features."""
    columns = [np.array([getattr(w, f) for w, _ in points], dtype=float) for f in WORK]
    columns.append(np.ones(len(points)))
    insns = np.array([n for _, n in points], dtype=float)
    keep = [i for i in range(len(FEATURES)) if columns[i].any()]
    if len(points) < MIN_POINTS_FULL:
        keep = keep[:min(2, len(points))]
    while True:
        a = np.stack([columns[i] for i in keep], axis=1)
        coef, *_ = np.linalg.lstsq(a, insns, rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep = [k for k, c in zip(keep, coef) if c >= 0] or keep[:1]
    line = {n: 0.0 for n in FEATURES}
    for k, c in zip(keep, coef):
        line[FEATURES[k]] = round(float(max(c, 0.0)), 5)
    predicted = sum(line[n] * col for n, col in zip(FEATURES, columns))
    error = float(np.max(np.abs(predicted - insns) / insns))
    return {"line": line, "points": len(points), "max_error": round(error, 4)}


def qmcu_lines(record: dict) -> dict[str, dict]:
    groups: dict[str, list] = {}
    for row in record["rows"]:
        bits = "/".join(str(b) for b in row["bits"])
        kind, shape_class, work = key_work(row["key"], macs=row["macs"])
        key = f"qmcu ADD {bits}" if kind == "ADD" else f"qmcu {kind} {shape_class} {bits}"
        groups.setdefault(key, []).append((work, row["insns"]))
    return {k: fit_line(v) for k, v in sorted(groups.items())}


def cmsis_lines(record: dict) -> dict[str, dict]:
    from tflite_quantmcu.analysis.latency import Work

    groups: dict[str, list] = {}
    for key, row in record["layers"].items():
        if key.endswith(" relu") or key.startswith("avgpool "):
            continue  # AVERAGE_POOL_2D ("avgpool" keys, per output): no line of this table yet
        kind, shape_class, work = key_work(key, macs=row["macs"])
        if kind == "ADD":   # a builtin ADD reads two tensors
            work = Work(outputs=work.outputs, inputs=2 * work.inputs, rows=work.rows,
                        channels=work.channels)
            groups.setdefault("builtin ADD", []).append((work, row["insns"]))
            continue
        groups.setdefault(f"builtin {kind} {shape_class}", []).append((work, row["insns"]))
    return {k: fit_line(v) for k, v in sorted(groups.items())}


# ---- whole models ------------------------------------------------------------------------------

def model_graph(*, entry: dict, work: pathlib.Path):
    """The recorded model rebuilt: the input file, or its convert with the recorded options."""
    from tflite_quantmcu.ir.reader import read_model_bytes

    source = ROOT / entry["input"]
    if not entry.get("convert"):
        data = source.read_bytes()
    else:
        out = work / entry["name"]
        cmd = [sys.executable, "-m", "tflite_quantmcu.cli", "convert", str(source), "--out",
               str(out), *entry["convert"], "--no-tflm"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        data = next(out.glob("*.tflite")).read_bytes()
    same = hashlib.sha256(data).hexdigest() == entry["sha256"]
    return read_model_bytes(data=data, source=entry["name"]), same


def layer_key(*, subgraph, op) -> str | None:
    """The kernels_cortexm.py key of a builtin conv / depthwise / ADD op (None for others)."""
    from tflite_quantmcu.qmcu_options import same_padding

    if op.type == "ADD":
        return "add " + "x".join(str(v) for v in subgraph.tensors[op.outputs[0]].shape[1:])
    if op.type not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return None
    _, h, w, c = subgraph.tensors[op.inputs[0]].shape
    kh, kw = subgraph.tensors[op.inputs[1]].shape[1:3]
    c_out = subgraph.tensors[op.outputs[0]].shape[3]
    o = op.options
    pads = (0, 0, 0, 0)
    if o.padding == 0:  # SAME
        _, top, bottom = same_padding(size=h, kernel=kh, stride=o.strideH, dilation=1)
        _, left, right = same_padding(size=w, kernel=kw, stride=o.strideW, dilation=1)
        pads = (top, bottom, left, right)
    kind = "dw" if op.type == "DEPTHWISE_CONV_2D" else "conv"
    return (f"{kind} {kh}x{kw} s{o.strideH}x{o.strideW} {h}x{w}x{c}->{c_out} pads "
            f"{','.join(map(str, pads))}")


def other_lines(*, models: list[dict], graphs: dict, known: set[str]) -> dict[str, dict]:
    """Lines of the builtin ops without an isolated measurement, from the fit models' per-op
    counts (work units as `op_lines` counts them)."""
    from tflite_quantmcu.analysis.latency import FREE, op_lines

    groups: dict[str, list] = {}
    for entry in models:
        if entry["role"] != "fit":
            continue
        sub = graphs[entry["name"]].main
        for op, measured in zip(sub.operators, entry["ops"]):
            keys, work = op_lines(subgraph=sub, op=op)
            if op.type in FREE or keys[0] in known or keys[0].startswith("qmcu"):
                continue
            groups.setdefault(keys[0], []).append((work, measured["insns"]))
    return {k: fit_line(v) for k, v in sorted(groups.items())}


def interpreter_cost(models: list[dict]) -> float:
    """Instructions per op outside the per-op regions: (Invoke - sum of ops) / ops, fit models."""
    rates = [(m["invoke_insns"] - sum(o["insns"] for o in m["ops"])) / len(m["ops"])
             for m in models if m["role"] == "fit"]
    return round(float(np.mean(rates)), 1)


def build_table(*, graphs: dict, models: list[dict]) -> dict:
    qmcu = json.loads((DATA / "qmcu_kernels_cortex_m4.json").read_text())
    cmsis = json.loads((DATA / "cmsis_nn_cortex_m4.json").read_text())
    lines = {**cmsis_lines(cmsis), **qmcu_lines(qmcu)}
    for entry in lines.values():
        entry["source"] = "isolated kernel calls"
    for key, entry in other_lines(models=models, graphs=graphs, known=set(lines)).items():
        entry["source"] = "TFLM per-op counts of the fit models"
        lines[key] = entry
    elementwise = [e["line"]["per_output"] for k, e in lines.items()
                   if k in ("builtin PAD", "builtin STRIDED_SLICE", "builtin CONCATENATION")]
    return {
        "what": "Cortex-M4 instructions per op call: per_mac * MACs + per_output * outputs + "
                "per_call, plus per_op for the interpreter; written by bench/latency_table.py",
        "target": "cortex-m4",
        "sources": {"qmcu": "bench/data/qmcu_kernels_cortex_m4.json",
                    "cmsis_nn": f"bench/data/cmsis_nn_cortex_m4.json ({cmsis['commit'][:8]})",
                    "tflm": "bench/data/tflm_cortex_m4_models.json"},
        "per_op": interpreter_cost(models) if models else 0.0,
        "fallback_per_output": round(float(np.mean(elementwise)) if elementwise else 10.0, 3),
        "lines": lines,
    }


def check_rows(*, graphs: dict, models: list[dict], same: dict, table) -> list[str]:
    from tflite_quantmcu.analysis.latency import predict_instructions

    rows = ["| model | role | measured Invoke | predicted | error | unmodelled ops |",
            "|---|---|---:|---:|---:|---|"]
    for entry in models:
        estimate = predict_instructions(graph=graphs[entry["name"]], table=table)
        measured = entry["invoke_insns"]
        note = "" if same[entry["name"]] else " (rebuilt model differs from the measured one)"
        rows.append(f"| {entry['name']}{note} | {entry['role']} | {measured:,} | "
                    f"{estimate.total:,} | {100 * (estimate.total - measured) / measured:+.1f} % | "
                    f"{', '.join(estimate.unmodelled) or '-'} |")
    return rows


def line_rows(table: dict) -> list[str]:
    rows = ["| line | per MAC | per output | per input | per row | per channel | per call | "
            "points | max fit error | source |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, e in table["lines"].items():
        line = e["line"]
        rows.append(f"| {key} | {line['per_mac']:.4f} | {line['per_output']:.3f} | "
                    f"{line['per_input']:.3f} | {line['per_row']:.2f} | {line['per_channel']:.1f} | "
                    f"{line['per_call']:,.0f} | {e['points']} | {100 * e['max_error']:.1f} % | "
                    f"{e['source']} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the table file")
    args = parser.parse_args(argv)
    from tflite_quantmcu.analysis.latency import LatencyTable

    recorded = json.loads((DATA / "tflm_cortex_m4_models.json").read_text())
    models = recorded["models"]
    if not TABLE.exists():   # convert reads a table (its report); the model does not depend on it
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(json.dumps(build_table(graphs={}, models=[]), indent=1) + "\n")
    graphs, same = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in models:
            graphs[entry["name"]], same[entry["name"]] = model_graph(entry=entry,
                                                                     work=pathlib.Path(tmp))
    table = build_table(graphs=graphs, models=models)
    if not args.no_write:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"Latency table (cortex-m4): interpreter {table['per_op']} instructions per op\n")
    print("\n".join(line_rows(table)))
    print(f"\nWhole models: {recorded['build']}\n")
    print("\n".join(check_rows(graphs=graphs, models=models, same=same,
                               table=LatencyTable.from_dict(table))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
