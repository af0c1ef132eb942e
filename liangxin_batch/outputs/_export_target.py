"""Where `export` may write: checked before anything is read or written, for every
format, so a wrong OUT is a located message (exit 2) and never a traceback half way or,
worse, a table written over the batch's own state (`--out DIR/state.db`).

A file export (a table, `parquet --embed-images`) needs a file path; nothing of what the
tool keeps in DIR (`OWNED`) may be OUT or hold it, whatever the format: an export goes
beside them (the default is DIR/export.<format>) or anywhere outside DIR. The folder
exports' own rules (an empty folder, or an earlier export's with --overwrite) are
`_datasets`'.
"""

from __future__ import annotations

from pathlib import Path

from liangxin_batch.errors import ConfigError

__all__ = ["OWNED", "check_export_target", "where_written"]

#: The names the tool keeps at the top of DIR: the state (and SQLite's journal files
#: beside it), its lock, the batch's id, results.csv and its cache (.results), the report
#: (report.html, report/), the run's log, the outputs and what is made from them (thumbs,
#: with-metadata), and the downloader's folders (.partial, superseded). Spelled here
#: rather than imported (some live in `run`, a layer above); tests/test_export_targets.py
#: checks each owner's constant is among them.
OWNED = (
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "state.db-journal",
    "state.lock",
    "batch.id",
    "results.csv",
    ".results",
    "report.html",
    "report",
    "run.log",
    "outputs",
    "thumbs",
    "with-metadata",
    ".partial",
    "superseded",
)

_OWNED_FOLDED = frozenset(name.casefold() for name in OWNED)


def where_written(target: Path) -> Path:
    """The path a write to `target` replaces: its folder resolved (links, '..'), its own
    name kept (a rename replaces a link, not what it points to)."""
    if target.name in ("", ".", ".."):
        return target.resolve()
    return target.parent.resolve() / target.name


def check_export_target(out_dir: Path, target: Path, *, folder: bool) -> None:
    """Refuse (ConfigError, exit 2) an OUT among what the tool keeps in DIR, a folder
    where a file is written (`folder=False`), or a path below a file."""
    where = f"OUT {target}"
    here, batch = where_written(target), out_dir.resolve()
    if here.is_relative_to(batch) and here != batch:
        top = here.relative_to(batch).parts[0]
        if top.casefold() in _OWNED_FOLDED:  # State.db is state.db on a case-blind disk
            raise ConfigError(
                f"{where}: is {'' if here == batch / top else 'inside '}DIR/{top}, and the "
                "tool keeps it in DIR; give a path beside those (the default is "
                "DIR/export.<format>) or outside DIR"
            )
    for parent in here.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{where}: {parent} is a file, not a folder; give another path")
            break
    if not folder and here.is_dir():
        raise ConfigError(f"{where}: is a folder; give a file path (a new name)")
