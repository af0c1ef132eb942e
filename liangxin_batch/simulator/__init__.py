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
"""

from __future__ import annotations

from ._app import SimulatorApp, create_app
from ._callbacks import sign_callback, webhook_signature
from ._clock import Clock, ManualClock
from ._config import ERROR_STYLES, QUIRKS, FaultProfile, SimConfig, load_fault_profile
from ._core import Simulator
from ._ledger import Ledger, LedgerEvent, canonical_job_key
from ._media import VIDEO_BACKEND
from ._reply import Reply
from ._saved import SAVED_FILE, saved_ledger
from ._server import local_simulator, run_simulator, serve_in_thread
from ._tasks import SimTask

__all__ = [
    "ERROR_STYLES",
    "QUIRKS",
    "SAVED_FILE",
    "VIDEO_BACKEND",
    "Clock",
    "FaultProfile",
    "Ledger",
    "LedgerEvent",
    "ManualClock",
    "Reply",
    "SimConfig",
    "SimTask",
    "Simulator",
    "SimulatorApp",
    "canonical_job_key",
    "create_app",
    "load_fault_profile",
    "local_simulator",
    "run_simulator",
    "saved_ledger",
    "serve_in_thread",
    "sign_callback",
    "webhook_signature",
]
