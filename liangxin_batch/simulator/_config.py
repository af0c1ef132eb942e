"""Simulator settings: `SimConfig`, the fault knobs `FaultProfile`, and profile files.

A fault profile file (YAML or JSON) holds the `FaultProfile` fields, either at the top
level or under a `faults:` key, so one file can later grow other sections:

    create_500: 0.05
    lost_reply: 0.02
    fail: 0.1
    url_ttl_seconds: 30
    create_errors: {433: 0.01}   # API code -> share
    error_style: status
    quirks: [message_key, unknown_state]
    gateway_500_after_create: 0.01
    duplicate_task_id: 0.01
    garbled_success: 0.05
    short_content_length: 100
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from liangxin_batch.errors import ConfigError

__all__ = [
    "ERROR_STYLES",
    "FOREIGN_INPUTS",
    "QUIRKS",
    "UPLOAD_ANSWERS",
    "UPLOAD_PREFIX",
    "FaultProfile",
    "SimConfig",
    "SimKey",
    "load_fault_profile",
    "upload_base_url",
]

#: Where the upload host's endpoints live on the simulator's server by default: a path
#: of its own, so a client configured with a separate upload base URL exercises it.
UPLOAD_PREFIX = "/upload-host"


def upload_base_url(base_url: str, prefix: str = UPLOAD_PREFIX) -> str:
    """The simulator's upload host base URL, given its API base URL (the server's root):
    what a client takes as its upload base URL (LIANGXIN_UPLOAD_BASE_URL)."""
    return base_url.rstrip("/") + prefix


#: The two documented shapes of an upload answer's `data` (`SimConfig.upload_answer`):
#: "download_url" {fileName, filePath, downloadUrl, fileSize, mimeType, uploadedAt};
#: "file_url" {fileId, fileName, filePath, fileUrl, fileSize, mimeType, uploadedAt, expiresAt}.
UPLOAD_ANSWERS = ("download_url", "file_url")
#: What a task does with an input URL on another host (`SimConfig.foreign_inputs`).
FOREIGN_INPUTS = ("accept", "fail")

_SHARES = (
    "create_500",
    "create_455",
    "lost_reply",
    "gateway_500_after_create",
    "gateway_502_after_create",
    "fail",
    "broken_download",
    "duplicate_task_id",
    "garbled_success",
    "short_content_length_share",
)
#: The createTask shares drawn from ONE roll, in the order they are laid out in it.
_CREATE_ROLL = (
    "create_500",
    "create_455",
    "lost_reply",
    "gateway_500_after_create",
    "gateway_502_after_create",
)
_INTS = ("slow_download_bps", "short_content_length")
_CODE_SHARES = ("create_errors", "poll_errors")

#: How injected error answers go on the wire (see `FaultProfile.error_style`).
ERROR_STYLES = ("body", "status", "bare")

#: Envelope quirks the documentation allows and a client must tolerate
#: (see `FaultProfile.quirks`).
QUIRKS = frozenset(
    {
        "message_key",  # envelopes carry `message` instead of `msg`
        "string_code",  # `code` is a string: "200", "433"
        "extra_fields",  # unknown fields in envelopes and in createTask/recordInfo `data`
        "null_data",  # recordInfo answers code 200 with `data: null` while a task runs
        "null_result_json",  # `resultJson` is null (not "") until success, and on fail
        "unknown_state",  # running tasks report states the client does not know
    }
)


@dataclass
class FaultProfile:
    """Injected faults. Shares are probabilities in 0..1 drawn from a seeded RNG.

    Every draw is `unit(seed, ...)` (see `_tasks.unit`), so one seed gives one outcome.

    `create_500`, `create_455`, `lost_reply`, `gateway_500_after_create`,
    `gateway_502_after_create` and then `create_errors` share ONE roll per well-formed
    createTask (after the rate limit, 400 and 422 checks), laid end to end in that order,
    codes ascending; together they must fit in 1. (A share of 0 takes no room, so a seed
    keeps its outcomes when a later-added share is 0.)

    `gateway_500_after_create` / `gateway_502_after_create`: like `lost_reply` the task IS
    created and charged (ledger outcome "gateway_500" / "gateway_502"), but the answer is
    a gateway's own bare HTTP 500 / 502 page: `text/html`, no JSON envelope, whatever
    `error_style` says.

    `duplicate_task_id`: a share of createTask success answers (drawn per new task) carry
    the taskId of the task created just before this one instead of the new one's. The new
    task is still created and charged (ledger outcome "duplicate_task_id", with the REAL
    new task_id). With no earlier task the answer is normal.

    `garbled_success`: a share of recordInfo answers for a task in state success (drawn
    per task and per recordInfo answer of that task) replace `resultJson` with unreadable
    text ("{not json") or, by a second draw, with `{"resultUrls": []}`. An answer right
    after a garbled one of the same task is never garbled, so polling again recovers.
    The ledger's poll outcome is then "success (garbled)".

    `short_content_length` (bytes; 0 = off): result file downloads announce a
    Content-Length this many bytes shorter than the file and send exactly that many bytes:
    a consistent but truncated file (every serve of it, not only the first). With
    `short_content_length_share` (default 1: every file) only that share of files, drawn
    per (task, file index). The ledger's file outcome is then "short".

    `create_errors` maps an API code (400..599: 400, 408, 433, 501, 505, ...) to the
    share of createTask answers forced to it; like create_500, nothing is created or
    charged. `poll_errors` does the same for recordInfo answers (after the recordInfo
    rate limit, before the task is looked up), from a roll of their own.

    `error_style` says how every injected error answer (create_500, create_455,
    create_errors, poll_errors) goes on the wire:
      "body"    HTTP 200 with the code in the envelope: the service's usual way
      "status"  the code as the HTTP status too, with the same JSON envelope
      "bare"    the code as the HTTP status and a plain-text body (a gateway's page):
                only the status tells the client what happened

    `quirks` turns on envelope quirks of the API answers (not callbacks, not /_sim/),
    any of `QUIRKS`: "message_key" (`message` instead of `msg`), "string_code" (`code`
    as a string), "extra_fields" (unknown fields at every level), "null_data" (recordInfo
    `data: null` while a task runs), "null_result_json" (`resultJson` null, not "",
    until success) and "unknown_state" (running tasks report "pending", "queued",
    "processing"). The ledger still records the real state.
    """

    create_500: float = 0.0  # createTask answers body code 500; nothing is created
    create_455: float = 0.0  # body code 455 (maintenance); nothing is created
    lost_reply: float = 0.0  # the task IS created and charged, then the connection drops
    fail: float = 0.0  # generation ends in state fail (failCode "500"), credits refunded
    broken_download: float = 0.0  # the first serve of a file stops mid-stream
    gateway_500_after_create: float = 0.0  # created and charged, then a bare HTML HTTP 500
    gateway_502_after_create: float = 0.0  # created and charged, then a bare HTML HTTP 502
    duplicate_task_id: float = 0.0  # createTask success answers the previous task's id
    garbled_success: float = 0.0  # a success recordInfo answer has a broken resultJson
    short_content_length: int = 0  # files: send (and announce) this many bytes fewer
    short_content_length_share: float = 1.0  # ... for this share of the files
    slow_download_bps: int | None = None  # throttle every file download to this rate
    url_ttl_seconds: float | None = None  # plain result URLs answer 403 after this long
    drop_callbacks: bool = False  # never POST callbacks (they are still ledgered)
    poll_404_seconds: float = 0.0  # recordInfo says 404 for this long after create
    create_errors: dict[int, float] = field(default_factory=dict)  # code -> share; see above
    poll_errors: dict[int, float] = field(default_factory=dict)  # code -> share of recordInfo
    error_style: str = "body"  # "body" | "status" | "bare": see above
    quirks: frozenset[str] = frozenset()  # names from QUIRKS: see above

    def __post_init__(self) -> None:
        for name in _SHARES:
            value = getattr(self, name)
            if not _is_share(value):
                raise ConfigError(f"fault {name} must be a share between 0 and 1, got {value!r}")
        for name in _CODE_SHARES:
            table = getattr(self, name)
            if not isinstance(table, Mapping):
                raise ConfigError(f"fault {name} must map API codes to shares, got {table!r}")
            for code, share in table.items():
                if not (isinstance(code, int) and not isinstance(code, bool)):
                    raise ConfigError(f"fault {name}: API code {code!r} is not an integer")
                if not 400 <= code <= 599:
                    raise ConfigError(f"fault {name}: API code {code} is not an error (400..599)")
                if not _is_share(share):
                    raise ConfigError(
                        f"fault {name}: share for {code} must be between 0 and 1, got {share!r}"
                    )
        if sum(getattr(self, n) for n in _CREATE_ROLL) + _total(self.create_errors) > 1.0:
            # They are drawn from one roll, so they must fit in it together.
            raise ConfigError(f"fault shares {' + '.join(_CREATE_ROLL)} + create_errors exceed 1")
        if _total(self.poll_errors) > 1.0:
            raise ConfigError("fault shares in poll_errors exceed 1")
        if self.error_style not in ERROR_STYLES:
            raise ConfigError(
                f"error_style must be one of {', '.join(ERROR_STYLES)}, got {self.error_style!r}"
            )
        if isinstance(self.quirks, str) or not all(isinstance(q, str) for q in self.quirks):
            raise ConfigError(f"quirks must be a list of names, got {self.quirks!r}")
        self.quirks = frozenset(self.quirks)
        unknown = sorted(self.quirks - QUIRKS)
        if unknown:
            raise ConfigError(
                f"unknown quirk(s) {', '.join(unknown)}; known: {', '.join(sorted(QUIRKS))}"
            )
        if self.slow_download_bps is not None and self.slow_download_bps <= 0:
            raise ConfigError(
                f"slow_download_bps must be a positive integer, got {self.slow_download_bps!r}"
            )
        short = self.short_content_length
        if not (isinstance(short, int) and not isinstance(short, bool) and short >= 0):
            raise ConfigError(
                f"short_content_length must be a whole number of bytes >= 0, got {short!r}"
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

    def create_fault(self, roll: float) -> int | str | None:
        """What a createTask roll injects: an API code, "lost_reply", "gateway_500",
        "gateway_502", or None (no fault)."""
        table: list[tuple[int | str, float]] = [
            (500, self.create_500),
            (455, self.create_455),
            ("lost_reply", self.lost_reply),
            ("gateway_500", self.gateway_500_after_create),
            ("gateway_502", self.gateway_502_after_create),
            *sorted(self.create_errors.items()),
        ]
        return _pick(roll, table)

    def poll_fault(self, roll: float) -> int | None:
        """The API code a recordInfo roll forces, or None."""
        code = _pick(roll, sorted(self.poll_errors.items()))
        return code if isinstance(code, int) else None


def _is_share(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _total(table: Mapping[int, float]) -> float:
    return sum(table.values()) if isinstance(table, Mapping) else 0.0


def _pick(roll: float, table: list[tuple[int | str, float]]) -> int | str | None:
    """The entry whose slice of [0, 1) holds `roll`, slices laid end to end in order."""
    edge = 0.0
    for outcome, share in table:
        edge += share
        if roll < edge:
            return outcome
    return None


def _coerce(key: str, raw: Any, source: str) -> Any:
    """Accept numbers written as strings: YAML 1.1 reads `1e-3` as text."""
    if key in _CODE_SHARES:
        return _coerce_code_shares(key, raw, source)
    if key == "error_style":
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"{source}: error_style must be one of {', '.join(ERROR_STYLES)}")
    if key == "quirks":
        if isinstance(raw, list) and all(isinstance(q, str) for q in raw):
            return frozenset(raw)
        raise ConfigError(f"{source}: quirks must be a list of names, got {raw!r}")
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
    if key in _INTS:
        if number != int(number):
            raise ConfigError(f"{source}: {key} must be an integer, got {raw!r}")
        return int(number)
    return number


def _coerce_code_shares(key: str, raw: Any, source: str) -> dict[int, float]:
    """`{433: 0.1}` or `{"433": "0.1"}` (JSON keys are always text) -> {433: 0.1}."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {key} must map API codes to shares, got {raw!r}")
    table: dict[int, float] = {}
    for code, share in raw.items():
        try:
            number = int(str(code))
        except ValueError:
            raise ConfigError(f"{source}: {key}: API code {code!r} is not an integer") from None
        table[number] = _coerce(f"{key}[{number}]", share, source)
    return table


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


@dataclass(frozen=True)
class SimKey:
    """Another API key a simulator serves: an account of its own, with its own limits and
    balance. Its tasks are visible to it alone (another key's recordInfo: not found)."""

    name: str  # how the ledger names it (never the key)
    create_limit: int = 20
    create_window: float = 10.0
    poll_limit: int = 10
    poll_window: float = 1.0
    credits: int = 1_000_000


@dataclass
class SimConfig:
    """Everything that shapes one simulator instance."""

    api_key: str = "sk-sim-local"
    #: The ledger's name for `api_key`'s account.
    key_name: str = "default"
    #: More keys, each its own account (`SimKey`), by key. Saved tasks (`state_path`)
    #: remember their key's name; balances beyond `api_key`'s are not journalled.
    more_keys: Mapping[str, SimKey] = field(default_factory=dict)
    create_limit: int = 20  # createTask admissions per API key ...
    create_window: float = 10.0  # ... in any window of this many seconds
    poll_limit: int = 10  # recordInfo admissions per API key ...
    poll_window: float = 1.0  # ... per this many seconds
    credits: int = 1_000_000  # starting balance
    latency_scale: float = 1.0  # multiplies the catalog's typical_seconds
    #: Generation times drawn uniformly from (low, high) seconds, by model id ("*": every
    #: model not named), instead of the catalog's typical_seconds x 0.7-1.3. Scaled by
    #: `latency_scale` too. For scenarios where the catalog is wrong.
    latency_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: (after this many creates, multiply generation times by this): a service whose
    #: load changes during a run.
    latency_drift: tuple[int, float] | None = None
    faults: FaultProfile = field(default_factory=FaultProfile)
    hmac_key: str | None = None  # sign callbacks when set
    seed: int = 0  # task ids, jitter and fault draws all derive from it
    #: Mixed into task ids (and so their draws): separate simulator runs, e.g. a run and
    #: its resume with --simulate, must never hand out the same taskId twice.
    id_salt: str = ""
    #: Keep every task (with its timeline) in this JSON-lines file, made if missing: a
    #: later simulator given the same file carries on with them, its id salt and balance
    #: (see `_saved.py`). `run --simulate` keeps it in the output folder.
    state_path: Path | None = None
    #: The upload host's path prefix on this server: its base URL is the server's plus
    #: this (`upload_base_url`). Endpoints: <prefix>/api/file-stream-upload etc.
    upload_prefix: str = UPLOAD_PREFIX
    #: How long an uploaded file is served (simulator clock seconds); the docs say 24 h
    #: in most places, 3 days in one.
    upload_lifetime_seconds: float = 24 * 3600.0
    upload_max_bytes: int = 100_000_000  # one upload's largest size (the URL upload's)
    upload_answer: str = "download_url"  # one of UPLOAD_ANSWERS
    #: Input URLs on other hosts: "accept" (tests use example URLs) or "fail" the task
    #: as a service that cannot reach them would.
    foreign_inputs: str = "accept"
    #: Where uploaded bytes are kept; None: beside `state_path` (uploads/), else a
    #: temporary folder removed with the simulator.
    uploads_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ConfigError("the simulator needs a non-empty API key")
        names = [self.key_name, *(k.name for k in self.more_keys.values())]
        if len(set(names)) != len(names) or self.api_key in self.more_keys:
            raise ConfigError("every simulator key needs its own key and its own name")
        for key, more in self.more_keys.items():
            if not key or more.create_limit < 1 or more.poll_limit < 1:
                raise ConfigError(f"key {more.name!r}: a non-empty key and limits of 1 or more")
            if not (more.create_window > 0 and more.poll_window > 0 and more.credits >= 0):
                raise ConfigError(f"key {more.name!r}: positive windows and credits >= 0")
        for name in ("create_limit", "poll_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("create_window", "poll_window"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if not self.latency_scale >= 0:
            raise ConfigError(f"latency_scale must be >= 0, got {self.latency_scale!r}")
        for model, (low, high) in self.latency_range.items():
            if not 0 <= low <= high:
                raise ConfigError(f"latency_range[{model!r}]: need 0 <= low <= high")
        if self.latency_drift is not None and not (
            self.latency_drift[0] >= 0 and self.latency_drift[1] > 0
        ):
            raise ConfigError("latency_drift: (creates >= 0, factor > 0)")
        if self.credits < 0:
            raise ConfigError(f"credits must be >= 0, got {self.credits!r}")
        if not self.upload_prefix.startswith("/") or self.upload_prefix.endswith("/"):
            raise ConfigError(
                f"upload_prefix must start with / and not end with one, got {self.upload_prefix!r}"
            )
        if not self.upload_lifetime_seconds > 0:
            raise ConfigError(
                f"upload_lifetime_seconds must be > 0, got {self.upload_lifetime_seconds!r}"
            )
        if not self.upload_max_bytes > 0:
            raise ConfigError(f"upload_max_bytes must be > 0, got {self.upload_max_bytes!r}")
        if self.upload_answer not in UPLOAD_ANSWERS:
            raise ConfigError(
                f"upload_answer must be one of {', '.join(UPLOAD_ANSWERS)}, "
                f"got {self.upload_answer!r}"
            )
        if self.foreign_inputs not in FOREIGN_INPUTS:
            raise ConfigError(
                f"foreign_inputs must be one of {', '.join(FOREIGN_INPUTS)}, "
                f"got {self.foreign_inputs!r}"
            )

    def upload_base_url(self, base_url: str) -> str:
        """The upload host's base URL on a server whose API base URL is `base_url`."""
        return upload_base_url(base_url, self.upload_prefix)
