"""What a manifest file validated against: enough to know a resume need not read it again.

A resume of an unchanged manifest is neither validated nor synced again: at a million
rows that is a minute of work whose answer the state already holds. "Unchanged" means
the same bytes (size, mtime and a sha256 of the content: a `touch` or an edit that keeps
the size still counts as a change when the bytes differ), checked against the same
catalog, with the same options that change what validation builds, by the same version
of this package.

Local input files (images named by path) are part of what the jobs are: the stored
fingerprint lists each one's absolute path as written (not resolved: a symlinked folder
pointed at other photos must show) with its stamp as it was hashed (device, inode,
size, mtime_ns, ctime_ns: an edit that puts the size and mtime back still moves the
ctime), and a manifest whose files are not all as listed is read again (a stat per
distinct file: a photo edited in place gives its job a new content hash, and the usual
rules for a changed job apply).

Only a tabular manifest (CSV, TSV, JSONL, XLSX, Parquet) has one: it is all its jobs. A
YAML or JSON manifest may name other files (`jobs_from`) whose bytes it does not hold,
so it is always read again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.manifest._local_inputs import FileStamp, file_stamp
from liangxin_batch.manifest._read import TABULAR_SUFFIXES

__all__ = [
    "catalog_digest",
    "manifest_fingerprint",
    "same_manifest",
    "stored_models",
    "with_models",
]

_LOCAL_KEY = "local_files"

_READ = 1 << 20


def catalog_digest(catalog: Catalog, models: Iterable[str] | None = None) -> str:
    """A digest of the model specs (ids, aliases, fields, prices, latencies) and the
    credit price: of `models` only when given (a model's spec says all its rows validate
    to, and an id or alias cannot name two models), so a change elsewhere in the
    catalog does not make a million rows be read again."""
    ids = sorted(catalog.models) if models is None else sorted(set(models))
    text = repr(([(m, catalog.models.get(m)) for m in ids], catalog.credit_usd))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def stored_models(fingerprint: str | None) -> list[str] | None:
    """The models a stored fingerprint's catalog digest covers (None: the whole catalog,
    or no fingerprint)."""
    try:
        models = json.loads(fingerprint)["models"] if fingerprint else None
    except (ValueError, KeyError, TypeError):
        return None
    ok = isinstance(models, list) and all(isinstance(m, str) for m in models)
    return models if ok else None


def manifest_fingerprint(
    path: Path,
    *,
    catalog: Catalog,
    default_model: str | None,
    allow_outside: bool,
    version: str,
    models: Iterable[str] | None = None,
) -> str | None:
    """The fingerprint of a manifest file and what it is checked against; None if the
    file cannot be read (validation then says why) or may name other files.

    `models`: the catalog ids its jobs use (the catalog digest covers only those); to
    compare with a stored fingerprint, give the models it names (`stored_models`)."""
    if path.suffix.lower() not in TABULAR_SUFFIXES:
        return None
    try:
        info = path.stat()
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_READ):
                digest.update(chunk)
    except OSError:
        return None
    return json.dumps(
        {
            "path": str(path.resolve()),
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
            "sha256": digest.hexdigest(),
            "catalog": catalog_digest(catalog, models),
            "models": None if models is None else sorted(set(models)),
            "default_model": default_model,
            "allow_outside": allow_outside,
            "version": version,
        },
        sort_keys=True,
    )


def with_models(
    fingerprint: str | None,
    catalog: Catalog,
    models: Iterable[str],
    local_files: Mapping[str, FileStamp] | None = None,
) -> str | None:
    """`fingerprint` (made before the manifest was read, so a later edit of the file is
    never taken for what was read) with its catalog digest narrowed to `models`, and
    the local files the jobs read (path -> `file_stamp` as hashed), if any."""
    if fingerprint is None:
        return None
    doc = json.loads(fingerprint)
    doc["models"] = sorted(set(models))
    doc["catalog"] = catalog_digest(catalog, doc["models"])
    if local_files:
        doc[_LOCAL_KEY] = sorted([path, *stamp] for path, stamp in local_files.items())
    return json.dumps(doc, sort_keys=True)


def same_manifest(stored: str | None, fingerprint: str | None) -> bool:
    """Whether the manifest that made `fingerprint` (now, before reading it) is the one
    a sync stored as `stored`: the same file and settings, and every local file it read
    still the same file (stat of the path as written) with the stamp it had when it was
    hashed."""
    if stored is None or fingerprint is None:
        return False
    if stored == fingerprint:
        return True  # no local files: the common case, one string comparison
    try:
        doc = json.loads(stored)
        files = doc.pop(_LOCAL_KEY)
        if doc != json.loads(fingerprint):
            return False
        for path, *stamp in files:
            if list(file_stamp(os.stat(path))) != stamp:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False  # gone, unreadable, or not a fingerprint of ours: read it again
    return True
