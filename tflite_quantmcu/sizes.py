"""Byte sizes on the command line: `256KB`, `1MB`, `262144` (KB = 1024 bytes)."""
from __future__ import annotations

import re
from fractions import Fraction

from tflite_quantmcu.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 1024, "K": 1024, "KIB": 1024, "MB": 1024 ** 2, "M": 1024 ** 2,
          "MIB": 1024 ** 2}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]{0,3})\s*$", re.ASCII)
_MAX_DIGITS = 24   # longer numbers are far past the limit (and slow to convert)
MAX_SIZE_BYTES = 1 << 32   # budgets of a 32-bit MCU: 4 GiB is its whole address space


def parse_size(*, text: str, option: str = "size") -> int:
    """Parses a size of at most MAX_SIZE_BYTES; ConfigError says what was expected."""
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
        raise ConfigError(f"{option}: cannot read size {shown!r}; expected e.g. 256KB, 1MB or "
                          "262144 (ASCII digits)")
    if len(match.group(1)) > _MAX_DIGITS:
        raise ConfigError(f"{option}: size of {len(match.group(1))} digits; at most "
                          f"{MAX_SIZE_BYTES:,} B (4 GiB) is accepted")
    value = Fraction(match.group(1)) * _UNITS[unit]
    if value <= 0 or value.denominator != 1:
        raise ConfigError(f"{option}: size {text!r} must be a positive whole number of bytes")
    if value > MAX_SIZE_BYTES:
        raise ConfigError(f"{option}: size {text!r} is {int(value):,} B; at most "
                          f"{MAX_SIZE_BYTES:,} B (4 GiB) is accepted")
    return int(value)


def format_size(num_bytes: int) -> str:
    """262144 -> '256.0 KB'."""
    if num_bytes >= 1024 ** 2:
        return f"{num_bytes / 1024 ** 2:.2f} MB"
    return f"{num_bytes / 1024:.1f} KB"
