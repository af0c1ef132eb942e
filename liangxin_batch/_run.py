"""`run_batch`: the library call behind `liangxin-batch run`.

Validate everything, sync the state file, then run. The CLI adds signals, bars and
the summary text; everything else a user can do from Python too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import __name__ as _pkg
from ._catalog import Catalog, default_catalog, estimate_credits
from ._client import LiangXinClient
from ._errors import ConfigError, ManifestError
from ._lifecycle import JobState
from ._progress import NullObserver, Observer
from ._runner import Runner, RunSummary
from ._settings import RunSettings
from ._store import StateStore
from ._sync import JobLike, SyncReport, sync_jobs

__all__ = ["RunHandle", "load_manifest_jobs", "run_batch", "run_batch_async"]

ManifestSource = Path | str | Iterable[Mapping[str, Any]] | Any  # Any: a pandas DataFrame


@dataclass
class RunHandle:
    """Lets a caller (the CLI's signal handler) reach the runner while it runs."""

    runner: Runner | None = None
    interrupted: bool = False

    def interrupt(self) -> None:
        self.interrupted = True
        if self.runner is not None:
            self.runner.interrupt()

    def attach(self, runner: Runner) -> None:
        self.runner = runner
        if self.interrupted:  # Ctrl-C came while the manifest was still loading
            runner.interrupt()


def load_manifest_jobs(
    source: ManifestSource, *, catalog: Catalog, default_model: str | None = None
) -> Callable[[], Iterable[JobLike]]:
    """Validate the whole manifest first; return a way to stream its jobs again."""
    from . import _manifest

    if isinstance(source, str | Path):
        path = Path(source)
        report = _manifest.validate_manifest(path, catalog=catalog, default_model=default_model)
        if report.problems:
            raise ManifestError(report.problems, total=report.total_problems)

        def stream() -> Iterable[JobLike]:
            for item in _manifest.iter_jobs(path, catalog=catalog, default_model=default_model):
                if isinstance(item, _manifest.Problem):  # validated above; cannot happen
                    raise ManifestError([item])
                yield item

        return stream
    records = _records(source)
    jobs = _manifest.jobs_from_records(records, catalog=catalog, default_model=default_model)
    return lambda: jobs


def _records(source: Any) -> list[Mapping[str, Any]]:
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a DataFrame
        return [
            {str(k): v for k, v in row.items() if v is not None and v == v}  # drop NaN
            for row in source.to_dict(orient="records")
        ]
    return [dict(r) for r in source]


def _attach_run_log(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger(_pkg)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


async def run_batch_async(
    manifest: ManifestSource,
    *,
    out_dir: Path | str,
    settings: RunSettings | None = None,
    catalog: Catalog | None = None,
    default_model: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    observer: Observer | None = None,
    handle: RunHandle | None = None,
) -> RunSummary:
    """Run a manifest to finished tasks in `out_dir`; safe to call again to resume."""
    settings = settings or RunSettings()
    catalog = catalog or default_catalog()
    observer = observer or NullObserver()
    out = Path(out_dir)
    jobs = load_manifest_jobs(manifest, catalog=catalog, default_model=default_model)
    # The client is built before anything is written, so a missing key costs nothing.
    client = LiangXinClient(api_key=api_key, base_url=base_url, transport=transport)
    try:
        out.mkdir(parents=True, exist_ok=True)
        store = StateStore.in_dir(out)
        log_handler = _attach_run_log(out)
        try:
            sync = sync_jobs(store, jobs(), allow_changed=settings.allow_changed)
            _remember_manifest(store, manifest, observer, sync)
            runner = Runner(
                store=store, client=client, catalog=catalog, settings=settings, observer=observer
            )
            runner.prepare()
            _check_budget(store, catalog, settings)
            total, done = _progress_counts(store)
            observer.start(total=total, done=done)
            if handle is not None:
                handle.attach(runner)
            try:
                return await runner.run()
            finally:
                observer.close()
        finally:
            logging.getLogger(_pkg).removeHandler(log_handler)
            log_handler.close()
            store.close()
    finally:
        await client.aclose()


def run_batch(manifest: ManifestSource, **kwargs: Any) -> RunSummary:
    """Synchronous `run_batch_async` for scripts and notebooks without a running loop."""
    return asyncio.run(run_batch_async(manifest, **kwargs))


def _remember_manifest(
    store: StateStore, manifest: ManifestSource, observer: Observer, sync: SyncReport
) -> None:
    name = str(Path(manifest).resolve()) if isinstance(manifest, str | Path) else "<records>"
    before = store.get_meta("manifest")
    if before is not None and before != name:
        observer.message(f"note: this state was made from {before}; now running {name}")
    store.set_meta({"manifest": name, "last_run_at": str(time.time())})
    if sync.added and before is not None:
        observer.message(f"{sync.added} new job(s) added from the manifest")
    if sync.changed:
        observer.message(f"{len(sync.changed)} job(s) changed content (--allow-changed)")
    if sync.removed:
        observer.message(
            f"{sync.removed} job(s) in the state are no longer in the manifest; kept, not run"
        )


def _check_budget(store: StateStore, catalog: Catalog, settings: RunSettings) -> None:
    if settings.max_credits is None:
        return
    todo = 0.0
    for job in store.iter_jobs([JobState.PENDING], in_manifest=True):
        spec = catalog.get(job.model)
        if spec is not None:
            todo += estimate_credits(spec, job.input)
    if todo > settings.max_credits:
        raise ConfigError(
            f"the jobs still to submit are estimated at {todo:,.1f} credits, more than "
            f"--max-credits {settings.max_credits:,.1f}; nothing was sent. Raise the cap or "
            "run a smaller manifest."
        )


def _progress_counts(store: StateStore) -> tuple[int, int]:
    counts = {k[0]: v for k, v in store.counts().items()}
    total = sum(counts.values())
    done = sum(counts.get(s.value, 0) for s in JobState if s.final)
    return total, done
