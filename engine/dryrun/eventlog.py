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

Streaming (`open_logs`, what `journeys simulate` uses): `read_logs` holds every message (a
million of them take ~900 MB); `open_logs` holds none. It reads every file once up front through
the same code as `read_log` (every line parsed, so the skipped lines, their numbers and a
`strict` failure are known before anything runs) and keeps per message only three 8-byte
numbers: its time (whole microseconds since the epoch: exact, and ordered as the datetimes are),
and its line's byte offset and length (for CSV the row's, which may span lines). The returned
`SortedLog` yields the messages again, in `read_logs`' order, by reading those lines again and
parsing them with the same functions (`_jsonl_message`, `_csv_message`), so they are equal:
- a file whose kept messages are already in time order (generated logs, most exports) is read
  again front to back, gzip decompressed again; lines not kept are passed over unparsed;
- a file out of order is given a stable order (an array of indices) and each line is read with
  `os.pread` at its offset; an out-of-order gzip file is first decompressed once into an unnamed
  temporary file (disk, not memory: as big as the decompressed log; removed on `close()` or at
  exit) that the reads use;
- several files are merged on time (`heapq.merge`, stable, so equal times keep path order).
Reading costs a second parse of every kept line (the first pass is what a `read_logs` costs
without keeping the messages); the files must not change in between (a line found elsewhere
raises `LogError` rather than giving another message). CSV rows are found again by their bytes:
`_csv_lines` splits and decodes lines as `TextIOWrapper(newline="")` does while counting bytes.
"""

from __future__ import annotations

import csv
import gc
import gzip
import heapq
import io
import math
import os
import re
import tempfile
import zlib
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson

from ..core.messages import Message, MessageError, parse_message

__all__ = [
    "FIELDS",
    "LogError",
    "LogRead",
    "MappingError",
    "Skipped",
    "SortedLog",
    "decode_only",
    "open_logs",
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
#: What a scan does with each message: keep(message, byte offset of its line/row, byte length).
_Keep = Callable[[Message, int, int], None]
_loads = orjson.loads
_DECODE_ERROR = orjson.JSONDecodeError
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


def _jsonl_message(line: bytes, remap: Callable[[Any], Any] | None) -> Message | None:
    """One JSON line as a message, None for a blank line. Raises `orjson.JSONDecodeError` (not
    JSON) or `MessageError`. Every reader goes through here, so they all give the same message."""
    try:
        obj = _loads(line)
    except _DECODE_ERROR:
        obj = _decode_bad_line(line)
        if obj is None:
            return None
    if remap is not None:
        obj = remap(obj)
    return parse_message(obj)


def _scan_jsonl(
    stream: Any, sink: _Sink, remap: Callable[[Any], Any] | None, ticker: _Ticker | None, keep: _Keep
) -> None:
    """Every line of a JSON-lines stream: messages to `keep(message, offset, length)` (the line's
    byte offset in the (decompressed) stream and its length), bad lines to `sink`."""
    message_of = _jsonl_message
    decode_error = _DECODE_ERROR
    lineno = 0
    offset = 0
    try:
        for lineno, line in enumerate(stream, 1):
            try:
                message = message_of(line, remap)
            except decode_error as exc:
                sink.bad(lineno, "json", f"invalid JSON ({exc})")
            except MessageError as exc:
                sink.bad(lineno, exc.field, exc.message)
            else:
                if message is not None:
                    keep(message, offset, len(line))
            offset += len(line)
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


def _csv_lines(stream: Iterable[bytes], position: list[int], bom: bool) -> Iterator[str]:
    """The text lines `csv.reader` reads, as `TextIOWrapper(encoding="utf-8-sig", errors="replace",
    newline="")` would give them: split at "\n", "\r\n" and a lone "\r" (kept), decoded as UTF-8
    with U+FFFD for bad bytes, a BOM dropped at the start of the file when `bom`. Done by hand so
    that `position[0]` always says how many bytes have been handed out: a row's bytes are then
    known and can be read again on their own. Every line end is ASCII, so decoding line by line
    gives what decoding the whole stream gives."""
    for line in stream:
        if bom:
            bom = False
            if line.startswith(_BOM):
                position[0] += 3
                line = line[3:]
                if not line:
                    continue
        if b"\r" in line:
            for piece in line.splitlines(True):  # bytes split at \r, \n and \r\n only
                position[0] += len(piece)
                yield piece.decode("utf-8", "replace")
        else:
            position[0] += len(line)
            yield line.decode("utf-8", "replace")


class _CsvScan:
    """The rows of a CSV stream after its header, as (line, offset, length, cells): the physical
    line the row starts on, its bytes' offset in the (decompressed) stream and their length.
    Rows csv cannot read and rows with cells beyond the header go to `sink`; `columns` and
    `names` (the header, as `_csv_message` takes it) are set once the header is read."""

    def __init__(
        self, stream: Any, sink: _Sink, mapping: dict[str, str], ticker: _Ticker | None
    ) -> None:
        self.stream = stream
        self.sink = sink
        self.mapping = mapping
        self.ticker = ticker
        self.columns: list[str | None] = []
        self.names: list[str] = []

    def __iter__(self) -> Iterator[tuple[int, int, int, list[str]]]:
        sink, ticker = self.sink, self.ticker
        position = [0]
        rows = csv.reader(_csv_lines(self.stream, position, True))
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
            self.columns = _csv_columns(header, self.mapping, sink)
            self.names = [name.strip() for name in header]
            width = len(self.columns)
            previous = rows.line_num
            count = 0
            while True:
                start = previous + 1
                offset = position[0]
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except csv.Error as exc:
                    previous = rows.line_num
                    sink.bad(start, "csv", str(exc))
                    continue
                previous = rows.line_num
                if len(row) > width and any(row[width:]):
                    sink.bad(start, "csv", f"{len(row)} cells but the header has {width} columns")
                    continue
                yield start, offset, position[0] - offset, row
                count += 1
                if ticker is not None and not count & _CHECK_EVERY:
                    ticker.check()
        except _STREAM_ERRORS as exc:
            sink.bad(start, "file", _stream_error(exc))


def _csv_message(row: list[str], columns: list[str | None], names: list[str]) -> Message | None:
    """One CSV row as a message, None for a blank row; raises `MessageError`."""
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
        return None  # a blank row
    kind = raw.setdefault("type", "track")
    if extra:
        raw["traits" if kind.lower() in _TRAIT_TYPES else "properties"] = extra
    return parse_message(raw)


def _csv_row_message(data: bytes, columns: list[str | None], names: list[str]) -> Message | None:
    """A row read again from its bytes (which may span lines), split and decoded as the scan did."""
    row = next(csv.reader(_csv_lines(data.splitlines(True), [0], False)), None)
    return None if row is None else _csv_message(row, columns, names)


def _scan_csv(
    stream: Any, sink: _Sink, mapping: dict[str, str], ticker: _Ticker | None, keep: _Keep
) -> _CsvScan:
    scan = _CsvScan(stream, sink, mapping, ticker)
    for start, offset, length, row in scan:
        try:
            message = _csv_message(row, scan.columns, scan.names)
        except MessageError as exc:
            sink.bad(start, exc.field, exc.message)
        else:
            if message is not None:
                keep(message, offset, length)
    return scan


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


class _Shape:
    """How a file was read: its format, whether it is gzip, the JSON remapper or CSV header."""

    __slots__ = ("kind", "packed", "remap", "columns", "names")

    def __init__(self) -> None:
        self.kind = ""  # "jsonl", "csv", or "" (nothing readable)
        self.packed = False
        self.remap: Callable[[Any], Any] | None = None
        self.columns: list[str | None] = []
        self.names: list[str] = []


def _scan_file(
    name: str, fields: dict[str, str], sink: _Sink, progress: Progress | None, keep: _Keep
) -> _Shape:
    """Read one file through once: each message to `keep`, each bad line to `sink`."""
    raw, stream = _open(name)
    shape = _Shape()
    shape.packed = stream is not raw
    ticker = _Ticker(raw, progress) if progress is not None else None
    with raw, _gc_paused():
        try:
            try:
                kind = _format(name, stream)
            except _STREAM_ERRORS as exc:  # a corrupt gzip, found while sniffing
                sink.bad(1, "file", _stream_error(exc))
                kind = ""
            shape.kind = kind
            if kind == "csv":
                scan = _scan_csv(stream, sink, fields, ticker, keep)
                shape.columns, shape.names = scan.columns, scan.names
            elif kind == "jsonl":
                shape.remap = _json_remapper(fields)
                _scan_jsonl(stream, sink, shape.remap, ticker, keep)
            if ticker is not None:
                ticker.done()
        finally:
            if stream is not raw:
                stream.close()
    return shape


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
    sink = _Sink(name, strict)
    append = sink.read.messages.append
    _scan_file(name, fields, sink, progress, lambda message, offset, length: append(message))
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


# ----------------------------------------------------------------------------------------------
# Streaming: index once, read again in time order
# ----------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)


class _Indexed:
    """One file of a `SortedLog`: where each kept message's line is, and its time.

    `keys` are the timestamps in whole microseconds since the epoch (exact for every datetime, and
    ordered as the UTC datetimes are); `offsets`/`lengths` the line's (row's) bytes in the file,
    or in the decompressed stream for gzip. `order` is None when the file is already in time
    order, else the indices of its messages in (stable) time order. `spool` is the decompressed
    copy of an out-of-order gzip file.
    """

    __slots__ = ("path", "fields", "shape", "keys", "offsets", "lengths", "ordered", "order", "spool")

    def __init__(self, path: str, fields: dict[str, str]) -> None:
        self.path = path
        self.fields = fields
        self.shape = _Shape()
        self.keys = array("q")
        self.offsets = array("q")
        self.lengths = array("q")
        self.ordered = True
        self.order: array | None = None
        self.spool: Any = None

    def scan(
        self, strict: bool, lower: datetime | None, upper: datetime | None, progress: Progress | None,
        observe: Callable[[Message], None] | None = None,
    ) -> list[Skipped]:
        """Index the file; `observe`, when given, sees each kept message in file order (the
        partitioned dry-run links identities there, engine.dryrun.partitioned.identity)."""
        keys, offsets, lengths = self.keys, self.offsets, self.lengths
        add_key, add_offset, add_length = keys.append, offsets.append, lengths.append
        epoch = _EPOCH
        last = -(1 << 63)
        ordered = True

        def keep(message: Message, offset: int, length: int) -> None:
            nonlocal last, ordered
            stamp = message.timestamp
            if (lower is not None and stamp < lower) or (upper is not None and stamp > upper):
                return
            delta = stamp - epoch
            key = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
            if key < last:
                ordered = False
            last = key
            add_key(key)
            add_offset(offset)
            add_length(length)
            if observe is not None:
                observe(message)

        sink = _Sink(self.path, strict)
        self.shape = _scan_file(self.path, self.fields, sink, progress, keep)
        self.ordered = ordered
        return sink.read.skipped

    def sort(self) -> None:
        """For a file out of time order: the order to read it in, and a spool for a gzip one."""
        if self.ordered:
            return
        keys = self.keys
        self.order = array("q", sorted(range(len(keys)), key=keys.__getitem__))  # stable
        if self.shape.packed:
            self.spool = tempfile.TemporaryFile(prefix="journeys-log-")
            raw, stream = _open(self.path)
            with raw:
                try:
                    self.spool.writelines(stream)  # the same lines as the scan, to where it stopped
                except _STREAM_ERRORS:
                    pass
                finally:
                    stream.close()
            self.spool.flush()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def subset(self, chosen: Any) -> _Indexed:
        """The same file with only the messages `chosen` (a numpy boolean mask over them, in scan
        order): one partition's view of it (`SortedLog.split`). Its read order is found when first
        read, by the process that reads it."""
        import numpy as np

        part = _Indexed(self.path, self.fields)
        part.shape = self.shape
        for name in ("keys", "offsets", "lengths"):
            column = np.frombuffer(getattr(self, name), dtype=np.int64)[chosen]
            getattr(part, name).frombytes(column.tobytes())
        keys = np.frombuffer(part.keys, dtype=np.int64)
        part.ordered = self.ordered or bool((keys[1:] >= keys[:-1]).all())
        return part

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for another process (a partition's worker): the index, not the temporary
        spool nor the JSON remapper (a closure), which are made again there."""
        shape = self.shape
        return (_indexed_again, (self.path, self.fields, shape.kind, shape.packed, shape.columns, shape.names,
                                 self.keys, self.offsets, self.lengths, self.ordered))

    def messages(self) -> Iterator[Message]:
        if not self.keys:
            return iter(())
        if not self.ordered and self.order is None:  # a partition's view, read for the first time
            self.sort()
        if self.order is None:
            return self._in_file_order()
        return self._by_offset()

    def _message(self, data: bytes) -> Message | None:
        shape = self.shape
        try:
            if shape.kind == "csv":
                return _csv_row_message(data, shape.columns, shape.names)
            return _jsonl_message(data, shape.remap)
        except (_DECODE_ERROR, MessageError):
            return None

    def _changed(self) -> LogError:
        return LogError(self.path, 0, "file", "changed since it was first read; read it again")

    def _in_file_order(self) -> Iterator[Message]:
        """Read the file front to back (decompressing again for gzip), parsing only kept lines."""
        raw, stream = _open(self.path)
        try:
            if self.shape.kind == "csv":
                yield from self._csv_in_file_order(stream)
            else:
                yield from self._jsonl_in_file_order(stream)
        finally:
            if stream is not raw:
                stream.close()
            raw.close()

    def _jsonl_in_file_order(self, stream: Any) -> Iterator[Message]:
        offsets, lengths, remap = self.offsets, self.lengths, self.shape.remap
        message_of = _jsonl_message
        count = len(offsets)
        index = 0
        wanted = offsets[0]
        offset = 0
        try:
            for line in stream:
                if offset == wanted:
                    try:
                        message = message_of(line, remap) if len(line) == lengths[index] else None
                    except (_DECODE_ERROR, MessageError):
                        message = None
                    if message is None:
                        raise self._changed()
                    yield message
                    index += 1
                    if index == count:
                        return
                    wanted = offsets[index]
                offset += len(line)
        except _STREAM_ERRORS:
            pass  # where the scan stopped too: every kept line came before, or the file changed
        raise self._changed()

    def _csv_in_file_order(self, stream: Any) -> Iterator[Message]:
        offsets, lengths = self.offsets, self.lengths
        count = len(offsets)
        scan = _CsvScan(stream, _Sink(self.path, False), self.fields, None)
        index = 0
        wanted = offsets[0]
        for _, offset, length, row in scan:
            if offset != wanted:
                continue
            try:
                message = _csv_message(row, scan.columns, scan.names) if length == lengths[index] else None
            except MessageError:
                message = None
            if message is None:
                raise self._changed()
            yield message
            index += 1
            if index == count:
                return
            wanted = offsets[index]
        raise self._changed()

    def _by_offset(self) -> Iterator[Message]:
        """Read each line by its offset, in time order (a plain file, or the gzip file's spool)."""
        offsets, lengths = self.offsets, self.lengths
        if self.spool is not None:
            fd, own = self.spool.fileno(), False
        else:
            try:
                fd, own = os.open(self.path, os.O_RDONLY), True
            except OSError as exc:
                raise LogError(self.path, 0, "file", f"cannot open: {exc.strerror or exc}") from None
        pread = os.pread
        message_of = self._message
        try:
            for i in self.order or ():
                length = lengths[i]
                data = pread(fd, length, offsets[i])
                message = message_of(data) if len(data) == length else None
                if message is None:
                    raise self._changed()
                yield message
        finally:
            if own:
                os.close(fd)


def _indexed_again(path: str, fields: dict[str, str], kind: str, packed: bool, columns: list[str | None],
                   names: list[str], keys: array, offsets: array, lengths: array, ordered: bool) -> _Indexed:
    """`_Indexed.__reduce__`'s other half."""
    indexed = _Indexed(path, fields)
    indexed.shape.kind, indexed.shape.packed = kind, packed
    indexed.shape.columns, indexed.shape.names = columns, names
    indexed.shape.remap = _json_remapper(fields) if kind == "jsonl" else None
    indexed.keys, indexed.offsets, indexed.lengths, indexed.ordered = keys, offsets, lengths, ordered
    return indexed


_timestamp = attrgetter("timestamp")


class SortedLog:
    """Logs indexed by `open_logs`: the messages in time order, read from the files on demand.

    - `skipped`: the lines that did not become messages, in file order (as `read_logs` gives).
    - `count`: the number of messages kept; `first`/`last`: the earliest and latest of their
      timestamps (UTC datetimes), None when there are none.
    - Iterating yields the messages in the order `read_logs` gives them (by timestamp; for equal
      times the order of the paths, then line order), parsed by the same code, so equal to its
      messages. It can be done any number of times, one after the other or at once: each pass
      opens the files again and holds one line per file. The files must not change meanwhile (a
      line that is no longer where it was raises `LogError`).
    - `close()` (or leaving a `with` block) removes the temporary copies of out-of-order gzip
      files; the OS removes them at exit too.
    """

    def __init__(self, files: list[_Indexed], skipped: list[Skipped]) -> None:
        self._files = files
        self.skipped = skipped
        self.count = sum(len(f.keys) for f in files)
        lows = [f.keys[0] if f.ordered else min(f.keys) for f in files if f.keys]
        highs = [f.keys[-1] if f.ordered else max(f.keys) for f in files if f.keys]
        self.first: datetime | None = _EPOCH + timedelta(microseconds=min(lows)) if lows else None
        self.last: datetime | None = _EPOCH + timedelta(microseconds=max(highs)) if highs else None

    def __iter__(self) -> Iterator[Message]:
        streams = [f.messages() for f in self._files if f.keys]
        if not streams:
            return iter(())
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=_timestamp)  # stable: equal times in path order

    @property
    def paths(self) -> list[str]:
        """The files this log reads, in order."""
        return [f.path for f in self._files]

    @property
    def file_counts(self) -> list[int]:
        """How many messages each file holds, in `paths` order."""
        return [len(f.keys) for f in self._files]

    def split(self, labels: list[Any], parts: int) -> list[SortedLog]:
        """The log as `parts` logs: file i's messages, in the order its scan kept them, go to the
        parts `labels[i]` (a numpy integer array) names. Each part reads only its own lines again;
        none has skipped lines (this log keeps them)."""
        files: list[list[_Indexed]] = [[] for _ in range(parts)]
        for indexed, label in zip(self._files, labels):
            for part in range(parts):
                chosen = label == part
                if chosen.any():
                    files[part].append(indexed.subset(chosen))
        return [SortedLog(chosen_files, []) for chosen_files in files]

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> SortedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SortedLog {self.count} messages, {len(self.skipped)} skipped, {self.first} .. {self.last}>"


def open_logs(
    paths: Iterable[str | os.PathLike[str]],
    mapping: Mapping[str, str] | None = None,
    strict: bool = False,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    *,
    progress: Progress | None = None,
    observe: Callable[[Message], None] | None = None,
) -> SortedLog:
    """`read_logs` without holding the messages: read every file once now (every line parsed,
    so skipped lines are known and `strict` fails here), keeping per message only its time and
    where its line is; iterating the result reads the lines again, in time order. Arguments and
    order as for `read_logs`; `progress` hears the bytes of this first reading; `observe` sees
    every message kept, file after file, each in its file's order (`SortedLog.split`'s order)."""
    lower, upper = parse_time(since, "since"), parse_time(until, "until")
    fields = check_mapping(mapping)
    files: list[_Indexed] = []
    skipped: list[Skipped] = []
    base = 0
    try:
        for path in paths:
            name = os.fspath(path)
            report = None
            if progress is not None:
                report = (lambda done, base=base: progress(base + done))  # noqa: E731
            indexed = _Indexed(name, fields)
            skipped.extend(indexed.scan(strict, lower, upper, report, observe))
            files.append(indexed)
            if progress is not None:
                base += os.path.getsize(name)
        for indexed in files:
            indexed.sort()
    except BaseException:
        for indexed in files:
            indexed.close()
        raise
    return SortedLog(files, skipped)


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
