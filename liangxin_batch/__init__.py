"""liangxin-batch: run large prompt sets through the LiangXin Market API.

    from liangxin_batch import run_batch, RunSettings
    summary = run_batch("prompts.csv", out_dir="runs/oct", settings=RunSettings(max_in_flight=50))
    print(summary.counts, summary.credits)

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use
    from liangxin_batch._api import run_batch
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
    from liangxin_batch.core._envelope import (
        TaskRecord,
        TaskState,
    )
    from liangxin_batch.core._settings import (
        RunSettings,
    )
    from liangxin_batch.core._states import (
        JobState,
    )
    from liangxin_batch.core._summary import (
        RunSummary,
    )
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
    from liangxin_batch.manifest._manifest import (
        Job,
        Problem,
        iter_jobs,
        load_jobs,
        validate_manifest,
    )
    from liangxin_batch.outputs._frame import (
        results,
    )
    from liangxin_batch.run._callback_setup import (
        CallbackOptions,
    )
    from liangxin_batch.run._client import (
        LiangXinClient,
    )
    from liangxin_batch.run._ratelimit import (
        SlidingWindowLimiter,
    )
    from liangxin_batch.run._run import (
        run_batch_async,
    )
    from liangxin_batch.state._status import (
        read_status,
    )

#: Where each public name lives. Nothing is imported until a name is used: `--help`
#: and `status` must not pay for httpx, pydantic or pandas.
_LOCATIONS: dict[str, str] = {
    "APIError": "liangxin_batch.errors",
    "AmbiguousError": "liangxin_batch.errors",
    "AuthError": "liangxin_batch.errors",
    "BadRequestError": "liangxin_batch.errors",
    "CallbackOptions": "liangxin_batch.run._callback_setup",
    "Catalog": "liangxin_batch.catalog._catalog",
    "CatalogError": "liangxin_batch.errors",
    "ConfigError": "liangxin_batch.errors",
    "FeatureDisabledError": "liangxin_batch.errors",
    "FieldProblem": "liangxin_batch.catalog._catalog",
    "FieldSpec": "liangxin_batch.catalog._catalog",
    "GenerationFailedError": "liangxin_batch.errors",
    "InsufficientCreditsError": "liangxin_batch.errors",
    "InvalidInputError": "liangxin_batch.errors",
    "Job": "liangxin_batch.manifest._manifest",
    "JobState": "liangxin_batch.core._states",
    "LiangXinBatchError": "liangxin_batch.errors",
    "LiangXinClient": "liangxin_batch.run._client",
    "LiangXinError": "liangxin_batch.errors",
    "MaintenanceError": "liangxin_batch.errors",
    "ManifestError": "liangxin_batch.errors",
    "ModelSpec": "liangxin_batch.catalog._catalog",
    "NotFoundError": "liangxin_batch.errors",
    "NotSentError": "liangxin_batch.errors",
    "Problem": "liangxin_batch.manifest._manifest",
    "QuotaExceededError": "liangxin_batch.errors",
    "RateLimitedError": "liangxin_batch.errors",
    "RunSettings": "liangxin_batch.core._settings",
    "RunSummary": "liangxin_batch.core._summary",
    "ServerError": "liangxin_batch.errors",
    "SlidingWindowLimiter": "liangxin_batch.run._ratelimit",
    "StateError": "liangxin_batch.errors",
    "TaskRecord": "liangxin_batch.core._envelope",
    "TaskState": "liangxin_batch.core._envelope",
    "TransportError": "liangxin_batch.errors",
    "UpstreamTimeoutError": "liangxin_batch.errors",
    "default_catalog": "liangxin_batch.catalog._catalog",
    "estimate_credits": "liangxin_batch.catalog._catalog",
    "iter_jobs": "liangxin_batch.manifest._manifest",
    "load_catalog": "liangxin_batch.catalog._catalog",
    "load_jobs": "liangxin_batch.manifest._manifest",
    "read_status": "liangxin_batch.state._status",
    "results": "liangxin_batch.outputs._frame",
    "run_batch": "liangxin_batch._api",
    "run_batch_async": "liangxin_batch.run._run",
    "validate_input": "liangxin_batch.catalog._catalog",
    "validate_manifest": "liangxin_batch.manifest._manifest",
}

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
    "results",
    "run_batch",
    "run_batch_async",
    "validate_input",
    "validate_manifest",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from liangxin_batch._version import package_version

        return package_version()
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    obj = getattr(importlib.import_module(module), name)
    # Show the public path in reprs and tracebacks (liangxin_batch.ConfigError, not
    # liangxin_batch.errors).
    if isinstance(obj, type) or callable(obj):
        try:
            obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover
            pass
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted(__all__)


def _name_errors() -> None:
    """The exceptions are light and show in every traceback: name them at import."""
    for name, module in _LOCATIONS.items():
        if module == "liangxin_batch.errors":
            __getattr__(name)


_name_errors()
