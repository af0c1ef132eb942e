"""Provenance of an output: its sidecar's name, and the prompt-and-parameters text other
image tools read. Pure: no I/O.

Each output `NAME.ext` gets a sidecar `NAME.json` beside it (outputs/_sidecars.py). The
layout's claims (outputs/_layout.py `PathClaims`) own an output's *stem* (`stem_key`: the
path less its extension, casefolded), so two outputs never share a sidecar. Outputs
never end in `.json` (`extension_for` gives only media types and `.bin`), so a sidecar
is never an output either.

`parameters_text` is the "parameters" convention of AUTOMATIC1111's web UI, which
ComfyUI, InvokeAI, civitai and most PNG-info readers parse: the prompt, then
`Negative prompt: ...` when there is one, then one last line of `Key: value, ...` (a
value holding `,`, `:` or a newline is written as a JSON string, as A1111's `quote`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "NEGATIVE_FIELDS",
    "PROMPT_FIELDS",
    "SIDECAR_SUFFIX",
    "legacy_sidecar_path",
    "parameters_text",
    "sidecar_path",
    "stem_key",
]

SIDECAR_SUFFIX = ".json"
#: Input fields that hold the prompt, and a negative prompt, in the catalog's models.
PROMPT_FIELDS = ("prompt", "text", "positive_prompt")
NEGATIVE_FIELDS = ("negative_prompt",)


def _stem(path: str) -> str:
    slash, dot = path.rfind("/"), path.rfind(".")
    return path[:dot] if dot > slash + 1 else path  # ".x" is a name, not a suffix


def stem_key(path: str) -> str:
    """What two outputs may not share: the path less its extension, casefolded."""
    return _stem(path).casefold()


def sidecar_path(path: str) -> str:
    """`outputs/m/x.json` for `outputs/m/x.png` (relative to DIR, POSIX)."""
    return _stem(path) + SIDECAR_SUFFIX


def legacy_sidecar_path(path: str) -> str:
    """`outputs/m/x~png.json`: the sidecar of an output that an earlier version recorded
    beside another of the same stem (`x.png` and `x.mp4`, claimed before stems were):
    each keeps its extension in the name, so neither overwrites the other's. The `~`
    (never in an output's path: the layout writes only `[A-Za-z0-9._-/]`) keeps it
    apart from every output's `NAME.json` (`x.png.json` is the output `x.png.mp4`'s)."""
    stem = _stem(path)
    return f"{stem}~{path[len(stem) + 1 :]}{SIDECAR_SUFFIX}"


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if "," not in text and ":" not in text and "\n" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _label(key: str) -> str:
    """`aspect_ratio` -> `Aspect ratio` (A1111 writes `Sampler`, `CFG scale`, ...)."""
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def parameters_text(
    model: str, inputs: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> str:
    """The A1111 "parameters" text of a job: its prompt, its negative prompt, then the
    other inputs, the model and `extra` (ids) as one `Key: value, ...` line."""
    prompt = next((inputs[f] for f in PROMPT_FIELDS if isinstance(inputs.get(f), str)), "")
    negative = next((inputs[f] for f in NEGATIVE_FIELDS if isinstance(inputs.get(f), str)), None)
    taken = {f for f in (*PROMPT_FIELDS, *NEGATIVE_FIELDS) if f in inputs}
    pairs = [(_label(k), v) for k, v in inputs.items() if k not in taken and v is not None]
    pairs.append(("Model", model))
    pairs.extend((k, v) for k, v in (extra or {}).items() if v is not None)
    lines = [prompt]
    if negative is not None:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)
