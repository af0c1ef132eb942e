"""The dataset exports' writers, from `_datasets.image_samples` (one row per image).

- imagefolder (`--format hf`): `images/NNNN/KEY.ext` (a subfolder per 1,000 jobs: no
  folder of a million entries) and `metadata.parquet`, whose `file_name` column the
  `datasets` library's imagefolder loads as the `image` column (an `Image` feature) and
  whose other columns keep their Arrow types (parquet rather than metadata.jsonl: JSON
  has no timestamps and would guess a column's type from its first values).
- webdataset: `shard-000000.tar`, ... each sample `KEY.png` (the original's bytes and
  extension) and `KEY.json` (its row); a shard is closed before it would pass
  `shard_size`; files are streamed from disk into the tar.
- parquet with the images in it: an `image` column struct<bytes, path> and the
  `huggingface` schema metadata that says it is an `Image` feature; row groups are cut
  at `GROUP_BYTES` of images, so memory stays bounded whatever the images weigh.

Every writer streams: what it holds at once is a chunk of rows (and, for the embedded
parquet, a row group's images).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from liangxin_batch.outputs._columns import ColumnType, iso_precise
from liangxin_batch.outputs._datasets import DatasetHeader, DatasetSummary, ImageSample
from liangxin_batch.outputs._tables import nanoseconds, parquet_schema

__all__ = [
    "GROUP_BYTES",
    "METADATA",
    "hf_features",
    "write_embedded_parquet",
    "write_imagefolder",
    "write_shards",
]

METADATA = "metadata.parquet"
#: Images of one row group of the embedded parquet. Peak RSS grows by about 5x this (the
#: bytes read, Arrow's copy, the writer's pages, the files read ahead): measured with
#: 2,000 images of 1 MB, 248 MB at 8 MiB, 405 MB at 32 MiB (pyarrow alone: 91 MB).
GROUP_BYTES = 8 * 2**20
_CHUNK = 5000  # rows of metadata.parquet per row group
_JOBS_PER_FOLDER = 1000
_BLOCK = tarfile.BLOCKSIZE
_THREADS = 8
#: Samples worked on ahead of the writer: files opened (webdataset: read, up to
#: `_READ_WHOLE` each), or copied; the embedded parquet reads whole files, fewer ahead.
_WINDOW = 64
_WINDOW_WHOLE = 16
_READ_WHOLE = 2**20
_BUFFER = 2**20
_T = TypeVar("_T")

_HF_DTYPES: dict[ColumnType, str] = {
    "string": "string",
    "integer": "int64",
    "float": "float64",
    "timestamp": "timestamp[ns, tz=UTC]",
}


def hf_features(header: DatasetHeader) -> dict[str, Any]:
    """The `datasets` features of an embedded parquet: `image` an Image, every other
    column a Value of its Arrow type."""
    features: dict[str, Any] = {"image": {"_type": "Image"}}
    for name, kind in zip(header.columns, header.types, strict=True):
        features[name] = {"dtype": _HF_DTYPES[kind], "_type": "Value"}
    return features


def _arrays(pa: Any, schema: Any, types: list[ColumnType], rows: list[list[Any]]) -> list[Any]:
    """Arrow arrays of `rows` (typed cells), one per field of `schema` in order."""
    columns: Iterable[Iterable[Any]] = zip(*rows, strict=True) if rows else [[]] * len(types)
    return [
        pa.array(nanoseconds(col) if kind == "timestamp" else col, field.type)
        for col, kind, field in zip(columns, types, schema, strict=True)
    ]


def _ahead(
    samples: Iterable[ImageSample], work: Callable[[ImageSample], _T], *, window: int = _WINDOW
) -> Iterator[tuple[ImageSample, _T]]:
    """(sample, work(sample)) in the samples' order, `work` run by a few threads up to
    `window` samples ahead: a file's open and create cost ~0.5 ms each on a busy disk,
    nearly all waiting, so one thread made a 10,000-image export take 10 s."""
    with ThreadPoolExecutor(_THREADS, thread_name_prefix="export") as pool:
        pending: deque[tuple[ImageSample, Future[_T]]] = deque()
        for sample in samples:
            pending.append((sample, pool.submit(work, sample)))
            if len(pending) >= window:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


# -- imagefolder ---------------------------------------------------------------------------


def _place(source: Path, target: Path, *, link: bool) -> bool | None:
    """A copy of `source` at `target` (a hard link with `link`, where one can be made):
    True linked, False copied, None the source is gone."""
    if link:
        try:
            os.link(source, target)
            return True
        except FileNotFoundError:
            return None
        except OSError:  # another filesystem, or no links there: a copy
            pass
    try:
        shutil.copyfile(source, target)
    except FileNotFoundError:
        return None
    return False


def write_imagefolder(
    pa: Any,
    out_dir: Path,
    samples: Iterable[ImageSample],
    folder: Path,
    header: DatasetHeader,
    summary: DatasetSummary,
    *,
    link: bool,
) -> None:
    parquet = importlib.import_module("pyarrow.parquet")
    types: list[ColumnType] = ["string", *header.types]
    schema = parquet_schema(pa, ["file_name", *header.columns], types)
    made: set[int] = set()
    rows: list[list[Any]] = []

    def name_of(sample: ImageSample) -> str:
        return f"images/{sample.seq // _JOBS_PER_FOLDER:04d}/{sample.key}{sample.ext}"

    def place(sample: ImageSample) -> bool | None:
        return _place(out_dir / sample.source, folder / name_of(sample), link=link)

    def with_folders(samples: Iterable[ImageSample]) -> Iterator[ImageSample]:
        for sample in samples:  # each folder made before a thread writes into it
            sub = sample.seq // _JOBS_PER_FOLDER
            if sub not in made:
                (folder / "images" / f"{sub:04d}").mkdir(parents=True)
                made.add(sub)
            yield sample

    with parquet.ParquetWriter(str(folder / METADATA), schema) as writer:
        for sample, placed in _ahead(with_folders(samples), place):
            name = name_of(sample)
            if placed is None:
                summary.missing(f"{sample.source} is missing on disk")
                continue
            summary.linked += placed
            summary.wrote(sample)
            rows.append([name, *sample.row])
            if len(rows) == _CHUNK:
                writer.write_table(
                    pa.Table.from_arrays(_arrays(pa, schema, types, rows), schema=schema)
                )
                rows = []
        if rows or summary.images == 0:
            writer.write_table(
                pa.Table.from_arrays(_arrays(pa, schema, types, rows), schema=schema)
            )


# -- webdataset ----------------------------------------------------------------------------


def _tar_bytes(size: int) -> int:
    """What a member of `size` bytes takes in a tar: its header and padded content."""
    return _BLOCK + -(-size // _BLOCK) * _BLOCK


class _Shards:
    """Tar shards `shard-NNNNNN.tar` in `folder`, each closed before it would pass `limit`
    bytes (a sample bigger than that gets a shard of its own)."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.count = 0
        self.size = 0
        self.tar: tarfile.TarFile | None = None
        self.file: IO[bytes] | None = None

    def add(
        self, key: str, ext: str, data: IO[bytes], size: int, mtime: float, meta: bytes
    ) -> None:
        need = _tar_bytes(size) + _tar_bytes(len(meta))
        if len(key) > 90:  # a long name takes a header of its own (GNU LongLink)
            need += 4 * _BLOCK
        if self.tar is not None and self.size + need > self.limit:
            self.close()
        if self.tar is None:
            name = self.folder / f"shard-{self.count:06d}.tar"
            # Open across calls (closed by `close`): one shard takes many samples. A big
            # buffer: tarfile writes each header and block apart (60,000 writes for
            # 10,000 samples took 3 s on a busy disk).
            self.file = name.open("wb", buffering=_BUFFER)
            self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.GNU_FORMAT)  # noqa: SIM115
            self.count += 1
            self.size = 2 * _BLOCK  # the end-of-archive blocks
        for suffix, length, stream in ((ext, size, data), (".json", len(meta), None)):
            info = tarfile.TarInfo(f"{key}{suffix}")
            info.size, info.mtime, info.mode = length, int(mtime), 0o644
            if stream is None:
                stream = io.BytesIO(meta)
            self.tar.addfile(info, stream)
        self.size += need

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
        if self.file is not None:
            self.file.close()
            self.file = None


def write_shards(
    out_dir: Path,
    samples: Iterable[ImageSample],
    folder: Path,
    header: DatasetHeader,
    summary: DatasetSummary,
    *,
    shard_size: int,
) -> None:
    encode = json.JSONEncoder(ensure_ascii=False).encode
    columns = header.columns
    stamps = [i for i, kind in enumerate(header.types) if kind == "timestamp"]
    shards = _Shards(folder, shard_size)

    def opened(sample: ImageSample) -> tuple[IO[bytes], os.stat_result] | None:
        """The file open, and its stat (None: it is gone); a small one read whole."""
        try:
            fh = (out_dir / sample.source).open("rb")
        except FileNotFoundError:
            return None
        stat = os.fstat(fh.fileno())
        if stat.st_size > _READ_WHOLE:
            return fh, stat  # streamed into the tar
        with fh:
            return io.BytesIO(fh.read()), stat

    try:
        for sample, found in _ahead(samples, opened):
            row = list(sample.row)
            for i in stamps:
                if row[i] is not None:
                    row[i] = iso_precise(row[i])
            meta = encode(dict(zip(columns, row, strict=True))).encode("utf-8")
            if found is None:
                summary.missing(f"{sample.source} is missing on disk")
                continue
            fh, stat = found
            with fh:
                shards.add(sample.key, sample.ext, fh, stat.st_size, stat.st_mtime, meta)
            summary.wrote(sample)
    finally:
        shards.close()
    summary.shards = shards.count


# -- parquet with the images in it --------------------------------------------------------


def write_embedded_parquet(
    pa: Any,
    out_dir: Path,
    samples: Iterable[ImageSample],
    tmp: Path,
    header: DatasetHeader,
    summary: DatasetSummary,
    *,
    group_bytes: int,
) -> None:
    parquet = importlib.import_module("pyarrow.parquet")
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = parquet_schema(pa, header.columns, header.types)
    features = {"info": {"features": hf_features(header)}}
    schema = pa.schema(
        [pa.field("image", image_type), *columns],
        metadata={b"huggingface": json.dumps(features).encode("utf-8")},
    )
    images: list[bytes] = []
    names: list[str] = []
    rows: list[list[Any]] = []
    held = 0

    def flush() -> None:
        image = pa.StructArray.from_arrays(
            [pa.array(images, pa.binary()), pa.array(names, pa.string())],
            fields=list(image_type),
        )
        rest = _arrays(pa, columns, header.types, rows)
        writer.write_table(pa.Table.from_arrays([image, *rest], schema=schema))

    # Dictionaries for the text columns (a model's name repeats), not for the images.
    dictionary = [f"{name}" for name in header.columns]

    def read(sample: ImageSample) -> bytes | None:
        try:
            return (out_dir / sample.source).read_bytes()
        except FileNotFoundError:
            return None

    with parquet.ParquetWriter(str(tmp), schema, use_dictionary=dictionary) as writer:
        for sample, data in _ahead(samples, read, window=_WINDOW_WHOLE):
            if data is None:
                summary.missing(f"{sample.source} is missing on disk")
                continue
            images.append(data)
            names.append(f"{sample.key}{sample.ext}")
            rows.append(sample.row)
            held += len(data)
            summary.wrote(sample)
            if held >= group_bytes or len(rows) >= _CHUNK:
                flush()
                images, names, rows, held = [], [], [], 0
        if rows or summary.images == 0:
            flush()
