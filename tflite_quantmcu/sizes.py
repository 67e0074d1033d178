"""Byte sizes on the command line: `256KB`, `1MB`, `262144` (KB = 1024 bytes)."""
from __future__ import annotations

import re

from tflite_quantmcu.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 1024, "K": 1024, "KIB": 1024, "MB": 1024 ** 2, "M": 1024 ** 2,
          "MIB": 1024 ** 2}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(*, text: str, option: str = "size") -> int:
    """Parses a size; ConfigError says what was expected."""
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{option}: cannot read size {text!r}; expected e.g. 256KB, 1MB or 262144")
    value = float(match.group(1)) * _UNITS[unit]
    if value <= 0 or value != int(value):
        raise ConfigError(f"{option}: size {text!r} must be a positive whole number of bytes")
    return int(value)


def format_size(num_bytes: int) -> str:
    """262144 -> '256.0 KB'."""
    if num_bytes >= 1024 ** 2:
        return f"{num_bytes / 1024 ** 2:.2f} MB"
    return f"{num_bytes / 1024:.1f} KB"
