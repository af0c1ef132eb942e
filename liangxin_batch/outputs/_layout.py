"""Where each output file goes inside the output folder. Pure: no I/O.

Every file lands under `DIR/outputs/`; a layout template says where below it:

- default `{model}/{job_id}`, so `DIR/outputs/<model-slug>/<job_id>.<ext>`;
- a task that returns several files: the first keeps the plain name, file 2 onwards get
  `_2`, `_3`, ... before the extension (unless the template uses `{index}` itself);
- `--layout` fields: `{job_id}`, `{model}`, `{index}` (1-based file number), `{task_id}`,
  `{date}` (UTC completion date, YYYY-MM-DD) and any manifest column, e.g. `{subject}`.
  Built-in names win over manifest columns of the same name.

Every value is slugified (NFKC, accents dropped, only `[A-Za-z0-9._-]`, runs of anything
else become `-`, no leading dot, at most 80 characters, never empty), so a value can
never add a path segment. The template's own text is checked when it is parsed (before
anything is sent): no absolute paths, drive letters, backslashes, `..`, empty segments,
hidden segments or characters outside `[A-Za-z0-9._-/]`.

Two jobs never share a path, nor a path less its extension (its *stem*): each output
`NAME.ext` has a provenance sidecar `NAME.json` beside it (outputs/_sidecars.py), so
`x.png` of one job and `x.mp4` of another would share one. A template without
`{job_id}` or `{task_id}` gets `-<job_id>` appended to its file name, so paths differ by
construction; where they still meet (ids that slugify alike, `a` file 2 against job
`a_2`, `A` and `a` on a case-insensitive disk, a template that names different jobs'
files alike but for the extension) `PathClaims` gives the later claimant a path with a
short hash of its job id and file number. The downloader seeds it from the `files`
table, so a stem recorded by one run is never handed to another job by the next.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import string
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from liangxin_batch.core._provenance import stem_key
from liangxin_batch.errors import ConfigError

__all__ = [
    "BUILTIN_FIELDS",
    "DEFAULT_TEMPLATE",
    "OUTPUTS_DIR",
    "Layout",
    "PathClaims",
    "extension_for",
    "slugify",
]

OUTPUTS_DIR = "outputs"
DEFAULT_TEMPLATE = "{model}/{job_id}"
BUILTIN_FIELDS = frozenset({"job_id", "model", "index", "task_id", "date"})
_UNIQUE_FIELDS = frozenset({"job_id", "task_id"})
_MAX_SLUG = 80
_MAX_TEMPLATE = 240
_MAX_SEGMENT_BYTES = 200  # of 255: room for '.', '.part', a '-1a2b3c4d' tag, the ext

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DASHES = re.compile(r"-{2,}")
_LITERAL_OK = re.compile(r"[A-Za-z0-9._/-]*")
# Names Windows refuses for any file, whatever the extension.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}
)

_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "image/heic": ".heic",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
}
_SUFFIX_ALIASES = {".jpeg": ".jpg", ".tif": ".tiff"}
# A URL suffix is trusted only when it is a known media type: `.db` or `.html` never.
_KNOWN_SUFFIXES = frozenset(_TYPES.values())


def slugify(value: object, *, max_length: int = _MAX_SLUG) -> str:
    """A file-name-safe, never-empty form of any value (see the module doc)."""
    text = unicodedata.normalize("NFKC", "" if value is None else str(value))
    # Drop accents so "café" reads "cafe" rather than "caf-".
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _DASHES.sub("-", _UNSAFE.sub("-", text)).lstrip(".-")
    text = text[:max_length].rstrip(".-")
    if text.split(".", 1)[0].lower() in _RESERVED:
        text = "_" + text
    return text or "none"


def extension_for(content_type: str | None, url: str) -> str:
    """`.png`/`.jpg`/`.mp4`... from the Content-Type, else the URL's suffix, else `.bin`."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in _TYPES:
        return _TYPES[mime]
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    suffix = _SUFFIX_ALIASES.get(suffix, suffix)
    return suffix if suffix in _KNOWN_SUFFIXES else ".bin"


def _utc_date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Layout:
    """A parsed, checked template. Build with `Layout.parse`."""

    template: str
    #: (literal text, field name or None) pairs, as string.Formatter parses them.
    parts: tuple[tuple[str, str | None], ...]
    #: The field names it uses (kept: every downloaded file's path asks).
    fields: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = frozenset(name for _, name in self.parts if name is not None)
        object.__setattr__(self, "fields", names)

    @classmethod
    def parse(cls, template: str | None = None) -> Layout:
        """Check a `--layout` template; ConfigError names what is wrong."""
        text = DEFAULT_TEMPLATE if template is None else template
        where = f"--layout {text!r}"
        if not text.strip():
            raise ConfigError("--layout: the template is empty; try '{model}/{job_id}'")
        if len(text) > _MAX_TEMPLATE:
            raise ConfigError(f"{where}: longer than {_MAX_TEMPLATE} characters")
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as err:
            raise ConfigError(f"{where}: {err} (write fields as {{name}})") from None
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if not _LITERAL_OK.fullmatch(literal):
                bad = next(c for c in literal if not _LITERAL_OK.fullmatch(c))
                raise ConfigError(
                    f"{where}: {bad!r} is not allowed; outside {{fields}} use only letters, "
                    "digits, '.', '_', '-' and '/' (paths are relative to DIR/outputs)"
                )
            if name is not None:
                if not name or name.isdigit() or any(c in name for c in ".[]"):
                    raise ConfigError(
                        f"{where}: {{{name}}} is not a field; name one, e.g. {{job_id}}"
                    )
                if spec or conversion:
                    raise ConfigError(f"{where}: {{{name}}} takes no format spec or conversion")
            parts.append((literal, name))
        layout = cls(template=text, parts=tuple(parts))
        layout._check_segments(where)
        return layout

    def _check_segments(self, where: str) -> None:
        # Fields render non-empty, without '/' and never starting with '.', so "x"
        # stands in for each one when judging the shape of the path.
        shape = "".join(literal + ("x" if name is not None else "") for literal, name in self.parts)
        if shape.startswith("/"):
            raise ConfigError(f"{where}: absolute paths are not allowed; it is relative to DIR")
        for segment in shape.split("/"):
            if segment == "":
                raise ConfigError(f"{where}: empty path segment ('//' or a trailing '/')")
            if segment in (".", ".."):
                raise ConfigError(f"{where}: '{segment}' segments are not allowed")
            if segment.startswith("."):
                raise ConfigError(f"{where}: a segment may not start with '.'")

    @property
    def column_fields(self) -> frozenset[str]:
        """Fields that must come from the manifest."""
        return self.fields - BUILTIN_FIELDS

    def check_columns(self, columns: Iterable[str]) -> None:
        """ConfigError when the template names a column the manifest does not have."""
        known = set(columns)
        missing = sorted(self.column_fields - known)
        if missing:
            options = sorted(known | BUILTIN_FIELDS)
            hints = [
                f"{{{m}}}" + (f" (did you mean {{{close[0]}}}?)" if close else "")
                for m in missing
                for close in [difflib.get_close_matches(m, options, n=1)]
            ]
            raise ConfigError(
                f"--layout {self.template!r}: no such manifest column: {', '.join(hints)}; "
                f"fields: {', '.join('{' + o + '}' for o in options)}"
            )

    def relative_path(
        self,
        *,
        job_id: str,
        model: str,
        task_id: str | None,
        index: int,
        ext: str,
        completed_at: float,
        columns: Mapping[str, object],
    ) -> str:
        """`outputs/...` (POSIX, relative to DIR) for file `index` (1-based) of a job."""
        values = {
            **{k: v for k, v in columns.items() if k not in BUILTIN_FIELDS},
            "job_id": job_id,
            "model": model,
            "task_id": task_id,
            "index": index,
            "date": _utc_date(completed_at),
        }
        rendered = "".join(
            literal + (slugify(values.get(name, "")) if name is not None else "")
            for literal, name in self.parts
        )
        if not self.fields & _UNIQUE_FIELDS:
            rendered += "-" + slugify(job_id)
        if index >= 2 and "index" not in self.fields:
            rendered += f"_{index}"
        rendered = "/".join(_fit_segment(segment) for segment in rendered.split("/"))
        path = f"{OUTPUTS_DIR}/{rendered}{ext}"
        _assert_inside(path)
        return path

    @staticmethod
    def disambiguate(path: str, job_id: str) -> str:
        """The same path with a short hash of the job id before the extension."""
        pure = PurePosixPath(path)
        tag = hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:8]
        return str(pure.with_name(f"{pure.stem}-{tag}{pure.suffix}"))


def _fit_segment(segment: str) -> str:
    """A path segment short enough for any file system (255 bytes), still unique.

    Several 80-character fields in one segment can exceed the limit; the cut keeps room
    for the extension, the `.part` of a download in progress and a disambiguating hash.
    """
    raw = segment.encode("utf-8")
    if len(raw) <= _MAX_SEGMENT_BYTES:
        return segment
    tag = hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: _MAX_SEGMENT_BYTES - 9].decode("utf-8", "ignore").rstrip(".-")
    return f"{head}-{tag}"


def _assert_inside(path: str) -> None:
    # Parsing already rules these out; this guards against a future change that does not.
    segments = path.split("/")
    if path.startswith("/") or any(s in ("", ".", "..") or s.startswith(".") for s in segments):
        raise AssertionError(f"layout produced an unsafe path: {path!r}")
    if any(c in path for c in "\\:\0"):
        raise AssertionError(f"layout produced an unsafe path: {path!r}")


#: (job_id, file number) of the files recorded at a path of the same stem (`stem_key`).
Recorded = Callable[[str], Sequence[tuple[str, int]]]


#: Take a stem for (job_id, n) among all workers; False when another holds it.
Reserve = Callable[[str, str, int], bool]


class PathClaims:
    """Who owns which output stem (`stem_key`: the path less its extension, compared
    case-insensitively): (job_id, file number). Owning the stem owns `NAME.json` too.

    Paths recorded in the state are asked of it (`recorded`, an index search), so memory
    holds only the claims of downloads this process has not recorded yet: `release`
    one once its file row is committed. Claims come from one thread at a time: where
    the state's round trips are made (the store's thread, on PostgreSQL); a release
    from the loop. The lock guards the maps only, never a round trip.
    """

    def __init__(self, recorded: Recorded | None = None, *, reserve: Reserve | None = None) -> None:
        self._recorded = recorded
        #: Workers sharing DIR take each stem in the shared state too (None: one process).
        self._reserve = reserve
        self._owner: dict[str, tuple[str, int]] = {}
        self._path: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def release(self, job_id: str, n: int) -> None:
        """The claim of (job_id, n) is in the state now (or given up): forget it here."""
        with self._lock:
            key = self._path.pop((job_id, n), None)
            if key is not None:
                self._owner.pop(key, None)

    def _held_by_other(self, candidate: str, owner: tuple[str, int]) -> bool:
        key = stem_key(candidate)
        with self._lock:
            if self._owner.get(key, owner) != owner:
                return True
        if self._recorded is None:
            return False
        return any(holder != owner for holder in self._recorded(candidate))

    def _take(self, key: str, owner: tuple[str, int]) -> None:
        with self._lock:
            old = self._path.get(owner)
            if old is not None and old != key:
                del self._owner[old]  # the owner moved (e.g. another extension): free it
            self._owner[key] = owner
            self._path[owner] = key

    def claim(self, path: str, job_id: str, n: int) -> str:
        """`path`, or a disambiguated variant when another owner holds it."""
        owner = (job_id, n)
        candidate = path
        tries = 0
        while self._held_by_other(candidate, owner) or (
            self._reserve is not None and not self._reserve(stem_key(candidate), *owner)
        ):
            tries += 1
            candidate = Layout.disambiguate(path, f"{job_id}#{n}#{tries}")
        self._take(stem_key(candidate), owner)
        return candidate
