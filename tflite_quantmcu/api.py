"""The Python API: `tflite_quantmcu.convert(...)` and `tflite_quantmcu.analyze(...)`.

    import tflite_quantmcu as tq
    result = tq.convert("model.tflite", sram="256KB", calibration=representative_dataset())
    result.save("build/")            # the same files as the command line writes
    result.model_bytes, result.header, result.report, result.plan

`model` is a path, the model's bytes, or a `Graph`; `calibration` and `eval_data` a path,
an array, or an iterable / generator of arrays or (x, y) pairs (the style of
TFLiteConverter's `representative_dataset`, called or not).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tflite_quantmcu.analysis.model_analysis import ModelAnalysis, analyze_model
from tflite_quantmcu.errors import ConfigError
from tflite_quantmcu.ir.graph import Graph
from tflite_quantmcu.ir.reader import read_model_bytes, read_model_file
from tflite_quantmcu.ir.writer import write_model_bytes
from tflite_quantmcu.output_files import write_outputs_atomically
from tflite_quantmcu.pipeline import Conversion, ConvertOptions, output_files, run_pipeline
from tflite_quantmcu.quant.plan import BitwidthPlan
from tflite_quantmcu.report import conversion_report
from tflite_quantmcu.sizes import parse_size

DEFAULT_NAME = "model.tflite"


@dataclass(frozen=True)
class ConversionResult:
    """A finished conversion: its outputs in memory, written only by `save`."""

    conversion: Conversion

    @property
    def model_bytes(self) -> bytes:
        return self.conversion.model_bytes

    @property
    def header(self) -> str:
        return self.conversion.header

    @property
    def report(self) -> dict:
        return conversion_report(conv=self.conversion)

    @property
    def plan(self) -> BitwidthPlan | None:
        return self.conversion.bitwidth_plan

    @property
    def files(self) -> Mapping[str, bytes]:
        return output_files(conv=self.conversion)

    def save(self, directory: str | Path) -> Path:
        """Writes every output file into `directory`, all or none; returns the model's path."""
        write_outputs_atomically(directory=directory, files=dict(self.files))
        return Path(directory) / self.conversion.model_file


def convert(model, *, sram: int | str, flash: int | str | None = None,
            policy: str = "quantmcu", calibration=None, eval_data=None,
            name: str | None = None, **settings) -> ConversionResult:
    """Converts `model` for an MCU whose arena may use `sram` bytes (e.g. 262144 or "256KB").

    `settings` are the other `ConvertOptions` fields (target, objective, patch_grid, ...).
    Raises the same typed errors (`tflite_quantmcu.errors`) as the command line.
    """
    path, data = _model_source(model=model, name=name)
    options = ConvertOptions(
        model_path=path, out_dir=None, model_bytes=data, sram_budget=_size(sram, "sram"),
        flash_budget=None if flash is None else _size(flash, "flash"), policy=policy,
        calibration=_data(calibration), eval_data=_data(eval_data), **settings)
    return ConversionResult(conversion=run_pipeline(options=options))


def analyze(model, *, target: str = "cortex-m") -> ModelAnalysis:
    """Per-layer memory, MACs and BitOPs and the whole arena of `model` on `target`."""
    if isinstance(model, Graph):
        return analyze_model(graph=model, target=target)
    if isinstance(model, (bytes, bytearray)):
        return analyze_model(graph=read_model_bytes(data=bytes(model)), target=target)
    return analyze_model(graph=read_model_file(path=model), target=target)


def _model_source(*, model, name: str | None) -> tuple[Path, bytes | None]:
    if isinstance(model, Graph):
        return Path(name or DEFAULT_NAME), write_model_bytes(graph=model)
    if isinstance(model, (bytes, bytearray)):
        return Path(name or DEFAULT_NAME), bytes(model)
    if isinstance(model, (str, Path)):
        return Path(model), None
    raise ConfigError(f"model: expected a path, bytes or a Graph, got {type(model).__name__}")


def _size(value: int | str, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{option}: expected bytes as an int or a size such as '256KB', "
                          f"got {value!r}")
    return parse_size(text=value, option=option) if isinstance(value, str) else value


def _data(source):
    """Paths as Path; a `representative_dataset`-style function is called once."""
    if source is None or isinstance(source, Path):
        return source
    if isinstance(source, str):
        return Path(source)
    if isinstance(source, Callable):
        return source()
    return source
