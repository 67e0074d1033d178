"""The latency table (instructions per op on Cortex-M4) and its error against whole models.

Fits one cost line ``per_mac * MACs + per_output * outputs + per_call`` per op kind, shape
class and bit widths, from measured counts, and writes
``tflite_quantmcu/data/latency_cortex_m4.json`` (read by ``tflite_quantmcu.analysis.latency``):

- QMCU kernels: ``bench/data/qmcu_kernels_cortex_m4.json`` (``bench/kernels_cortexm.py
  --record``: every optimized variant on the conv, depthwise and ADD shapes of the bundled
  model and MobileNetV2 w0.35 r144, isolated kernel calls);
- CMSIS-NN's int8 kernels: ``bench/data/cmsis_nn_cortex_m4.json`` (isolated calls, recorded
  from a session check; docs/cmsis_nn_comparison.md);
- TFLite Micro itself (the other builtin ops, the per-op cost of the interpreter and of the
  kernel wrappers): the per-op counts of the *fit* models in ``bench/data/tflm_cortex_m4_models.json``
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
MIN_POINTS_FULL = 4   # fewer points: fit per_mac (or per_output) alone


def conv_key_parts(key: str) -> tuple[str, str, int]:
    """(kind, shape class, outputs) of a layer key of kernels_cortexm.py."""
    m = KEY.match(key)
    if m is None:
        raise ValueError(f"not a layer key: {key!r}")
    kind = "CONV_2D" if m.group(1) == "conv" else "DEPTHWISE_CONV_2D"
    kh, kw, sh, sw, h, w, _, c_out, top, bottom, left, right = (int(g) for g in m.groups()[1:])
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    from tflite_quantmcu.analysis.latency import _conv_class
    return kind, _conv_class(kind=kind, kernel=(kh, kw), stride=(sh, sw)), oh * ow * c_out


def fit_line(points: list[tuple[int, int, int]]) -> dict:
    """Least squares of insns on (MACs, outputs, 1) with non-negative coefficients (a
    negative one is dropped and the rest refitted); few points: one rate only."""
    macs = np.array([p[0] for p in points], dtype=float)
    outs = np.array([p[1] for p in points], dtype=float)
    insns = np.array([p[2] for p in points], dtype=float)
    names = ["per_mac", "per_output", "per_call"]
    columns = [macs, outs, np.ones_like(macs)]
    keep = [i for i in range(3) if columns[i].any()]
    if len(points) < MIN_POINTS_FULL:
        keep = keep[:1]
    while True:
        a = np.stack([columns[i] for i in keep], axis=1)
        coef, *_ = np.linalg.lstsq(a, insns, rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep = [k for k, c in zip(keep, coef) if c >= 0] or keep[:1]
    line = {n: 0.0 for n in names}
    for k, c in zip(keep, coef):
        line[names[k]] = round(float(max(c, 0.0)), 4)
    predicted = sum(line[n] * col for n, col in zip(names, columns))
    error = float(np.max(np.abs(predicted - insns) / insns))
    return {"line": line, "points": len(points), "max_error": round(error, 4)}


def qmcu_lines(record: dict) -> dict[str, dict]:
    groups: dict[str, list] = {}
    for row in record["rows"]:
        bits = "/".join(str(b) for b in row["bits"])
        if row["key"].startswith("add "):
            key = f"qmcu ADD {bits}"
        else:
            kind, shape_class, _ = conv_key_parts(row["key"])
            key = f"qmcu {kind} {shape_class} {bits}"
        groups.setdefault(key, []).append((row["macs"], row["outputs"], row["insns"]))
    return {k: fit_line(v) for k, v in sorted(groups.items())}


def cmsis_lines(record: dict) -> dict[str, dict]:
    groups: dict[str, list] = {}
    for key, row in record["layers"].items():
        if key.startswith("add "):
            groups.setdefault("builtin ADD", []).append((0, row["macs"], row["insns"]))
            continue
        if key.endswith(" relu"):
            continue
        kind, shape_class, outputs = conv_key_parts(key)
        groups.setdefault(f"builtin {kind} {shape_class}", []).append(
            (row["macs"], outputs, row["insns"]))
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


def wrapper_costs(*, models: list[dict], graphs: dict, lines: dict[str, dict]) -> dict[str, float]:
    """Per-call instructions TFLM adds around a kernel (its Eval, the glue), by line prefix:
    median over the fit models' ops of (measured op - isolated-kernel line)."""
    from tflite_quantmcu.analysis.latency import LatencyTable, op_lines

    table = LatencyTable.from_dict({"target": "cortex-m4", "per_op": 0, "fallback_per_output": 0,
                                    "lines": lines})
    gaps: dict[str, list[float]] = {}
    for entry in models:
        if entry["role"] != "fit":
            continue
        sub = graphs[entry["name"]].main
        for op, measured in zip(sub.operators, entry["ops"]):
            keys, macs, outputs = op_lines(subgraph=sub, op=op)
            key = next((k for k in keys if k in table.lines), None)
            if key is None:
                continue
            family = "qmcu" if key.startswith("qmcu") else "builtin"
            gaps.setdefault(family, []).append(
                measured["insns"] - table.lines[key].cost(macs=macs, outputs=outputs))
    return {k: float(np.median(v)) for k, v in gaps.items()}


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
            keys, macs, outputs = op_lines(subgraph=sub, op=op)
            if op.type in FREE or keys[0] in known or keys[0].startswith("qmcu"):
                continue
            groups.setdefault(keys[0], []).append((macs, outputs, measured["insns"]))
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
    wrappers = wrapper_costs(models=models, graphs=graphs, lines=lines)
    for key, entry in lines.items():
        family = "qmcu" if key.startswith("qmcu") else "builtin"
        entry["line"]["per_call"] = round(entry["line"]["per_call"] + wrappers.get(family, 0.0), 1)
        entry["source"] = "isolated kernel calls + TFLM wrapper"
    for key, entry in other_lines(models=models, graphs=graphs, known=set(lines)).items():
        entry["source"] = "TFLM per-op counts of the fit models"
        lines[key] = entry
    elementwise = [e["line"]["per_output"] for k, e in lines.items()
                   if k in ("builtin PAD", "builtin STRIDED_SLICE", "builtin CONCATENATION")]
    return {
        "what": "Cortex-M4 instructions per op call: per_mac * MACs + per_output * outputs + "
                "per_call, plus per_op for the interpreter; written by bench/latency_table.py",
        "target": "cortex-m4",
        "sources": {"qmcu": qmcu["what"][:80] + "...", "cmsis_nn_commit": cmsis["commit"],
                    "tflm": models[0]["build"]},
        "per_op": interpreter_cost(models),
        "wrapper_per_call": {k: round(v, 1) for k, v in wrappers.items()},
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
    rows = ["| line | per MAC | per output | per call | points | max fit error | source |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for key, e in table["lines"].items():
        line = e["line"]
        rows.append(f"| {key} | {line['per_mac']:.4f} | {line['per_output']:.3f} | "
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
    graphs, same = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in models:
            graphs[entry["name"]], same[entry["name"]] = model_graph(entry=entry,
                                                                     work=pathlib.Path(tmp))
    table = build_table(graphs=graphs, models=models)
    if not args.no_write:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"Latency table (cortex-m4): interpreter {table['per_op']} instructions per op, "
          f"wrapper per call {table['wrapper_per_call']}\n")
    print("\n".join(line_rows(table)))
    print(f"\nWhole models: {recorded['build']}\n")
    print("\n".join(check_rows(graphs=graphs, models=models, same=same,
                               table=LatencyTable.from_dict(table))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
