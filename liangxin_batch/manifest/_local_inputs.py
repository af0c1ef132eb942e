"""Local paths in a manifest's image fields -> checked `LocalFile`s and file tokens.

Users of edit models have their images on disk. Wherever a model's url_list field has
`file_types` (the catalog says it takes images), an item may be a local path (relative
to the file it was written in, `~` expanded, or a `file://` URL) instead of an
http(s) URL. Each path is checked before anything is sent: it exists, is a regular,
readable file whose bytes (not its name) are an image of an allowed type, within the
field's size limit. A good file is hashed (streamed, 1 MiB at a time), and the job's
input names it by a file token (`file:sha256:<hex>`), so its identity follows the
bytes, never the path or an upload URL.

Hashing is the one costly step, so its outcome is kept per absolute path and keyed by
the file's stamp (`file_stamp`: st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): a
million rows over 20 photos read 20 photos, and a file edited in the middle of a
validation is read again. The ctime is what catches an edit that puts the size and the
mtime back (`cp -p`, `rsync -t`, `touch -r`): no user call can set it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from liangxin_batch.core._local_files import LocalFile, file_token, sniff_media_type
from liangxin_batch.manifest._guards import has_name_control

if TYPE_CHECKING:
    from liangxin_batch.catalog._specs import FieldSpec, ModelSpec

__all__ = ["FileStamp", "LocalInputs", "file_stamp", "has_local"]

_CHUNK = 1 << 20
_HEAD = 16  # bytes enough to tell the types below apart
_MAX_CACHED = 100_000  # distinct paths remembered; beyond that the memo starts afresh
_READ_TRIES = 3  # a file that changes while it is read is read again, this many times
#: Stands in for a local file that could not be used (reported), so the field's other
#: checks (how many items) still run.
_NO_FILE = file_token("0" * 64)


_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")


_HTTP = re.compile(r"https?://", re.IGNORECASE).match


def is_url(item: str) -> bool:
    """An http(s) URL (the service fetches it), as opposed to a local path."""
    return _HTTP(item) is not None


def has_local(items: list[Any]) -> bool:
    """Whether a url_list value may hold local paths: False for the common list of
    http(s) URLs, found by C code (a million rows pay next to nothing for it)."""
    try:
        return not all(map(_HTTP, items))
    except TypeError:  # an item that is not text: the full walk decides
        return True


def is_path(item: str) -> bool:
    """A local path or a file:// URL: not http(s), nor a URL of another scheme (ftp://,
    which the field's own check refuses as not http(s))."""
    if is_url(item) or not item.strip():
        return False
    scheme = _SCHEME.match(item)
    return scheme is None or scheme.group(1).lower() == "file"


@dataclass(frozen=True, slots=True)
class FileFault:
    """Why a local path cannot be used: what the problem says it got, and what to do."""

    got: str
    suggestion: str
    expected: str = ""


@dataclass(frozen=True, slots=True)
class _Facts:
    """What reading a file found (the field's limits are checked afterwards)."""

    sha256: str
    size: int
    media_type: str | None  # None: not an image type we know
    path: str  # absolute


#: What says a file is as it was: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).
FileStamp = tuple[int, int, int, int, int]


def file_stamp(info: os.stat_result) -> FileStamp:
    """A file's stamp: which file (device and inode: a symlink pointed elsewhere, or a
    file replaced under its name, is another file) and its version (size, mtime, and
    ctime, which no `touch`, `cp -p` or `rsync -t` can put back)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _too_big(shown: str, size: int, max_file_mb: float) -> FileFault:
    return FileFault(
        f"{shown}: {_mb(size)}",
        f"make it smaller than {max_file_mb:g} MB (resize or recompress it)",
    )


def _wrong_type(
    shown: str, media_type: str | None, size: int, file_types: tuple[str, ...]
) -> FileFault:
    what = (
        f"a {type_names((media_type,))} image"
        if media_type is not None
        else ("an empty file" if size == 0 else "bytes that are not an image")
    )
    return FileFault(
        f"{shown}: {what}",
        f"give a {type_names(file_types)} image (its bytes decide, not its name)",
    )


def _unreadable(shown: str, err: OSError) -> FileFault:
    if isinstance(err, PermissionError):
        return FileFault(
            f"{shown}: not readable (permission denied)",
            "make it readable (chmod a+r) or copy it somewhere readable",
        )
    return FileFault(f"{shown}: cannot be read ({err.strerror or err})", "check it")


def _head(path: str, shown: str) -> bytes | FileFault:
    """The first bytes of a file: enough to sniff its type."""
    try:
        with open(path, "rb") as fh:
            return fh.read(_HEAD)
    except OSError as err:
        return _unreadable(shown, err)


def type_names(types: tuple[str, ...]) -> str:
    """('image/jpeg', 'image/png') -> 'jpeg/png'."""
    return "/".join(t.split("/", 1)[-1] for t in types)


def expected_text(file_types: tuple[str, ...], max_file_mb: float | None) -> str:
    """'an image file (jpeg/png/webp) ≤ 10 MB': what a field's local file must be."""
    text = f"an image file ({type_names(file_types)})"
    return text + (f" ≤ {max_file_mb:g} MB" if max_file_mb is not None else "")


class LocalInputs:
    """Turns local paths into LocalFiles, reading each distinct file once per version."""

    def __init__(self) -> None:
        self._facts: dict[str, tuple[FileStamp, _Facts | FileFault]] = {}
        self._fields: dict[str, tuple[tuple[str, FieldSpec], ...]] = {}
        #: Every file read, by its absolute path as written (not resolved: a symlink
        #: pointed elsewhere must show): its stamp as hashed (what a resumed run compares
        #: to know whether the file changed since).
        self.stats: dict[str, FileStamp] = {}

    @staticmethod
    def absolute(written: str, base_dir: str) -> str | None:
        """The absolute path an item names (None: a file:// URL of another host)."""
        text = written.strip()
        if text.lower().startswith("file:"):
            parts = urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                return None
            text = unquote(parts.path)
        text = os.path.expanduser(text)
        return os.path.abspath(os.path.join(base_dir, text))

    def resolve(
        self,
        written: str,
        base_dir: str,
        file_types: tuple[str, ...],
        max_file_mb: float | None,
    ) -> LocalFile | FileFault:
        """The LocalFile a written path names, or why it cannot be used."""
        shown = written.strip()
        path = self.absolute(written, base_dir)
        if path is None:
            return FileFault(
                f"{shown}: a file:// URL of another machine",
                "give a path on this machine, or an http(s) URL",
            )
        if has_name_control(path):
            return FileFault(
                f"{shown!r}: a path with control characters", "name the file without them"
            )
        info = self._stat(path, shown, base_dir)
        if isinstance(info, FileFault):
            return info
        # The stat and the first bytes are looked at before the file is hashed: a 100 GB
        # disk image named in a 10 MB field, or a video named .png, is refused at once.
        if max_file_mb is not None and info.st_size > max_file_mb * 10**6:
            return _too_big(shown, info.st_size, max_file_mb)
        facts = self._read(path, shown, info, file_types)
        if isinstance(facts, FileFault):
            return facts
        if facts.media_type not in file_types:
            return _wrong_type(shown, facts.media_type, facts.size, file_types)
        if max_file_mb is not None and facts.size > max_file_mb * 10**6:
            return _too_big(shown, facts.size, max_file_mb)  # grew since the stat
        return LocalFile(facts.sha256, facts.size, facts.media_type, facts.path, shown)

    @staticmethod
    def _stat(path: str, shown: str, base_dir: str) -> os.stat_result | FileFault:
        """The stat of a regular file, or why the path names none."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            where = os.path.abspath(base_dir or ".")
            return FileFault(
                f"{shown}: no such file",
                f"check the path (relative paths are relative to {where})",
            )
        except OSError as err:
            return FileFault(f"{shown}: cannot be looked at ({err.strerror or err})", "check it")
        if not stat.S_ISREG(info.st_mode):
            return FileFault(f"{shown}: {_kind(info.st_mode)}", "name an image file")
        return info

    def _read(
        self, path: str, shown: str, info: os.stat_result, file_types: tuple[str, ...]
    ) -> _Facts | FileFault:
        """What the file holds (from the memo while its stamp is unchanged). A file whose
        first bytes are no type the field takes is not hashed: its facts then have no
        sha256, and the caller refuses it by its type."""
        key = file_stamp(info)
        hit = self._facts.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        head = _head(path, shown)
        if isinstance(head, FileFault):
            return head
        media_type = sniff_media_type(head)
        if media_type not in file_types:
            return _Facts("", info.st_size, media_type, path)
        found = self._hash(path, shown, key)
        if len(self._facts) >= _MAX_CACHED:
            self._facts.clear()
        if isinstance(found, FileFault):
            self._facts[path] = (key, found)
            return found
        facts, key = found
        self._facts[path] = (key, facts)
        self.stats[path] = key
        return facts

    def _hash(self, path: str, shown: str, key: FileStamp) -> tuple[_Facts, FileStamp] | FileFault:
        """Read the file once, streamed; again if it changed while it was read."""
        for _ in range(_READ_TRIES):
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as fh:
                    head = fh.read(_CHUNK)
                    digest.update(head)
                    size = len(head)
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                    after = os.fstat(fh.fileno())
            except OSError as err:
                return _unreadable(shown, err)
            now = file_stamp(after)
            if now == key and size == key[2]:
                real = os.path.realpath(path)
                return _Facts(digest.hexdigest(), size, sniff_media_type(head[:_HEAD]), real), key
            key = now  # written to while read: read it again
        return FileFault(
            f"{shown}: changed while it was being read", "wait until it is written, then retry"
        )

    # ---- a job's input ---------------------------------------------------------------

    def fields_of(self, spec: ModelSpec) -> tuple[tuple[str, FieldSpec], ...]:
        """The model's fields that may hold local files (url_lists with file_types, and
        object_lists whose items have some), worked out once per model."""
        found = self._fields.get(spec.id)
        if found is None:
            found = tuple(
                (name, fs)
                for name, fs in spec.fields.items()
                if (fs.type == "url_list" and fs.file_types)
                or (
                    fs.type == "object_list"
                    and fs.item_fields is not None
                    and any(s.type == "url_list" and s.file_types for s in fs.item_fields.values())
                )
            )
            self._fields[spec.id] = found
        return found

    def tokenize(
        self,
        fs: FieldSpec,
        data: dict[str, Any],
        name: str,
        key: str,
        written_in: str,
        local: dict[str, LocalFile],
    ) -> Iterator[tuple[str, FileFault]]:
        """Replace the local paths in `data[name]` by file tokens, their files added to
        `local` (the first path seen per sha256); yield (field label, fault) for each
        path that cannot be used. `key`: what the field was written as (`images`);
        `written_in`: the file it was written in (relative paths start at its folder)."""
        value = data[name]
        if not isinstance(value, list):
            return  # validate_input says what it should be
        base_dir = os.path.dirname(written_in)
        faults: list[tuple[str, FileFault]] = []
        if fs.type == "url_list":
            data[name] = self._tokens(fs, value, base_dir, key, local, faults)
            yield from faults
            return
        items: list[Any] = []
        for i, item in enumerate(value):
            if isinstance(item, dict) and fs.item_fields is not None:
                copy = dict(item)  # the value may be shared (YAML defaults)
                for sub, sfs in fs.item_fields.items():
                    inner = copy.get(sub)
                    if sfs.type == "url_list" and sfs.file_types and isinstance(inner, list):
                        label = f"{key}[{i}].{sub}"
                        copy[sub] = self._tokens(sfs, inner, base_dir, label, local, faults)
                item = copy
            items.append(item)
        data[name] = items
        yield from faults

    def _tokens(
        self,
        fs: FieldSpec,
        items: list[Any],
        base_dir: str,
        label: str,
        local: dict[str, LocalFile],
        faults: list[tuple[str, FileFault]],
    ) -> list[Any]:
        """`items` with each local path replaced by its file token (the same list when
        every item is a URL: the common case costs a look at each item)."""
        if not any(isinstance(i, str) and is_path(i) for i in items):
            return items
        types = fs.file_types or ()
        expected = expected_text(types, fs.max_file_mb)
        new: list[Any] = []
        for item in items:
            if not isinstance(item, str) or not is_path(item):
                new.append(item)  # validate_input has its say about these
                continue
            found = self.resolve(item, base_dir, types, fs.max_file_mb)
            if isinstance(found, FileFault):
                faults.append((label, FileFault(found.got, found.suggestion, expected)))
                new.append(_NO_FILE)
                continue
            local.setdefault(found.sha256, found)  # the same bytes twice: the first path
            new.append(file_token(found.sha256))
        return new
