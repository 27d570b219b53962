"""Recorded event logs, read for `journeys simulate` (the dry-run).

A log is one file of Segment messages in one of two formats, optionally gzip-compressed:

- JSON lines: one Segment message (a JSON object) per line; blank lines are ignored.
- CSV: a header row, then one message per row. A row is a track call unless a `type` column
  says otherwise.

Format: by the file name (`.jsonl`, `.ndjson`, `.json` -> JSON lines; `.csv` -> CSV; a trailing
`.gz` is looked through), otherwise sniffed: content starting with `{` is JSON lines, anything
else CSV. Compression: gzip is recognised by its magic bytes, whatever the name says (a `.gz` file
that is not compressed is read as it is). A `.json` file is JSON *lines*: a file holding one JSON
array or a Segment `{"batch": [...]}` object is not read as a batch.

Mapping (`--map`, `parse_mapping`): our field names are `type, message_id, user_id,
anonymous_id, event, timestamp, previous_id, group_id, timezone` (the last is
`context.timezone`). A mapping says which column (CSV) or top-level key (JSON lines) holds a
field, e.g. `user_id=uid,timestamp=ts`. Without a mapping a CSV column is recognised when its
header is the field's Segment name (`userId`, `messageId`, ...) or our name (`user_id`, ...);
`originalTimestamp`, `sentAt` and `receivedAt` columns are passed through as Segment reads them.
A mapped field takes its column from the mapping only (a column that happens to be called
`userId` then is just a property). In JSON lines a mapped key is renamed to its Segment name
before parsing (only top-level keys; a line without the key is left alone). A mapped column
missing from a CSV header is an error for the whole file (`LogError`), even when not strict.

CSV cells:
- Every other non-empty header's column becomes a property (track, page, screen, alias) or a
  trait (identify, group) named by the header. Columns with an empty header are ignored.
- Empty cells are absent. Rows with no non-empty cell are blank lines.
- Property/trait cells that are numbers in JSON syntax become numbers, so a condition like
  `price >= 200` works: `-?(0|[1-9][0-9]*)` becomes an int (when it fits 64 bits), with a fraction
  and/or exponent a float (when finite). Everything else stays a string: "007" and "+33 6..."
  (leading zeros and signs keep phone numbers and zip codes intact), " 12", "1_000", "nan",
  "true" (booleans are not converted). Cells of mapped fields (ids, timestamp) stay strings.
- Comma-separated, RFC 4180 quoting (cells may span lines); UTF-8 with or without a BOM;
  undecodable bytes become U+FFFD rather than stopping the read.

Bad lines: a line that is not JSON, or that `parse_message` rejects, is recorded as a `Skipped`
(path, 1-based physical line, field, message) and reading goes on; with `strict=True` the first
one raises `LogError` naming file:line and field instead. For CSV the line is where the row starts.
A gzip stream that ends early (a log still being written) is a `Skipped` with field "file" after
the lines read so far. A file that cannot be opened always raises `LogError`.

Speed: JSON lines are decoded with `orjson.loads` straight from the binary file (no text
decoding), lines counted with `enumerate`, `parse_message` called without building a location
string; the location is only formatted for lines that fail. The cyclic garbage collector is
paused while a log is read (and restored after): reading builds a million acyclic objects that
all stay alive, and the collector's repeated walks over them cost as much as the parsing itself.
`decode_only` is the floor all this is measured against.
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import math
import os
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import attrgetter
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson

from engine.messages import Message, MessageError, parse_message

__all__ = [
    "FIELDS",
    "LogError",
    "LogRead",
    "MappingError",
    "Skipped",
    "decode_only",
    "parse_mapping",
    "parse_time",
    "read_log",
    "read_logs",
]

#: Our field names, and the Segment key each one is read from.
FIELDS: Mapping[str, str] = {
    "type": "type",
    "message_id": "messageId",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "event": "event",
    "timestamp": "timestamp",
    "previous_id": "previousId",
    "group_id": "groupId",
    "timezone": "context.timezone",
}
_TIMEZONE = "context.timezone"
# CSV headers recognised without a mapping: Segment names, our names, the other Segment times.
_AUTO_COLUMNS = {
    **{key: key for key in FIELDS.values() if key != _TIMEZONE},
    **{name: key for name, key in FIELDS.items()},
    "originalTimestamp": "originalTimestamp",
    "sentAt": "sentAt",
    "receivedAt": "receivedAt",
}
_TRAIT_TYPES = frozenset({"identify", "group"})

Progress = Callable[[int], None]
_TICK = 1 << 20  # report progress about every MB
_CHECK_EVERY = 1023  # look at the file position every 1024 lines (a mask)
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_UTC = timezone.utc


class MappingError(ValueError):
    """A `--map` text or mapping that cannot be used."""


class LogError(ValueError):
    """A log that cannot be read: the file, or (strict) its first bad line.

    `line` is 0 for problems with the file as a whole.
    """

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        super().__init__(path, line, field, message)
        self.path = path
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.field}: {self.message}"
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line that did not become a message: where it is and which field was wrong."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


@dataclass(slots=True)
class LogRead:
    """What reading gave: the messages (file order from `read_log`, time order from
    `read_logs`) and the lines skipped, in file order."""

    messages: list[Message] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Mapping
# ----------------------------------------------------------------------------------------------


def parse_mapping(text: str) -> dict[str, str]:
    """Read a `--map` value: comma-separated `field=column` pairs, e.g.
    `user_id=userId,event=event,timestamp=ts`. Spaces around names are ignored; column names
    cannot contain "," or start/end with spaces. Raises `MappingError` saying what is wrong
    (its text does not repeat "--map"; the command line says which option it is about)."""
    mapping: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not eq:
            raise MappingError(f"{item!r} is not field=column")
        if not name or not column:
            raise MappingError(f"{item!r} needs both a field and a column")
        if name in mapping:
            raise MappingError(f"{name} is mapped twice")
        mapping[name] = column
    return check_mapping(mapping)


def check_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a field -> column mapping (raising `MappingError`) and return it as a dict."""
    if not mapping:
        return {}
    seen: dict[str, str] = {}
    for name, column in mapping.items():
        if name not in FIELDS:
            raise MappingError(
                f"unknown field {name!r}; the fields are " + ", ".join(FIELDS)
            )
        if not isinstance(column, str) or not column:
            raise MappingError(f"{name} needs a column name")
        if column in seen:
            raise MappingError(f"column {column!r} is given for both {seen[column]} and {name}")
        seen[column] = name
    return dict(mapping)


def _json_remapper(mapping: dict[str, str]) -> Callable[[Any], Any] | None:
    pairs = [(column, FIELDS[name]) for name, column in mapping.items() if column != FIELDS[name]]
    if not pairs:
        return None

    def remap(obj: Any) -> Any:
        if type(obj) is not dict:
            return obj
        for column, key in pairs:
            if column in obj:
                value = obj.pop(column)
                if key == _TIMEZONE:
                    context = obj.get("context")
                    obj["context"] = (
                        {**context, "timezone": value}
                        if isinstance(context, dict)
                        else {"timezone": value}
                    )
                else:
                    obj[key] = value
        return obj

    return remap


# ----------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------


def _open(path: str) -> tuple[io.BufferedReader, Any]:
    """The raw binary file (whose position is the progress) and the stream to read from."""
    try:
        raw = open(path, "rb", buffering=1 << 16)
    except OSError as exc:
        raise LogError(path, 0, "file", f"cannot open: {exc.strerror or exc}") from None
    try:
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    except OSError as exc:
        raw.close()
        raise LogError(path, 0, "file", f"cannot read: {exc.strerror or exc}") from None
    return raw, raw


def _format(path: str, stream: Any) -> str:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    head = stream.peek(1 << 16)
    if head.startswith(_BOM):
        head = head[3:]
    head = head.lstrip()
    return "csv" if head and not head.startswith(b"{") else "jsonl"


class _Sink:
    """Collects messages and skipped lines for one file; raises instead when strict."""

    __slots__ = ("path", "strict", "read")

    def __init__(self, path: str, strict: bool) -> None:
        self.path = path
        self.strict = strict
        self.read = LogRead()

    def bad(self, line: int, field: str, message: str) -> None:
        if self.strict:
            raise LogError(self.path, line, field, message)
        self.read.skipped.append(Skipped(self.path, line, field, message))


class _Ticker:
    """Calls `progress` with the raw file position about every MB."""

    __slots__ = ("raw", "progress", "next")

    def __init__(self, raw: io.BufferedReader, progress: Progress) -> None:
        self.raw = raw
        self.progress = progress
        self.next = _TICK

    def check(self) -> None:
        position = self.raw.tell()
        if position >= self.next:
            self.progress(position)
            self.next = position + _TICK

    def done(self) -> None:
        self.progress(self.raw.tell())


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collection while reading: every object built is acyclic and kept."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_STREAM_ERRORS = (EOFError, OSError, zlib.error)


def _stream_error(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the compressed stream ends early (a truncated file?); read up to here"
    return f"cannot read further ({exc}); read up to here"


# ----------------------------------------------------------------------------------------------
# JSON lines
# ----------------------------------------------------------------------------------------------


def _decode_bad_line(line: bytes) -> Any:
    """A line orjson refused: blank (None), BOM-prefixed (decoded), or invalid (raises)."""
    if line.startswith(_BOM):
        line = line[3:]
    if not line.strip():
        return None
    return orjson.loads(line)


def _read_jsonl(
    stream: Any, sink: _Sink, remap: Callable[[Any], Any] | None, ticker: _Ticker | None
) -> None:
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    parse = parse_message
    append = sink.read.messages.append
    lineno = 0
    try:
        for lineno, line in enumerate(stream, 1):
            try:
                obj = loads(line)
            except decode_error:
                try:
                    obj = _decode_bad_line(line)
                except decode_error as exc:
                    sink.bad(lineno, "json", f"invalid JSON ({exc})")
                    continue
                if obj is None:
                    continue
            if remap is not None:
                obj = remap(obj)
            try:
                append(parse(obj))
            except MessageError as exc:
                sink.bad(lineno, exc.field, exc.message)
            if ticker is not None and not lineno & _CHECK_EVERY:
                ticker.check()
    except _STREAM_ERRORS as exc:
        sink.bad(lineno + 1, "file", _stream_error(exc))


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?").fullmatch
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1  # what orjson (and so the auto messageId) takes


def coerce_cell(cell: str) -> Any:
    """A CSV property/trait cell: a number when it is one in JSON syntax, else the string."""
    first = cell[0]
    if ("0" <= first <= "9" or first == "-") and (match := _NUMBER(cell)):
        if match.group(1) is None and match.group(2) is None:
            number = int(cell)
            if _INT_MIN <= number <= _INT_MAX:
                return number
        else:
            real = float(cell)
            if math.isfinite(real):
                return real
    return cell


def _csv_columns(header: list[str], mapping: dict[str, str], sink: _Sink) -> list[str | None]:
    """For each column: the Segment key it fills, "" for a property/trait, None to ignore."""
    names = [name.strip() for name in header]
    by_column = {column: FIELDS[name] for name, column in mapping.items()}
    missing = [column for column in by_column if column not in names]
    if missing:
        raise LogError(
            sink.path,
            0,
            "file",
            "--map names columns the header does not have: "
            + ", ".join(repr(c) for c in missing)
            + "; the columns are "
            + ", ".join(repr(n) for n in names),
        )
    mapped_keys = set(by_column.values())
    columns: list[str | None] = []
    for name in names:
        if not name:
            columns.append(None)
        elif name in by_column:
            columns.append(by_column[name])
        else:
            key = _AUTO_COLUMNS.get(name)
            columns.append(key if key is not None and key not in mapped_keys else "")
    return columns


def _read_csv(stream: Any, sink: _Sink, mapping: dict[str, str], ticker: _Ticker | None) -> None:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    rows = csv.reader(text)
    parse = parse_message
    append = sink.read.messages.append
    start = 1  # the line being read, for a stream error
    try:
        header: list[str] = []
        while not any(header):
            start = rows.line_num + 1
            try:
                header = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raise LogError(sink.path, start, "csv", f"unreadable header ({exc})") from None
        columns = _csv_columns(header, mapping, sink)
        names = [name.strip() for name in header]
        width = len(columns)
        previous = rows.line_num
        count = 0
        while True:
            start = previous + 1
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                previous = rows.line_num
                sink.bad(start, "csv", str(exc))
                continue
            previous = rows.line_num
            if len(row) > width:
                if any(row[width:]):
                    sink.bad(start, "csv", f"{len(row)} cells but the header has {width} columns")
                    continue
            raw: dict[str, Any] = {}
            extra: dict[str, Any] = {}
            for key, name, cell in zip(columns, names, row):
                if not cell or key is None:
                    continue
                if key == "":
                    extra[name] = coerce_cell(cell)
                elif key == _TIMEZONE:
                    raw["context"] = {"timezone": cell}
                else:
                    raw[key] = cell
            if not raw and not extra:
                continue  # a blank row
            kind = raw.setdefault("type", "track")
            if extra:
                raw["traits" if kind.lower() in _TRAIT_TYPES else "properties"] = extra
            try:
                append(parse(raw))
            except MessageError as exc:
                sink.bad(start, exc.field, exc.message)
            count += 1
            if ticker is not None and not count & _CHECK_EVERY:
                ticker.check()
    except _STREAM_ERRORS as exc:
        sink.bad(start, "file", _stream_error(exc))
    finally:
        text.detach()


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def read_log(
    path: str | os.PathLike[str],
    *,
    mapping: Mapping[str, str] | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> LogRead:
    """Read one log file (JSON lines or CSV, plain or gzip) into messages in file order.

    Bad lines become `LogRead.skipped` entries, or with `strict` raise `LogError` (file:line and
    field). `mapping` is field -> column (see `parse_mapping`); `progress`, when given, is called
    with the number of bytes of the file read so far (compressed bytes for gzip) about every MB
    and once at the end, so a progress bar's total is the file's size on disk.
    """
    name = os.fspath(path)
    fields = check_mapping(mapping)
    raw, stream = _open(name)
    sink = _Sink(name, strict)
    ticker = _Ticker(raw, progress) if progress is not None else None
    with raw, _gc_paused():
        try:
            try:
                kind = _format(name, stream)
            except _STREAM_ERRORS as exc:  # a corrupt gzip, found while sniffing
                sink.bad(1, "file", _stream_error(exc))
                kind = ""
            if kind == "csv":
                _read_csv(stream, sink, fields, ticker)
            elif kind == "jsonl":
                _read_jsonl(stream, sink, _json_remapper(fields), ticker)
            if ticker is not None:
                ticker.done()
        finally:
            if stream is not raw:
                stream.close()
    return sink.read


def parse_time(value: datetime | str | None, name: str) -> datetime | None:
    """A `since`/`until` bound (or the CLI's --from/--until) as an aware UTC datetime: a datetime
    or an ISO-8601 string, naive meaning UTC; None stays None. Raises ValueError naming `name`."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: not an ISO-8601 time: {value!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


_utc = parse_time  # the name engine/simulate_cli.py imports


def read_logs(
    paths: Iterable[str | os.PathLike[str]],
    mapping: Mapping[str, str] | None = None,
    strict: bool = False,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    *,
    progress: Progress | None = None,
) -> LogRead:
    """Read several logs; messages sorted by timestamp, stably (for equal times: the order of
    `paths`, then line order), kept when `since <= timestamp <= until` (either bound optional;
    datetimes or ISO-8601 strings, naive meaning UTC). Skipped lines stay in file order.

    `progress` gets bytes read across all files, so its total is the sum of the files' sizes.
    """
    lower, upper = parse_time(since, "since"), parse_time(until, "until")
    with _gc_paused():
        messages, skipped = _read_all(paths, mapping, strict, lower, upper, progress)
    return LogRead(messages, skipped)


def _read_all(
    paths: Iterable[str | os.PathLike[str]],
    mapping: Mapping[str, str] | None,
    strict: bool,
    lower: datetime | None,
    upper: datetime | None,
    progress: Progress | None,
) -> tuple[list[Message], list[Skipped]]:
    messages: list[Message] = []
    skipped: list[Skipped] = []
    base = 0
    for path in paths:
        report = None
        if progress is not None:
            report = (lambda done, base=base: progress(base + done))  # noqa: E731
        result = read_log(path, mapping=mapping, strict=strict, progress=report)
        if lower is not None or upper is not None:
            messages.extend(
                m
                for m in result.messages
                if (lower is None or m.timestamp >= lower) and (upper is None or m.timestamp <= upper)
            )
        else:
            messages.extend(result.messages)
        skipped.extend(result.skipped)
        if progress is not None:
            base += os.path.getsize(path)
    messages.sort(key=attrgetter("timestamp"))
    return messages, skipped


def decode_only(path: str | os.PathLike[str]) -> int:
    """The speed floor: read a JSON-lines log (plain or gzip) and `orjson.loads` every non-blank
    line, building nothing; returns the number of lines decoded (invalid ones included)."""
    name = os.fspath(path)
    raw, stream = _open(name)
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    count = 0
    with raw:
        try:
            for line in stream:
                try:
                    loads(line)
                except decode_error:
                    if not line.strip():
                        continue
                count += 1
        finally:
            if stream is not raw:
                stream.close()
    return count
