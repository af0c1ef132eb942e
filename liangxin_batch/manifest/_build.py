"""Raw manifest records -> validated jobs: model lookup, conversion, validation, identity.

The pure core of manifest reading (`_manifest` is the public face). One row is held at a
time; duplicate ids are found through `IdClaims` (`_claims`), 8 bytes of hash per id,
so a 1,000,000-row manifest checks in bounded memory; values are typed by
`ValueConverter` (`_convert`); a record's model, id and keys are checked by `KeyChecks`
(`_build_keys`). Problems that stand for many jobs (a column the model does not take, a
bad default shared by every expanded job) collapse into one with a count
(`ProblemSink`), emitted after the jobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from liangxin_batch.catalog._catalog import validate_input
from liangxin_batch.core._local_files import LocalFile
from liangxin_batch.core._records import (
    Job,
    Problem,
    RawJob,
    SourceRef,
    got_text,
    model_slug,
)
from liangxin_batch.errors import ConfigError
from liangxin_batch.manifest._build_keys import (
    IMAGES_KEY,
    KeyChecks,
    ProblemSink,
    same_key,
    written_at,
)
from liangxin_batch.manifest._claims import IdClaims
from liangxin_batch.manifest._convert import ValueConverter
from liangxin_batch.manifest._fast import FastRows, check_block
from liangxin_batch.manifest._guards import (
    control_char,
    may_have_control,
    placeholder_host,
    written,
)
from liangxin_batch.manifest._local_inputs import LocalInputs, has_local
from liangxin_batch.manifest._read import (
    BLOCK_ROWS,
    TABULAR_SUFFIXES,
    CellRow,
    CellRows,
    read_tabular,
    read_tabular_blocks,
)
from liangxin_batch.manifest._yaml import read_yaml

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog, ModelSpec

#: Manifest formats by lower-case file suffix.
_YAML_SUFFIXES = (".yaml", ".yml", ".json")  # JSON is read as YAML, for line numbers
SUFFIXES = (*TABULAR_SUFFIXES, *_YAML_SUFFIXES)
_CANON = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_BLOCK = BLOCK_ROWS  # rows counted together by validate, as the CSV reader makes them
_MAX_WARNINGS = 50  # warnings kept; beyond that they are only counted
_NO_KEYS: dict[str, str] = {}  # never written to: a fresh dict is made when one is needed


class JobCounter(Protocol):
    """Counts valid jobs without keeping them (`_manifest.JobTally`)."""

    per_model: dict[str, int]

    def count(self, spec: ModelSpec, data: Mapping[str, Any], times: int = 1) -> None: ...


def _too_deep(source: SourceRef) -> Problem:
    return Problem(
        source, None, "values nested at most a few hundred levels deep", "deeper nesting"
    )


_CLEAN_TEXT = (
    "text without control characters (tab, newline and carriage return are fine) "
    "or unpaired surrogates"
)


class JobBuilder:
    """Turns raw records into jobs: model lookup, conversion, validation, identity."""

    def __init__(
        self,
        catalog: Catalog,
        default_model: str | None,
        *,
        allow_outside: bool = False,
        counter: JobCounter | None = None,
    ) -> None:
        self.allow_outside = allow_outside
        # Given a counter (validate), valid rows of a model already seen are counted, not
        # built: the first job of each model is still yielded (the counter's example).
        self.counter = counter
        self.catalog = catalog
        self.default_model = default_model.strip() if default_model else None
        self._values = ValueConverter()
        self._claims = IdClaims()
        self._sink = ProblemSink()
        self._keys = KeyChecks(self._sink, catalog, self.default_model)
        self.warnings: list[Problem] = []  # the first _MAX_WARNINGS; the jobs stay valid
        self.warning_count = 0
        self.records = 0
        self.index = 0
        self.problems = 0
        self.duplicates = 0
        self.repeated = 0
        self.local = LocalInputs()
        #: The distinct local files of the valid jobs: sha256 -> size.
        self.local_sizes: dict[str, int] = {}

    # ---- the stream ------------------------------------------------------------------------

    def run_records(
        self, records: Iterable[CellRows | CellRow | RawJob | Problem], display: str
    ) -> Iterator[Job | Problem]:
        fast: FastRows | None = None
        block: list[CellRow] = []  # counting: rows checked a column at a time
        for item in records:
            if isinstance(item, CellRows):  # counting (validate): a block as the reader made it
                yield from self._tally(self._rows_block(fast, block))
                block = []
                if fast is None or fast.header is not item.header:
                    fast = FastRows(item.header, self.catalog, self.default_model)
                yield from self._tally(self._block(fast, item.cells, item.lines))
                continue
            if isinstance(item, CellRow):
                if fast is None or fast.header is not item.header:
                    yield from self._tally(self._rows_block(fast, block))
                    block = []
                    fast = FastRows(item.header, self.catalog, self.default_model)
                if self.counter is not None:
                    block.append(item)
                    if len(block) == _BLOCK:
                        yield from self._tally(self._rows_block(fast, block))
                        block = []
                    continue
                built = self._row(fast, item)
            else:
                yield from self._tally(self._rows_block(fast, block))
                block = []
                built = [item] if isinstance(item, Problem) else self._build(item)
            yield from self._tally(built)
        yield from self._tally(self._rows_block(fast, block))
        for collapsed in self._sink.collapsed():
            self.problems += 1
            yield collapsed
        if self.records == 0 and self.problems == 0:
            self.problems += 1
            yield Problem(
                SourceRef(display, 1),
                None,
                "at least one job",
                "none",
                "add rows under a header line (CSV) or a jobs: list (YAML)",
            )

    def _tally(self, built: Iterable[Job | Problem]) -> Iterator[Job | Problem]:
        for out in built:
            if isinstance(out, Problem):
                self.problems += 1
            yield out

    def _row(self, fast: FastRows, row: CellRow) -> list[Job | Problem]:
        checked = fast.check(row.cells)
        # None: something to report; the general path says what and where.
        return self._checked_row(row, *checked) if checked else self._build(row.raw())

    def _rows_block(self, fast: FastRows | None, rows: list[CellRow]) -> Iterator[Job | Problem]:
        if fast is not None and rows:
            yield from self._block(fast, [r.cells for r in rows], [r.line for r in rows])

    def _block(
        self, fast: FastRows, cells: list[list[str]], lines: list[int]
    ) -> Iterator[Job | Problem]:
        """Counting (validate): a block of rows proven valid column by column is counted
        up to its first id seen before; every other row is checked on its own."""
        counter = self.counter
        assert counter is not None, "blocks are read only when counting (validate)"
        block = check_block(fast, cells)
        done = 0
        header = fast.header
        if block is not None:
            if block.spec.id not in counter.per_model:
                # The model's first job is built: it is the counter's example.
                yield from self._row(fast, CellRow(header, cells[0], lines[0]))
                done = 1
            if block.spec.id in counter.per_model:
                tag = self._claims.tag(header.file)
                keys = list(map(hash, map(str.lower, block.ids[done:])))
                end = done + self._claims.ids.claim_all(keys, [tag | n for n in lines[done:]])
                for data, n in block.price_groups(done, end):
                    counter.count(block.spec, data, n)
                self.records += end - done
                self.index += end - done
                done = end
        for at in range(done, len(cells)):
            yield from self._row(fast, CellRow(header, cells[at], lines[at]))

    def _build(self, rec: RawJob) -> list[Job | Problem]:
        try:
            return self.build(rec)
        except RecursionError:  # values nested thousands deep (JSON, YAML, list cells)
            return [_too_deep(rec.source)]

    def run(self, path: Path) -> Iterator[Job | Problem]:
        display = str(path)
        if not path.exists():
            raise ConfigError(f"manifest not found: {display}")
        if path.is_dir():
            raise ConfigError(f"{display} is a directory; give a manifest file")
        suffix = path.suffix.lower()
        records: Iterable[CellRows | CellRow | RawJob | Problem]
        if suffix in _YAML_SUFFIXES:
            records = read_yaml(
                path,
                display,
                catalog=self.catalog,
                default_model=self.default_model,
                allow_outside=self.allow_outside,
            )
        elif suffix in TABULAR_SUFFIXES:
            # Counting (validate) takes CSV rows a block at a time, straight from the reader.
            reader = read_tabular if self.counter is None else read_tabular_blocks
            records = reader(path, display)
        else:
            raise ConfigError(
                f"{display}: unknown manifest format {suffix or '(no suffix)'!r}; "
                f"use one of {', '.join(SUFFIXES)}"
            )
        yield from self.run_records(records, display)

    # ---- one record -------------------------------------------------------------------------

    def build(self, rec: RawJob) -> list[Job | Problem]:
        self.records += 1
        out: list[Job | Problem] = []
        src = rec.source
        values = rec.values
        bad = False
        for p in rec.problems or ():
            bad = True
            self._sink.emit(out, p, same_key(p, rec))
        for key, value in written(rec) if may_have_control(rec) else ():
            control = control_char(value)
            if control is not None:  # every format, every text field: never sent
                bad = True
                p = Problem(
                    written_at(rec, key),
                    key,
                    _CLEAN_TEXT,
                    control,
                    "remove it: such characters are usually debris from a copy or an export",
                )
                self._sink.emit(out, p, same_key(p, rec))

        given = self._keys.given_id(values.get("id"), rec, out)
        job_id = given if isinstance(given, str) else None
        bad = bad or given is False
        spec = self._keys.model(values.get("model"), rec, out)
        if spec is None:
            self._register_ids(job_id, rec)
            return out

        fields = spec.fields
        data: dict[str, Any] = {}
        failed: set[str] = set()
        keys: dict[str, str] = _NO_KEYS  # a field -> the key it was written under (`images`)
        for key, value in values.items():
            if key == "id" or key == "model":
                continue
            fs = fields.get(key)
            name = key
            if fs is None and key == IMAGES_KEY:
                if isinstance(value, str) and (not value or value.isspace()):
                    continue  # empty means "not given" (a text model's row of a fan-out)
                target = self._keys.images_field(spec, values, rec, out)
                if target is None:
                    bad = True
                    continue
                name, fs = target, fields[target]
                keys = {name: key}
            elif fs is None:
                bad = True
                self._keys.unknown_field(key, spec, written_at(rec, key), rec, out)
                continue
            if isinstance(value, str) and (not value or value.isspace()):
                continue  # empty means "not given"
            try:
                data[name] = self._values.convert(fs, value)
            except ValueError as err:
                bad = True
                failed.add(name)
                p = Problem(written_at(rec, key), key, str(err), got_text(value))
                self._sink.emit(out, p, same_key(p, rec))
        for key, value in data.items():  # lists and objects decoded from a cell (JSON)
            if not isinstance(value, list | dict):
                continue
            wkey = keys.get(key, key) if keys else key
            if not isinstance(values.get(wkey), str):
                continue  # not decoded from text: checked as written above
            if control_char(values.get(wkey)) is not None:
                continue  # already reported as written
            control = control_char(value)
            if control is not None:
                bad = True
                failed.add(key)
                p = Problem(
                    written_at(rec, wkey),
                    wkey,
                    _CLEAN_TEXT,
                    control,
                )
                self._sink.emit(out, p, same_key(p, rec))
        local: dict[str, LocalFile] = {}
        for name, fs in self.local.fields_of(spec):
            value = data.get(name)
            if value is None or (
                fs.type == "url_list" and type(value) is list and not has_local(value)
            ):
                continue  # not given, or http(s) URLs only: the common case
            if name in failed:
                continue
            key = keys.get(name, name)
            where = written_at(rec, key)
            for label, fault in self.local.tokenize(fs, data, name, key, where.file, local):
                bad = True
                p = Problem(where, label, fault.expected, fault.got, fault.suggestion)
                self._sink.emit(out, p, same_key(p, rec))
        for fp in validate_input(spec, data):
            base = fp.field.split("[", 1)[0].split(".", 1)[0]
            if base in failed:
                continue  # already reported as a conversion problem
            bad = True
            missing = fp.got == "nothing"
            wbase = keys.get(base, base)
            p = Problem(
                written_at(rec, wbase) if wbase in values else SourceRef(src.file, src.line, base),
                wbase + fp.field[len(base) :],
                fp.expected,
                fp.got,
                fp.suggestion,
            )
            if missing and rec.header is not None and base not in rec.header:
                ckey: tuple[Any, ...] | None = ("missing", src.file, spec.id, fp.field, fp.expected)
            else:
                ckey = same_key(p, rec)
            self._sink.emit(out, p, ckey)
        if bad:
            self._register_ids(job_id, rec)
            return out
        self._placeholders(spec, data, rec)
        columns = rec.columns if rec.columns is not None else {}
        self._identify(
            out,
            spec,
            data,
            job_id,
            src,
            columns,
            rec.repeat,
            rec,
            tuple(local.values()) if local else (),
        )
        return out

    # ---- identity -------------------------------------------------------------------------------

    def _checked_row(
        self, row: CellRow, spec: ModelSpec, data: dict[str, Any], job_id: str | None
    ) -> list[Job | Problem]:
        """A row the fast path found valid: only its identity is left to settle."""
        self.records += 1
        counter = self.counter
        if (
            counter is not None
            and job_id is not None
            and spec.id in counter.per_model
            and self._claims.claim_at(job_id, row.header.file, row.line) is None
        ):
            # Counting only (validate): no Job, no content hash, just the id and the tally.
            counter.count(spec, data)
            self.index += 1
            return []
        src = SourceRef(row.header.file, row.line)
        columns = dict(zip(row.header.names, row.cells, strict=True))  # checked: same width
        out: list[Job | Problem] = []
        self._identify(out, spec, data, job_id, src, columns, 1)
        return out

    def _identify(
        self,
        out: list[Job | Problem],
        spec: ModelSpec,
        data: dict[str, Any],
        job_id: str | None,
        src: SourceRef,
        columns: Mapping[str, str],
        n: int,
        rec: RawJob | None = None,
        local_files: tuple[LocalFile, ...] = (),
    ) -> None:
        """Ids (given or derived from the content hash), duplicates, and the jobs."""
        try:
            canonical = _CANON.encode([spec.id, data])
        except (TypeError, ValueError) as err:
            self._sink.emit(
                out, Problem(src, None, "input that can be written as JSON", str(err)), None
            )
            return
        content_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        explicit = job_id is not None
        base_id = job_id if job_id is not None else f"{model_slug(spec.id)}-{content_hash[:12]}"
        for r in range(1, n + 1):
            final = f"{base_id}-r{r}" if n > 1 else base_id
            first = self._claims.claim(final, src)
            if first is not None:
                self.duplicates += 1
                if explicit:
                    p = Problem(
                        SourceRef(src.file, src.line, "id"),
                        "id",
                        "a unique id",
                        f"{final!r} again (first at {first})",
                        "ids are compared ignoring case, because they name files",
                    )
                else:
                    p = Problem(
                        src,
                        None,
                        "a job that differs from every other job",
                        f"the same model and input as {first} (no id given)",
                        "remove one, give each an id, or use repeat: N for deliberate copies",
                    )
                self._sink.emit(out, p, same_key(p, rec) if rec is not None else None)
                continue
            if r > 1:
                self.repeated += 1
            out.append(
                Job(
                    final,
                    spec.id,
                    dict(data) if n > 1 else data,
                    columns,
                    self.index,
                    content_hash,
                    src,
                    local_files,
                )
            )
            self.index += 1
            for f in local_files:
                self.local_sizes[f.sha256] = f.size

    def _placeholders(self, spec: ModelSpec, data: Mapping[str, Any], rec: RawJob) -> None:
        """Warnings (not problems) for input URLs on placeholder hosts."""
        for key, value in data.items():
            fs = spec.fields.get(key)
            if fs is None or fs.type != "url_list" or not isinstance(value, list):
                continue
            for url in value:
                host = placeholder_host(url) if isinstance(url, str) else None
                if host is None:
                    continue
                self.warning_count += 1
                if len(self.warnings) < _MAX_WARNINGS:
                    self.warnings.append(
                        Problem(
                            written_at(rec, key),
                            key,
                            "an image URL the service can fetch",
                            got_text(url),
                            f"{host} is a placeholder or this machine: give the image's "
                            "real address (the task would fail, and may be charged)",
                        )
                    )

    def _register_ids(self, job_id: str | bool | None, rec: RawJob) -> None:
        """An invalid job's explicit ids still count, so duplicates show up in the same pass."""
        if isinstance(job_id, str):
            n = rec.repeat
            for r in range(1, n + 1):
                self._claims.claim(f"{job_id}-r{r}" if n > 1 else job_id, rec.source)
