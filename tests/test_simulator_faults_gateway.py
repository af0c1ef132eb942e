"""Gateway pages after create, duplicate task ids, garbled success records, short
Content-Length downloads and self-made callbacks, in-process on a ManualClock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.errors import ConfigError
from liangxin_batch.simulator import FaultProfile, SimConfig, load_fault_profile, sign_callback
from tests.sim_support import harness, result_urls

pytestmark = pytest.mark.anyio

PRICE = 4  # tests.sim_support.MODEL costs 4 credits


def faulty(**faults: Any) -> SimConfig:
    return SimConfig(faults=FaultProfile(**faults))


# -- gateway pages after create -------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "title"),
    [
        ("gateway_500_after_create", 500, "500 Internal Server Error"),
        ("gateway_502_after_create", 502, "502 Bad Gateway"),
    ],
)
async def test_gateway_page_after_create_creates_and_charges(
    fault: str, status: int, title: str
) -> None:
    # error_style must not matter: a gateway page is never an envelope
    async with harness(faulty(**{fault: 1.0}, error_style="status")) as h:
        response = await h.create("ghost")
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert response.text == f"<html><body><h1>{title}</h1></body></html>"
        with pytest.raises(json.JSONDecodeError):
            response.json()

        (event,) = h.sim.ledger.creates()
        assert (event.outcome, event.http_status) == (f"gateway_{status}", status)
        assert event.input == {"prompt": "ghost"} and event.credits == PRICE
        assert h.sim.balance() == SimConfig().credits - PRICE
        assert event.task_id is not None and h.sim.task_ids() == [event.task_id]
        data = await h.finish(event.task_id)  # the task is real and finishes
        assert data["state"] == "success"


async def test_gateway_shares_are_laid_after_lost_reply_in_the_one_roll() -> None:
    base: dict[str, Any] = {
        "create_500": 0.2,
        "create_455": 0.1,
        "lost_reply": 0.2,
        "create_errors": {433: 0.2},
    }

    async def outcomes(**extra: Any) -> list[str]:
        async with harness(SimConfig(seed=3, faults=FaultProfile(**base, **extra))) as h:
            for n in range(120):
                h.clock.advance(1.0)  # stay under the create limit
                try:
                    await h.create(f"p{n}")
                except httpx.RemoteProtocolError:
                    pass  # lost_reply
            return [e.outcome for e in h.sim.ledger.create_attempts()]

    before = await outcomes()
    assert await outcomes(gateway_500_after_create=0.0, gateway_502_after_create=0.0) == before
    with_gateway = await outcomes(gateway_500_after_create=0.1, gateway_502_after_create=0.1)
    # The slices before them keep their rolls; the gateway slices take over from 433.
    for old, new in zip(before, with_gateway, strict=True):
        if old in ("500", "455", "lost_reply"):
            assert new == old
        elif new in ("gateway_500", "gateway_502"):
            assert old in ("433", "created")
    assert {"gateway_500", "gateway_502"} <= set(with_gateway)


def test_gateway_shares_count_towards_the_one_roll() -> None:
    with pytest.raises(ConfigError, match="exceed"):
        FaultProfile(lost_reply=0.5, gateway_500_after_create=0.3, gateway_502_after_create=0.3)


# -- duplicate task ids ---------------------------------------------------------------


async def test_duplicate_task_id_answers_the_earlier_task() -> None:
    async with harness(faulty(duplicate_task_id=1.0)) as h:
        first = await h.create_id("one")  # no earlier task: answered normally
        assert h.sim.task_ids() == [first]
        second = await h.create_id("two")
        third = await h.create_id("three")
        assert second == first  # the earlier task's id, not the new one's
        assert third == h.sim.task_ids()[1]  # the task created just before the third

        ids = h.sim.task_ids()
        assert len(ids) == 3 and len(set(ids)) == 3  # all three exist...
        events = h.sim.ledger.creates()
        assert [e.outcome for e in events] == ["created", "duplicate_task_id", "duplicate_task_id"]
        assert [e.task_id for e in events] == ids  # ...ledgered under their real ids
        assert h.sim.balance() == SimConfig().credits - 3 * PRICE


async def test_duplicate_task_id_share_is_seeded() -> None:
    async with harness(faulty(duplicate_task_id=0.3)) as h:
        for n in range(60):
            h.clock.advance(1.0)
            await h.create_id(f"p{n}")
        dup = [e.outcome for e in h.sim.ledger.creates()].count("duplicate_task_id")
        assert 6 <= dup <= 30 and len(h.sim.task_ids()) == 60


# -- garbled success records ----------------------------------------------------------


async def test_garbled_success_garbles_one_answer_then_answers_properly() -> None:
    async with harness(faulty(garbled_success=1.0)) as h:
        task_id = await h.create_id()
        running = (await h.record(task_id))["data"]
        assert running["state"] == "waiting" and running["resultJson"] == ""  # untouched

        garbled = await h.finish(task_id)
        assert garbled["state"] == "success"
        text = garbled["resultJson"]
        if text == "{not json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
        else:
            assert json.loads(text) == {"resultUrls": []}

        proper = (await h.record(task_id))["data"]
        assert result_urls(proper) == h.sim.task(task_id).result_urls()
        assert [e.outcome for e in h.sim.ledger.polls()] == [
            "waiting",
            "success (garbled)",
            "success",
        ]


async def test_garbled_success_uses_both_forms_per_task_and_poll() -> None:
    async with harness(faulty(garbled_success=0.5)) as h:
        forms: set[str] = set()
        for n in range(40):
            h.clock.advance(1.0)
            task_id = await h.create_id(f"p{n}")
            await h.finish(task_id)
            for _ in range(4):
                h.clock.advance(0.2)  # stay under the recordInfo limit
                text = (await h.record(task_id))["data"]["resultJson"]
                proper = text.startswith('{"resultUrls": ["http')
                forms.add("proper" if proper else text)
            outcomes = [e.outcome for e in h.sim.ledger.polls() if e.task_id == task_id]
            assert "success (garbled), success (garbled)" not in ", ".join(outcomes)
        assert forms == {"proper", "{not json", json.dumps({"resultUrls": []})}


async def test_garbled_success_does_not_touch_failed_tasks() -> None:
    async with harness(faulty(garbled_success=1.0, fail=1.0)) as h:
        task_id = await h.create_id()
        data = await h.finish(task_id)
        assert (data["state"], data["resultJson"]) == ("fail", "")


# -- short Content-Length -------------------------------------------------------------


async def test_short_content_length_truncates_consistently() -> None:
    async with harness(faulty(short_content_length=100)) as h:
        task_id = await h.create_id()
        (url,) = result_urls(await h.finish(task_id))
        whole = h.sim.file_bytes(task_id, 0)
        for _ in range(2):  # every serve, not only the first
            response = await h.client.get(url)
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == len(whole) - 100
            assert response.content == whole[:-100]
        head = await h.client.head(url)
        assert int(head.headers["content-length"]) == len(whole) - 100
        events = h.sim.ledger.files_served()
        assert [(e.outcome, e.complete, e.bytes_sent, e.size) for e in events] == [
            ("short", False, len(whole) - 100, len(whole))
        ] * 3


async def test_short_content_length_share_limits_the_files() -> None:
    async with harness(faulty(short_content_length=10, short_content_length_share=0.5)) as h:
        short = 0
        for n in range(30):
            h.clock.advance(1.0)
            task_id = await h.create_id(f"p{n}")
            (url,) = result_urls(await h.finish(task_id))
            body = (await h.client.get(url)).content
            whole = h.sim.file_bytes(task_id, 0)
            assert body in (whole, whole[:-10])
            short += body != whole
        assert 5 <= short <= 25


async def test_short_content_length_off_by_default() -> None:
    async with harness() as h:
        task_id = await h.create_id()
        (url,) = result_urls(await h.finish(task_id))
        response = await h.client.get(url)
        assert response.content == h.sim.file_bytes(task_id, 0)
        assert h.sim.ledger.files_served()[0].outcome == "complete"


# -- a callback of one's own ----------------------------------------------------------


def test_sign_callback_matches_the_signature_the_simulator_sends() -> None:
    import base64
    import hashlib
    import hmac

    digest = hmac.new(b"whsec-1", b"task-1.1750000000", hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    assert sign_callback("whsec-1", "task-1", 1750000000) == expected
    assert sign_callback("whsec-1", "task-1", "1750000000") == expected


# -- profile files --------------------------------------------------------------------


def test_new_knobs_load_from_yaml_and_json(tmp_path: Path) -> None:
    expected = FaultProfile(
        gateway_500_after_create=0.1,
        gateway_502_after_create=0.05,
        duplicate_task_id=0.2,
        garbled_success=0.3,
        short_content_length=128,
        short_content_length_share=0.5,
    )
    yaml_file = tmp_path / "faults.yaml"
    yaml_file.write_text(
        "faults:\n  gateway_500_after_create: 0.1\n  gateway_502_after_create: 5e-2\n"
        "  duplicate_task_id: 0.2\n  garbled_success: 0.3\n"
        "  short_content_length: 128\n  short_content_length_share: 0.5\n"
    )
    assert load_fault_profile(yaml_file) == expected
    json_file = tmp_path / "faults.json"
    json_file.write_text(
        json.dumps(
            {
                "gateway_500_after_create": 0.1,
                "gateway_502_after_create": 0.05,
                "duplicate_task_id": 0.2,
                "garbled_success": 0.3,
                "short_content_length": 128,
                "short_content_length_share": 0.5,
            }
        )
    )
    assert load_fault_profile(json_file) == expected
    defaults = FaultProfile()
    assert defaults.gateway_500_after_create == defaults.gateway_502_after_create == 0.0
    assert defaults.duplicate_task_id == defaults.garbled_success == 0.0
    assert (defaults.short_content_length, defaults.short_content_length_share) == (0, 1.0)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gateway_500_after_create: 1.5\n", "gateway_500_after_create"),
        ("duplicate_task_id: -0.1\n", "duplicate_task_id"),
        ("garbled_success: lots\n", "garbled_success"),
        ("short_content_length: 1.5\n", "short_content_length"),
        ("short_content_length: -3\n", "short_content_length"),
        ("short_content_length_share: 2\n", "short_content_length_share"),
        ("create_500: 0.5\ngateway_502_after_create: 0.6\n", "exceed"),
    ],
)
def test_bad_new_knobs_are_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_fault_profile(path)
