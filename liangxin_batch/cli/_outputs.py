"""CLI: `export` and `report`, both from the state file alone (no network)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liangxin_batch.cli._options import max_image_pixels_opt, state_opt
from liangxin_batch.core._states import REPORT_STATUSES
from liangxin_batch.errors import ConfigError, StateError
from liangxin_batch.outputs._formats import EXPORT_FORMATS

if TYPE_CHECKING:  # the state and the writers load when a command runs, not for --help
    from liangxin_batch.state._store import StateStore

__all__ = ["export_command", "report_command"]


def _open(out_dir: Path, state: str | None) -> StateStore:
    """DIR's state, read-only: its state.db, or its batch in the database at `state`."""
    from liangxin_batch.state._backends import missing_state, open_state, state_url
    from liangxin_batch.state._store import STATE_FILE

    url = state_url(state)
    if url is None and not (out_dir / STATE_FILE).is_file():
        raise missing_state(out_dir)
    return open_state(out_dir, url=url, readonly=True)


def _resolve_models(cli: Any, names: tuple[str, ...]) -> list[str]:
    """Aliases become catalog ids; names the catalog does not know are kept as given."""
    out = []
    for name in names:
        spec = cli.catalog.get(name)
        out.append(spec.id if spec is not None else name)
    return out


_DIR = click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))


csv_safe_opt = click.option(
    "--csv-safe",
    is_flag=True,
    help="Prefix cells that a spreadsheet would run as formulas (= + - @) with ' "
    "(for opening the CSV in Excel; the xlsx export is safe as it is).",
)


@click.command("export")
@_DIR
@click.argument("target", required=False, type=click.Path(path_type=Path), metavar="[OUT]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default="csv",
    show_default=True,
    help="A table (csv, jsonl, parquet, xlsx: a row per manifest job), or a dataset folder "
    "of the succeeded jobs' images (hf: imagefolder for `datasets`; webdataset: tar "
    "shards). parquet and hf need liangxin-batch[parquet], xlsx liangxin-batch[xlsx].",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    help="Where to write (as OUT) [default: DIR/export.<format>, DIR/export-<format>/ "
    "for hf and webdataset].",
)
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(REPORT_STATUSES),
    help="Only jobs with this status (repeatable). 'succeeded' means files verified.",
)
@click.option("--model", "models", multiple=True, help="Only jobs of this model (repeatable).")
@csv_safe_opt
@click.option(
    "--embed-images",
    is_flag=True,
    help="parquet: one row per image of the succeeded jobs, the image's bytes in the file "
    "(an `image` column `datasets` reads as an Image).",
)
@click.option(
    "--link",
    is_flag=True,
    help="hf: hard-link the images into OUT instead of copying them (a copy where a link "
    "cannot be made). The originals are never moved or rewritten.",
)
@click.option(
    "--shard-size",
    default="1GB",
    show_default=True,
    help="webdataset: the size a tar shard stays under (e.g. 500MB, 2GB).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="hf, webdataset: replace OUT when an earlier export wrote it (never another folder).",
)
@state_opt
@click.pass_obj
def export_command(
    cli: Any,
    out_dir: Path,
    target: Path | None,
    fmt: str,
    out_path: Path | None,
    status: tuple[str, ...],
    models: tuple[str, ...],
    csv_safe: bool,
    embed_images: bool,
    link: bool,
    shard_size: str,
    overwrite: bool,
    state: str | None,
) -> None:
    """Write the results of DIR as a table (csv, jsonl, parquet, xlsx) or a dataset
    (hf, webdataset, parquet --embed-images) at OUT."""
    from liangxin_batch.outputs._formats import DATASET_FORMATS

    if target is not None and out_path is not None and target != out_path:
        raise ConfigError(f"OUT {target} and --out {out_path}: give one of them")
    target = target or out_path
    dataset = fmt in DATASET_FORMATS or (fmt == "parquet" and embed_images)
    _check_options(
        fmt,
        dataset=dataset,
        embed=embed_images,
        link=link,
        overwrite=overwrite,
        shard_size=shard_size,
        status=status,
        csv_safe=csv_safe,
    )
    from liangxin_batch.outputs._export_target import check_export_target

    folder = fmt in DATASET_FORMATS  # hf, webdataset: a folder; the others: a file
    target = target or out_dir / (f"export-{fmt}" if folder else f"export.{fmt}")
    check_export_target(out_dir, target, folder=folder)
    if dataset:
        _export_dataset(cli, out_dir, state, fmt, target, models, link, overwrite, shard_size)
        return
    from liangxin_batch.outputs._report import export

    store = _open(out_dir, state)
    try:
        count = None
        if fmt == "csv" and not status and not models:  # results.csv's table: its cache
            from liangxin_batch.outputs._segments import write_results_by_segments

            try:
                count = write_results_by_segments(out_dir, store, target=target, csv_safe=csv_safe)
            except OSError:  # DIR cannot be written (its cache lives there): the walk
                count = None
        if count is None:
            count = export(
                out_dir,
                store,
                fmt,
                target,
                status=status or None,
                model=_resolve_models(cli, models) or None,
                csv_safe=csv_safe,
            )
    finally:
        store.close()
    click.echo(f"{count} row(s) written to {target}")


def _check_options(
    fmt: str,
    *,
    dataset: bool,
    embed: bool,
    link: bool,
    overwrite: bool,
    shard_size: str,
    status: tuple[str, ...],
    csv_safe: bool,
) -> None:
    """An option that does nothing for this format is refused, not ignored."""
    wrong = [
        (embed and fmt != "parquet", "--embed-images", "parquet"),
        (link and fmt != "hf", "--link", "hf"),
        (overwrite and fmt not in ("hf", "webdataset"), "--overwrite", "hf and webdataset"),
        (shard_size != "1GB" and fmt != "webdataset", "--shard-size", "webdataset"),
        (csv_safe and fmt != "csv", "--csv-safe", "csv"),
    ]
    for bad, option, formats in wrong:
        if bad:
            raise ConfigError(f"{option}: only for --format {formats}; got --format {fmt}")
    if dataset and status:
        raise ConfigError(
            f"--status: a dataset holds the images of succeeded jobs only; got --status "
            f"{' '.join(status)} with --format {fmt}{' --embed-images' if embed else ''}"
        )


def _export_dataset(
    cli: Any,
    out_dir: Path,
    state: str | None,
    fmt: str,
    target: Path,
    models: tuple[str, ...],
    link: bool,
    overwrite: bool,
    shard_size: str,
) -> None:
    from liangxin_batch.core._settings import parse_size
    from liangxin_batch.outputs._datasets import export_dataset

    size = parse_size(shard_size, flag="--shard-size")
    store = _open(out_dir, state)
    try:
        done = export_dataset(
            out_dir,
            store,
            fmt,
            target,
            model=_resolve_models(cli, models) or None,
            link=link,
            overwrite=overwrite,
            shard_size=size,
        )
    finally:
        store.close()
    how = f", {done.linked:,} hard-linked" if link else ""
    shards = f" in {done.shards:,} shard(s)" if fmt == "webdataset" else ""
    click.echo(
        f"{done.images:,} image(s) of {done.jobs:,} succeeded job(s) written to "
        f"{done.target}{shards}{how}"
    )
    if done.not_images:
        click.echo(f"skipped: {done.not_images:,} file(s) that are not images (videos)", err=True)
    if done.missing_jobs:
        click.echo(
            f"skipped: {done.missing_jobs:,} succeeded job(s) whose file is missing or changed "
            f"on disk (first: {done.missing_example}); `liangxin-batch report {out_dir}` "
            "lists them, and running the batch again downloads them again",
            err=True,
        )


@click.command("report")
@_DIR
@csv_safe_opt
@max_image_pixels_opt
@state_opt
def report_command(out_dir: Path, csv_safe: bool, max_image_pixels: int, state: str | None) -> None:
    """Rebuild DIR/results.csv, DIR/report.html and thumbnails from the state alone."""
    from liangxin_batch.outputs._gallery import write_reports

    _open(out_dir, state).close()  # a folder without a state: said before anything is written
    with _report_store(out_dir, state) as store:
        if not store.readonly:
            _make_previews(store, out_dir, max_image_pixels)
        csv_path, html_path = write_reports(
            out_dir, store, check_files=True, csv_safe=csv_safe, max_pixels=max_image_pixels
        )
    click.echo(f"results: {csv_path}")
    click.echo(f"report:  {html_path}")


@contextlib.contextmanager
def _report_store(out_dir: Path, state: str | None) -> Iterator[StateStore]:
    """The state `report` works on. With no run in the folder, `report` holds the run
    lock for the whole report and writes as a run does (previews recorded, the report's
    data cached and its old files swept: nothing left behind, calls after the first
    reuse its files). Beside a running batch (or in a folder that cannot be written)
    it only reads: its files serve its own page, and the run removes them later."""
    from liangxin_batch.state._backends import open_state, state_url
    from liangxin_batch.state._lock import RunLock

    with contextlib.ExitStack() as stack:
        store = None
        try:
            stack.enter_context(RunLock(out_dir))
            store = open_state(out_dir, url=state_url(state))
        except ConfigError:
            pass  # a run is using the folder: it makes the previews and owns the cache
        except (StateError, OSError) as err:
            click.echo(f"previews not made ({err}); the report shows placeholders", err=True)
        if store is None:
            store = _open(out_dir, state)
        try:
            yield store
        finally:
            store.close()


def _make_previews(store: StateStore, out_dir: Path, max_pixels: int) -> None:
    """The previews a run left unmade (a state from before they were recorded, a run
    stopped early), made and recorded before the report reads them (under the run lock:
    while a run holds the folder it makes its own)."""
    from liangxin_batch.outputs._thumbs import ensure_previews

    try:
        counts = ensure_previews(store, out_dir, max_pixels=max_pixels)
    except (StateError, OSError) as err:
        click.echo(f"previews not made ({err}); the report shows placeholders", err=True)
        return
    if counts.looked_at:
        kept = counts.kept + counts.own + counts.none
        click.echo(f"previews: {counts.made} made, {kept} recorded as found")
