"""A run's manifest read once and validated whole: its jobs spooled to a temporary file
(bounded memory for a million rows), from a file or from records (a list of dicts, a
pandas DataFrame)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.core._records import Job
from liangxin_batch.errors import ConfigError, ManifestError
from liangxin_batch.manifest._spool import JobSpool

__all__ = [
    "ManifestSource",
    "load_manifest_jobs",
]


ManifestSource = Path | str | Iterable[Mapping[str, Any]] | Any  # Any: a pandas DataFrame


def load_manifest_jobs(
    source: ManifestSource,
    *,
    catalog: Catalog,
    default_model: str | None = None,
    allow_outside: bool = False,
) -> JobSpool:
    """Validate the whole manifest, reading it once; its jobs, to walk as often as needed.

    The jobs are spooled to a temporary file as they are validated (bounded memory for a
    million rows). Close the spool when done.
    """
    import liangxin_batch.manifest._manifest as _manifest

    spool = _new_spool()
    keep = _keep_in(spool)
    try:
        if isinstance(source, str | Path):
            report = _manifest.validate_manifest(
                Path(source),
                catalog=catalog,
                default_model=default_model,
                allow_outside=allow_outside,
                keep=keep,
            )
            if report.problems:
                raise ManifestError(report.problems, total=report.total_problems)
            spool.local_stats = dict(report.local_stats)
        else:
            records = _records(source)
            for job in _manifest.jobs_from_records(
                records, catalog=catalog, default_model=default_model
            ):
                keep(job)
    except BaseException:
        spool.close()
        raise
    return spool


_SPOOL_ADVICE = "set TMPDIR to a folder with space"


def _new_spool() -> JobSpool:
    try:
        return JobSpool()
    except OSError as err:
        raise ConfigError(
            f"cannot make a temporary file for the manifest's jobs ({err.strerror or err}); "
            + _SPOOL_ADVICE
        ) from None


def _keep_in(spool: JobSpool) -> Callable[[Job], None]:
    def keep(job: Job) -> None:
        try:
            spool.add(job)
        except OSError as err:  # the temporary folder is full or unwritable
            raise ConfigError(
                f"cannot keep the manifest's jobs in a temporary file "
                f"({err.strerror or err}); " + _SPOOL_ADVICE
            ) from None

    return keep


def _records(source: Any) -> list[Mapping[str, Any]]:
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a DataFrame
        return [
            {str(k): v for k, v in row.items() if v is not None and v == v}  # drop NaN
            for row in source.to_dict(orient="records")
        ]
    return [dict(r) for r in source]
