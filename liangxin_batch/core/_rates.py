"""The rate syntax of `--rate`, `--poll-rate`, `--upload-rate` and an accounts file:
`20/10s`, `5/s`, `100/min`. Pure."""

from __future__ import annotations

import re

from liangxin_batch.errors import ConfigError

__all__ = ["parse_rate"]

_UNITS = "s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hour|hours"
_RATE = re.compile(rf"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*({_UNITS})?\s*$", re.IGNORECASE)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """'20/10s' -> (20, 10.0); also 'N/s', 'N/min', 'N/2m', 'N/h'. ConfigError otherwise."""
    m = _RATE.match(text or "")
    if m is None or (m.group(2) is None and m.group(3) is None):
        raise ConfigError(f"expected a rate like 20/10s, 5/s or 100/min; got {text!r}")
    limit = int(m.group(1))
    amount = float(m.group(2)) if m.group(2) is not None else 1.0
    unit = _UNIT[(m.group(3) or "s")[0].lower()]
    window = amount * unit
    if limit < 1 or window <= 0:
        raise ConfigError(
            f"expected at least 1 request per a positive time, like 20/10s; got {text!r}"
        )
    return limit, window
