"""`export --format csv --out ELSEWHERE` reads DIR and writes ELSEWHERE: a folder it
cannot write (an archive, another user's results) must not stop it, as before results.csv
was cached by segments in DIR/.results/."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from liangxin_batch.cli import main
from liangxin_batch.outputs._report import write_results_csv
from liangxin_batch.state._store import StateStore
from tests.report_state_support import random_state


def test_export_csv_elsewhere_from_a_folder_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "batch"
    out.mkdir()
    random_state(out, seed=1).close()
    store = StateStore.in_dir(out, readonly=True)
    write_results_csv(tmp_path, store)  # the walk's table, to compare with
    store.close()
    expected = (tmp_path / "results.csv").read_bytes()
    before = sorted(p.name for p in out.iterdir())

    real_mkdir = Path.mkdir

    def unwritable(self: Path, *args: object, **kw: object) -> None:
        if self.is_relative_to(out):  # root ignores modes: refuse writes into DIR here
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", unwritable)  # _segments makes DIR/.results
    target = tmp_path / "elsewhere" / "table.csv"
    target.parent.mkdir()
    result = CliRunner().invoke(main, ["export", str(out), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == expected
    assert sorted(p.name for p in out.iterdir()) == before
