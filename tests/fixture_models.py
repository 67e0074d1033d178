"""The fixture models the tests run on, and random inputs for them."""
from __future__ import annotations

from pathlib import Path

from tflite_quantmcu.runtimes.random_inputs import random_inputs  # noqa: F401 (re-export)

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
COMMITTED = sorted(p.name for p in TESTDATA.glob("*.tflite"))
GENERATED = ["mobilenetv2_w100_r224.tflite"]


def fixture_path(name: str) -> Path:
    """Path of a committed or generated fixture (generated ones live in testdata/generated)."""
    committed = TESTDATA / name
    return committed if committed.exists() else TESTDATA / "generated" / name


def all_fixture_names() -> list[str]:
    return COMMITTED + GENERATED
