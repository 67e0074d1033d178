"""The generated TFLite Micro op resolver header lists exactly the model's ops."""
from __future__ import annotations

import dataclasses
import re

import pytest

from fixture_models import all_fixture_names
from tflite_quantmcu.analysis.model_analysis import arena_bytes
from tflite_quantmcu.codegen.op_resolver import op_resolver_header
from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.ir import schema
from tflite_quantmcu.ir.graph import OpCode
from tflite_quantmcu.ir.reader import read_model_file


def _camel(name: str) -> str:
    """CONV_2D -> Conv2D, AVERAGE_POOL_2D -> AveragePool2D (TFLM's method naming)."""
    return "".join(part.capitalize() if not part[0].isdigit() else part.upper()
                   for part in name.split("_"))


@pytest.mark.parametrize("model_path", all_fixture_names(), indirect=True)
def test_header_registers_each_op_kind_once(model_path):
    graph = read_model_file(path=model_path)
    kinds = {op.type for op in graph.main.operators}
    arena = arena_bytes(graph=graph)
    header = op_resolver_header(graph=graph, stem=model_path.stem, arena=arena)
    size = int(re.search(r"kTensorArenaSize = (\d+);", header).group(1))
    assert size % 16 == 0 and arena.total <= size < arena.total + 16
    calls = re.findall(r"resolver\.Add(\w+)\(\)", header)
    assert sorted(calls) == sorted(_camel(k) for k in kinds)
    count = int(re.search(r"kNumberOperators = (\d+);", header).group(1))
    assert count == len(kinds) == len(calls)


@pytest.mark.parametrize("model_path", ["conv_chain.tflite"], indirect=True)
def test_qmcu_custom_ops_use_add_custom(model_path):
    graph = read_model_file(path=model_path)
    arena = arena_bytes(graph=graph)
    graph.main.operators[0].opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM,
                                            custom="QMCU_CONV_2D")
    header = op_resolver_header(graph=graph, stem="demo", arena=arena)
    assert "LOWER BOUND" not in header
    bounded = dataclasses.replace(arena, unmodelled=("SOME_OP",))
    assert "LOWER BOUND: not modelled for SOME_OP" in op_resolver_header(
        graph=graph, stem="demo", arena=bounded)
    assert 'resolver.AddCustom("QMCU_CONV_2D", tflite::Register_QMCU_CONV_2D())' in header
    assert '#include "qmcu_tflm_ops.h"' in header
    kinds = {op.type for op in graph.main.operators}
    assert f"kNumberOperators = {len(kinds)};" in header


@pytest.mark.parametrize("model_path", ["conv_chain.tflite"], indirect=True)
def test_foreign_custom_op_is_named_in_error(model_path):
    graph = read_model_file(path=model_path)
    graph.main.operators[2].opcode = OpCode(builtin=schema.BuiltinOperator.CUSTOM,
                                            custom="MyVendorOp")
    with pytest.raises(UnsupportedOpError, match=r"#2 .*'MyVendorOp' is not one of ours"):
        op_resolver_header(graph=graph, stem="demo", arena=arena_bytes(graph=graph))
