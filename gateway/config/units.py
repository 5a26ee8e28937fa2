"""Parsing of human-written durations ('1m30s') and sizes ('4MiB') in config values."""

from __future__ import annotations

import math
import re
from typing import Any

DURATION_HINT = "expected a duration like '10s' or '500ms'"
SIZE_HINT = "expected a size like '4MiB', '512KiB' or a number of bytes"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|µs|ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ns|us|µs|ms|s|m|h|d))+")
_SIZE = re.compile(rf"({_NUMBER})\s*(?:([kmgt])(i)?)?b?", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: Any) -> float:
    """Accept seconds as a number or strings like '500ms', '10s', '1.5h', '1m30s'; return float seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    if isinstance(value, str):
        text = value.strip()
        body = text[1:] if text.startswith("-") else text
        if re.fullmatch(_NUMBER, body):
            seconds = float(body)
        elif _DURATION.fullmatch(body):
            seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(body))
        else:
            raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
        if text.startswith("-"):
            seconds = -seconds
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    if seconds < 0:
        raise ValueError(f"negative duration {value!r} ({DURATION_HINT})")
    return seconds


def parse_byte_size(value: Any) -> Any:
    """Turn '4MiB' (1024-based) or '1MB' (1000-based) into bytes; non-strings pass through for int validation."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r} ({SIZE_HINT})")
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid size {value!r} ({SIZE_HINT})")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** _SIZE_POWERS[unit.lower()]) if unit else int(float(number))
