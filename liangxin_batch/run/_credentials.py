"""The API keys and base URL: where they come from, and a holder that never shows a key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from liangxin_batch.core._accounts import DEFAULT_ACCOUNT, AccountSpec, parse_accounts
from liangxin_batch.errors import ConfigError

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "AccountKey",
    "Secret",
    "default_account",
    "load_accounts",
    "resolve_base_url",
    "resolve_settings",
]

ENV_API_KEY = "LIANGXIN_API_KEY"
ENV_BASE_URL = "LIANGXIN_BASE_URL"

_NO_BASE_URL = (
    "no LiangXin base URL is configured. Set {env}=https://<your LiangXin API host> "
    "(from the LiangXin console) or pass --base-url. To try the tool without an account, "
    "use --simulate."
)
_NO_KEY = (
    "no API key. Set {env}=<your key> (create one in the LiangXin console). "
    "The key is never printed or stored."
)


def resolve_base_url(base_url: str | None) -> str:
    """The base URL from the argument, then the environment; ConfigError if missing."""
    url = (base_url or os.environ.get(ENV_BASE_URL) or "").strip()
    if not url:
        raise ConfigError(_NO_BASE_URL.format(env=ENV_BASE_URL))
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the base URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def resolve_settings(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    """Key and base URL from arguments, then the environment; ConfigError if missing."""
    url = resolve_base_url(base_url)
    key = (api_key or os.environ.get(ENV_API_KEY) or "").strip()
    if not key:
        raise ConfigError(_NO_KEY.format(env=ENV_API_KEY))
    return key, url


class Secret:
    """Holds the API key; every repr/str shows *** so dumps of locals cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value


@dataclass(frozen=True, slots=True)
class AccountKey:
    """An account and its key (held in a `Secret`, looked up from the environment)."""

    spec: AccountSpec
    key: Secret

    @property
    def name(self) -> str:
        return self.spec.name


def default_account(key: str) -> AccountKey:
    """The one implicit account of a run without --accounts."""
    return AccountKey(AccountSpec(DEFAULT_ACCOUNT, ENV_API_KEY), Secret(key))


def load_accounts(path: Path, *, environ: Mapping[str, str] | None = None) -> list[AccountKey]:
    """The accounts of an accounts file, each with its key from the environment;
    ConfigError (exit 2) naming the file's line and field for anything wrong."""
    import yaml

    from liangxin_batch.catalog._yaml12 import load_located

    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{path}: cannot read the accounts file ({why})") from None
    try:
        doc = load_located(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}:{line}: {what}") from None
    specs = parse_accounts(doc, source=str(path), environ=env)
    return [AccountKey(spec, Secret(env[spec.key_env].strip())) for spec in specs]
