"""Checks on raw manifest values before they become jobs, sized for a million rows.

Control characters (which the stdlib csv reader and YAML let through: NUL bytes, escape
sequences) are refused where they were written; duplicate ids are found through
`IdTable`, 8 bytes of hash per id, in bounded memory.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from liangxin_batch.core._records import RawJob

__all__ = [
    "CONTROL",
    "IdTable",
    "control_char",
    "has_control",
    "has_name_control",
    "may_have_control",
    "placeholder_host",
    "written",
]

#: C0 control characters other than tab, newline and carriage return, and lone UTF-16
#: surrogates (a JSON "\ud800" decodes to one; it cannot be encoded to send or store).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


#: CONTROL's characters as UTF-8 bytes (each is one byte; no longer sequence holds one).
_CONTROL_BYTES = bytes(c for c in range(32) if CONTROL.match(chr(c)))


def has_control(text: str) -> bool:
    """Whether CONTROL would find something in `text`, several times faster for long
    text (validate asks it of 1,024 rows at once): a lone surrogate cannot be encoded,
    and the C0 characters are deleted from the bytes by C code."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return len(raw.translate(None, _CONTROL_BYTES)) != len(raw)


#: What no file name of a manifest may hold: every C0 character (newline and tab too)
#: and DEL. A NUL would reach the file system's path functions as a ValueError.
_NAME_CONTROL = re.compile("[\x00-\x1f\x7f]")


def has_name_control(name: str) -> bool:
    """Whether a file name written in a manifest holds a control character."""
    return _NAME_CONTROL.search(name) is not None


def control_char(value: Any, depth: int = 0) -> str | None:
    """Where the first control character in a value (or inside its items) is, or None."""
    if isinstance(value, str):
        found = CONTROL.search(value)
        if found is None:
            return None
        return f"U+{ord(found.group()):04X} at character {found.start() + 1}"
    if depth > 50:
        return None
    if isinstance(value, list | tuple):
        items: Any = value
    elif isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    else:
        return None
    for item in items:
        found_in = control_char(item, depth + 1)
        if found_in is not None:
            return found_in
    return None


#: Hosts that stand for "some address" (RFC 2606/6761) or this machine: the service can
#: fetch nothing from them, so an input URL naming one is almost surely left from a template.
_PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net")
_PLACEHOLDER_SUFFIXES = (".example", ".test", ".invalid", ".localhost", ".local")
_LOOPBACK = ("localhost", "0.0.0.0", "::1", "[::1]")


def placeholder_host(url: str) -> str | None:
    """The host of a URL that cannot be what the user meant (example.com, localhost, ...)."""
    try:
        host = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    if (
        host in _LOOPBACK
        or host.startswith("127.")
        or host.endswith(_PLACEHOLDER_SUFFIXES)
        or any(host == d or host.endswith("." + d) for d in _PLACEHOLDER_DOMAINS)
    ):
        return host
    return None


def may_have_control(rec: RawJob) -> bool:
    """The common case in one C-level search per row: plain text with nothing to find."""
    columns = rec.columns or {}
    try:
        blob = "\t".join([*rec.values.values(), *columns.values(), *columns.keys()])
    except TypeError:
        return True  # lists, objects or numbers (YAML/JSON): look at them one by one
    return CONTROL.search(blob) is not None


def written(rec: RawJob) -> Iterator[tuple[str, Any]]:
    """Every name and value as written: fields, note columns, and column names."""
    yield from rec.values.items()
    for name, text in (rec.columns or {}).items():
        if name not in rec.values:
            yield name, text
        if CONTROL.search(name):
            yield "(column name)", name


class IdTable:
    """64-bit key -> 64-bit value by open addressing in two arrays.

    About 24 bytes per id; a dict of Python ints needs about 110, which for a million ids
    is the difference between 25 MB and 110 MB. Keys come one at a time (a run) or in
    blocks (validate), which numpy probes together (`_claim_bulk`): the Python loop took
    2 of validate's 8 s at a million rows.
    """

    __slots__ = ("_keys", "_mask", "_size", "_vals")

    def __init__(self, capacity: int = 1024) -> None:
        self._keys = array("q", bytes(8 * capacity))
        self._vals = array("q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._size = 0

    def claim_all(self, keys: list[int], values: list[int]) -> int:
        """Insert keys in order up to the first one already present (in the table or
        earlier in `keys`); return how many were inserted."""
        if len(keys) >= _BULK and self._size >= _BULK_AFTER and _claim_bulk(self, keys, values):
            return len(keys)
        claim = self.setdefault
        for n, (key, value) in enumerate(zip(keys, values, strict=True)):
            if claim(key, value) is not None:
                return n
        return len(keys)

    def setdefault(self, key: int, value: int) -> int | None:
        """Insert and return None, or return the value already stored for `key` (nothing
        changed)."""
        key = key or 1  # 0 marks an empty slot
        slots, mask = self._keys, self._mask
        i = key & mask
        while slots[i]:
            if slots[i] == key:
                return self._vals[i]
            i = (i + 1) & mask
        slots[i] = key
        self._vals[i] = value
        self._size += 1
        if self._size * 2 > mask:
            self._grow()
        return None

    def _grow(self) -> None:
        old_keys, old_vals = self._keys, self._vals
        capacity = (self._mask + 1) * 2
        self._keys = array("q", bytes(8 * capacity))
        self._vals = array("q", bytes(8 * capacity))
        self._mask = capacity - 1
        keys, vals, mask = self._keys, self._vals, self._mask
        for j, k in enumerate(old_keys):
            if k:
                i = k & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = k
                vals[i] = old_vals[j]


#: Keys claimed at once from which numpy does the probing (validate's blocks of 1,024
#: rows); below it, one key at a time in Python (a run's rows, tests' small tables).
_BULK = 64
#: Keys in the table before numpy takes over: the loop's first 50,000 keys cost about
#: what importing numpy does, so a small manifest never imports it.
_BULK_AFTER = 50_000
#: Probe steps taken for a whole block in numpy; the few keys still probing after them
#: (long clusters) finish one at a time: each numpy step costs tens of µs however few
#: keys it moves.
_STEPS = 3


def _claim_bulk(table: IdTable, keys: list[int], values: list[int]) -> bool:
    """Insert all `keys` and say True when none is present yet nor repeated; else leave
    the table as it was and say False (the caller's loop then finds the first one).

    Probing a whole block at once in numpy: a fraction of the loop's time per key."""
    import numpy as np  # validate's counting path only: a run never pays for the import

    # array('q') converts Python ints several times faster than np.array does.
    k = np.frombuffer(array("q", keys), dtype=np.int64).copy()
    k[k == 0] = 1  # 0 marks an empty slot
    ordered = np.sort(k)
    if (ordered[1:] == ordered[:-1]).any():
        return False
    if (table._size + k.size) * 2 > table._mask:
        _regrow(table, table._size + k.size)
    return _place(table, k, np.frombuffer(array("q", values), dtype=np.int64), check=True)


def _regrow(table: IdTable, count: int) -> None:
    """`_grow` in numpy, to a capacity that holds `count` keys at most half full."""
    import numpy as np

    old_keys = np.frombuffer(table._keys, dtype=np.int64)
    old_vals = np.frombuffer(table._vals, dtype=np.int64)
    capacity = (table._mask + 1) * 2
    while count * 2 > capacity - 1:
        capacity *= 2
    table._keys = array("q", bytes(8 * capacity))
    table._vals = array("q", bytes(8 * capacity))
    table._mask = capacity - 1
    table._size = 0
    used = old_keys != 0
    _place(table, old_keys[used], old_vals[used], check=False)


def _place(table: IdTable, keys: Any, values: Any, *, check: bool) -> bool:
    """Put distinct keys (numpy int64) into the table, each in the first free slot of
    its probe sequence as the one-at-a-time loop would. `check`: a key met on its way
    (already present) undoes the whole placement and gives False.

    Probing and placing are one walk: a key present sits before any free slot of its
    sequence (linear probing leaves no gap), so it is met before its key would be placed;
    undoing empties only slots this call filled, which no older key's sequence crosses."""
    import numpy as np

    slots = np.frombuffer(table._keys, dtype=np.int64)
    vals = np.frombuffer(table._vals, dtype=np.int64)
    mask = table._mask
    filled: list[Any] = []
    probe = keys & mask
    for _ in range(_STEPS):
        seen = slots[probe]
        if check and (seen == keys).any():
            return _undo(table, filled)
        empty = seen == 0
        # Keys that reach the same free slot in this step all write it and one stays (the
        # keys are distinct, so the slot tells which); the others, like the keys that met
        # a taken slot, try the next slot.
        slots[probe[empty]] = keys[empty]
        won = slots[probe] == keys
        at = probe[won]
        vals[at] = values[won]
        filled.append(at)
        table._size += at.size
        rest = ~won
        keys, values, probe = keys[rest], values[rest], (probe[rest] + 1) & mask
    more: list[int] = []
    for key, value, i in zip(keys.tolist(), values.tolist(), probe.tolist(), strict=True):
        while table._keys[i]:
            if check and table._keys[i] == key:
                filled.append(np.array(more, dtype=np.int64))
                return _undo(table, filled)
            i = (i + 1) & mask
        table._keys[i] = key
        table._vals[i] = value
        table._size += 1
        more.append(i)
    return True


def _undo(table: IdTable, filled: list[Any]) -> bool:
    """Empty the slots a `_place` filled: the table is as before it."""
    import numpy as np

    if filled:
        at = np.concatenate(filled)
        np.frombuffer(table._keys, dtype=np.int64)[at] = 0
        table._size -= at.size
    return False
