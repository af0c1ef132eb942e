"""One run per output folder: an exclusive, non-blocking lock on `DIR/state.lock`.

Two runs on one state would both read the same pending jobs and both pay for them, and
the second would park the first's in-progress submissions as `unknown`. The lock is an
OS file lock (flock), so it goes away with the process however it ends: a crashed or
killed run never leaves a stale lock behind. `status` and `report` only read, and take
no lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from liangxin_batch.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; SQLite's own locking remains
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = "state.lock"


class RunLock:
    """`with RunLock(out_dir):` — ConfigError at once if another process holds it."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "another process"
                os.close(fd)
                raise ConfigError(
                    f"{self.path.parent} is in use by another run (pid {holder}); "
                    "wait for it to finish or stop it (Ctrl-C), then run again. "
                    "`liangxin-batch status` works while it runs."
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
