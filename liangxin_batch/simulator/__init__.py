"""A local LiangXin Market simulator: a real HTTP server for demos, tests and benchmarks.

It speaks the documented API (createTask, recordInfo, credit, download-url, result
files, callbacks with optional HMAC), enforces the documented rate limits exactly, bills
credits, injects faults on demand (`FaultProfile`) and records everything it saw in a
`Ledger`. Time comes from an injected clock, so tests drive it with `ManualClock`.
With `SimConfig.state_path` it keeps its tasks in a file, and a later simulator on the
same file carries on with them (`run --simulate` resumes so).

    app = create_app(SimConfig(latency_scale=0.01))
    with serve_in_thread(app) as base_url:
        ...  # point LIANGXIN_BASE_URL at base_url
    app.state.sim.ledger.creates()

The upload host (issue 16) is served by the same server under a path of its own,
`SimConfig.upload_prefix` (default "/upload-host"), so a client configured with a
separate upload base URL exercises that setting: `upload_base_url(base_url)` (or
`sim.upload_base_url(base_url)`) gives it. Its endpoints, answers and errors are in
`_upload_app.py`; uploaded files are served at `<base_url>/tempfile/<uploadPath>/<fileName>`
until `SimConfig.upload_lifetime_seconds` (default 24 h, simulator clock) after their
upload, then answer 403. `SimConfig.upload_max_bytes` caps one upload (413),
`upload_answer` picks the answer's documented shape ("download_url": data.downloadUrl;
"file_url": data.fileUrl and data.expiresAt). `sim.ledger.uploads()` lists stored
uploads (endpoint, path "uploadPath/fileName", sha256, size, at) and
`sim.ledger.upload_counts_by_sha256()` counts them by content; GET /_sim/ledger has them
too (`uploads_by_sha256`). A saved simulator keeps the bytes in `uploads/` beside its
journal, so a resumed `run --simulate` still serves them (and `saved_ledger` lists them).

Input checks at createTask. A service fetches a task's input images as generation
starts; the simulator decides at create (on its clock), for every URL in the model's
url_list fields (object_list items too). A link to this server's /tempfile/ that is
unknown or expired, or whose file the field does not take, makes the task FAIL soon
after (state "fail", failCode "400", creditsConsumed 0) with failMsg:

    Failed to fetch input image: <url> (HTTP 403: file expired or not found)
    Failed to fetch input image: <url> (host not reachable from the service)
        (a URL on another host, with SimConfig.foreign_inputs="fail"; the default
        "accept" takes any other host's URL)
    Unsupported input image type: <url> is <media type>; <field> takes <types>
    Input image too large: <url> is <n> bytes; <field> takes at most <mb> MB per image

The two fetch failures start with `FETCH_FAILED` ("Failed to fetch input image: "): the
ones a fresh upload may cure. Too many images is refused at create (422), as any input
over the catalog's max_items is.
"""

from __future__ import annotations

from ._app import SimulatorApp, create_app
from ._callbacks import sign_callback, webhook_signature
from ._clock import Clock, ManualClock
from ._config import (
    ERROR_STYLES,
    FOREIGN_INPUTS,
    QUIRKS,
    UPLOAD_ANSWERS,
    UPLOAD_PREFIX,
    FaultProfile,
    SimConfig,
    SimKey,
    load_fault_profile,
    upload_base_url,
)
from ._core import Simulator
from ._ledger import Ledger, LedgerEvent, canonical_job_key
from ._media import VIDEO_BACKEND
from ._reply import Reply
from ._saved import SAVED_FILE, saved_ledger
from ._server import local_simulator, run_simulator, serve_in_thread
from ._tasks import SimTask
from ._upload_app import AUTH_FAILED
from ._uploads import FETCH_FAILED, UploadRecord, accepted_media_type

__all__ = [
    "AUTH_FAILED",
    "ERROR_STYLES",
    "FETCH_FAILED",
    "FOREIGN_INPUTS",
    "QUIRKS",
    "SAVED_FILE",
    "UPLOAD_ANSWERS",
    "UPLOAD_PREFIX",
    "VIDEO_BACKEND",
    "Clock",
    "FaultProfile",
    "Ledger",
    "LedgerEvent",
    "ManualClock",
    "Reply",
    "SimConfig",
    "SimKey",
    "SimTask",
    "Simulator",
    "SimulatorApp",
    "UploadRecord",
    "accepted_media_type",
    "canonical_job_key",
    "create_app",
    "load_fault_profile",
    "local_simulator",
    "run_simulator",
    "saved_ledger",
    "serve_in_thread",
    "sign_callback",
    "upload_base_url",
    "webhook_signature",
]
