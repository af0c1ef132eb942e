"""`export`'s OUT is checked before anything is written, for every format: a folder
where a file is written (a table, `parquet --embed-images`) and any path among what the
tool keeps in DIR (the state and its journal, results.csv, the report, the outputs, the
previews, the caches, the lock) are refused with a located message, exit 2, and nothing
written: `--out DIR/state.db` once replaced the state with a table."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from liangxin_batch.cli import main
from liangxin_batch.outputs._embed import EMBED_DIR
from liangxin_batch.outputs._export_target import OWNED
from liangxin_batch.outputs._gallery import REPORT_HTML
from liangxin_batch.outputs._layout import OUTPUTS_DIR
from liangxin_batch.outputs._report import RESULTS_CSV
from liangxin_batch.outputs._report_data import DATA_DIR
from liangxin_batch.outputs._segments import SEGMENTS_DIR
from liangxin_batch.outputs._thumbs import THUMBS_DIR
from liangxin_batch.run._fetch import PARTIAL_DIR
from liangxin_batch.run._run_steps import SUPERSEDED_DIR
from liangxin_batch.state._checks import BATCH_ID_FILE
from liangxin_batch.state._lock import LOCK_FILE
from liangxin_batch.state._store import STATE_FILE
from tests.dataset_support import build_batch

pytest.importorskip("pyarrow")  # the parquet extra (in dev)

#: Every format, as its options name it: those that write one file, then the folders.
FILE_FORMATS = (
    ("--format", "csv"),
    ("--format", "jsonl"),
    ("--format", "parquet"),
    ("--format", "xlsx"),
    ("--format", "parquet", "--embed-images"),
)
FOLDER_FORMATS = (("--format", "hf"), ("--format", "webdataset"))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch")
    build_batch(out)
    for name in (RESULTS_CSV, REPORT_HTML, "run.log", BATCH_ID_FILE):
        (out / name).write_text("the tool's own\n")
    for folder in (DATA_DIR, THUMBS_DIR, SEGMENTS_DIR, EMBED_DIR):
        (out / folder).mkdir(parents=True)
        (out / folder / "kept.txt").write_text("the tool's own\n")
    return out


def _tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` and a digest of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _refused(out: Path, target: Path, args: tuple[str, ...], said: str) -> Result:
    result = CliRunner().invoke(main, ["export", str(out), "--out", str(target), *args])
    assert result.exit_code == 2, (args, target, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"OUT {target}: " in result.stderr, (args, result.stderr)
    assert said in result.stderr, (args, result.stderr)
    assert "Traceback" not in result.output
    return result


def test_the_owned_names_cover_every_name_the_tool_keeps_in_dir() -> None:
    kept = {STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm", f"{STATE_FILE}-journal"}
    kept |= {LOCK_FILE, BATCH_ID_FILE, RESULTS_CSV, REPORT_HTML, "run.log"}
    kept |= {DATA_DIR.split("/")[0], OUTPUTS_DIR, THUMBS_DIR, SEGMENTS_DIR, EMBED_DIR}
    kept |= {PARTIAL_DIR, SUPERSEDED_DIR}
    assert kept <= set(OWNED)


@pytest.mark.parametrize("args", FILE_FORMATS, ids=" ".join)
def test_a_file_export_to_a_folder_is_refused_and_writes_nothing(
    batch: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    before = _tree(batch)
    _refused(batch, folder, args, "is a folder; give a file path")
    assert [p.name for p in tmp_path.iterdir()] == ["a-folder"]  # no temp file beside
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    # its folder a file
    (tmp_path / "a-file").write_text("mine")
    _refused(batch, tmp_path / "a-file" / "t.out", args, "is a file, not a folder")
    assert (tmp_path / "a-file").read_text() == "mine"
    assert _tree(batch) == before


@pytest.mark.parametrize("args", FILE_FORMATS + FOLDER_FORMATS, ids=" ".join)
def test_no_export_writes_over_what_the_tool_keeps_in_dir(
    batch: Path, args: tuple[str, ...]
) -> None:
    before = _tree(batch)
    for name in OWNED:
        for target in (batch / name, batch / name / "export"):
            _refused(batch, target, args, "the tool keeps it in DIR")
    # the same path by another spelling, or in another case (a case-blind disk)
    _refused(batch, batch / OUTPUTS_DIR / ".." / STATE_FILE, args, "the tool keeps it")
    _refused(batch, batch / STATE_FILE.upper(), args, "the tool keeps it")
    assert _tree(batch) == before
    assert not [p for p in batch.iterdir() if p.name.startswith(".export")]
