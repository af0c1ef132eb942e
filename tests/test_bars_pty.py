"""Issue 15, honest progress: in a real terminal (a pty), a resumed run's three bars start
from the state and end agreeing with `status`; the Ctrl-C line never lands inside a bar."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pyte
import pytest

from tests.cli_support import child_env, cli

pytestmark = pytest.mark.slow
_BAR = re.compile(r"(submitted|finished|downloaded)\s*:?\s*\d+%?\|?[^\r\n]*?(\d+)/(\d+)")


def _run_in_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    master, slave = pty.openpty()
    # A terminal of 120 columns (a fresh pty has none, and bars fit the width).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**child_env("http://127.0.0.1:9"), "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert proc.stdout is not None
    with proc.stdout:
        proc.stdout.read()
    code = proc.wait(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _last_bars(text: str) -> dict[str, tuple[int, int]]:
    last: dict[str, tuple[int, int]] = {}
    for m in _BAR.finditer(text):
        last[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return last


def _first_bars(text: str) -> dict[str, tuple[int, int]]:
    first: dict[str, tuple[int, int]] = {}
    for m in _BAR.finditer(text):
        first.setdefault(m.group(1), (int(m.group(2)), int(m.group(3))))
    return first


def _manifest(path: Path, n: int) -> None:
    path.write_text(
        "id,model,prompt,aspect_ratio\n"
        + "".join(f"j{i},z-image,a lighthouse {i},1:1\n" for i in range(n))
    )


def test_a_resumed_runs_bars_start_from_the_state_and_agree_at_the_end(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    _manifest(manifest, 4)
    code, _ = _run_in_pty(cli("run", str(manifest), "--out", "o", "--simulate"), tmp_path)
    assert code == 0
    _manifest(manifest, 10)  # six more: the resumed run starts with four done
    code, text = _run_in_pty(cli("run", str(manifest), "--out", "o", "--simulate"), tmp_path)
    assert code == 0, text[-2000:]
    first, last = _first_bars(text), _last_bars(text)
    assert first["submitted"] == (4, 10), first
    assert first["finished"] == (4, 10), first
    assert first["downloaded"] == (4, 10), first
    assert last == {"submitted": (10, 10), "finished": (10, 10), "downloaded": (10, 10)}, last
    status = subprocess.run(
        cli("status", "o"), cwd=tmp_path, capture_output=True, text=True, timeout=60
    ).stdout
    assert "succeeded: 10" in status, status  # the bars' last figures, as status says them


def test_the_ctrl_c_line_is_drawn_above_the_bars_not_across_one(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    _manifest(manifest, 40)  # 20 creates per 10 s: the run lasts long enough to interrupt
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        cli("run", str(manifest), "--out", "o", "--simulate"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**child_env("http://127.0.0.1:9"), "TERM": "xterm"},
    )
    os.close(slave)
    seen = b""
    while b"submitted:" not in seen or b"/40" not in seen.split(b"submitted:")[-1]:
        seen += os.read(master, 65536)  # until the first bars are drawn
    proc.send_signal(2)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        seen += data
    assert proc.wait(timeout=120) == 130
    os.close(master)
    # What the terminal shows at the end, as a VT100 would draw it.
    screen = pyte.Screen(120, 40)
    pyte.Stream(screen).feed(seen.decode("utf-8", "replace").replace("\n", "\r\n"))
    lines = [line.rstrip() for line in screen.display]
    notice = [line for line in lines if "interrupted" in line]
    assert len(notice) == 1, lines
    assert notice[0].startswith("interrupted: finishing the calls in progress and saving"), lines
    assert "%|" not in notice[0] and "job/s" not in notice[0], lines  # no bar drawn across it
