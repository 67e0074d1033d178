"""What the CLI printed on stderr, without `convert`'s per-step progress lines."""
from __future__ import annotations

PROGRESS_PREFIX = "convert ["


def message_lines(stderr: str) -> list[str]:
    """The stderr lines that are not progress lines (errors, warnings)."""
    return [line for line in stderr.splitlines() if not line.startswith(PROGRESS_PREFIX)]
