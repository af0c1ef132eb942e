"""Issue 16: the simulator's upload host, over a real loopback socket on a ManualClock.

Its three endpoints under a path prefix of their own, both documented answer shapes,
auth, bad bodies, type sniffing, the size limit, overwrites, expiry in virtual time,
the upload ledger, and tasks that fail when an input upload is gone."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from liangxin_batch.catalog._catalog import load_catalog
from liangxin_batch.simulator import (
    AUTH_FAILED,
    FETCH_FAILED,
    UPLOAD_PREFIX,
    ManualClock,
    SimConfig,
    Simulator,
    create_app,
    serve_in_thread,
    upload_base_url,
)
from tests.local_inputs_support import image_png
from tests.sim_support import AUTH, CREATE, RECORD, sim_of

STREAM = "/api/file-stream-upload"
BASE64 = "/api/file-base64-upload"
URL = "/api/file-url-upload"
EDIT = "google/nano-banana-edit"  # image_urls: required, 10 images, 10 MB, jpeg/png/webp


def webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(out, "WEBP")
    return out.getvalue()


def padded_png(size: int) -> bytes:
    """`size` bytes that sniff as PNG (the simulator reads only the head)."""
    head = b"\x89PNG\r\n\x1a\n"
    return head + os.urandom(size - len(head))


@dataclass
class Host:
    api: httpx.Client  # the API base URL (createTask, recordInfo, files)
    upload: httpx.Client  # the upload base URL: <api>/upload-host
    sim: Simulator
    clock: ManualClock
    base_url: str

    def stream(self, data: bytes, name: str | None = "a.png", path: str = "in/x") -> httpx.Response:
        fields = {"uploadPath": path, **({"fileName": name} if name is not None else {})}
        return self.upload.post(STREAM, data=fields, files={"file": ("local.bin", data)})

    def stored(self, data: bytes, name: str = "a.png") -> dict[str, Any]:
        reply = self.stream(data, name)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()["data"]
        return body

    def create(self, model: str, values: dict[str, Any]) -> str:
        body = self.api.post(CREATE, json={"model": model, "input": values}).json()
        assert body["code"] == 200, body
        task_id: str = body["data"]["taskId"]
        return task_id

    def finish(self, task_id: str) -> dict[str, Any]:
        self.clock.set(max(self.clock(), self.sim.task(task_id).done_at))
        data: dict[str, Any] = self.api.get(RECORD, params={"taskId": task_id}).json()["data"]
        return data


@contextmanager
def host(tmp_path: Path | None = None, **settings: Any) -> Iterator[Host]:
    clock = ManualClock()
    catalog = settings.pop("catalog", None)
    app = create_app(SimConfig(latency_scale=0.01, **settings), clock=clock, catalog=catalog)
    with (
        serve_in_thread(app) as base_url,
        httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as api,
        httpx.Client(base_url=upload_base_url(base_url), headers=AUTH, timeout=30) as upload,
    ):
        yield Host(api, upload, sim_of(app), clock, base_url)


@pytest.mark.slow
def test_stream_upload_answers_the_documented_shape_and_serves_the_file() -> None:
    data = image_png()
    with host() as h:
        assert str(h.upload.base_url).rstrip("/") == h.base_url + UPLOAD_PREFIX
        reply = h.stream(data, "shoe.png", "images/user-uploads")
        assert reply.status_code == 200
        body = reply.json()
        assert (body["success"], body["code"], body["msg"]) == (
            True,
            200,
            "File uploaded successfully",
        )
        got = body["data"]
        assert set(got) == {
            "fileName",
            "filePath",
            "downloadUrl",
            "fileSize",
            "mimeType",
            "uploadedAt",
        }
        assert got["fileName"] == "shoe.png"
        assert got["filePath"] == "images/user-uploads/shoe.png"
        assert got["downloadUrl"] == f"{h.base_url}/tempfile/images/user-uploads/shoe.png"
        assert (got["fileSize"], got["mimeType"]) == (len(data), "image/png")
        assert got["uploadedAt"] == "2025-06-15T15:06:40.000Z"  # ManualClock's start
        served = h.api.get(got["downloadUrl"])
        assert served.status_code == 200 and served.content == data
        assert served.headers["content-type"] == "image/png"
        (event,) = h.sim.ledger.uploads()
        assert (event.endpoint, event.path, event.size) == ("stream", got["filePath"], len(data))
        assert event.sha256 == hashlib.sha256(data).hexdigest()
        assert event.at == h.clock()
        # The upload host lives under its own prefix only: the API root does not answer.
        assert h.api.post(STREAM, data={"uploadPath": "x"}).status_code == 404


@pytest.mark.slow
def test_without_a_file_name_the_host_picks_one_with_the_sniffed_extension() -> None:
    with host() as h:
        got = h.stream(webp(), None).json()["data"]
        assert got["fileName"].endswith(".webp") and got["mimeType"] == "image/webp"


@pytest.mark.slow
def test_base64_upload_takes_raw_base64_and_data_urls() -> None:
    data = image_png("green")
    raw = base64.b64encode(data).decode()
    with host() as h:
        for name, text in (("raw.png", raw), ("url.png", "data:image/png;base64," + raw)):
            reply = h.upload.post(
                BASE64, json={"base64Data": text, "uploadPath": "b64", "fileName": name}
            )
            assert reply.status_code == 200, reply.text
            assert h.api.get(reply.json()["data"]["downloadUrl"]).content == data
        assert [e.endpoint for e in h.sim.ledger.uploads()] == ["base64", "base64"]
        assert h.sim.ledger.upload_counts_by_sha256() == {hashlib.sha256(data).hexdigest(): 2}


@pytest.mark.slow
@pytest.mark.parametrize(
    "text", ["not base64!!", "data:image/png;base64,@@@@", "data:image/png,abcd", "aGk"]
)
def test_bad_base64_is_refused(text: str) -> None:
    with host() as h:
        reply = h.upload.post(BASE64, json={"base64Data": text, "uploadPath": "b64"})
        assert reply.status_code == 400
        assert reply.json() == {
            "success": False,
            "code": 400,
            "msg": "Base64 decoding failed",
            "data": None,
        }
        assert h.sim.ledger.uploads() == []
        assert [e.outcome for e in h.sim.ledger.upload_attempts()] == ["400"]


@pytest.mark.slow
def test_url_upload_fetches_own_and_loopback_urls_only() -> None:
    data = image_png("purple")
    with host() as h, host() as other:
        first = h.stored(data, "first.png")
        reply = h.upload.post(URL, json={"fileUrl": first["downloadUrl"], "uploadPath": "copy"})
        assert reply.status_code == 200, reply.text
        copy = reply.json()["data"]
        assert copy["filePath"].startswith("copy/") and copy["fileSize"] == len(data)
        # Another loopback server's file, fetched over the socket.
        theirs = other.stored(image_png("teal"), "t.png")["downloadUrl"]
        reply = h.upload.post(
            URL, json={"fileUrl": theirs, "uploadPath": "copy", "fileName": "t.png"}
        )
        assert reply.status_code == 200, reply.text
        assert h.api.get(reply.json()["data"]["downloadUrl"]).content == image_png("teal")
        refused = h.upload.post(URL, json={"fileUrl": "https://example.com/a.png"})
        assert refused.status_code == 400
        assert "loopback URLs only" in refused.json()["msg"]
        gone = h.upload.post(URL, json={"fileUrl": f"{h.base_url}/tempfile/copy/nope.png"})
        assert (gone.status_code, gone.json()["msg"]) == (400, "File download failed: HTTP 403")
        assert [e.endpoint for e in h.sim.ledger.uploads()] == ["stream", "url", "url"]


@pytest.mark.slow
def test_the_other_answer_shape_gives_file_url_and_expiry() -> None:
    with host(upload_answer="file_url", upload_lifetime_seconds=3600) as h:
        got = h.stored(image_png())
        assert "downloadUrl" not in got
        assert {"fileId", "fileUrl", "expiresAt", "fileName", "fileSize", "mimeType"} <= set(got)
        assert got["fileUrl"] == f"{h.base_url}/tempfile/in/x/a.png"
        assert got["uploadedAt"] == "2025-06-15T15:06:40.000Z"
        assert got["expiresAt"] == "2025-06-15T16:06:40.000Z"


@pytest.mark.slow
def test_every_endpoint_wants_the_api_key() -> None:
    with host() as h:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with httpx.Client(
                base_url=upload_base_url(h.base_url), headers=headers, timeout=10
            ) as anon:
                for path, kwargs in (
                    (STREAM, {"data": {"uploadPath": "x"}, "files": {"file": image_png()}}),
                    (BASE64, {"json": {"base64Data": "aGk=", "uploadPath": "x"}}),
                    (URL, {"json": {"fileUrl": "http://127.0.0.1/x.png"}}),
                ):
                    reply = anon.post(path, **kwargs)
                    assert reply.status_code == 401
                    assert (
                        reply.json()["msg"]
                        == AUTH_FAILED
                        == "Authentication failed: Invalid API Key"
                    )
        assert h.sim.ledger.uploads() == []
        assert {e.outcome for e in h.sim.ledger.upload_attempts()} == {"401"}


@pytest.mark.slow
def test_missing_upload_path_and_file_are_named() -> None:
    with host() as h:
        reply = h.upload.post(STREAM, files={"file": ("a.png", image_png())})
        assert (reply.status_code, reply.json()["msg"]) == (
            400,
            "Missing required parameter: uploadPath",
        )
        reply = h.upload.post(BASE64, json={"base64Data": "aGk="})
        assert reply.json()["msg"] == "Missing required parameter: uploadPath"
        reply = h.upload.post(STREAM, data={"uploadPath": "x"}, files={"other": ("a", b"x")})
        assert reply.json()["msg"] == "Missing required parameter: file"
        reply = h.stream(image_png(), "a.png", "../up")
        assert reply.status_code == 400 and "Invalid uploadPath" in reply.json()["msg"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "data", [b"just some text, named .png", b"GIF89a" + bytes(40), b"", b"RIFF\0\0\0\0WAVE"]
)
def test_the_type_is_sniffed_from_the_bytes(data: bytes) -> None:
    with host() as h:
        reply = h.stream(data, "photo.png")
        assert reply.status_code == 400
        assert reply.json()["msg"].startswith("Unsupported file type")
        assert h.sim.ledger.uploads() == []
        assert list(h.sim.uploads.folder.iterdir()) == []  # nothing half-written left


@pytest.mark.slow
def test_uploads_over_the_size_limit_are_refused() -> None:
    with host(upload_max_bytes=1000) as h:
        assert h.stream(padded_png(1000)).status_code == 200
        reply = h.stream(padded_png(1001), "big.png")
        assert (reply.status_code, reply.json()["msg"]) == (
            413,
            "File size exceeds the limit of 1000 bytes",
        )
        text = base64.b64encode(padded_png(1001)).decode()
        reply = h.upload.post(BASE64, json={"base64Data": text, "uploadPath": "x"})
        assert reply.status_code == 413
        assert [e.outcome for e in h.sim.ledger.upload_attempts()] == ["ok", "413", "413"]
        assert len(list(h.sim.uploads.folder.iterdir())) == 1  # only the one that fit
        assert h.api.get(f"{h.base_url}/tempfile/in/x/big.png").status_code == 403


@pytest.mark.slow
def test_reusing_a_file_name_overwrites() -> None:
    old, new = image_png("red"), image_png("blue")
    with host() as h:
        url = h.stored(old, "same.png")["downloadUrl"]
        h.clock.advance(60)
        assert h.stored(new, "same.png")["downloadUrl"] == url
        assert h.api.get(url).content == new
        assert h.sim.ledger.upload_counts_by_sha256() == {
            hashlib.sha256(old).hexdigest(): 1,
            hashlib.sha256(new).hexdigest(): 1,
        }


@pytest.mark.slow
def test_uploads_expire_on_the_simulator_clock_and_an_upload_renews() -> None:
    with host(upload_lifetime_seconds=300) as h:
        url = h.stored(image_png())["downloadUrl"]
        h.clock.advance(299.9)
        assert h.api.get(url).status_code == 200
        h.clock.advance(0.1)
        gone = h.api.get(url)
        assert (gone.status_code, gone.text) == (403, "Forbidden: file expired or not found")
        assert h.api.get(f"{h.base_url}/tempfile/in/x/never.png").status_code == 403
        h.stored(image_png())  # the same name again: a fresh lifetime
        h.clock.advance(299)
        assert h.api.get(url).status_code == 200


@pytest.mark.slow
def test_the_ledger_counts_uploads_by_content_over_http_too() -> None:
    a, b = image_png("red"), image_png("blue")
    with host() as h:
        for data, name in ((a, "a.png"), (a, "a-copy.png"), (b, "b.png"), (a, "a.png")):
            h.stored(data, name)
        counts = {hashlib.sha256(a).hexdigest(): 3, hashlib.sha256(b).hexdigest(): 1}
        assert h.sim.ledger.upload_counts_by_sha256() == counts
        body = h.api.get("/_sim/ledger").json()["data"]
        assert body["uploads_by_sha256"] == counts
        kinds = [e["kind"] for e in body["events"]]
        assert kinds == ["upload"] * 4


@pytest.mark.slow
def test_a_task_whose_upload_expired_or_never_was_fails_with_the_fetch_message() -> None:
    with host(upload_lifetime_seconds=600) as h:
        url = h.stored(image_png())["downloadUrl"]
        live = h.create(EDIT, {"prompt": "make it blue", "image_urls": [url]})
        assert h.finish(live)["state"] == "success"
        h.clock.advance(600)
        balance = h.api.get("/api/v1/chat/credit").json()["data"]
        unknown = f"{h.base_url}/tempfile/in/x/never.png"
        for gone in (url, unknown):
            task_id = h.create(EDIT, {"prompt": "make it blue", "image_urls": [gone]})
            data = h.finish(task_id)
            assert (data["state"], data["failCode"], data["creditsConsumed"]) == ("fail", "400", 0)
            assert data["failMsg"] == (
                f"Failed to fetch input image: {gone} (HTTP 403: file expired or not found)"
            )
            assert data["failMsg"].startswith(FETCH_FAILED)
        assert h.api.get("/api/v1/chat/credit").json()["data"] == balance  # refunded


@pytest.mark.slow
def test_object_list_inputs_are_checked_too_and_kling_takes_no_webp() -> None:
    with host(upload_lifetime_seconds=600) as h:
        jpeg_ok = h.stored(image_png(), "frame.png")["downloadUrl"]
        webp_url = h.stored(webp(), "frame.webp")["downloadUrl"]
        task_id = h.create("kling-3.0/video", {"prompt": "go", "image_urls": [webp_url]})
        data = h.finish(task_id)
        assert data["failMsg"] == (
            f"Unsupported input image type: {webp_url} is image/webp; "
            "image_urls takes image/jpeg, image/png"
        )
        h.clock.advance(600)
        element = {"name": "cat", "element_input_urls": [jpeg_ok, jpeg_ok]}
        task_id = h.create("kling-3.0/video", {"prompt": "@cat runs", "kling_elements": [element]})
        data = h.finish(task_id)
        assert data["state"] == "fail"
        assert data["failMsg"].startswith(f"{FETCH_FAILED}{jpeg_ok} (HTTP 403")


@pytest.mark.slow
def test_an_input_over_the_fields_size_limit_fails_the_task(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        """
models:
  - id: "acme/edit"
    name: "Acme Edit"
    kind: image
    typical_seconds: 3
    price: {credits: 2}
    fields:
      prompt: {type: string, required: true}
      image_urls: {type: url_list, max_items: 2, file_types: ["image/png"], max_file_mb: 0.001}
""",
        encoding="utf-8",
    )
    with host(catalog=load_catalog([path])) as h:
        small, big = h.stored(padded_png(1000), "s.png"), h.stored(padded_png(1001), "b.png")
        ok = h.create("acme/edit", {"prompt": "x", "image_urls": [small["downloadUrl"]]})
        assert h.finish(ok)["state"] == "success"
        over = h.create("acme/edit", {"prompt": "x", "image_urls": [big["downloadUrl"]]})
        data = h.finish(over)
        assert (data["state"], data["failCode"]) == ("fail", "400")
        assert data["failMsg"] == (
            f"Input image too large: {big['downloadUrl']} is 1001 bytes; "
            "image_urls takes at most 0.001 MB per image"
        )
        three = [small["downloadUrl"]] * 3
        refused = h.api.post(
            CREATE, json={"model": "acme/edit", "input": {"prompt": "x", "image_urls": three}}
        ).json()
        assert refused["code"] == 422 and "image_urls" in refused["msg"]


@pytest.mark.slow
def test_foreign_inputs_are_accepted_unless_told_to_fail() -> None:
    foreign = "https://example.com/shoe.png"
    with host() as h:
        task_id = h.create(EDIT, {"prompt": "x", "image_urls": [foreign]})
        assert h.finish(task_id)["state"] == "success"
    with host(foreign_inputs="fail") as h:
        task_id = h.create(EDIT, {"prompt": "x", "image_urls": [foreign]})
        data = h.finish(task_id)
        assert data["failMsg"] == (
            f"Failed to fetch input image: {foreign} (host not reachable from the service)"
        )
        # The service's own result files are not foreign.
        own = json.loads(h.finish(h.create("google/nano-banana", {"prompt": "y"}))["resultJson"])
        task_id = h.create(EDIT, {"prompt": "x", "image_urls": own["resultUrls"]})
        assert h.finish(task_id)["state"] == "success"


@pytest.mark.slow
def test_a_stream_upload_is_never_in_memory_whole() -> None:
    """24 MB through the stream endpoint (client and simulator in this process): the
    Python heap's peak grows by far less than the file."""
    size = 24 * 1024 * 1024
    with host() as h:
        source = io.BytesIO(padded_png(size))
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            reply = h.upload.post(
                STREAM, data={"uploadPath": "big"}, files={"file": ("big.png", source)}
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reply.status_code == 200 and reply.json()["data"]["fileSize"] == size
        assert peak - base < size / 4, f"peak {peak - base} bytes for an {size}-byte upload"
        assert h.sim.ledger.uploads()[0].sha256 == hashlib.sha256(source.getvalue()).hexdigest()


def test_the_multipart_reader_survives_any_chunking() -> None:
    """The boundary may be cut anywhere between chunks: one byte at a time reads the
    same form as the whole body at once."""
    import asyncio

    from liangxin_batch.simulator._multipart import boundary_of, read_form

    data = b"\r\n--not-it\r\n" + padded_png(300)
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"uploadPath": "a/b", "fileName": "n.png"},
        files={"file": ("f.png", data)},
    )
    body = request.read()
    boundary = boundary_of(request.headers["content-type"])
    for size in (1, 7, len(body)):

        async def chunks(size: int = size) -> Any:
            for i in range(0, len(body), size):
                yield body[i : i + size]

        got = bytearray()
        form = asyncio.run(read_form(chunks(), boundary, file_field="file", sink=got.extend))
        assert bytes(got) == data
        assert form.fields == {"uploadPath": "a/b", "fileName": "n.png"}
        assert (form.file_field, form.file_name) == ("file", "f.png")


@pytest.mark.slow
def test_uploads_survive_a_restarted_saved_simulator(tmp_path: Path) -> None:
    """A saved simulator (as `run --simulate` keeps in OUT/.simulator/) keeps uploaded
    bytes and their names and times: the next one serves them, tasks naming them
    succeed, they still expire on time, and saved_ledger lists them."""
    from liangxin_batch.simulator import SAVED_FILE, local_simulator, saved_ledger

    state = tmp_path / SAVED_FILE
    clock = ManualClock()
    data = image_png("orange")

    def config(salt: str) -> SimConfig:
        return SimConfig(
            latency_scale=0.01, state_path=state, upload_lifetime_seconds=900, id_salt=salt
        )

    first = create_app(config("one"), clock=clock)
    with serve_in_thread(first) as url, httpx.Client(headers=AUTH, timeout=10) as c:
        reply = c.post(
            upload_base_url(url) + STREAM,
            data={"uploadPath": "in", "fileName": "o.png"},
            files={"file": ("o.png", data)},
        )
        assert reply.status_code == 200, reply.text
    assert (tmp_path / ".simulator" / "uploads" / hashlib.sha256(data).hexdigest()).is_file()

    clock.advance(600)
    second = create_app(config("two"), clock=clock)
    with (
        serve_in_thread(second) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=10) as c,
    ):
        sim = sim_of(second)
        sim.rebase(url)
        link = f"{url}/tempfile/in/o.png"
        assert c.get(link).content == data
        body = c.post(CREATE, json={"model": EDIT, "input": {"prompt": "x", "image_urls": [link]}})
        task_id = body.json()["data"]["taskId"]
        clock.set(sim.task(task_id).done_at)
        assert c.get(RECORD, params={"taskId": task_id}).json()["data"]["state"] == "success"
        clock.advance(300)  # 900 s after the upload, in the first simulator's time
        assert c.get(link).status_code == 403
        assert [e.path for e in sim.ledger.uploads()] == ["in/o.png"]
    events = saved_ledger(tmp_path)
    assert events.upload_counts_by_sha256() == {hashlib.sha256(data).hexdigest(): 1}
    assert len(events.creates()) == 1

    # What `run --simulate` uses: the folder's uploads, and the upload base URL to give.
    with local_simulator(latency_scale=0, out_dir=tmp_path) as (url, _key):
        assert upload_base_url(url) == url + "/upload-host"
        with httpx.Client(headers=AUTH, timeout=10) as c:
            reply = c.post(
                upload_base_url(url) + BASE64,
                json={"base64Data": base64.b64encode(image_png()).decode(), "uploadPath": "in"},
            )
            assert reply.status_code == 200, reply.text
    assert len(saved_ledger(tmp_path).uploads()) == 2
