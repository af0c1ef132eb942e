"""An accounts file (`run --accounts FILE`): which keys a batch spreads its tasks over.

```yaml
accounts:
  - name: studio-a
    key_env: LIANGXIN_KEY_STUDIO_A
    rate: 20/10s        # createTask, the syntax of --rate
    poll_rate: 10/s     # recordInfo, the syntax of --poll-rate
```

Pure: the file is read into `Located` values by the YAML layer (catalog/_yaml12) and the
environment is passed in, so this module only decides. Strict, because a typo that fell
back to a default would spend money on the wrong account or at the wrong pace: unknown
fields, a duplicate name, a key variable that is unset or empty, a bad rate, an empty
list are all errors naming the file's line and the field. The key itself never goes in
the file; a `key` field is refused without repeating what it holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liangxin_batch.core._rates import parse_rate
from liangxin_batch.errors import ConfigError

__all__ = [
    "DEFAULT_ACCOUNT",
    "AccountSpec",
    "Located",
    "parse_accounts",
]

#: The one implicit account of a run without --accounts (its key: LIANGXIN_API_KEY).
DEFAULT_ACCOUNT = "default"

_FIELDS = ("name", "key_env", "rate", "poll_rate")
#: Fields that would hold the key itself: refused, never echoed.
_KEY_FIELDS = frozenset({"key", "api_key", "apikey", "secret", "token"})
#: A name shows in messages, the summary and the state: plain characters only.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Located:
    """A value read from a file and the line (1-based) it starts on. Mappings hold
    `Located` values under plain keys; sequences hold `Located` items."""

    value: Any
    line: int


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """One account as the file says it (the key is looked up by `key_env` elsewhere).
    `rate`/`poll_rate`: (limit, window seconds), None for the run's own setting."""

    name: str
    key_env: str
    rate: tuple[int, float] | None = None
    poll_rate: tuple[int, float] | None = None
    line: int = 0


def parse_accounts(
    doc: Located | None, *, source: str, environ: Mapping[str, str]
) -> list[AccountSpec]:
    """The accounts of a parsed accounts file, in file order; ConfigError naming
    `source:line` and the field for anything wrong."""

    def fail(line: int, what: str) -> ConfigError:
        return ConfigError(f"{source}:{line}: {what}")

    if doc is None or not isinstance(doc.value, dict):
        raise fail(doc.line if doc else 1, "expected a mapping with an `accounts:` list")
    unknown = [k for k in doc.value if k != "accounts"]
    if unknown:
        first = doc.value[unknown[0]]
        raise fail(first.line, f"unknown field {unknown[0]!r}: only `accounts:` is read")
    items = doc.value.get("accounts")
    if items is None:
        raise fail(doc.line, "no `accounts:` list")
    if not isinstance(items.value, list) or not items.value:
        raise fail(items.line, "accounts: expected a non-empty list of accounts")
    specs: list[AccountSpec] = []
    lines: dict[str, int] = {}
    for item in items.value:
        spec = _account(item, fail, environ)
        if spec.name in lines:
            raise fail(
                spec.line,
                f"name: account {spec.name!r} is named twice (first on line {lines[spec.name]})",
            )
        lines[spec.name] = spec.line
        specs.append(spec)
    return specs


def _account(item: Located, fail: Any, environ: Mapping[str, str]) -> AccountSpec:
    if not isinstance(item.value, dict):
        raise fail(item.line, "expected an account: a mapping with name and key_env")
    fields: dict[str, Located] = item.value
    for field, value in fields.items():
        if str(field).lower() in _KEY_FIELDS:
            raise fail(
                value.line,
                f"{field}: the key never goes in the file; put it in an environment "
                "variable and name that variable with key_env",
            )
        if field not in _FIELDS:
            raise fail(value.line, f"unknown field {field!r} (known: {', '.join(_FIELDS)})")
    name = _text(fields, "name", item, fail)
    if not _NAME.match(name):
        raise fail(
            fields["name"].line,
            f"name: {name!r} is not a plain name (letters, digits, '.', '_', '-')",
        )
    key_env = _text(fields, "key_env", item, fail)
    line = fields["key_env"].line
    if not _ENV_NAME.match(key_env):
        raise fail(line, f"key_env: {key_env!r} is not an environment variable name")
    if not (environ.get(key_env) or "").strip():
        raise fail(
            line,
            f"key_env: {key_env} is not set (or empty) for account {name!r}: set "
            f"{key_env}=<its key> (nothing was sent)",
        )
    return AccountSpec(
        name=name,
        key_env=key_env,
        rate=_rate(fields, "rate", fail),
        poll_rate=_rate(fields, "poll_rate", fail),
        line=item.line,
    )


def _text(fields: Mapping[str, Located], field: str, item: Located, fail: Any) -> str:
    value = fields.get(field)
    if value is None:
        raise fail(item.line, f"{field}: missing (every account needs name and key_env)")
    if not isinstance(value.value, str) or not value.value.strip():
        raise fail(value.line, f"{field}: expected text, got {value.value!r}")
    return value.value.strip()


def _rate(fields: Mapping[str, Located], field: str, fail: Any) -> tuple[int, float] | None:
    value = fields.get(field)
    if value is None:
        return None
    try:
        return parse_rate(value.value if isinstance(value.value, str) else repr(value.value))
    except ConfigError as err:
        raise fail(value.line, f"{field}: {err}") from None
