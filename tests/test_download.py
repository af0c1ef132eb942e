"""Downloads against the simulator and scripted file hosts: verify, retry, refresh, resume."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.core._states import JobState
from liangxin_batch.errors import ConfigError, LiangXinError
from liangxin_batch.outputs._layout import Layout
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._download import Downloader, parse_size, short_url
from liangxin_batch.simulator import (
    FaultProfile,
    ManualClock,
    SimConfig,
    create_app,
    serve_in_thread,
)
from liangxin_batch.state._store import JobRow, StateStore
from tests.sim_support import sim_of
from tests.state_support import drive, saved

pytestmark = pytest.mark.anyio

KEY = "sk-sim-local"
MODEL = "google/nano-banana"


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests through and keeps them, to check what reached the file host."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


def assert_no_key(requests: list[httpx.Request]) -> None:
    assert requests
    for request in requests:
        assert "authorization" not in request.headers
        assert all(KEY not in value for value in request.headers.values())
        assert KEY not in str(request.url)


def add_job(
    store: StateStore, job_id: str, urls: list[str], *, task_id: str | None = None, idx: int = 0
) -> JobRow:
    store.upsert_jobs([(job_id, idx, MODEL, '{"prompt": "p"}', '{"prompt": "p"}', "h")])
    drive(
        store,
        job_id,
        JobState.SUCCEEDED,
        task_id=task_id or f"task-{job_id}",
        result_urls=urls,
        completed_at=1_750_000_000.0,
    )
    job = store.get(job_id)
    assert job is not None
    return job


def state_of(store: StateStore, job_id: str) -> JobRow:
    job = store.get(job_id)
    assert job is not None
    return job


def files_of(
    store: StateStore, job_id: str
) -> list[tuple[int, str, str | None, str | None, int | None]]:
    return [(f.n, f.url, f.path, f.sha256, f.size) for f in store.files_of(job_id)]


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp"))]


# -- against the simulator (in process) ---------------------------------------------


@dataclass
class Sim:
    app: Any
    clock: ManualClock
    api: LiangXinClient
    files: Recorder
    store: StateStore
    out: Path
    downloader: Downloader

    @property
    def sim(self) -> Any:
        return sim_of(self.app)

    async def succeeded(self, job_id: str = "j1", idx: int = 0, **extra: Any) -> JobRow:
        task_id = await self.api.create_task(MODEL, {"prompt": f"fox {job_id}", **extra})
        self.clock.set(max(self.clock(), self.sim.task(task_id).done_at))
        record = await self.api.get_task(task_id)
        assert record.state is TaskState.SUCCESS
        return add_job(self.store, job_id, list(record.result_urls), task_id=task_id, idx=idx)


@asynccontextmanager
async def simulated(tmp_path: Path, faults: FaultProfile | None = None) -> AsyncIterator[Sim]:
    clock = ManualClock()
    app = create_app(SimConfig(api_key=KEY, faults=faults or FaultProfile()), clock=clock)
    api = LiangXinClient(
        api_key=KEY, base_url="http://sim.test", transport=httpx.ASGITransport(app=app)
    )
    files = Recorder(httpx.ASGITransport(app=app))
    store = StateStore.in_dir(tmp_path)
    async with httpx.AsyncClient(transport=files) as http:
        downloader = Downloader(
            store=store, out_dir=tmp_path, client=api, http=http, backoff_base=0.0
        )
        try:
            yield Sim(app, clock, api, files, store, tmp_path, downloader)
        finally:
            await api.aclose()
            await sim_of(app).aclose()
            store.close()


async def test_simulated_download_lands_verified(tmp_path: Path) -> None:
    async with simulated(tmp_path) as s:
        job = await s.succeeded()
        await s.downloader.handle(job)
        assert state_of(s.store, "j1").state is JobState.DONE
        [(n, url, path, sha, size)] = files_of(s.store, "j1")
        assert (n, url) == (0, job.result_urls[0])
        assert path == "outputs/google-nano-banana/j1.png"
        data = s.sim.file_bytes(job.task_id, 0)
        assert (tmp_path / saved(path)).read_bytes() == data
        assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert_no_key(s.files.requests)
        assert leftovers(tmp_path) == []


async def test_truncated_download_is_retried_and_matches_the_simulator(tmp_path: Path) -> None:
    async with simulated(tmp_path, FaultProfile(broken_download=1.0)) as s:
        job = await s.succeeded()
        await s.downloader.handle(job)
        served = s.sim.ledger.files_served()
        assert [e.outcome for e in served] == ["broken", "complete"]
        [(_, _, path, sha, size)] = files_of(s.store, "j1")
        assert sha == served[-1].sha256 and size == served[-1].size
        assert hashlib.sha256((tmp_path / saved(path)).read_bytes()).hexdigest() == sha
        assert state_of(s.store, "j1").state is JobState.DONE
        assert leftovers(tmp_path) == []


async def test_expired_url_is_refreshed_through_download_url(tmp_path: Path) -> None:
    async with simulated(tmp_path, FaultProfile(url_ttl_seconds=60)) as s:
        job = await s.succeeded()
        s.clock.advance(120)  # the plain result URL has expired: 403
        await s.downloader.handle(job)
        assert state_of(s.store, "j1").state is JobState.DONE
        statuses = [e.http_status for e in s.sim.ledger.files_served()]
        assert statuses == [403, 200]
        assert [e.outcome for e in s.sim.ledger.events if e.kind == "download_url"] == ["ok"]
        assert len(s.sim.ledger.polls()) == 1  # download-url sufficed: no recordInfo re-read
        signed = s.files.requests[-1].url
        assert "sig=" in str(signed)
        # The original URL stays the file's identity, so a resume recognises it.
        [(_, url, _, sha, _)] = files_of(s.store, "j1")
        assert url == job.result_urls[0]
        assert sha == hashlib.sha256(s.sim.file_bytes(job.task_id, 0)).hexdigest()
        assert_no_key(s.files.requests)


async def test_several_files_are_numbered(tmp_path: Path) -> None:
    async with simulated(tmp_path) as s:
        s.downloader.layout = Layout.parse()
        task_id = await s.api.create_task("google/imagen4-fast", {"prompt": "x", "num_images": "3"})
        s.clock.set(s.sim.task(task_id).done_at)
        record = await s.api.get_task(task_id)
        job = add_job(s.store, "multi", list(record.result_urls), task_id=task_id)
        await s.downloader.handle(job)
        paths = [row[2] for row in files_of(s.store, "multi")]
        stem = "outputs/google-nano-banana/multi"  # add_job stores MODEL as the job's model
        assert paths == [f"{stem}.png", f"{stem}_2.png", f"{stem}_3.png"]
        for n, path in enumerate(paths):
            assert (tmp_path / saved(path)).read_bytes() == s.sim.file_bytes(task_id, n)


@pytest.mark.slow
async def test_stream_cut_on_a_real_socket_is_retried(tmp_path: Path) -> None:
    """Over uvicorn the simulator aborts the socket mid-body, as a flaky CDN would."""
    clock = ManualClock()
    app = create_app(SimConfig(api_key=KEY, faults=FaultProfile(broken_download=1.0)), clock=clock)
    store = StateStore.in_dir(tmp_path)
    with serve_in_thread(app) as base_url:
        async with LiangXinClient(api_key=KEY, base_url=base_url) as api:
            task_id = await api.create_task(MODEL, {"prompt": "a fox on a real socket"})
            clock.set(sim_of(app).task(task_id).done_at)
            record = await api.get_task(task_id)
            job = add_job(store, "j1", list(record.result_urls), task_id=task_id)
            downloader = Downloader(store=store, out_dir=tmp_path, client=api, backoff_base=0.0)
            try:
                await downloader.handle(job)
            finally:
                await downloader.aclose()
    served = sim_of(app).ledger.files_served()
    assert [e.outcome for e in served] == ["broken", "complete"]
    [(_, _, path, sha, _)] = files_of(store, "j1")
    assert sha == served[-1].sha256
    assert hashlib.sha256((tmp_path / saved(path)).read_bytes()).hexdigest() == sha
    assert state_of(store, "j1").state is JobState.DONE
    assert leftovers(tmp_path) == []
    store.close()


# -- scripted file hosts --------------------------------------------------------------

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def real_png(seed: bytes = b"") -> bytes:
    """A real, decodable PNG (about 5 KB, incompressible): downloads are verified by
    decoding them."""
    import io

    from PIL import Image

    noise = b"".join(
        hashlib.sha256(seed + bytes([i, j])).digest() for i in range(3) for j in range(64)
    )
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 32), noise[: 64 * 32 * 3]).save(buf, "PNG")
    return buf.getvalue()


PNG = real_png()


@dataclass
class FakeSource:
    """Stands in for LiangXinClient's refresh calls."""

    fresh: dict[str, str] = field(default_factory=dict)
    record_urls: tuple[str, ...] = ()
    calls: list[str] = field(default_factory=list)

    async def get_download_url(self, url: str, *, account: str | None = None) -> str:
        self.calls.append(f"download-url {url}")
        if url not in self.fresh:
            raise LiangXinError("download-url: url: no such file")
        return self.fresh[url]

    async def get_task(self, task_id: str, *, account: str | None = None) -> TaskRecord:
        self.calls.append(f"recordInfo {task_id}")
        return TaskRecord(task_id=task_id, state=TaskState.SUCCESS, result_urls=self.record_urls)


@asynccontextmanager
async def scripted(
    tmp_path: Path, handler: Handler, source: FakeSource | None = None, **kw: Any
) -> AsyncIterator[tuple[Downloader, StateStore, Recorder]]:
    recorder = Recorder(httpx.MockTransport(handler))
    store = StateStore.in_dir(tmp_path)
    async with httpx.AsyncClient(transport=recorder) as http:
        downloader = Downloader(
            store=store,
            out_dir=tmp_path,
            client=source or FakeSource(),
            http=http,
            backoff_base=0.0,
            **kw,
        )
        try:
            yield downloader, store, recorder
        finally:
            store.close()


def png(body: bytes = PNG, *, length: int | None = None, status: int = 200) -> httpx.Response:
    headers = {
        "content-type": "image/png",
        "content-length": str(len(body) if length is None else length),
    }
    return httpx.Response(status, headers=headers, content=body)


async def test_short_body_is_retried_until_whole(tmp_path: Path) -> None:
    served: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        served.append(1)
        # First two answers promise the whole file and deliver half of it.
        return png(PNG[: len(PNG) // 2], length=len(PNG)) if len(served) < 3 else png()

    async with scripted(tmp_path, handler) as (downloader, store, _):
        await downloader.handle(add_job(store, "j1", ["https://cdn.test/a/out.png"]))
        assert len(served) == 3
        [(_, _, path, sha, size)] = files_of(store, "j1")
        assert (tmp_path / saved(path)).read_bytes() == PNG
        assert (sha, size) == (hashlib.sha256(PNG).hexdigest(), len(PNG))
        assert state_of(store, "j1").state is JobState.DONE


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (lambda: png(PNG[:100], length=len(PNG)), "truncated: 100 of"),
        (lambda: png(b""), "empty body"),
        (lambda: httpx.Response(503, text="busy"), "HTTP 503"),
    ],
)
async def test_persistent_transient_failure_gives_up(
    tmp_path: Path, response: Callable[[], httpx.Response], reason: str
) -> None:
    tries: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        tries.append(1)
        return response()

    async with scripted(tmp_path, handler, retries=2) as (downloader, store, _):
        await downloader.handle(add_job(store, "j1", ["https://cdn.test/out.png"]))
        job = state_of(store, "j1")
        assert job.state is JobState.DOWNLOAD_FAILED
        assert job.error_code == "download_failed"
        assert reason in (job.error_message or "") and "3 tries" in (job.error_message or "")
        assert len(tries) == 3
        assert files_of(store, "j1") == []
        assert not (tmp_path / "outputs" / "google-nano-banana" / "j1.png").exists()
        assert leftovers(tmp_path) == []


async def test_dropped_connection_is_retried(tmp_path: Path) -> None:
    tries: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        tries.append(1)
        if len(tries) == 1:
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        if len(tries) == 2:
            raise httpx.ReadTimeout("timed out", request=request)
        return png()

    async with scripted(tmp_path, handler) as (downloader, store, _):
        await downloader.handle(add_job(store, "j1", ["https://cdn.test/out.png"]))
        assert state_of(store, "j1").state is JobState.DONE
        assert len(tries) == 3


async def test_refused_url_falls_back_to_record_info(tmp_path: Path) -> None:
    old, signed, again = (
        "https://cdn.test/old.png",
        "https://cdn.test/old.png?sig=1",
        "https://cdn2.test/new.png",
    )
    source = FakeSource(fresh={old: signed}, record_urls=(again,))

    async def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == again:
            return png()
        return httpx.Response(410 if "sig" in str(request.url) else 403)

    async with scripted(tmp_path, handler, source) as (downloader, store, recorder):
        await downloader.handle(add_job(store, "j1", [old], task_id="t9"))
        assert state_of(store, "j1").state is JobState.DONE
        assert [str(r.url) for r in recorder.requests] == [old, signed, again]
        assert source.calls == [f"download-url {old}", "recordInfo t9"]


async def test_refused_everywhere_fails_with_the_reasons(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    source = FakeSource(record_urls=("https://cdn.test/x.png",))
    async with scripted(tmp_path, handler, source) as (downloader, store, _):
        await downloader.handle(add_job(store, "j1", ["https://cdn.test/x.png?token=SECRET"]))
        job = state_of(store, "j1")
        assert job.state is JobState.DOWNLOAD_FAILED
        message = job.error_message or ""
        assert "HTTP 404" in message and "download-url" in message
        assert "SECRET" not in message  # signed tokens are never logged


async def test_api_key_never_reaches_the_file_host(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return png()

    async with scripted(tmp_path, handler) as (downloader, store, recorder):
        await downloader.handle(add_job(store, "j1", ["https://cdn.test/out.png"]))
        assert_no_key(recorder.requests)
    with pytest.raises(ConfigError, match="credentials"):
        Downloader(
            store=StateStore.in_dir(tmp_path / "x"),
            out_dir=tmp_path,
            client=None,
            http=httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}),
        )


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://cdn.test/x.png", "data:,x"])
async def test_only_http_urls_are_fetched(tmp_path: Path, url: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be requested")

    async with scripted(tmp_path, handler) as (downloader, store, recorder):
        await downloader.handle(add_job(store, "j1", [url]))
        job = state_of(store, "j1")
        assert job.state is JobState.DOWNLOAD_FAILED
        assert "not an http(s) URL" in (job.error_message or "")
        assert recorder.requests == []


async def test_size_cap(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/declared.png":
            return png()
        # No Content-Length: the cap is enforced while streaming.
        return httpx.Response(200, content=_chunks(PNG), headers={"content-type": "image/png"})

    async with scripted(tmp_path, handler, max_file_size=1000) as (downloader, store, _):
        await downloader.handle(add_job(store, "a", ["https://cdn.test/declared.png"], idx=0))
        await downloader.handle(add_job(store, "b", ["https://cdn.test/streamed.png"], idx=1))
        for job_id in ("a", "b"):
            job = state_of(store, job_id)
            assert job.state is JobState.DOWNLOAD_FAILED
            assert "1,000" in (job.error_message or "")
        assert leftovers(tmp_path) == []
        assert not list((tmp_path / "outputs").rglob("*.png"))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 300):
        yield data[i : i + 300]


async def test_extension_from_content_type_then_url(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        kind = "image/webp" if request.url.path == "/a.png" else "application/octet-stream"
        return httpx.Response(200, content=PNG, headers={"content-type": kind})

    async with scripted(tmp_path, handler) as (downloader, store, _):
        urls = ["https://cdn.test/a.png", "https://cdn.test/b.JPEG?x=1", "https://cdn.test/c"]
        await downloader.handle(add_job(store, "j1", urls))
        paths = [row[2] for row in files_of(store, "j1")]
        assert [Path(saved(p)).name for p in paths] == ["j1.webp", "j1_2.jpg", "j1_3.bin"]


async def test_resume_skips_verified_files_and_refetches_bad_ones(tmp_path: Path) -> None:
    requested: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path)
        return png()

    urls = [f"https://cdn.test/{n}.png" for n in range(3)]
    async with scripted(tmp_path, handler) as (downloader, store, _):
        await downloader.handle(add_job(store, "j1", urls))
        paths = [tmp_path / saved(row[2]) for row in files_of(store, "j1")]
        assert len(requested) == 3
        # A later run finds file 1 intact, file 2 corrupted, file 3 gone.
        paths[1].write_bytes(PNG[:-1] + b"!")
        paths[2].unlink()
        drive(store, "j1", JobState.SUCCEEDED)
        requested.clear()
        await downloader.handle(state_of(store, "j1"))
        assert requested == ["/1.png", "/2.png"]
        assert state_of(store, "j1").state is JobState.DONE
        assert all(p.read_bytes() == PNG for p in paths)


async def test_stale_part_files_are_removed_on_start(tmp_path: Path) -> None:
    StateStore.in_dir(tmp_path).close()  # the state of the run that left these
    part = tmp_path / ".partial" / "0123456789abcdef.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half")
    keep = tmp_path / "outputs" / "m" / "j0.png"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(PNG)

    async def handler(request: httpx.Request) -> httpx.Response:
        return png()

    async with scripted(tmp_path, handler) as (downloader, _, _):
        assert downloader.prepare() == 1
        assert downloader.prepare() == 0  # idempotent
    assert not part.exists() and keep.exists()


async def test_stop_finishes_nothing_new(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return png()

    async with scripted(tmp_path, handler, stopping=lambda: True) as (downloader, store, rec):
        await downloader.handle(add_job(store, "j1", ["https://cdn.test/out.png"]))
        assert state_of(store, "j1").state is JobState.SUCCEEDED  # left for the next run
        assert rec.requests == []


async def test_jobs_whose_ids_slugify_alike_get_distinct_files(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return png(real_png(request.url.path.encode()))

    async with scripted(tmp_path, handler) as (downloader, store, _):
        await downloader.handle(add_job(store, "a b", ["https://cdn.test/1.png"], idx=0))
        await downloader.handle(add_job(store, "a-b", ["https://cdn.test/2.png"], idx=1))
        first, second = files_of(store, "a b")[0][2], files_of(store, "a-b")[0][2]
        assert first != second
        assert (tmp_path / saved(first)).read_bytes() == real_png(b"/1.png")
        assert (tmp_path / saved(second)).read_bytes() == real_png(b"/2.png")


async def test_concurrency_is_capped(tmp_path: Path) -> None:
    active, peak = 0, 0
    full, release = asyncio.Event(), asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 2:
            full.set()
        await release.wait()
        active -= 1
        return png()

    async with scripted(tmp_path, handler, concurrency=2) as (downloader, store, _):
        jobs = [add_job(store, f"j{i}", [f"https://cdn.test/{i}.png"], idx=i) for i in range(6)]
        tasks = [asyncio.create_task(downloader.handle(job)) for job in jobs]
        await full.wait()
        for _ in range(20):  # give any download that could start a chance to
            await asyncio.sleep(0)
        assert active == 2
        release.set()
        await asyncio.gather(*tasks)
        assert peak == 2
        assert all(state_of(store, j.job_id).state is JobState.DONE for j in jobs)


def test_short_url_hides_the_query() -> None:
    url = "https://user:pw@cdn.test/a/b/c/file.png?X-Amz-Signature=abc&token=xyz"
    assert short_url(url) == "https://cdn.test/…/file.png"
    assert "json" not in short_url(json.dumps({"a": 1}))  # never raises on junk


def test_parse_size() -> None:
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2 GiB") == 2 * 1024**3
    assert parse_size("1048576") == 1048576
    assert parse_size("1.5kb") == 1500
    for bad in ("", "MB", "-1MB", "0", "5 parsecs", "1e9"):
        with pytest.raises(ConfigError, match="--max-file-size"):
            parse_size(bad)


# -- wired to the real Runner, as run_batch_async does -----------------------------------


def test_runner_feeds_the_downloader_and_a_resume_finishes_the_files(tmp_path: Path) -> None:
    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.core._summary import RunSummary
    from liangxin_batch.run._runner import Interrupt, Runner
    from liangxin_batch.state._sync import sync_jobs
    from tests.runner_harness import SimEnv, in_virtual_time, make_jobs

    jobs = make_jobs(12)

    async def run(env: SimEnv, *, stop_downloads: bool) -> RunSummary:
        store = StateStore.in_dir(tmp_path)
        sync_jobs(store, jobs, allow_changed=False)
        client = env.client()
        interrupt = Interrupt()
        downloader = Downloader(
            store=store,
            out_dir=tmp_path,
            client=client,
            transport=httpx.ASGITransport(app=env.app),
            stopping=lambda: stop_downloads or interrupt.requested,
        )
        runner = Runner(
            store=store,
            client=client,
            catalog=default_catalog(),
            settings=RunSettings(),
            on_succeeded=downloader.handle,
            interrupt=interrupt,
        )
        try:
            return await runner.run()
        finally:
            await downloader.aclose()
            await client.aclose()
            store.close()

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(broken_download=0.5))
        first = await run(env, stop_downloads=True)  # stopped before any file started
        second = await run(env, stop_downloads=False)
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.counts == {"downloading": 12}  # generated, no file fetched yet
    assert second.counts == {"succeeded": 12}
    assert len(env.sim.ledger.creates()) == 12  # the resume only downloaded
    served = {e.path: e for e in env.sim.ledger.files_served() if e.complete}
    assert any(not e.complete for e in env.sim.ledger.files_served())  # some broke, were retried
    store = StateStore.in_dir(tmp_path)
    rows = [(f.url, f.path, f.sha256) for f in store.all_files()]
    assert len(rows) == 12
    for url, path, sha in rows:
        assert served["files/" + url.split("/files/", 1)[1]].sha256 == sha
        assert hashlib.sha256((tmp_path / saved(path)).read_bytes()).hexdigest() == sha
    store.close()
