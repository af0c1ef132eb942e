"""Running the simulator on a real socket: in a background thread, or in the foreground.

Both bind the listening socket ourselves before uvicorn starts, so the real port is
known even for port=0 and a "port in use" error surfaces immediately as OSError.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp

from ._app import create_app
from ._clock import Clock
from ._config import SimConfig
from ._core import Simulator
from ._saved import SAVED_FILE

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog

__all__ = ["local_simulator", "run_simulator", "serve_in_thread"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


def _bind(host: str, port: int) -> tuple[socket.socket, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns on TCP_NODELAY only for accepted sockets whose
    # proto says TCP. Without it Nagle holds each answer's body behind its headers until
    # the client's delayed ACK: ~40 ms added to every request over loopback.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, not when uvicorn starts: a client told the URL (on_ready) may
        # connect at once, and waits in the backlog instead of being refused.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{bound}"


def _server(app: ASGIApp, *, quiet: bool) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level="warning",
        # In-process use must not rewrite the host program's logging configuration.
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        http="h11",  # the lost-connection trick relies on cycle.transport (see _app.py)
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


@contextmanager
def local_simulator(
    *, latency_scale: float, hmac_key: str | None = None, out_dir: Path | None = None
) -> Iterator[tuple[str, str]]:
    """The simulator a `--simulate` run, `demo` and `run_batch(simulate=True)` use: on a
    loopback port in a thread for the life of the block; yields (base URL, its API key).

    With `out_dir` (the run's output folder) its tasks are kept in `out_dir/.simulator/`,
    so the same command run again (a resume) meets the tasks it left in flight; it listens
    on the port of last time when that is free, so result URLs already handed out still
    work. Without it, task ids are salted afresh and nothing is kept."""
    config = SimConfig(
        latency_scale=latency_scale,
        hmac_key=hmac_key,
        id_salt=secrets.token_hex(8),  # a new folder's; a saved one keeps its own
        state_path=_saved_path(out_dir),
    )
    app = create_app(config)
    sim: Simulator = app.state.sim
    with contextlib.ExitStack() as stack:
        url = None
        if sim.saved_url is not None:
            port = urlsplit(sim.saved_url).port
            with contextlib.suppress(OSError):  # taken since: any port will do
                url = stack.enter_context(serve_in_thread(app, port=port or 0))
        if url is None:
            url = stack.enter_context(serve_in_thread(app))
        sim.rebase(url)
        yield url, config.api_key


def _saved_path(out_dir: Path | None) -> Path | None:
    """Where to keep the tasks; None when the folder cannot be made (the run then says
    so itself, with its own message and exit code, before anything is sent)."""
    if out_dir is None:
        return None
    try:
        Path(out_dir, SAVED_FILE).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return Path(out_dir, SAVED_FILE)


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread; yields the base URL (real port).

    uvicorn installs signal handlers only on the main thread, so Ctrl-C still reaches
    the caller. On exit the server shuts down (lifespan shutdown runs) and the thread
    is joined.
    """
    sock, base_url = _bind(host, port)
    server = _server(app, quiet=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as err:  # includes uvicorn's SystemExit on startup failure
            failure.append(err)

    thread = threading.Thread(target=run, name=f"liangxin-sim-{base_url}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(_STOP_TIMEOUT)
                cause = failure[0] if failure else None
                raise RuntimeError(f"the simulator did not start on {base_url}") from cause
            time.sleep(0.005)  # waiting for another thread's flag; no event to wait on
        yield base_url
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        sock.close()


def run_simulator(
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    on_ready: Callable[[str], None] | None = None,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
) -> None:
    """Serve a simulator in the foreground until Ctrl-C/SIGTERM (uvicorn handles both).

    `on_ready(base_url)` is called once the port is bound, before serving starts.
    """
    app = create_app(config, clock=clock, catalog=catalog)
    sock, base_url = _bind(host, port)
    try:
        if on_ready is not None:
            on_ready(base_url)
        _server(app, quiet=False).run(sockets=[sock])
    finally:
        sock.close()
