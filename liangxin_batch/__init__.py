"""liangxin-batch: run large prompt sets through the LiangXin Market API.

    from liangxin_batch import run_batch, RunSettings
    summary = run_batch("prompts.csv", out_dir="runs/oct", settings=RunSettings(max_in_flight=50))
    print(summary.counts, summary.credits)

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

from liangxin_batch._version import package_version as _package_version
from liangxin_batch.catalog._catalog import (
    Catalog,
    FieldProblem,
    FieldSpec,
    ModelSpec,
    default_catalog,
    estimate_credits,
    load_catalog,
    validate_input,
)
from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import JobState
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import (
    AmbiguousError,
    APIError,
    AuthError,
    BadRequestError,
    CatalogError,
    ConfigError,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidInputError,
    LiangXinBatchError,
    LiangXinError,
    MaintenanceError,
    ManifestError,
    NotFoundError,
    NotSentError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    StateError,
    TransportError,
    UpstreamTimeoutError,
)
from liangxin_batch.manifest._manifest import Job, Problem, iter_jobs, load_jobs, validate_manifest
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._ratelimit import SlidingWindowLimiter
from liangxin_batch.run._run import CallbackOptions, run_batch, run_batch_async
from liangxin_batch.state._status import read_status

__version__ = _package_version()

__all__ = [
    "APIError",
    "AmbiguousError",
    "AuthError",
    "BadRequestError",
    "CallbackOptions",
    "Catalog",
    "CatalogError",
    "ConfigError",
    "FeatureDisabledError",
    "FieldProblem",
    "FieldSpec",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidInputError",
    "Job",
    "JobState",
    "LiangXinBatchError",
    "LiangXinClient",
    "LiangXinError",
    "MaintenanceError",
    "ManifestError",
    "ModelSpec",
    "NotFoundError",
    "NotSentError",
    "Problem",
    "QuotaExceededError",
    "RateLimitedError",
    "RunSettings",
    "RunSummary",
    "ServerError",
    "SlidingWindowLimiter",
    "StateError",
    "TaskRecord",
    "TaskState",
    "TransportError",
    "UpstreamTimeoutError",
    "__version__",
    "default_catalog",
    "estimate_credits",
    "iter_jobs",
    "load_catalog",
    "load_jobs",
    "read_status",
    "run_batch",
    "run_batch_async",
    "validate_input",
    "validate_manifest",
]

# Show the public path in reprs and tracebacks (liangxin_batch.ConfigError, not ._errors).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover
            pass
