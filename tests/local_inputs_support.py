"""Small image files for the local-input tests (real magic bytes, distinct content; or
whole decodable PNGs), and the steps `run` takes to sync a manifest of them into a state,
so the tests of several modules share one way of doing it."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from PIL import Image

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.manifest._fingerprint import manifest_fingerprint, stored_models, with_models
from liangxin_batch.run._manifest_jobs import load_manifest_jobs
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import SyncReport, sync_jobs

__all__ = [
    "CATALOG",
    "EDIT_MODEL",
    "edit_manifest",
    "image_png",
    "jpeg",
    "png",
    "run_fingerprint",
    "sha",
    "sync_as_run",
    "webp",
]

#: The edit model the state tests' manifests name (image_urls of local files).
EDIT_MODEL = "seedream/4.5-edit"
CATALOG = default_catalog()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png(path: Path, body: bytes = b"png-body") -> Path:
    return _put(path, b"\x89PNG\r\n\x1a\n" + body)


def jpeg(path: Path, body: bytes = b"jpeg-body") -> Path:
    return _put(path, b"\xff\xd8\xff\xe0" + body)


def webp(path: Path, body: bytes = b"webp-body") -> Path:
    return _put(path, b"RIFF" + len(body).to_bytes(4, "little") + b"WEBP" + body)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_png(colour: str = "red", size: int = 8) -> bytes:
    """A whole PNG (decodable, not only its magic bytes): `size` x `size` of `colour`."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def edit_manifest(tmp: Path, rows: list[tuple[str, str]], name: str = "m.csv") -> Path:
    """A CSV of EDIT_MODEL jobs: each row's (id, image_urls)."""
    path = tmp / name
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "model", "prompt", "image_urls", "aspect_ratio", "quality", "_note"])
        for job_id, images in rows:
            w.writerow([job_id, EDIT_MODEL, "brighter", images, "1:1", "basic", "mine"])
    return path


def run_fingerprint(manifest: Path, stored: str | None = None) -> str | None:
    """The fingerprint `run` makes before reading the manifest (of the catalog as far as
    the stored one says the batch uses it)."""
    return manifest_fingerprint(
        manifest,
        catalog=CATALOG,
        default_model=None,
        allow_outside=False,
        version="t",
        models=stored_models(stored),
    )


def sync_as_run(store: StateStore, manifest: Path, *, allow_changed: bool = False) -> SyncReport:
    """What `run` does between reading the manifest and running it."""
    fingerprint = run_fingerprint(manifest)
    with load_manifest_jobs(manifest, catalog=CATALOG) as jobs:
        return sync_jobs(
            store,
            jobs,
            allow_changed=allow_changed,
            fingerprint=with_models(fingerprint, CATALOG, jobs.models, jobs.local_stats),
        )
