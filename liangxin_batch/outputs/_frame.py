"""`results(DIR)`: the results table as a pandas DataFrame with real dtypes.

The rows results.csv is made from, read from the state (read-only, safe while a run
writes it), typed as the parquet export is: integers `Int64`, floats `Float64`,
timestamps `datetime64[ns, UTC]`, text the nullable `string` dtype (an empty error field
is <NA> in a string column, never an all-NaN float column). pandas is imported when the
function runs: `import liangxin_batch` and the CLI's start-up must not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from liangxin_batch.outputs._columns import ColumnType

__all__ = ["results"]


def results(out_dir: Path | str, *, state_url: str | None = None) -> pd.DataFrame:
    """One row per manifest job, in manifest order: the manifest's columns (text, under
    their own names) and the columns the tool adds (the README's table), typed.

        frame = results("runs/oct")
        frame[frame.status == "failed"][["job_id", "error_message"]]
    """
    from liangxin_batch.outputs._report import typed_table
    from liangxin_batch.state._backends import missing_state, open_state
    from liangxin_batch.state._store import STATE_FILE

    out_dir = Path(out_dir)
    if state_url is None and not (out_dir / STATE_FILE).is_file():
        raise missing_state(out_dir)
    store = open_state(out_dir, url=state_url, readonly=True)
    try:
        with store.reading():  # a damaged file says so as a StateError, as for `status`
            header, types, chunks = typed_table(out_dir, store)
            columns: list[list[Any]] = [[] for _ in header]
            for chunk in chunks:
                for values, column in zip(zip(*chunk, strict=True), columns, strict=True):
                    column.extend(values)
    finally:
        store.close()
    return _frame(header, types, columns)


def _frame(header: list[str], types: list[ColumnType], columns: list[list[Any]]) -> pd.DataFrame:
    import pandas as pd

    data = {
        name: _series(pd, kind, column)
        for name, kind, column in zip(header, types, columns, strict=True)
    }
    return pd.DataFrame(data, columns=header)


def _series(pd: Any, kind: ColumnType, column: list[Any]) -> Any:
    if kind == "timestamp":
        from liangxin_batch.outputs._tables import nanoseconds

        # Whole nanoseconds as Int64 (nulls kept), read as UTC instants.
        stamps = pd.array(nanoseconds(column), dtype="Int64")
        return pd.to_datetime(stamps, unit="ns", utc=True).astype("datetime64[ns, UTC]")
    dtype = {"string": "string", "integer": "Int64", "float": "Float64"}[kind]
    return pd.array(column, dtype=dtype)
