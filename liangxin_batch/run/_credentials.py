"""The API key and base URL: where they come from, and a holder that never shows the key."""

from __future__ import annotations

import os

from liangxin_batch.errors import ConfigError

__all__ = ["ENV_API_KEY", "ENV_BASE_URL", "Secret", "resolve_settings"]

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


def resolve_settings(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    """Key and base URL from arguments, then the environment; ConfigError if missing."""
    url = (base_url or os.environ.get(ENV_BASE_URL) or "").strip()
    if not url:
        raise ConfigError(_NO_BASE_URL.format(env=ENV_BASE_URL))
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the base URL must start with http:// or https://, got {url!r}")
    key = (api_key or os.environ.get(ENV_API_KEY) or "").strip()
    if not key:
        raise ConfigError(_NO_KEY.format(env=ENV_API_KEY))
    return key, url.rstrip("/")


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
