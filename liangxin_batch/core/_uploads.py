"""Uploads of local input files: the pure decisions about them. No I/O, no clock.

A local file is uploaded to LiangXin's upload host, which answers with a temporary URL
a task can fetch. Whether a stored upload may still be given to a createTask, when an
upload stops serving, whether a task's failure says its input could not be fetched,
and which account an upload belongs to are decided here, with the time passed in (the
tests drive them in virtual time).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._local_files import replace_tokens

__all__ = [
    "DEFAULT_UPLOAD_LIFETIME",
    "DEFAULT_UPLOAD_MARGIN",
    "MAX_ANSWER_LIFE",
    "Upload",
    "account_fingerprint",
    "effective_margin",
    "expiry_of",
    "input_fetch_failed",
    "is_fresh",
    "parse_expires_at",
    "should_refresh_inputs",
    "with_upload_urls",
]

#: The docs say 24 hours in most places, 3 days in one: plan for the shorter.
DEFAULT_UPLOAD_LIFETIME = 24 * 3600.0
#: A URL that stops serving within this is uploaded again before a createTask: a task
#: may wait in the service's queue for a while before it fetches its inputs.
DEFAULT_UPLOAD_MARGIN = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Upload:
    """One stored upload of some bytes, for one account."""

    sha256: str
    account: str
    url: str
    uploaded_at: float  # unix seconds
    expires_at: float  # unix seconds: the answer's expiresAt, or uploaded_at + lifetime


def account_fingerprint(upload_base_url: str, api_key: str) -> str:
    """Which account (key and upload host) an upload belongs to, without the key.

    The first 16 hex digits of a sha256 over a fixed label, the upload host's URL and the
    key. One-way: the key cannot be got back from it (a 64-bit prefix of a hash of a
    secret), yet the same key on the same host always gives the same fingerprint, so a
    state file shared between two keys never hands one key's upload to the other.
    """
    data = b"liangxin-batch upload account\0" + upload_base_url.encode() + b"\0"
    return hashlib.sha256(data + api_key.encode()).hexdigest()[:16]


def parse_expires_at(value: Any) -> float | None:
    """An answer's `expiresAt` as unix seconds: ISO 8601 text, or epoch seconds or
    milliseconds. None when absent or unreadable (the lifetime applies then)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            try:
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if stamp.tzinfo is None:  # a time without a zone: the service's UTC
                return None
            seconds = stamp.timestamp()
    else:
        return None
    if seconds > 1e11:  # milliseconds (1e11 seconds is the year 5138)
        seconds /= 1000.0
    return seconds if seconds > 0 else None


#: The longest life an answer's own expiresAt is believed for: the service's files are
#: temporary (hours or days); a year or more is a misread unit or a placeholder date.
MAX_ANSWER_LIFE = 366 * 86400.0


def expiry_of(uploaded_at: float, *, expires_at: float | None, lifetime: float) -> float:
    """When an upload stops serving: the answer's own expiry when it gave a usable one
    (one at or before the upload time, or more than `MAX_ANSWER_LIFE` after it, is a
    clock, unit or format we misread: ignored), else the upload time plus the
    configured lifetime."""
    if expires_at is None or not uploaded_at < expires_at <= uploaded_at + MAX_ANSWER_LIFE:
        return uploaded_at + lifetime
    return expires_at


def effective_margin(upload: Upload, margin: float) -> float:
    """The margin that applies to this upload: the configured one, but never more than
    half of the upload's own life (expires_at - uploaded_at).

    The settings keep --upload-margin at most half of --upload-lifetime, but the host's
    own `expiresAt` may give a shorter life than the margin (24 h against a 30 h margin
    chosen for a 3-day lifetime). With the full margin such an upload would be stale the
    moment it was made, and every createTask turn would upload it again, without end.
    Half its life keeps the margin's purpose (a URL with most of its life left when the
    task is sent) and makes an upload made just now always usable."""
    return min(margin, (upload.expires_at - upload.uploaded_at) / 2)


def is_fresh(upload: Upload | None, *, now: float, margin: float) -> bool:
    """May this stored upload be given to a createTask made `now`? Only with more than
    the margin left before it expires (`effective_margin`: at most half its life)."""
    return upload is not None and upload.expires_at - now > effective_margin(upload, margin)


def with_upload_urls(value: Any, urls: Mapping[str, str]) -> Any:
    """An input with every file token replaced by the URL of its upload (what createTask
    is sent; the stored input keeps the tokens). KeyError for a token with no URL."""
    return replace_tokens(value, lambda sha, _token: urls[sha])


# -- a task that could not fetch its input ------------------------------------------

#: Words of a moderation or content refusal: such a failure is never about fetching.
_REFUSED = re.compile(
    r"moderat|sensitive|nsfw|violat|polic|prohibit|safety|inappropriate|censor|unsafe"
    r"|copyright|not allowed|forbidden content|flagged",
    re.IGNORECASE,
)
#: What the input is called.
_INPUT = r"(?:image|img|picture|photo|url|link|file|input|resource|frame|media)"
#: Phrasings of "the input could not be fetched" (ours, the simulator's, and plausible
#: wordings of the real service's: "Failed to download image", "image url is not
#: accessible", "Unable to fetch input", "the file URL has expired").
_FETCH_FAILED = [
    re.compile(p, re.IGNORECASE)
    for p in (
        # "failed to download/fetch/retrieve/load/access/read the image (url)"
        rf"(?:fail\w*|unable|cannot|can ?not|could ?n[o']t|error)\W+(?:\w+\W+){{0,2}}"
        rf"(?:to\W+)?(?:download|fetch|retriev|load|access|read|get|open)\w*\W+"
        rf"(?:\w+\W+){{0,3}}{_INPUT}",
        # "image download failed", "input fetch error", "url access denied"
        rf"{_INPUT}\w*\W+(?:\w+\W+){{0,2}}(?:download|fetch|retriev|access)\w*\W+"
        rf"(?:\w+\W+){{0,1}}(?:fail|error|denied|refused|timed? ?out)",
        # "image url is not accessible / unreachable / invalid or expired"
        rf"{_INPUT}\w*\W+(?:\w+\W+){{0,3}}(?:inaccessible|unreachable|not accessible"
        rf"|not reachable|expired|no longer available)",
        # "expired ... url/file/link"
        rf"expired\W+(?:\w+\W+){{0,3}}{_INPUT}",
        # an HTTP error the service met fetching: "image url returned 403/404"
        rf"{_INPUT}\w*\W+(?:\w+\W+){{0,4}}(?:http\W*)?(?:403|404|410)\b",
    )
]
#: failCodes that name a fetch failure.
_FETCH_CODES = re.compile(
    r"download|fetch|retriev|url_?expired|input_?expired|inaccessible", re.IGNORECASE
)


def input_fetch_failed(fail_code: str | None, fail_msg: str | None) -> bool:
    """Does a task's failure say the service could not fetch one of its inputs?

    Conservative: a moderation or content refusal never counts, nor does a message that
    only says "failed" or names no input; a failCode counts when it names downloading or
    fetching. A false "yes" costs one more (unbilled) attempt; a false "no" leaves a
    job failed that `--retry-failed` would fix.
    """
    text = " ".join(t for t in (fail_code, fail_msg) if t)
    if not text or _REFUSED.search(text):
        return False
    if fail_code and _FETCH_CODES.search(fail_code):
        return True
    return bool(fail_msg) and any(p.search(fail_msg or "") for p in _FETCH_FAILED)


def should_refresh_inputs(
    *,
    fail_code: str | None,
    fail_msg: str | None,
    has_local_files: bool,
    refreshes_before: int,
    credits_consumed: float | None,
) -> bool:
    """A failed task is resubmitted with fresh uploads: its job has local files, its
    failure says an input could not be fetched, the job was never refreshed before
    (once per job), and the service charged nothing for it (a failed task is not billed;
    a task that says it consumed credits is never sent again automatically)."""
    return (
        has_local_files
        and refreshes_before == 0
        and not credits_consumed
        and input_fetch_failed(fail_code, fail_msg)
    )
