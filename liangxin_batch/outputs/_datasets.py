"""Datasets out: the output images of the succeeded jobs, each with its results.csv row,
in the forms dataset tools read (`export --format hf | webdataset`, `--format parquet
--embed-images`).

One row per image: a job of several images gives several rows, each with the job's whole
results.csv row (so `output_paths` still lists all its files) and `image_index` (the
file's number in the task, 0-based) and `image_path` (the file, relative to DIR). Rows
come in manifest order. Only jobs whose files are verified on disk (report status
`succeeded`) have rows; a file that is not an image (a video) has none and is counted,
and a succeeded job whose file is gone or changed on disk is skipped and counted (the
summary says what to do). The columns are typed as the parquet export types them.

The originals are never moved or rewritten: images are copied, or hard-linked with
`link=True` (a copy where a link cannot be made, e.g. across filesystems). A folder
export is built beside OUT and renamed into place when whole, so OUT is never half
written; it refuses an OUT that is not empty unless `overwrite` and OUT holds the marker
an earlier export left (`MARKER`), so no other folder is ever replaced.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._columns import (
    MANIFEST_PREFIX,
    RESULT_TYPES,
    ColumnType,
    plan_header,
    typed_cells,
)
from liangxin_batch.outputs._export_target import check_export_target
from liangxin_batch.outputs._jobs import report_jobs
from liangxin_batch.state._store import StateStore

__all__ = [
    "DATASET_COLUMNS",
    "IMAGE_EXTENSIONS",
    "MARKER",
    "DatasetHeader",
    "DatasetSummary",
    "ImageSample",
    "dataset_header",
    "export_dataset",
    "image_samples",
    "sample_key",
]

#: The columns a dataset row has beside the job's results.csv row (the image itself is
#: `image` in hf and parquet, the KEY.png entry of a webdataset sample).
DATASET_COLUMNS: dict[str, ColumnType] = {"image_index": "integer", "image_path": "string"}
#: Names a manifest column cannot keep in a dataset: they are `manifest_<name>` there.
_RESERVED = ("image", "file_name", "file_names", *DATASET_COLUMNS)
#: imagefolder loads a column named so as an image: a manifest column so named is renamed.
_IMAGE_NAME = re.compile(r"(^|_)file_names?$")

#: What the dataset tools decode as images (PIL opens each); other files are skipped.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
#: What a folder export leaves in OUT: `--overwrite` replaces only a folder holding it.
MARKER = ".liangxin-export.json"
#: webdataset's default shard size (bytes).
DEFAULT_SHARD_SIZE = 1_000_000_000

# -- the rows ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetHeader:
    """The dataset's columns (less the image): manifest columns (renamed where they
    clash), RESULT_COLUMNS, then DATASET_COLUMNS; `names`: the manifest's own names."""

    columns: list[str]
    types: list[ColumnType]
    names: list[str]


def dataset_header(column_names: Collection[str]) -> DatasetHeader:
    header, rename = plan_header(column_names, reserved=_RESERVED)
    taken = set(header)
    for name, out in list(rename.items()):
        if _IMAGE_NAME.search(out):  # e.g. mask_file_name: kept as text, not loaded
            new = f"{out}_text"
            while new in taken:
                new = f"{MANIFEST_PREFIX}{new}"
            rename[name] = new
            taken.add(new)
    manifest = list(rename.values())
    text: list[ColumnType] = ["string"] * len(manifest)  # manifest columns are text
    return DatasetHeader(
        [*manifest, *RESULT_TYPES, *DATASET_COLUMNS],
        [*text, *RESULT_TYPES.values(), *DATASET_COLUMNS.values()],
        list(rename),
    )


@dataclass(frozen=True, slots=True)
class ImageSample:
    """One output image and its row: the job's typed results.csv cells, `image_index`
    and `image_path` (DATASET_COLUMNS), in `DatasetHeader.columns` order."""

    seq: int  # the job's number among those exported (0-based): keys and subfolders
    key: str  # a name safe for a file and a webdataset key (no dot, no slash)
    source: str  # relative to DIR
    ext: str  # the original's extension, lower case ('.png')
    row: list[Any]


@dataclass(slots=True)
class DatasetSummary:
    """What an export wrote and what it left out, for the command's summary."""

    target: Path
    images: int = 0
    jobs: int = 0
    linked: int = 0  # images hard-linked rather than copied
    shards: int = 0
    not_images: int = 0  # files of succeeded jobs that are not images (videos)
    missing_jobs: int = 0  # succeeded jobs skipped: a file gone or changed on disk
    missing_example: str | None = None
    _jobs_seen: set[int] = field(default_factory=set)

    def missing(self, why: str) -> None:
        self.missing_jobs += 1
        if self.missing_example is None:
            self.missing_example = why

    def wrote(self, sample: ImageSample) -> None:
        self.images += 1
        if sample.seq not in self._jobs_seen:  # a job's images come one after another
            self._jobs_seen.clear()
            self._jobs_seen.add(sample.seq)
            self.jobs += 1


def sample_key(seq: int, job_id: str, n: int) -> str:
    """`{seq:08d}_{job id}_{n}`: unique by `seq`, sorted in manifest order; the job id's
    dots (webdataset splits a name at its first dot) and anything but [A-Za-z0-9_-]
    become '-'."""
    return f"{seq:08d}_{re.sub(r'[^A-Za-z0-9_-]', '-', job_id)[:100]}_{n}"


def image_samples(
    out_dir: Path,
    store: StateStore,
    header: DatasetHeader,
    summary: DatasetSummary,
    *,
    model: Collection[str] | None = None,
) -> Iterator[ImageSample]:
    """Every image of the succeeded jobs, in manifest order; what is left out is counted
    in `summary`."""
    seq = 0
    jobs = report_jobs(store, status=["succeeded"], model=model, out_dir=out_dir, inputs=False)
    for job, kept, lost in jobs:
        if lost is not None:
            summary.missing(lost)
            continue
        images = [f for f in kept if os.path.splitext(f.path or "")[1].lower() in IMAGE_EXTENSIONS]
        summary.not_images += len(kept) - len(images)
        if not images:
            continue
        cells = typed_cells(job, kept, header.names)
        for f in images:
            path = f.path or ""
            key = sample_key(seq, job.job_id, f.n)
            ext = os.path.splitext(path)[1].lower()
            yield ImageSample(seq, key, path, ext, [*cells, f.n, path])
        seq += 1


# -- the folder ------------------------------------------------------------------------


def _check_target(out_dir: Path, target: Path, *, overwrite: bool) -> None:
    """Refuse a target that is a file, DIR itself or holds DIR, or a folder with
    something in it (unless `overwrite` and it holds an earlier export's MARKER)."""
    where = f"OUT {target}"
    here, batch = target.resolve(), out_dir.resolve()
    if here == batch or here in batch.parents:
        raise ConfigError(f"{where}: is the batch folder DIR or holds it; give another folder")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{where}: is a file; the export writes a folder: give a new folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"{where}: exists and is not empty; give a new or empty folder, "
            "or --overwrite to replace an earlier export there"
        )
    if not (target / MARKER).is_file():
        raise ConfigError(
            f"{where}: --overwrite replaces only a folder an earlier export wrote (it holds "
            f"{MARKER}); this one does not: give a new or empty folder"
        )


def _beside(target: Path, what: str) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.{what}")


def _into_place(tmp: Path, target: Path) -> None:
    """`tmp` becomes `target` by renames (an earlier export there goes, whole)."""
    try:
        os.rename(tmp, target)  # a new name, or an empty folder: replaced at once
        return
    except OSError:
        if not (target / MARKER).is_file():
            raise
    old = _beside(target, "old")
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


# -- the export ------------------------------------------------------------------------


def export_dataset(
    out_dir: Path,
    store: StateStore,
    fmt: str,
    target: Path,
    *,
    model: Collection[str] | None = None,
    link: bool = False,
    overwrite: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    row_group_bytes: int | None = None,
) -> DatasetSummary:
    """Write the images of DIR's succeeded jobs and their rows to `target`: a folder for
    `hf` (imagefolder: images/ and metadata.parquet) and `webdataset` (tar shards), one
    file with the image bytes in it for `parquet` (`--embed-images`)."""
    from liangxin_batch.outputs import _dataset_writers as writers

    pa = _arrow(fmt)
    check_export_target(out_dir, target, folder=fmt != "parquet")
    if fmt != "parquet":
        _check_target(out_dir, target, overwrite=overwrite)
    summary = DatasetSummary(target)
    header = dataset_header(list(store.column_names()))
    samples = image_samples(out_dir, store, header, summary, model=model)
    if fmt == "parquet":
        tmp = target.with_name(f".{target.name}.tmp")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            group = row_group_bytes or writers.GROUP_BYTES
            writers.write_embedded_parquet(
                pa, out_dir, samples, tmp, header, summary, group_bytes=group
            )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return summary
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(target, "partial")
    os.mkdir(tmp)
    try:
        if fmt == "hf":
            writers.write_imagefolder(pa, out_dir, samples, tmp, header, summary, link=link)
        elif fmt == "webdataset":
            writers.write_shards(out_dir, samples, tmp, header, summary, shard_size=shard_size)
        else:
            raise ConfigError(f"unknown dataset format {fmt!r}; one of: hf, webdataset")
        marker = {"format": fmt, "source": str(out_dir.resolve()), "images": summary.images}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        _into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _arrow(fmt: str) -> Any:
    if fmt == "webdataset":
        return None
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        raise ConfigError(
            f"--format {fmt} needs the pyarrow package: pip install 'liangxin-batch[parquet]'"
        ) from None
