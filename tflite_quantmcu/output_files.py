"""Writing output files all or nothing: a failure never leaves a partial file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tflite_quantmcu.errors import OutputError


def write_bytes_atomically(*, data: bytes, path: str | Path) -> None:
    """Writes `data` to `path` or raises OutputError leaving nothing behind."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file path")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"{path}: cannot write into {directory} ({err.strerror})") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except OSError as err:
        Path(tmp_name).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot be written ({err.strerror})") from err


def write_json_atomically(*, data: object, path: str | Path) -> None:
    """Writes `data` as indented, key-sorted JSON (deterministic bytes)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_bytes_atomically(data=text.encode("utf-8"), path=path)
