"""What a manifest file validated against: enough to know a resume need not read it again.

A resume of an unchanged manifest is neither validated nor synced again: at a million
rows that is a minute of work whose answer the state already holds. "Unchanged" means
the same bytes (size, mtime and a sha256 of the content: a `touch` or an edit that keeps
the size still counts as a change when the bytes differ), checked against the same
catalog, with the same options that change what validation builds, by the same version
of this package.

Only a tabular manifest (CSV, TSV, JSONL, XLSX, Parquet) has one: it is all its jobs. A
YAML or JSON manifest may name other files (`jobs_from`) whose bytes it does not hold,
so it is always read again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.manifest._read import TABULAR_SUFFIXES

__all__ = ["catalog_digest", "manifest_fingerprint"]

_READ = 1 << 20


def catalog_digest(catalog: Catalog) -> str:
    """A digest of every model spec (ids, fields, prices, latencies) and the credit price."""
    text = repr((sorted(catalog.models.items()), catalog.credit_usd))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def manifest_fingerprint(
    path: Path,
    *,
    catalog: Catalog,
    default_model: str | None,
    allow_outside: bool,
    version: str,
) -> str | None:
    """The fingerprint of a manifest file and what it is checked against; None if the
    file cannot be read (validation then says why) or may name other files."""
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
            "catalog": catalog_digest(catalog),
            "default_model": default_model,
            "allow_outside": allow_outside,
            "version": version,
        },
        sort_keys=True,
    )
