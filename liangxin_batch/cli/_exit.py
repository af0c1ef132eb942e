"""Exit codes: what the CLI exits with for each kind of error (the errors carry none).

0 every job succeeded; 1 some jobs did not; 2 bad manifest, catalog, usage or state file
(nothing was sent); 3 stopped for a reason the user must fix; 130 interrupted.
"""

from __future__ import annotations

from liangxin_batch.core._summary import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED
from liangxin_batch.errors import (
    APIError,
    DiskFullError,
    LiangXinBatchError,
    LiangXinError,
    WorkerLostError,
)

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "exit_code_for",
]

EXIT_USAGE = 2


def exit_code_for(err: LiangXinBatchError) -> int:
    """The documented exit code of an error that ends a command."""
    if isinstance(err, DiskFullError | WorkerLostError):  # sent, then stopped: act, rerun
        return EXIT_STOPPED
    if isinstance(err, APIError) and err.fatal:  # 401, 402, 433, 505: the user must act
        return EXIT_STOPPED
    if isinstance(err, LiangXinError):  # the service could not be reached or refused
        return EXIT_INCOMPLETE
    return EXIT_USAGE  # config, catalog, manifest, state: nothing was sent
