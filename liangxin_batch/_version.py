"""The installed package's version, read when first asked (importlib.metadata costs
tens of milliseconds at import: `--help` must not pay it)."""

from __future__ import annotations

import functools

__all__ = ["package_version"]


@functools.cache
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liangxin-batch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
