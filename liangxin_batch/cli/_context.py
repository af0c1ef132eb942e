"""What every command may need, built lazily from the global options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import click

__all__ = ["CliContext", "pass_cli"]


@dataclass
class CliContext:
    """What every command may need, built lazily from the global options."""

    catalog_paths: Sequence[Path] = field(default_factory=tuple)

    @cached_property
    def catalog(self) -> Any:
        from liangxin_batch.catalog._catalog import load_catalog

        return load_catalog(tuple(self.catalog_paths))


pass_cli = click.make_pass_decorator(CliContext, ensure=True)
