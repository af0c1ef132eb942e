"""Simulator settings: `SimConfig`, the fault knobs `FaultProfile`, and profile files.

A fault profile file (YAML or JSON) holds the `FaultProfile` fields, either at the top
level or under a `faults:` key, so one file can later grow other sections:

    create_500: 0.05
    lost_reply: 0.02
    fail: 0.1
    url_ttl_seconds: 30
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .._errors import ConfigError

__all__ = ["FaultProfile", "SimConfig", "load_fault_profile"]

_SHARES = ("create_500", "create_455", "lost_reply", "fail", "broken_download")


@dataclass
class FaultProfile:
    """Injected faults. Shares are probabilities in 0..1 drawn from a seeded RNG."""

    create_500: float = 0.0  # createTask answers body code 500; nothing is created
    create_455: float = 0.0  # body code 455 (maintenance); nothing is created
    lost_reply: float = 0.0  # the task IS created and charged, then the connection drops
    fail: float = 0.0  # generation ends in state fail (failCode "500"), credits refunded
    broken_download: float = 0.0  # the first serve of a file stops mid-stream
    slow_download_bps: int | None = None  # throttle every file download to this rate
    url_ttl_seconds: float | None = None  # plain result URLs answer 403 after this long
    drop_callbacks: bool = False  # never POST callbacks (they are still ledgered)
    poll_404_seconds: float = 0.0  # recordInfo says 404 for this long after create

    def __post_init__(self) -> None:
        for name in _SHARES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ConfigError(f"fault {name} must be a share between 0 and 1, got {value!r}")
        if self.create_500 + self.create_455 + self.lost_reply > 1.0:
            # The three are drawn from one roll, so they must fit in it together.
            raise ConfigError("fault shares create_500 + create_455 + lost_reply exceed 1")
        if self.slow_download_bps is not None and self.slow_download_bps <= 0:
            raise ConfigError(
                f"slow_download_bps must be a positive integer, got {self.slow_download_bps!r}"
            )
        if self.url_ttl_seconds is not None and not self.url_ttl_seconds >= 0:
            raise ConfigError(f"url_ttl_seconds must be >= 0, got {self.url_ttl_seconds!r}")
        if not self.poll_404_seconds >= 0:
            raise ConfigError(f"poll_404_seconds must be >= 0, got {self.poll_404_seconds!r}")

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "fault profile"
    ) -> FaultProfile:
        """Build from parsed YAML/JSON; unknown keys and bad values raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown fault(s) {', '.join(map(str, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for key, raw in data.items():
            values[key] = _coerce(key, raw, source)
        return cls(**values)


def _coerce(key: str, raw: Any, source: str) -> Any:
    """Accept numbers written as strings: YAML 1.1 reads `1e-3` as text."""
    if key == "drop_callbacks":
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{source}: drop_callbacks must be true or false, got {raw!r}")
    if raw is None and key in ("slow_download_bps", "url_ttl_seconds"):
        return None
    if isinstance(raw, bool):
        raise ConfigError(f"{source}: {key} must be a number, got {raw!r}")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{source}: {key} must be finite, got {raw!r}")
    if key == "slow_download_bps":
        if number != int(number):
            raise ConfigError(f"{source}: slow_download_bps must be an integer, got {raw!r}")
        return int(number)
    return number


def load_fault_profile(path: Path) -> FaultProfile:
    """Read a YAML or JSON fault profile file; raises ConfigError with the file name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read fault profile {path}: {err.strerror or err}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"fault profile {path} is not valid YAML/JSON: {err}") from None
    if data is None:
        return FaultProfile()
    if isinstance(data, Mapping) and isinstance(data.get("faults"), Mapping):
        data = data["faults"]
    if not isinstance(data, Mapping):
        raise ConfigError(f"fault profile {path} must be a mapping of fault names to values")
    return FaultProfile.from_mapping(data, source=str(path))


@dataclass
class SimConfig:
    """Everything that shapes one simulator instance."""

    api_key: str = "sk-sim-local"
    create_limit: int = 20  # createTask admissions per API key ...
    create_window: float = 10.0  # ... in any window of this many seconds
    poll_limit: int = 10  # recordInfo admissions per API key ...
    poll_window: float = 1.0  # ... per this many seconds
    credits: int = 1_000_000  # starting balance
    latency_scale: float = 1.0  # multiplies the catalog's typical_seconds
    faults: FaultProfile = field(default_factory=FaultProfile)
    hmac_key: str | None = None  # sign callbacks when set
    seed: int = 0  # task ids, jitter and fault draws all derive from it
    #: Mixed into task ids (and so their draws): separate simulator runs, e.g. a run and
    #: its resume with --simulate, must never hand out the same taskId twice.
    id_salt: str = ""

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ConfigError("the simulator needs a non-empty API key")
        for name in ("create_limit", "poll_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("create_window", "poll_window"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if not self.latency_scale >= 0:
            raise ConfigError(f"latency_scale must be >= 0, got {self.latency_scale!r}")
        if self.credits < 0:
            raise ConfigError(f"credits must be >= 0, got {self.credits!r}")
