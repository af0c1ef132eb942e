"""The virtual-time loop the tests run on: the public one users get too
(`liangxin_batch.testing`), so our tests exercise what we ship."""

from __future__ import annotations

from liangxin_batch.testing import VirtualTimeLoop
from liangxin_batch.testing import run_in_virtual_time as run_virtual

__all__ = ["VirtualTimeLoop", "run_virtual"]
