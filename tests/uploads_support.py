"""The harness for runs with local input files in virtual time: folders of distinct
photos (some under two names), a manifest of edit jobs over them, and `Batch`, the real
Runner against an in-process simulator whose clock is the virtual loop's. Shared by
test_uploads_run and test_review16 so both build, run and close the clients one way."""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._control import LoopClock
from liangxin_batch.run._manifest_jobs import load_manifest_jobs
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.run._runner import Runner
from liangxin_batch.run._upload_client import UploadClient
from liangxin_batch.simulator import SimConfig, create_app, serve_in_thread, upload_base_url
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from tests.local_inputs_support import image_png
from tests.sim_support import sim_of

__all__ = ["COLOURS", "EDIT", "KEY", "SIM_URL", "Batch", "photo_files", "photos_manifest"]

KEY = "sk-upload-run-7777"
#: The in-process simulator's address, with an explicit port: its upload answers build
#: the download URL from the ASGI scope's (host, port), which is (sim, None) without one.
SIM_URL = "http://sim:8000"
EDIT = "google/nano-banana-edit"
COLOURS = [
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white",
    "gray", "cyan", "magenta", "navy", "olive", "teal", "maroon", "lime", "gold", "silver",
]  # fmt: skip


def photo_files(folder: Path, n: int) -> list[str]:
    """`n` distinct images, plus the first five again under a second name: the paths
    as a manifest in `folder` writes them."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        data = image_png(COLOURS[i % len(COLOURS)], 16 + i // len(COLOURS))
        (folder / "photos" / f"p{i:02d}.png").write_bytes(data)
        paths.append(f"photos/p{i:02d}.png")
        if i < 5:
            (folder / "photos" / f"copy-of-p{i:02d}.png").write_bytes(data)
            paths.append(f"photos/copy-of-p{i:02d}.png")
    return paths


def photos_manifest(folder: Path, jobs: int, paths: Sequence[str], *, name: str = "m.csv") -> Path:
    """A CSV of `jobs` EDIT jobs over `paths` in turn (every third job takes two)."""
    path = folder / name
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "model", "prompt", "image_urls"])
        for i in range(jobs):
            images = [paths[i % len(paths)]]
            if i % 3 == 0:  # some jobs take two images
                images.append(paths[(i + 7) % len(paths)])
            out.writerow([f"j{i:03d}", EDIT, f"edit number {i}", "|".join(images)])
    return path


class Batch:
    """A manifest's jobs run by the real Runner against an in-process simulator whose
    clock is the virtual loop's; the runner's wall clock follows it too."""

    def __init__(self, config: SimConfig, *, upload_host: str = SIM_URL) -> None:
        self.upload_host = upload_host
        self.loop = asyncio.get_running_loop()
        started = time.time() - self.loop.time()
        #: Unix time that moves with the virtual loop: the simulator's clock, the
        #: runner's and the state's.
        self.wall = lambda: started + self.loop.time()
        self.app = create_app(config, clock=self.wall)
        self.sim = sim_of(self.app)
        self.key = config.api_key

    async def run(
        self, manifest: Path, out: Path, settings: RunSettings, observer: Any = None
    ) -> RunSummary:
        """Sync `manifest` into the state in `out` (as `run` does), run it, close all."""
        spool = load_manifest_jobs(manifest, catalog=default_catalog())
        store = StateStore.in_dir(out, wall_clock=self.wall)  # one clock for all
        try:
            sync_jobs(store, spool, allow_changed=False)
        finally:
            spool.close()
        try:
            return await self.run_store(store, settings, observer=observer)
        finally:
            store.close()

    async def run_store(
        self,
        store: StateStore,
        settings: RunSettings,
        *,
        observer: Any = None,
        upload_base: str | None = None,
        upload_transport: httpx.AsyncBaseTransport | None = None,
    ) -> RunSummary:
        """Run the jobs already in `store` (the caller opened it and closes it); the
        clients are made here and closed however the run ends. Uploads go to the
        simulator's upload host unless `upload_base` and `upload_transport` say else."""
        from liangxin_batch.run._client import LiangXinClient

        client = LiangXinClient(
            api_key=self.key,
            base_url=SIM_URL,
            transport=httpx.ASGITransport(app=self.app),
            settings=settings,
        )
        uploads = UploadClient(
            upload_base_url=upload_base or upload_base_url(self.upload_host),
            api_key=self.key,
            settings=settings,
            transport=upload_transport or httpx.ASGITransport(app=self.app),
        )
        runner = Runner(
            store=store,
            client=client,
            catalog=default_catalog(),
            settings=settings,
            clock=LoopClock(wall=self.wall),
            upload_client=uploads,
            **({"observer": observer} if observer is not None else {}),
        )
        try:
            return await runner.run()
        finally:
            await client.aclose()
            await uploads.aclose()


def run_over_loopback(
    app: Any, manifest: Path, out: Path, settings: RunSettings
) -> tuple[RunSummary, str]:
    """`manifest` run by the library (`run_batch_async`, as the CLI runs it) against `app`
    served on a real loopback socket, its upload host included; the run's summary and
    the simulator's base URL."""
    with serve_in_thread(app) as base_url:
        return asyncio.run(
            run_batch_async(
                manifest,
                out_dir=out,
                settings=settings,
                api_key=sim_of(app).config.api_key,
                base_url=base_url,
                upload_base_url=upload_base_url(base_url),
            )
        ), base_url
