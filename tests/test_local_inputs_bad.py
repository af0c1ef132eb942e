"""Issue 16's bad local inputs: each a located problem, exit 2, and no request of any kind.

Missing file, a text file named .png, 40 MB for a 10 MB model, 20 images for an 8-image
model, a directory, an unreadable file. Through the real CLI against the simulator on
a loopback socket, counting every HTTP request it receives.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from liangxin_batch.cli import main
from liangxin_batch.simulator import SimConfig, create_app, serve_in_thread
from tests.cli_support import child_env
from tests.local_inputs_support import jpeg, png

pytestmark = pytest.mark.slow

KEY = "sk-local-inputs-0123456789"
FLUX = "flux-2/pro-image-to-image"  # input_urls: 1-8 images, 10 MB each


class _Counting:
    """An ASGI wrapper that counts the HTTP requests reaching the simulator."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@pytest.fixture
def sim() -> Iterator[tuple[str, _Counting]]:
    counting = _Counting(create_app(SimConfig(api_key=KEY, seed=5)))
    with serve_in_thread(counting) as url:
        yield url, counting


def _manifest(tmp: Path, cells: list[str]) -> Path:
    path = tmp / "prompts.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "model", "prompt", "input_urls", "aspect_ratio", "resolution"])
        for i, cell in enumerate(cells):
            w.writerow([f"j{i}", FLUX, "make it brighter", cell, "1:1", "1K"])
    return path


def _bad_inputs(tmp: Path) -> tuple[list[str], list[str]]:
    """(cells, the problem line each gives, without the file name)."""
    photos = tmp / "photos"
    png(photos / "ok.png")
    (photos / "notes.png").write_text("not a picture\n")
    big = png(photos / "shoe.png")
    with big.open("r+b") as fh:
        fh.truncate(40_200_000)  # sparse: 40.2 MB that cost no disk
    many = "|".join(str(jpeg(photos / f"p{i:02d}.jpg", bytes([i]) * 10).name) for i in range(20))
    (photos / "album").mkdir()
    expected = "expected an image file (jpeg/png/webp) ≤ 10 MB"
    cells = [
        "photos/missing.png",
        "photos/notes.png",
        "photos/shoe.png",
        "|".join(f"photos/{n}" for n in many.split("|")),
        "photos/album",
    ]
    lines = [
        f"[input_urls] {expected}; got photos/missing.png: no such file; check the path "
        f"(relative paths are relative to {tmp})",
        f"[input_urls] {expected}; got photos/notes.png: bytes that are not an image; give a "
        "jpeg/png/webp image (its bytes decide, not its name)",
        f"[input_urls] {expected}; got photos/shoe.png: 40.2 MB; make it smaller than 10 MB "
        "(resize or recompress it)",
        "[input_urls] expected at most 8 item(s); got 20 item(s); remove 12 item(s)",
        f"[input_urls] {expected}; got photos/album: a directory; name an image file",
    ]
    if os.geteuid() != 0:  # root reads anything: no unreadable file to make
        locked = png(photos / "locked.png")
        locked.chmod(0)
        cells.append("photos/locked.png")
        lines.append(
            f"[input_urls] {expected}; got photos/locked.png: not readable (permission "
            "denied); make it readable (chmod a+r) or copy it somewhere readable"
        )
    return cells, lines


def test_every_bad_input_is_located_and_nothing_is_sent(
    tmp_path: Path, sim: tuple[str, _Counting]
) -> None:
    url, counting = sim
    cells, lines = _bad_inputs(tmp_path)
    manifest = _manifest(tmp_path, cells)
    for command in (["validate"], ["plan"], ["run", "--out", str(tmp_path / "out")]):
        result = CliRunner().invoke(main, [*command, str(manifest)], env=child_env(url, KEY))
        assert result.exit_code == 2, (command, result.output)
        assert "Traceback" not in result.output
        problems = result.stderr.splitlines()
        assert problems[0] == (
            f"error: {len(lines)} problem(s) in the manifest; nothing was sent:"
        ), problems
        assert problems[1:] == [f"{manifest}:{n} {line}" for n, line in enumerate(lines, 2)]
    assert counting.requests == []
    assert not (tmp_path / "out" / "state.db").exists()


def test_the_checks_can_pass_so_the_count_above_means_something(
    tmp_path: Path, sim: tuple[str, _Counting]
) -> None:
    """The same CLI and simulator, good files: validate says OK, and a request that is
    made (the balance) is counted."""
    url, counting = sim
    png(tmp_path / "photos" / "ok.png")
    manifest = _manifest(tmp_path, ["photos/ok.png"])
    result = CliRunner().invoke(main, ["validate", str(manifest)], env=child_env(url, KEY))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"OK: 1 jobs ({FLUX}: 1)",
        "1 local file to upload (0.0 KB)",
    ]
    plan = CliRunner().invoke(main, ["plan", str(manifest)], env=child_env(url, KEY))
    assert plan.exit_code == 0 and "1 local file to upload (0.0 KB)" in plan.stdout
    assert counting.requests == []
    balance = CliRunner().invoke(
        main, ["plan", str(manifest), "--check-balance"], env=child_env(url, KEY)
    )
    assert balance.exit_code == 0, balance.output
    assert counting.requests  # the counter sees what the CLI sends
