"""Issue 16: the shipped edit example runs as its comment says (`run examples/edit.yaml
--simulate`): every job succeeds, each distinct photo is uploaded once (sneaker-side.jpg
is sneaker.jpg's bytes under another name), and every createTask carries upload URLs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from liangxin_batch import run_batch
from liangxin_batch.simulator import saved_ledger

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "edit.yaml"


@pytest.mark.slow
def test_the_edit_example_uploads_each_photo_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_batch(EXAMPLE, out_dir=out, simulate=True)
    assert summary.succeeded == 7
    assert (summary.uploads, summary.upload_bytes) == (3, 5047 + 1167 + 1298)
    photos = sorted((EXAMPLE.parent / "photos").iterdir())
    distinct = {hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    assert len(photos) == 4 and len(distinct) == 3  # the example shows the dedupe
    ledger = saved_ledger(out)
    assert ledger.upload_counts_by_sha256() == {sha: 1 for sha in distinct}
    creates = ledger.creates()
    assert len(creates) == 7
    sent = json.dumps([c.input for c in creates])
    assert "/tempfile/" in sent and "photos/" not in sent and "file:sha256:" not in sent
