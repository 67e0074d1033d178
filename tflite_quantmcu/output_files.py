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


def json_bytes(*, data: object) -> bytes:
    """Indented, key-sorted JSON: the same data always gives the same bytes."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json_atomically(*, data: object, path: str | Path) -> None:
    write_bytes_atomically(data=json_bytes(data=data), path=path)


def write_outputs_atomically(*, directory: str | Path, files: dict[str, bytes]) -> None:
    """Writes every file into `directory` or none of them.

    All files go to a fresh temporary folder inside `directory` first and are
    then renamed into place; if a rename fails, the ones already moved are removed.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".qmcu-"))
    except OSError as err:
        raise OutputError(f"{directory}: cannot create output directory ({err.strerror})") from err
    moved: list[Path] = []
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        for name in files:
            os.replace(staging / name, directory / name)
            moved.append(directory / name)
    except OSError as err:
        for path in moved:
            path.unlink(missing_ok=True)
        raise OutputError(f"{directory}: cannot write outputs ({err.strerror})") from err
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
