"""liangxin-batch: run large prompt sets through the LiangXin Market API."""

from __future__ import annotations

from importlib.metadata import version as _version

from ._errors import *  # noqa: F403
from ._errors import __all__ as _errors_all

__version__ = _version("liangxin-batch")
__all__ = sorted([*_errors_all, "__version__"])

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and _name != "__version__":
        try:
            _obj.__module__ = "liangxin_batch"
        except (AttributeError, TypeError):
            pass
