"""Installing a Debian package the tests need (chromium, postgresql) where they can.

`make test` as root on a machine with apt-get installs what is missing, once per
machine; anywhere else the tests that need it are skipped with a message that says
what is missing and how to install it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

#: apt-get update + install of a big package on a slow mirror; past this it is a skip.
APT_TIMEOUT_SECONDS = 1200


def apt_install_or_skip(package: str, find: Callable[[], T | None], *, what: str = "") -> T:
    """`find()`'s answer, after `apt-get install -y PACKAGE` when it had none.

    `what` names what `find` looks for, in the skip messages (default: the package).

    Skips the test (with the reason) when there is no apt-get, when not root, or when
    the install fails. A lock file serialises two pytest sessions installing at once;
    the second finds the package installed when it gets the lock.
    """
    found = find()
    if found is not None:
        return found
    what = what or package
    if not shutil.which("apt-get"):
        pytest.skip(f"{what} not found, and there is no apt-get to install Debian's {package}")
    if os.geteuid() != 0:
        pytest.skip(f"{what} not found; installing it needs root (apt-get install {package})")
    lock = Path(tempfile.gettempdir()) / f"liangxin-batch-{package}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if find() is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
                try:
                    done = subprocess.run(
                        cmd,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=APT_TIMEOUT_SECONDS,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    pytest.skip(f"{' '.join(cmd)} took more than {APT_TIMEOUT_SECONDS} s")
                if done.returncode != 0:
                    pytest.skip(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
    found = find()
    if found is None:
        pytest.skip(f"apt-get installed {package} but {what} is still not found")
    return found
