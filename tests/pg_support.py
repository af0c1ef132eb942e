"""A real PostgreSQL server for the tests (issue 18): Debian's `postgresql`, started by
the `pg_server` session fixture (tests/conftest.py) in a temporary directory on a free
loopback port, and a fresh database per test from `pg_url`.

Where the programs are missing, `make test` as root installs Debian's package (as the
browser tests install chromium, tests/apt_support.py); elsewhere the tests are skipped
with a message that says what is missing and how to install it.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system
user (the Debian package creates it) in a temporary directory it owns. The settings
trade durability for speed (fsync off): a test server's data dies with the session.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apt_support import apt_install_or_skip

#: Debian installs each major version's server programs here, not on PATH.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
#: The database superuser of the test cluster (initdb -U), in every URL.
SUPERUSER = "postgres"
#: The temporary directories' names: DIR_PREFIX<pytest's pid>-<random>.
DIR_PREFIX = "liangxin-pg-"
#: The system user the server runs as when the tests run as root.
SYSTEM_USER = "postgres"
#: How long `pg_ctl start -w` may wait for the server to accept connections.
START_TIMEOUT_SECONDS = 60
#: Starts tried on fresh ports: another process may take a free port before the server binds it.
PORT_ATTEMPTS = 5
#: Settings for a throwaway server: no durability, small, loopback only.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


@dataclass(frozen=True)
class PgServer:
    """A running test server: where it listens, and how to reach it as its superuser."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path
    socket_dir: Path

    def url(self, dbname: str = "postgres") -> str:
        """`postgresql://USER@127.0.0.1:PORT/DBNAME`: trust auth on loopback, no password."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"


def find_bin_dir() -> Path | None:
    """The directory whose initdb, pg_ctl and postgres the fixture uses: PATH first, then
    Debian's /usr/lib/postgresql/<major>/bin, newest major first."""
    on_path = [shutil.which(name) for name in PROGRAMS]
    if all(on_path):
        # pg_ctl runs the `postgres` beside its own (symlinks resolved), so take that directory.
        pg_ctl = Path(str(on_path[1])).resolve()
        if (pg_ctl.parent / "postgres").exists() and (pg_ctl.parent / "initdb").exists():
            return pg_ctl.parent
    candidates = sorted(Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")), key=_major, reverse=True)
    for bin_dir in candidates:
        if all((bin_dir / name).is_file() for name in PROGRAMS):
            return bin_dir
    return None


def _major(bin_dir: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): numeric, so 9.6 sorts below 10."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def bin_dir_or_skip() -> Path:
    """The server programs, installed from Debian's `postgresql` where this session can."""
    what = f"PostgreSQL's {', '.join(PROGRAMS)} (on PATH or in {DEBIAN_BIN_GLOB})"
    return apt_install_or_skip("postgresql", find_bin_dir, what=what)


def run_as_user_or_skip() -> str | None:
    """The system user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.skip(
            f"PostgreSQL refuses to run as root and there is no {SYSTEM_USER!r} system user "
            f"to run it as (Debian's postgresql package creates it: apt-get install postgresql)"
        )
    if not (shutil.which("runuser") or shutil.which("su")):
        pytest.skip(f"running as root, with neither runuser nor su to become {SYSTEM_USER!r}")
    return SYSTEM_USER


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _run(cmd: list[str], user: str | None, cwd: Path, timeout: float) -> None:
    """Run a server program (as `user`); a failure raises with its output, not a skip:
    installed programs that do not work are a broken machine, to be seen."""
    # cwd: the server user may not be allowed into the directory pytest runs from.
    done = subprocess.run(
        _as_user(cmd, user), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}"
            f"{done.stderr[-2000:]}"
        )


def free_port() -> int:
    """A port nobody listens on now (the server may still lose it: see PORT_ATTEMPTS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """initdb into a fresh temporary directory, start on a free loopback port, yield, and
    stop (immediate) and delete it all afterwards, also when the session fails."""
    bin_dir = bin_dir_or_skip()
    user = run_as_user_or_skip()
    _remove_orphans(bin_dir, user)
    # Not pytest's tmp_path: its parents are private to root, and the server user must
    # reach this directory. Short, too: a unix socket path has at most 107 bytes.
    root = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))
    data_dir, socket_dir = root / "data", root / "sock"
    socket_dir.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        _run(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            user, root, timeout=120,
        )  # fmt: skip
        port = _start(bin_dir, data_dir, socket_dir, root, user)
        yield PgServer("127.0.0.1", port, SUPERUSER, bin_dir, data_dir, socket_dir)
    finally:
        _stop_and_remove(bin_dir, root, user)


def _stop_and_remove(bin_dir: Path, root: Path, user: str | None) -> None:
    """Stop the server in `root` (if one may be up: also after a start that timed out,
    a server may be up without having said so) and delete its directory."""
    data_dir = root / "data"
    if (data_dir / "postmaster.pid").exists():
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run(
                [str(bin_dir / "pg_ctl"), "stop", "-D", str(data_dir), "-m", "immediate",
                 "-w", "-t", "30"],
                user, root, timeout=60,
            )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


def _remove_orphans(bin_dir: Path, user: str | None) -> None:
    """Stop the servers of pytest sessions that were killed before their teardown (a
    SIGKILL, a session's time limit): their directories name their pytest's pid."""
    for root in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*-*"):
        owner = root.name.removeprefix(DIR_PREFIX).split("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            _stop_and_remove(bin_dir, root, user)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _start(bin_dir: Path, data_dir: Path, socket_dir: Path, root: Path, user: str | None) -> int:
    """Start the server on a free port and return the port once it accepts connections
    (`pg_ctl start -w` polls until then, bounded by START_TIMEOUT_SECONDS). A port taken
    between the probe and the server's bind (another pytest session) means a new port."""
    failures: list[str] = []
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        log = root / f"server-{attempt}.log"
        # pg_ctl hands these to /bin/sh: quoted.
        options = [f"-c {key}={shlex.quote(value)}" for key, value in SERVER_SETTINGS.items()]
        options += [f"-p {port}", f"-k {shlex.quote(str(socket_dir))}"]
        try:
            _run(
                [str(bin_dir / "pg_ctl"), "start", "-D", str(data_dir), "-l", str(log),
                 "-w", "-t", str(START_TIMEOUT_SECONDS), "-o", " ".join(options)],
                user, root, timeout=START_TIMEOUT_SECONDS + 30,
            )  # fmt: skip
            return port
        except RuntimeError as failed:
            text = log.read_text("utf-8", "replace") if log.exists() else ""
            failures.append(f"{failed}\n{text[-2000:]}")
            if "could not bind" not in text and "Address already in use" not in text:
                break
    raise RuntimeError("the test PostgreSQL server did not start:\n" + "\n".join(failures))


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """CREATE DATABASE t_<random>, yield its URL, and drop it (WITH (FORCE): connections
    a failed test left open do not keep it)."""
    psycopg = pytest.importorskip(
        "psycopg", reason="psycopg is not installed (pip install 'liangxin-batch[postgres]')"
    )
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
