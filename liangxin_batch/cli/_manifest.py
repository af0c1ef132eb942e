"""CLI: `validate` and `plan`. Thin: options in, library calls out, text printed.

Problems leave as `ManifestError` / `ConfigError`; the group prints them and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from liangxin_batch.cli._options import (
    accounts_opt,
    allow_outside_opt,
    base_url_opt,
    log_retries,
    manifest_arg,
    max_in_flight_opt,
    model_opt,
    parse_rate_flag,
    rate_opt,
)

__all__ = ["fetch_balance", "plan_command", "validate_command"]


_max_problems_opt = click.option(
    "--max-problems",
    default=50,
    show_default=True,
    type=click.IntRange(1),
    help="Problems to list (the total is always given).",
)


def _validate(
    cli: Any, manifest: Path, default_model: str | None, max_problems: int, allow_outside: bool
) -> Any:
    from liangxin_batch.manifest._manifest import validate_manifest

    return validate_manifest(
        manifest,
        catalog=cli.catalog,
        default_model=default_model,
        max_problems=max_problems,
        allow_outside=allow_outside,
    )


@click.command("validate")
@manifest_arg
@model_opt
@_max_problems_opt
@allow_outside_opt
@click.pass_obj
def validate_command(
    cli: Any, manifest: Path, default_model: str | None, max_problems: int, allow_outside: bool
) -> None:
    """Check every job in MANIFEST against the catalog; nothing is sent.

    Prints "OK: N jobs (per model ...)", or every problem as file:line [field] and exits 2.
    """
    report = _validate(cli, manifest, default_model, max_problems, allow_outside)
    report.raise_for_problems()
    for line in report.warning_lines():
        click.echo(line, err=True)
    click.echo(report.summary())


async def _read_balance(base_url: str | None, accounts_file: Path | None) -> int:
    from liangxin_batch.run._client import LiangXinClient
    from liangxin_batch.run._credentials import load_accounts

    accounts = load_accounts(accounts_file) if accounts_file is not None else None
    log_retries()
    async with LiangXinClient(api_key=None, accounts=accounts, base_url=base_url) as client:
        await client.check_reachable()
        if accounts is None:
            return await client.get_credits()
        return sum([await client.get_credits(account=a.name) for a in accounts])


def fetch_balance(base_url: str | None, accounts_file: Path | None = None) -> int:
    """The credits of the account (LIANGXIN_API_KEY / LIANGXIN_BASE_URL), or the sum of
    the accounts of an accounts file; tests replace this."""
    import asyncio

    return asyncio.run(_read_balance(base_url, accounts_file))


@click.command("plan")
@manifest_arg
@model_opt
@click.option(
    "--out",
    "out_dir",
    default="out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder the run would use.",
)
@rate_opt
@max_in_flight_opt
@click.option(
    "--max-credits",
    type=click.FloatRange(min=0),
    help="Exit 2 when the estimate exceeds this.",
)
@click.option(
    "--check-balance",
    is_flag=True,
    help="Read the account's credits and say whether they cover the estimate.",
)
@base_url_opt
@_max_problems_opt
@allow_outside_opt
@accounts_opt
@click.pass_obj
def plan_command(
    cli: Any,
    manifest: Path,
    default_model: str | None,
    out_dir: Path,
    rate: str,
    max_in_flight: int,
    max_credits: float | None,
    check_balance: bool,
    base_url: str | None,
    max_problems: int,
    allow_outside: bool,
    accounts_file: Path | None,
) -> None:
    """Show what running MANIFEST would do: jobs and credits per model, the shortest
    duration at --rate and --max-in-flight, and where outputs would land. Nothing is sent
    (--check-balance only reads the balance: of every account of --accounts, summed)."""
    from liangxin_batch.outputs._plan import check_budget, format_plan, make_plan

    limit, window = parse_rate_flag(rate, "--rate")
    report = _validate(cli, manifest, default_model, max_problems, allow_outside)
    plan = make_plan(
        report,
        cli.catalog,
        create_limit=limit,
        create_window=window,
        max_in_flight=max_in_flight,
        out_dir=out_dir,
    )
    for line in report.warning_lines():
        click.echo(line, err=True)
    click.echo(format_plan(plan))
    if check_balance:
        balance = (
            fetch_balance(base_url, accounts_file) if accounts_file else fetch_balance(base_url)
        )
        if balance >= plan.credits:
            click.echo(
                f"\nBalance: {balance:,} credits; covers the estimate of {plan.credits:,.1f} "
                f"({balance - plan.credits:,.1f} left after the run)."
            )
        else:
            click.echo(
                f"\nBalance: {balance:,} credits; does NOT cover the estimate of "
                f"{plan.credits:,.1f} (short by {plan.credits - balance:,.1f}). The run would "
                "stop with code 3 when the credits run out; top up first."
            )
    check_budget(plan, max_credits)
