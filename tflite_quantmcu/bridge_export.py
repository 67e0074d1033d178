"""`tflite-quantmcu bridge --out DIR`: the C kernels and TFLM glue a firmware links.

The package carries `cmixnn_bridge/` (in a checkout, `tflite_quantmcu/cmixnn_bridge` is
a link to the top-level folder) and `docs/qmcu_ops.md`; this copies them to
`DIR/cmixnn_bridge/` in one rename, so DIR gets the whole folder or nothing.
"""
from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

from tflite_quantmcu.errors import OutputError

SKIPPED_PARTS = ("build", "__pycache__")


def bridge_files() -> dict[str, bytes]:
    """Relative path -> bytes of every shipped bridge file (sources, glue, docs, examples)."""
    root = Path(str(resources.files("tflite_quantmcu") / "cmixnn_bridge"))
    files = {path.relative_to(root).as_posix(): path.read_bytes()
             for path in sorted(root.rglob("*"))
             if path.is_file() and not set(path.relative_to(root).parts) & set(SKIPPED_PARTS)}
    docs = Path(str(resources.files("tflite_quantmcu") / "bridge_docs" / "qmcu_ops.md"))
    files["docs/qmcu_ops.md"] = docs.read_bytes()
    return files


def export_bridge(*, out_dir: str | Path) -> Path:
    """Writes `out_dir/cmixnn_bridge/`; refuses to replace an existing one."""
    out_dir = Path(out_dir)
    target = out_dir / "cmixnn_bridge"
    if target.exists() or target.is_symlink():
        raise OutputError(f"{target}: already exists; remove it or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".qmcu-bridge-"))
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create output directory ({err.strerror})") from err
    try:
        for name, data in bridge_files().items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        staging.rename(target)
    except OSError as err:
        raise OutputError(f"{target}: cannot write the bridge sources ({err.strerror})") from err
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
