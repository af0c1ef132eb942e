"""`models`, `models show NAME`, `models list [--markdown]`: what the catalog holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from liangxin_batch.cli._context import CliContext, pass_cli
from liangxin_batch.errors import ConfigError

if TYPE_CHECKING:  # the catalog's code loads when a command uses it
    from liangxin_batch.catalog._catalog import Catalog, FieldSpec, ModelSpec

__all__ = ["field_limits", "format_model", "format_models", "models_group"]


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned plain-text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _credits_text(catalog: Catalog, spec: ModelSpec) -> str:
    from liangxin_batch.catalog._catalog import estimate_credits

    credits = estimate_credits(spec, {})
    text = f"{credits:g}"
    if catalog.credit_usd:
        text += f" (${credits * catalog.credit_usd:.4g})"
    return text


def format_models(catalog: Catalog, *, wide: bool = False, width: int = 80) -> str:
    """The catalog as a table: id, kind, credits at default input and the name, cut to
    fit `width` columns; `wide`: whole names and the aliases, however wide."""
    head = ["MODEL", "KIND", "EST. CREDITS", "NAME"] + (["ALIASES"] if wide else [])
    rows = [head]
    for spec in catalog:
        row = [
            spec.id + (" [!]" if spec.doubt else ""),
            spec.kind,
            _credits_text(catalog, spec),
            spec.name,
        ]
        rows.append([*row, ", ".join(spec.aliases)] if wide else row)
    if not wide:  # the name takes what the other columns leave
        room = width - sum(max(len(r[i]) for r in rows) + 2 for i in range(3))
        for row in rows[1:]:
            if len(row[3]) > room:
                row[3] = row[3][: max(room - 1, 0)] + "…"
    foot = (
        "\n\nCredits are per task with default input"
        + (f"; 1 credit = ${catalog.credit_usd:g}" if catalog.credit_usd else "")
        + ". [!] = uncertain mapping.\nDetails: liangxin-batch models show NAME"
        + ("" if wide else "; aliases and whole names: liangxin-batch models --wide")
    )
    return _table(rows) + foot


def field_limits(f: FieldSpec) -> str:
    """Enum and limits of one field in a few words."""
    parts: list[str] = []
    if f.enum is not None:
        parts.append(
            "one of " + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in f.enum)
        )
    for low, high, unit in (
        (f.min_length, f.max_length, " chars"),
        (f.minimum, f.maximum, ""),
        (f.min_items, f.max_items, " items"),
    ):
        if low is not None and high is not None:
            parts.append(f"{low:g}–{high:g}{unit}")
        elif low is not None:
            parts.append(f">= {low:g}{unit}")
        elif high is not None:
            parts.append(f"<= {high:g}{unit}")
    if f.item_max_length is not None:
        parts.append(f"each <= {f.item_max_length} chars")
    if f.type == "url_list":
        parts.append("http(s) URLs" + (" or local files" if f.file_types else ""))
    if f.file_types:
        kinds = "/".join(t.removeprefix("image/") for t in f.file_types)
        size = f", <= {f.max_file_mb:g} MB each" if f.max_file_mb is not None else ""
        parts.append(f"files: {kinds}{size}")
    elif f.max_file_mb is not None:
        parts.append(f"files <= {f.max_file_mb:g} MB each")
    return "; ".join(parts)


def _show(value: object) -> str:
    """A value as the user would write it: true/false, quoted strings."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _field_lines(f: FieldSpec, indent: str, bullet: str = "") -> list[str]:
    if f.required:
        req = "required"
    elif f.required_if:
        req = f"required when {f.required_if} is true"
    elif f.required_unless:
        req = f"required unless {f.required_unless} is true"
    else:
        req = "optional"
    head = f"{indent}{bullet}{f.name}: {f.type}, {req}"
    if f.default is not None:
        head += f", default {_show(f.default)}"
    if f.default_if is not None:
        d = f.default_if
        head += f" ({_show(d.default)} when {d.field} is {_show(d.value)})"
    indent += " " * len(bullet)
    lines = [head]
    limits = field_limits(f)
    if limits:
        lines.append(f"{indent}    {limits}")
    if f.description:
        lines.append(f"{indent}    {f.description}")
    if f.doubt:
        lines.append(f"{indent}    [!] {f.doubt}")
    for sub in (f.item_fields or {}).values():
        lines += _field_lines(sub, indent + "    ", "- ")
    return lines


def format_model(catalog: Catalog, spec: ModelSpec) -> str:
    """Everything the catalog knows about one model."""
    lines = [
        f"{spec.id}  ({spec.name})",
        f"  kind: {spec.kind}; outputs per task: {spec.outputs_per_task}; "
        f"typical time: {spec.typical_seconds:g} s",
    ]
    if spec.aliases:
        lines.append(f"  aliases: {', '.join(spec.aliases)}")
    from liangxin_batch.catalog._catalog import describe_price

    lines.append(f"  price: {describe_price(spec.price)}")
    lines.append(f"  credits with default input: {_credits_text(catalog, spec)}")
    lines.append(f"  source: {spec.source}")
    if spec.doubt:
        lines.append(f"  [!] {spec.doubt}")
    lines.append("  fields:")
    for f in spec.fields.values():
        lines += _field_lines(f, "    ")
    return "\n".join(lines)


def _lookup(catalog: Catalog, name: str) -> ModelSpec:
    spec = catalog.get(name)
    if spec is None:
        close = catalog.suggest(name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (list them with: liangxin-batch models)")
    return spec


_wide_opt = click.option(
    "--wide", is_flag=True, help="Whole names and the aliases, however wide the table."
)


@click.group("models", invoke_without_command=True)
@_wide_opt
@pass_cli
@click.pass_context
def models_group(ctx: click.Context, cli: CliContext, wide: bool) -> None:
    """List the models in the catalog (with any --catalog files applied)."""
    if ctx.invoked_subcommand is None:
        click.echo(format_models(cli.catalog, wide=wide))


@models_group.command("list")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in the README).")
@_wide_opt
@pass_cli
def list_models(cli: CliContext, markdown: bool, wide: bool) -> None:
    """List the models; --markdown for the README table."""
    catalog: Catalog = cli.catalog
    if markdown:
        from liangxin_batch.catalog._catalog import render_model_table

        click.echo(render_model_table(catalog), nl=False)
    else:
        click.echo(format_models(catalog, wide=wide))


@models_group.command("show")
@click.argument("name")
@click.option(
    "--yaml",
    "as_yaml",
    is_flag=True,
    help="The entry as a catalog file writes it: copy it into --catalog my.yaml and edit.",
)
@pass_cli
def show(cli: CliContext, name: str, as_yaml: bool) -> None:
    """Every field of model NAME (id or alias): type, default, limits, doubts, price."""
    catalog: Catalog = cli.catalog
    spec = _lookup(catalog, name)
    if as_yaml:
        import yaml

        from liangxin_batch.catalog._schema import model_document

        # PyYAML quotes what YAML 1.1 would misread ("16:9", "5"), so the text loads back.
        text = yaml.safe_dump([model_document(spec)], sort_keys=False, allow_unicode=True)
        click.echo(text, nl=False)
        return
    click.echo(format_model(catalog, spec))
