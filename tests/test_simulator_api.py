"""The simulator's API over an in-process transport, on a hand-driven clock."""

from __future__ import annotations

import hashlib
import io
import json

import httpx
import pytest
from PIL import Image

from liangxin_batch.simulator import ManualClock, SimConfig, create_app
from tests.sim_support import AUTH, CREATE, MODEL, RECORD, harness, result_urls, sim_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-wrong"},
        {"Authorization": "Basic sk-sim-local"},
        {"Authorization": "Bearer "},
    ],
)
async def test_bad_or_missing_key_is_code_401_over_http_200(headers: dict[str, str]) -> None:
    async with harness() as h:
        h.client.headers.clear()
        calls = [
            h.client.post(CREATE, json={"model": MODEL, "input": {"prompt": "x"}}, headers=headers),
            h.client.get(RECORD, params={"taskId": "t"}, headers=headers),
            h.client.get("/api/v1/chat/credit", headers=headers),
            h.client.post("/api/v1/common/download-url", json={"url": "x"}, headers=headers),
        ]
        for call in calls:
            response = await call
            assert response.status_code == 200
            assert response.json() == {
                "code": 401,
                "msg": "You do not have access permissions",
                "data": None,
            }
        assert h.sim.ledger.events == []  # unauthenticated requests never reach the service


async def test_task_walks_the_states_and_serves_a_real_png() -> None:
    async with harness() as h:
        body = {"model": MODEL, "input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"}}
        created_at = h.clock()
        response = await h.client.post(CREATE, json=body)
        assert response.json()["code"] == 200
        task_id = response.json()["data"]["taskId"]
        task = h.sim.task(task_id)
        # 6 s typical latency with +-30 % jitter.
        assert 0.7 * 6 <= task.duration <= 1.3 * 6

        seen = []
        for share in (0.0, 0.15, 0.5, 0.99):
            h.clock.set(created_at + task.duration * share)
            data = (await h.record(task_id))["data"]
            seen.append(data["state"])
            assert data["resultJson"] == "" and data["completeTime"] is None
            assert data["costTime"] is None and data["creditsConsumed"] == 0
        assert seen == ["waiting", "queuing", "generating", "generating"]

        h.clock.set(created_at + task.duration + 1)
        answer = await h.record(task_id)
        assert (answer["code"], answer["msg"]) == (200, "success")
        data = answer["data"]
        assert data["state"] == "success" and data["taskId"] == task_id and data["model"] == MODEL
        assert json.loads(data["param"]) == body  # the WHOLE createTask body, as a string
        assert data["createTime"] == round(created_at * 1000)
        assert data["completeTime"] == data["updateTime"] == round(task.done_at * 1000)
        assert data["costTime"] == round(task.duration * 1000)
        assert data["creditsConsumed"] == 4 and data["failCode"] == ""

        (url,) = result_urls(data)
        assert url == f"http://sim/files/{task_id}/0.png"
        file = await h.client.get(url)
        assert file.status_code == 200 and file.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(file.content))
        assert (image.format, image.size) == ("PNG", (512, 288))  # 16:9, long side 512
        digest = hashlib.sha256(file.content).hexdigest()
        assert digest == hashlib.sha256(h.sim.file_bytes(task_id, 0)).hexdigest()
        (served,) = h.sim.ledger.files_served()
        assert (served.sha256, served.complete, served.size) == (digest, True, len(file.content))


@pytest.mark.parametrize(
    ("model", "extra", "fmt"),
    [
        (MODEL, {"output_format": "jpeg", "aspect_ratio": "9:16"}, "JPEG"),
        ("nano-banana-2", {}, "JPEG"),  # its documented default output_format is jpg
        ("nano-banana-2", {"output_format": "png"}, "PNG"),
    ],
)
async def test_output_format_picks_png_or_jpeg(model: str, extra: dict[str, str], fmt: str) -> None:
    async with harness() as h:
        task_id = await h.create_id("format test", model=model, **extra)
        (url,) = result_urls(await h.finish(task_id))
        assert url.endswith(".jpg" if fmt == "JPEG" else ".png")
        image = Image.open(io.BytesIO((await h.client.get(url)).content))
        assert image.format == fmt
        if extra.get("aspect_ratio") == "9:16":
            assert image.size == (288, 512)


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"model": MODEL, "input": {"prompt": "x", "aspect_ratio": "16-9"}}, 422, "aspect_ratio"),
        ({"model": MODEL, "input": {"prompt": "x", "colour": "red"}}, 422, "colour"),
        ({"model": MODEL, "input": {}}, 422, "prompt"),
        ({"model": MODEL}, 422, "input"),
        ({"model": "no-such-model", "input": {"prompt": "x"}}, 422, "model"),
        ({"model": "nano-banana", "input": {"prompt": "x"}}, 422, "google/nano-banana"),
        ({"input": {"prompt": "x"}}, 422, "model"),
        ({"model": MODEL, "input": {"prompt": "x"}, "callBackUrl": "ftp://x"}, 422, "callBackUrl"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_bad_create_bodies_name_the_problem(body: object, code: int, needle: str) -> None:
    async with harness() as h:
        response = await h.client.post(CREATE, json=body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["code"] == code and needle in answer["msg"], answer
        assert h.sim.ledger.creates() == [] and h.sim.balance() == SimConfig().credits
        assert [e.outcome for e in h.sim.ledger.create_attempts()] == [str(code)]


async def test_non_json_body_is_400() -> None:
    async with harness() as h:
        response = await h.client.post(CREATE, content=b"{not json")
        assert response.json()["code"] == 400


async def test_record_info_without_task_id_is_400_and_unknown_is_404() -> None:
    async with harness() as h:
        assert (await h.client.get(RECORD)).json()["code"] == 400
        assert (await h.client.get(RECORD, params={"taskId": ""})).json()["code"] == 400
        missing = await h.record("0" * 32)
        assert missing["code"] == 404 and missing["data"] is None
        assert [p.outcome for p in h.sim.ledger.polls()] == ["400", "400", "404"]


async def test_credits_run_out_with_402_and_top_up_recovers() -> None:
    async with harness(SimConfig(credits=10)) as h:
        await h.create_id("one")
        await h.create_id("two")
        assert (await h.client.get("/api/v1/chat/credit")).json()["data"] == 2
        refused = (await h.create("three")).json()
        assert refused == {
            "code": 402,
            "msg": "The current credits are insufficient. Please top up.",
            "data": None,
        }
        assert len(h.sim.ledger.creates()) == 2

        top = await h.client.post("/_sim/top-up", json={"credits": 2})
        assert top.json()["data"] == 4
        await h.create_id("three")
        assert (await h.client.get("/api/v1/chat/credit")).json()["data"] == 0
        outcomes = [e.outcome for e in h.sim.ledger.create_attempts()]
        assert outcomes == ["created", "created", "402", "created"]
        bad = await h.client.post("/_sim/top-up", json={"credits": -5})
        assert bad.json()["code"] == 422


async def test_failed_task_is_refunded_and_reports_fail() -> None:
    from liangxin_batch.simulator import FaultProfile

    async with harness(SimConfig(credits=100, faults=FaultProfile(fail=1.0))) as h:
        task_id = await h.create_id()
        assert h.sim.balance() == 96  # reserved at create
        data = await h.finish(task_id)
        assert data["state"] == "fail" and data["failCode"] == "500" and data["failMsg"]
        assert data["resultJson"] == "" and data["creditsConsumed"] == 0
        assert h.sim.balance() == 100  # a failed task consumes nothing
        assert (await h.client.get(f"/files/{task_id}/0.png")).status_code == 404


async def test_download_url_accepts_only_our_finished_files() -> None:
    async with harness() as h:
        task_id = await h.create_id()
        own = f"http://sim/files/{task_id}/0.png"
        early = await h.client.post("/api/v1/common/download-url", json={"url": own})
        assert early.json()["code"] == 404  # not generated yet
        await h.finish(task_id)
        for foreign in ("https://example.com/cat.png", f"https://other.host/files/{task_id}/0.png"):
            answer = await h.client.post("/api/v1/common/download-url", json={"url": foreign})
            assert answer.json()["code"] == 422
        missing = await h.client.post("/api/v1/common/download-url", json={})
        assert missing.json()["code"] == 422
        fresh = (await h.client.post("/api/v1/common/download-url", json={"url": own})).json()
        assert fresh["code"] == 200 and fresh["data"].startswith(own + "?exp=")
        file = await h.client.get(fresh["data"])
        assert file.content == h.sim.file_bytes(task_id, 0)


async def test_unknown_route_and_method_are_real_http_errors() -> None:
    async with harness() as h:
        missing = await h.client.get("/api/v1/nothing")
        assert missing.status_code == 404 and missing.json()["code"] == 404
        wrong = await h.client.get(CREATE)
        assert wrong.status_code == 405
        assert (await h.client.get("/files/abc/0.png")).status_code == 404


async def test_ledger_records_inputs_and_counts_duplicates() -> None:
    async with harness() as h:
        first = await h.create_id("same", aspect_ratio="1:1")
        await h.client.post(
            CREATE, json={"input": {"aspect_ratio": "1:1", "prompt": "same"}, "model": MODEL}
        )
        await h.create_id("other")
        await h.record(first)
        counts = h.sim.ledger.create_counts_by_input()
        assert sorted(counts.values()) == [1, 2]  # key order does not make a new job
        (dup,) = h.sim.ledger.duplicates()
        assert json.loads(dup) == {
            "model": MODEL,
            "input": {"prompt": "same", "aspect_ratio": "1:1"},
        }
        creates = h.sim.ledger.creates()
        assert creates[0].input == {"prompt": "same", "aspect_ratio": "1:1"}
        assert all(c.credits == 4 and c.at == h.clock() for c in creates)
        (poll,) = h.sim.ledger.polls()
        assert (poll.task_id, poll.outcome) == (first, "waiting")

        listing = (await h.client.get("/_sim/ledger")).json()["data"]
        assert listing["balance"] == SimConfig().credits - 12
        assert [e["kind"] for e in listing["events"]] == ["create"] * 3 + ["poll"]
        assert listing["duplicates"] == {dup: 2}
        # ?since=N: only what came after the first N (a bench polls it cheaply).
        tail = (await h.client.get("/_sim/ledger?since=3")).json()["data"]["events"]
        assert [e["kind"] for e in tail] == ["poll"]
        assert (await h.client.get("/_sim/ledger?since=x")).status_code == 422


async def test_same_seed_gives_same_ids_and_bytes() -> None:
    async def run(seed: int) -> tuple[str, bytes]:
        async with harness(SimConfig(seed=seed)) as h:
            task_id = await h.create_id("repeatable")
            await h.finish(task_id)
            return task_id, h.sim.file_bytes(task_id, 0)

    first, again, other = await run(1), await run(1), await run(2)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]  # the task id is drawn on the image
    assert len(first[0]) == 32


async def test_latency_scale_zero_finishes_at_once() -> None:
    clock = ManualClock()
    app = create_app(SimConfig(latency_scale=0), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=AUTH) as c:
        created = await c.post(CREATE, json={"model": MODEL, "input": {"prompt": "now"}})
        task_id = created.json()["data"]["taskId"]
        record = await c.get(RECORD, params={"taskId": task_id})
        assert record.json()["data"]["state"] == "success"
    await sim_of(app).aclose()
