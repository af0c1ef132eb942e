"""`export --format hf | webdataset` and `--format parquet --embed-images`: the real
`datasets` and `webdataset` libraries read back every image of the succeeded jobs, its
bytes equal to the file in DIR and its columns equal to the job's results.csv row; what
is not an image, or is gone from disk, is left out and said; OUT is never half written,
and no folder an export did not write is ever replaced."""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import json
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from liangxin_batch.cli import main
from liangxin_batch.outputs._datasets import IMAGE_EXTENSIONS, MARKER, export_dataset
from liangxin_batch.outputs._report import write_results_csv
from liangxin_batch.state._store import StateStore
from tests.dataset_support import as_text, build_batch, iso_as_text

#: How a results.csv column is named in a dataset where it clashes with the dataset's
#: own (`image`) or would be loaded as an image by imagefolder (`*_file_name`).
pq: Any = pytest.importorskip("pyarrow.parquet")  # the parquet extra (in dev)

RENAMED = {"image": "manifest_image", "mask_file_name": "mask_file_name_text"}
TIMESTAMPS = ("submitted_at", "completed_at")

Expected = list[tuple[dict[str, str], int, str]]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Expected]:
    """DIR, its kinds of jobs, and the expected rows: (results.csv row, file number, path)
    of every image of a succeeded job, in manifest order."""
    out = tmp_path_factory.mktemp("batch")
    kinds = build_batch(out)
    store = StateStore.in_dir(out, readonly=True)
    write_results_csv(out, store, check_files=True)
    store.close()
    with (out / "results.csv").open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    expected: Expected = []
    for row in table:
        if row["status"] != "succeeded":
            continue
        for n, path in enumerate(row["output_paths"].split(";")):
            if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
                expected.append((row, n, path))
    return out, kinds, expected


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Any connection beyond loopback is refused, and remembered."""
    tried: list[Any] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            with contextlib.suppress(ValueError):
                if not ipaddress.ip_address(host).is_loopback:
                    tried.append(address)
                    raise OSError(f"test: no network beyond loopback ({address})")
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The `datasets` library, offline, its caches in a temp folder (imported once: it
    takes seconds)."""
    home = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(home),
            "HF_DATASETS_CACHE": str(home / "datasets"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }.items():
            mp.setenv(name, value)
        tried = _no_network(mp)
        import datasets

        datasets.disable_progress_bars()
        yield datasets
        assert tried == []


def _export(*args: str) -> Result:
    return CliRunner().invoke(main, ["export", *args])


def _exported(batch_dir: Path, target: Path, *args: str) -> Result:
    """`export DIR OUT ARGS`, which succeeds."""
    result = _export(str(batch_dir), str(target), *args)
    assert result.exit_code == 0, result.output
    return result


def _check_row(got: dict[str, Any], expected: tuple[dict[str, str], int, str]) -> None:
    """Every results.csv column equal (as results.csv writes it), and the image's own."""
    row, n, path = expected
    for column, text in row.items():
        name = RENAMED.get(column, column)
        assert as_text(got[name]) == text, (row["job_id"], column, got[name])
    assert got["image_index"] == n
    assert got["image_path"] == path


def _same_image(got: Image.Image, original: Path) -> None:
    with Image.open(original) as want:
        assert got.size == want.size
        assert got.convert("RGB").tobytes() == want.convert("RGB").tobytes()


def _check_dataset(hf: ModuleType, ds: Any, out: Path, expected: Expected) -> Any:
    """Every row of `ds` is its results.csv row and its image the original's pixels;
    returns the rows again with their images undecoded (a path or the bytes)."""
    assert len(ds) == len(expected)
    for got, want in zip(ds, expected, strict=True):
        _check_row(got, want)
        _same_image(got["image"], out / want[2])
    return ds.cast_column("image", hf.Image(decode=False))


def _check_summary(result: Result, kinds: dict[str, Any], expected: Expected) -> None:
    assert result.exit_code == 0, result.output
    jobs = len({row["job_id"] for row, _, _ in expected})
    assert f"{len(expected):,} image(s) of {jobs:,} succeeded job(s)" in result.stdout
    # 1 video alone, 2 among the several images
    assert "skipped: 3 file(s) that are not images" in result.stderr
    lost = kinds["lost"][0]
    assert "skipped: 1 succeeded job(s) whose file is missing" in result.stderr
    assert f"outputs/{lost}.png is missing on disk" in result.stderr
    assert "liangxin-batch report" in result.stderr


@pytest.mark.slow  # the datasets library: seconds to import and load
def test_hf_imagefolder_reads_back_every_image_and_column(
    batch: tuple[Path, dict[str, Any], Expected], hf: ModuleType, tmp_path: Path
) -> None:
    out, kinds, expected = batch
    target = tmp_path / "ds"
    result = _export(str(out), str(target), "--format", "hf")
    _check_summary(result, kinds, expected)
    assert len(expected) == 12  # 6 jobs of one image, 2 of three (and a video)
    ds = hf.load_dataset(
        "imagefolder", data_dir=str(target), split="train", cache_dir=str(tmp_path / "c")
    )
    features = ds.features
    assert isinstance(features["image"], hf.Image)
    assert next(iter(features)) == "image"
    kinds_of = {name: getattr(f, "dtype", None) for name, f in features.items()}
    assert kinds_of["attempts"] == "int64"
    assert kinds_of["credits"] == "float64"
    assert kinds_of["generation_seconds"] == "float64"
    assert kinds_of["submitted_at"] == "timestamp[ns, tz=UTC]"
    assert kinds_of["prompt"] == "string"
    assert kinds_of["image_index"] == "int64"
    assert kinds_of["mask_file_name_text"] == "string"  # not an image
    raw = _check_dataset(hf, ds, out, expected)
    for got, (_row, _n, path) in zip(raw, expected, strict=True):
        assert Path(got["image"]["path"]).read_bytes() == (out / path).read_bytes()
        assert Path(got["image"]["path"]).suffix == Path(path).suffix  # .jpg stays .jpg
        assert "." not in Path(got["image"]["path"]).stem


@pytest.mark.slow
def test_parquet_with_embedded_images_reads_back_as_an_image_feature(
    batch: tuple[Path, dict[str, Any], Expected], hf: ModuleType, tmp_path: Path
) -> None:
    out, kinds, expected = batch
    target = tmp_path / "images.parquet"
    result = _export(str(out), "--format", "parquet", "--embed-images", "--out", str(target))
    _check_summary(result, kinds, expected)
    ds = hf.load_dataset(
        "parquet", data_files=str(target), split="train", cache_dir=str(tmp_path / "c")
    )
    assert isinstance(ds.features["image"], hf.Image)
    assert ds.features["completed_at"].dtype == "timestamp[ns, tz=UTC]"
    raw = _check_dataset(hf, ds, out, expected)
    for got, (_row, _n, path) in zip(raw, expected, strict=True):
        assert got["image"]["bytes"] == (out / path).read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_embedded_parquet_row_groups_are_cut_by_the_bytes_of_their_images(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    out, _kinds, expected = batch
    sizes = [(out / path).stat().st_size for _row, _n, path in expected]
    target = tmp_path / "e.parquet"
    store = StateStore.in_dir(out, readonly=True)
    try:
        done = export_dataset(out, store, "parquet", target, row_group_bytes=2 * max(sizes))
    finally:
        store.close()
    assert done.images == len(expected)
    meta = pq.ParquetFile(target).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(groups) == len(expected)
    assert 1 < len(groups) < len(expected)
    assert max(groups) <= 2 * max(sizes) // min(sizes) + 1
    table = pq.read_table(target)
    assert table.column("image").to_pylist()[0]["bytes"] == (out / expected[0][2]).read_bytes()
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert list(features) == table.schema.names


def _webdataset(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    _no_network(monkeypatch)
    import webdataset

    return webdataset


# webdataset leaves its tar files for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_webdataset_reads_back_every_sample(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wds = _webdataset(monkeypatch)
    out, kinds, expected = batch
    target = tmp_path / "wds"
    result = _export(str(out), str(target), "--format", "webdataset")
    _check_summary(result, kinds, expected)
    assert "in 1 shard(s)" in result.stdout
    shards = sorted(str(p) for p in target.glob("shard-*.tar"))
    assert [Path(s).name for s in shards] == ["shard-000000.tar"]
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert len(samples) == len(expected)
    for sample, want in zip(samples, expected, strict=True):
        row, _n, path = want
        ext = Path(path).suffix.lstrip(".")
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {ext, "json"}
        assert sample[ext] == (out / path).read_bytes()  # the original bytes, as they are
        got = json.loads(sample["json"])
        for name in TIMESTAMPS:
            got[name] = iso_as_text(got[name])
        _check_row(got, want)
        assert row["job_id"].replace(".", "-") in sample["__key__"]
    decoded = wds.WebDataset(shards, shardshuffle=False).decode("pil")
    for sample, (_row, _n, path) in zip(decoded, expected, strict=True):
        _same_image(sample[Path(path).suffix.lstrip(".")], out / path)


def test_webdataset_shards_are_cut_at_the_shard_size_and_keep_samples_whole(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    out, _kinds, expected = batch
    target = tmp_path / "wds"
    result = _exported(out, target, "--format", "webdataset", "--shard-size", "6KB")
    shards = sorted(target.glob("shard-*.tar"))
    assert len(shards) > 3
    assert f"in {len(shards)} shard(s)" in result.stdout
    keys: list[str] = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        stems = [name.split(".", 1)[0] for name in names]
        assert stems[::2] == stems[1::2]  # image then json, of one sample, in one shard
        keys += stems[::2]
        assert shard.stat().st_size <= 6000 or len(names) == 2, shard  # or one sample
    assert len(keys) == len(set(keys)) == len(expected)
    assert keys == sorted(keys)  # manifest order
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_hf_with_link_hard_links_and_leaves_the_originals_as_they_were(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    out, _kinds, expected = batch
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "outputs").iterdir()}
    target = tmp_path / "ds"
    result = _exported(out, target, "--format", "hf", "--link")
    assert f"{len(expected)} hard-linked" in result.stdout
    made = sorted((target / "images").rglob("*.*"))
    assert len(made) == len(expected)
    inodes = {(out / path).stat().st_ino for _row, _n, path in expected}
    assert {p.stat().st_ino for p in made} == inodes
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "outputs").iterdir()}
    assert after == before
    assert json.loads((target / MARKER).read_text())["format"] == "hf"


def test_a_folder_out_that_is_not_empty_is_refused_and_left_as_it_was(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    out, _kinds, _expected = batch
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        result = _export(str(out), str(target), "--format", "webdataset", *extra)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert f"OUT {target}: " in result.stderr
        assert "Traceback" not in result.output
        assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert "not empty" in _export(str(out), str(target), "--format", "hf").stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # DIR itself, never
    result = _export(str(out), str(out), "--format", "hf", "--overwrite")
    assert result.exit_code == 2
    assert "is the batch folder DIR" in result.stderr


def test_overwrite_replaces_an_earlier_export_whole(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    out, _kinds, expected = batch
    target = tmp_path / "wds"
    _exported(out, target, "--format", "webdataset")
    assert _export(str(out), str(target), "--format", "hf").exit_code == 2  # not empty
    _exported(out, target, "--format", "hf", "--overwrite")
    assert not list(target.glob("shard-*.tar"))
    assert (target / "metadata.parquet").is_file()
    assert len(list((target / "images").rglob("*.*"))) == len(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wds"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--format", "webdataset", "--shard-size", "lots"], "--shard-size: not a size"),
        (["--format", "webdataset", "--shard-size", "0KB"], "--shard-size: not a size"),
        (["--format", "csv", "--embed-images"], "--embed-images: only for --format parquet"),
        (["--format", "webdataset", "--link"], "--link: only for --format hf"),
        (["--format", "hf", "--status", "failed"], "--status: a dataset holds"),
    ],
)
def test_options_that_do_not_fit_are_refused(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path, args: list[str], said: str
) -> None:
    out, _kinds, _expected = batch
    result = _export(str(out), str(tmp_path / "x"), *args)
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    assert not (tmp_path / "x").exists()


def test_the_table_exports_are_as_before(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    """A positional OUT is the table's file, as --out is."""
    out, _kinds, _expected = batch
    for fmt in ("csv", "parquet"):
        given, named = tmp_path / f"t.{fmt}", tmp_path / f"o.{fmt}"
        _exported(out, given, "--format", fmt)
        assert _export(str(out), "--out", str(named), "--format", fmt).exit_code == 0
        assert given.read_bytes() == named.read_bytes()
    assert "OUT" in _export(str(out), str(given), "--out", str(named)).stderr


def test_model_filters_a_dataset_as_it_filters_a_table(
    batch: tuple[Path, dict[str, Any], Expected], tmp_path: Path
) -> None:
    out, _kinds, expected = batch
    target = tmp_path / "wds"
    _exported(out, target, "--format", "webdataset", "--model", "flux-2")
    with tarfile.open(target / "shard-000000.tar") as tar:
        rows = [
            json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.name.endswith(".json")
        ]
    wanted = [(row["job_id"], n) for row, n, _path in expected if row["model_id"] == "flux-2"]
    assert [(row["job_id"], row["image_index"]) for row in rows] == wanted
    assert wanted and len(wanted) < len(expected)
