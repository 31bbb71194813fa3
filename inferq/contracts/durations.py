"""Durations as people write them: ``3600``, ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``."""

from __future__ import annotations

import math
import re

from inferq.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(value: str | float, *, field: str, max_s: float = math.inf) -> float:
    """Seconds, more than 0 and at most ``max_s``; ``InvalidInput`` naming ``field`` otherwise."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        seconds = float(match[1]) * _UNIT_S[match[2]] if match else -1.0
    else:
        seconds = float(value)
    if not 0 < seconds <= max_s:  # NaN fails this too
        limit = f", at most {max_s:g} s" if math.isfinite(max_s) else ""
        raise InvalidInput(f"invalid {field} {value!r}: seconds or '30m'/'24h'/'7d'{limit}", field=field)
    return seconds
