"""What one fuzz input does to the tool: the outcome classes of the reader fuzzers.

`run_input` feeds the bytes through the CLI's paths (read + validate, int8 check,
analysis; for some inputs the reference executor on a random sample, for some the
whole `convert` pipeline) and classifies the result:

- `ok`: everything ran (and a converted model loads and runs in LiteRT);
- `typed:<Class>`: one of our errors (tflite_quantmcu.errors), the expected failure;
- `untyped:<Type>`: any other exception, a bug (the CLI would print `error: internal`);
- `invalid-accepted`: convert succeeded but LiteRT rejects the model it wrote.
"""
from __future__ import annotations

import shutil
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tflite_quantmcu.analysis.model_analysis import analyze_model
from tflite_quantmcu.pipeline import ConvertOptions, run_pipeline
from tflite_quantmcu.errors import QuantMCUError
from tflite_quantmcu.ir.reader import read_model_bytes
from tflite_quantmcu.model_checks import require_int8
from tflite_quantmcu.reference.executor import run_graph
from tflite_quantmcu.runtimes.random_inputs import random_inputs


@dataclass(frozen=True)
class Outcome:
    kind: str          # ok | typed | untyped | invalid-accepted
    name: str = ""     # error class, or the LiteRT message
    detail: str = ""   # message / traceback for reproducers

    @property
    def label(self) -> str:
        return self.kind if not self.name else f"{self.kind}:{self.name}"


def run_input(*, data: bytes, sram_budget: int, do_convert: bool,
              do_execute: bool = False) -> Outcome:
    """Classifies what the tool does with `data` (see the module docstring)."""
    try:
        graph = read_model_bytes(data=data, source="fuzz.tflite")
        require_int8(graph=graph, source="fuzz.tflite")
        analyze_model(graph=graph, target="cortex-m")
        if do_execute:
            run_graph(graph=graph, inputs=random_inputs(graph=graph, samples=1, seed=0))
        if do_convert:
            return _convert(data=data, sram_budget=sram_budget)
    except QuantMCUError as err:
        return Outcome("typed", type(err).__name__, str(err))
    except Exception as err:  # noqa: BLE001 (the fuzzer counts every escape; this is its job)
        return Outcome("untyped", type(err).__name__, traceback.format_exc())
    return Outcome("ok")


def _convert(*, data: bytes, sram_budget: int) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix="qmcu_fuzz_"))
    try:
        model = work / "fuzz.tflite"
        model.write_bytes(data)
        out = work / "out"
        run_pipeline(options=ConvertOptions(model_path=model, out_dir=out, sram_budget=sram_budget,
                                            policy="patch-int8", measure_tflm=False,
                                            verify=True))
        written = (out / "fuzz.patch-int8.tflite").read_bytes()
        problem = litert_problem(model_bytes=written)
        if problem:
            return Outcome("invalid-accepted", problem.splitlines()[0][:120], problem)
        return Outcome("ok")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def litert_problem(*, model_bytes: bytes) -> str:
    """'' if LiteRT (reference kernels) loads and runs the model, else its error."""
    try:
        interpreter = Interpreter(model_content=model_bytes,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interpreter.allocate_tensors()
        graph = read_model_bytes(data=model_bytes)
        for detail, value in zip(interpreter.get_input_details(),
                                 random_inputs(graph=graph, samples=1, seed=0)):
            interpreter.set_tensor(detail["index"], value.reshape(detail["shape"]))
        interpreter.invoke()
    except (ValueError, RuntimeError, QuantMCUError) as err:
        return f"{type(err).__name__}: {err}"
    return ""
