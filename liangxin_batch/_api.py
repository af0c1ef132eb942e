"""`run_batch`: the synchronous entry point for scripts and notebooks.

It sits above the packages (it may start the bundled simulator, which the runner below
must not know about) and shows every parameter it takes, so `help(run_batch)` and an
IDE say what a run can be given. Inside a running event loop (a Jupyter cell) it cannot
block: it says to `await run_batch_async(...)` instead, before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from liangxin_batch.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from liangxin_batch.catalog._catalog import Catalog
    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.core._summary import RunSummary
    from liangxin_batch.run._callback_setup import CallbackOptions
    from liangxin_batch.run._credentials import AccountKey
    from liangxin_batch.run._manifest_jobs import ManifestSource
    from liangxin_batch.run._progress import Observer

__all__ = ["run_batch"]

#: How much faster than the catalog's latencies the simulator of `simulate=True` runs.
_SIM_LATENCY_SCALE = 0.05


def run_batch(
    manifest: ManifestSource,
    *,
    out_dir: Path | str,
    settings: RunSettings | None = None,
    catalog: Catalog | None = None,
    default_model: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    observer: Observer | None = None,
    callbacks: CallbackOptions | None = None,
    allow_outside: bool = False,
    simulate: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    download_transport: httpx.AsyncBaseTransport | None = None,
    upload_base_url: str | None = None,
    upload_transport: httpx.AsyncBaseTransport | None = None,
    accounts: Path | str | Sequence[AccountKey] | None = None,
) -> RunSummary:
    """Run a manifest to finished tasks in `out_dir` and return the summary; call it again
    with the same arguments to resume. The key and URL default to `LIANGXIN_API_KEY` and
    `LIANGXIN_BASE_URL`; `simulate=True` runs against the bundled simulator instead (no
    account, no network). In a notebook cell (a running event loop), use
    `await run_batch_async(...)`, which takes the same arguments except `simulate`.
    `transport` and `download_transport` replace the HTTP transports (tests run the real
    client against an app without a socket); the file host never gets the API key.
    Local input files go to `upload_base_url` (default `LIANGXIN_UPLOAD_BASE_URL`; the
    simulator's own upload host with `simulate=True`); `upload_transport` serves it in
    tests. `accounts`: an accounts file (or its loaded accounts) to spread the jobs over,
    instead of the one key (not with `simulate=True`).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigError(
            "run_batch cannot block inside a running event loop (a Jupyter cell): "
            "use `await run_batch_async(...)` with the same arguments"
        )
    from liangxin_batch.run._run import run_batch_async

    if simulate and accounts is not None:
        raise ConfigError("simulate=True serves one key: run without accounts")
    with contextlib.ExitStack() as stack:
        if simulate:
            from liangxin_batch.simulator import local_simulator

            hmac_key = callbacks.hmac_key if callbacks else None
            base_url, api_key = stack.enter_context(
                local_simulator(
                    latency_scale=_SIM_LATENCY_SCALE, hmac_key=hmac_key, out_dir=Path(out_dir)
                )
            )
            settings = _simulated(settings)
            from liangxin_batch.simulator import upload_base_url as sim_upload_url

            upload_base_url = sim_upload_url(base_url)
        return asyncio.run(
            run_batch_async(
                manifest,
                out_dir=out_dir,
                settings=settings,
                catalog=catalog,
                default_model=default_model,
                api_key=api_key,
                base_url=base_url,
                observer=observer,
                callbacks=callbacks,
                allow_outside=allow_outside,
                transport=transport,
                download_transport=download_transport,
                upload_base_url=upload_base_url,
                upload_transport=upload_transport,
                accounts=accounts,
            )
        )


def _simulated(settings: RunSettings | None) -> RunSettings:
    from liangxin_batch.core._settings import RunSettings

    base = settings or RunSettings()
    return dataclasses.replace(base, poll_scale=_SIM_LATENCY_SCALE)
