"""A mistyped command is answered with the command meant, as before commands loaded
lazily (click suggests from the commands it has loaded: none yet, in a fresh process)."""

from __future__ import annotations

import subprocess
import sys


def test_a_mistyped_command_suggests_the_right_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "liangxin_batch", "rn"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "No such command 'rn'. Did you mean 'run'?" in done.stderr
