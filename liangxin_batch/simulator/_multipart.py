"""A streaming multipart/form-data reader for the upload endpoint, with no dependency.

Starlette parses forms only with python-multipart, which the package does not depend on;
and the upload endpoint must not hold a big file in memory (tests upload 100 x 2 MB and
measure the client's RSS with the simulator in the same process). So this reads the
request body chunk by chunk: the file part goes to a `sink` as it arrives, text fields
(small, capped) are kept. The buffer never holds more than one chunk plus a delimiter.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

__all__ = ["Form", "MultipartError", "boundary_of", "read_form"]

_HEADERS_MAX = 16 * 1024
_FIELD_MAX = 64 * 1024
_DISPOSITION = re.compile(r'\b(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not the multipart/form-data its Content-Type says."""


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None  # the form name of the (first) file part
    file_name: str | None = None  # its filename="..." as sent


def boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or MultipartError."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise MultipartError("expected a multipart/form-data body")
    m = re.search(r'boundary="?([^";]+)"?', params, re.IGNORECASE)
    if not m:
        raise MultipartError("multipart/form-data without a boundary")
    return m.group(1).encode("latin-1")


async def read_form(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    *,
    file_field: str,
    sink: Callable[[bytes], None],
) -> Form:
    """Read a multipart body: the part named `file_field` goes to `sink` piece by piece
    (only the first such part; later ones are dropped), other parts become text fields."""
    form = Form()
    dash = b"--" + boundary
    delimiter = b"\r\n" + dash
    buf = bytearray()
    state = "preamble"
    target: Callable[[bytes], None] | None = None
    text = bytearray()
    is_text = False
    name = ""
    source = chunks.__aiter__()
    done = False

    async def more() -> bool:
        nonlocal done
        if done:
            return False
        try:
            buf.extend(await source.__anext__())
        except StopAsyncIteration:
            done = True
            return False
        return True

    while True:
        if state == "preamble":
            at = buf.find(dash)
            if at < 0:
                if len(buf) > _HEADERS_MAX or not await more():
                    raise MultipartError("no multipart boundary in the body")
                continue
            del buf[: at + len(dash)]
            state = "after_boundary"
        elif state == "after_boundary":
            if len(buf) < 2 and await more():
                continue
            if buf[:2] == b"--":
                return form
            if buf[:2] != b"\r\n":
                raise MultipartError("a multipart boundary is not followed by a line end")
            del buf[:2]
            state = "headers"
        elif state == "headers":
            at = buf.find(b"\r\n\r\n")
            if at < 0:
                if len(buf) > _HEADERS_MAX or not await more():
                    raise MultipartError("a multipart part's headers do not end")
                continue
            head = bytes(buf[:at]).decode("utf-8", "replace")
            del buf[: at + 4]
            params = {}
            for line in head.split("\r\n"):
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-disposition":
                    params = {k.lower(): v for k, v in _DISPOSITION.findall(value)}
            name = params.get("name", "")
            target, is_text = None, False
            if "filename" in params and name == file_field and form.file_field is None:
                form.file_field, form.file_name = name, params["filename"]
                target = sink
            elif "filename" not in params:
                text.clear()
                is_text = True
            state = "data"
        else:  # data: up to the next delimiter
            at = buf.find(delimiter)
            end = at if at >= 0 else max(0, len(buf) - len(delimiter) + 1)
            if end:
                piece = bytes(buf[:end])
                del buf[:end]
                if target is not None:
                    target(piece)
                elif is_text:
                    text.extend(piece)
                    if len(text) > _FIELD_MAX:
                        raise MultipartError(f"form field {name!r} is too long")
            if at >= 0:
                del buf[: len(delimiter)]
                if is_text:
                    form.fields[name] = text.decode("utf-8", "replace")
                state = "after_boundary"
            elif not await more():
                raise MultipartError("the multipart body ends inside a part")
