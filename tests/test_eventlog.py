"""Event logs for the dry-run: JSON lines and CSV, plain and gzip, bad lines, mapping, order."""

from __future__ import annotations

import gc
import gzip
from datetime import datetime, timezone

import orjson
import pytest

from engine.dryrun.eventlog import (
    LogError,
    LogRead,
    MappingError,
    Skipped,
    coerce_cell,
    decode_only,
    parse_mapping,
    read_log,
    read_logs,
)


def line(**fields) -> bytes:
    raw = {"type": "track", "userId": "u1", "event": "E", "timestamp": "2026-01-01T00:00:00Z"}
    raw.update(fields)
    return orjson.dumps({k: v for k, v in raw.items() if v is not ...})


def write(path, *lines: bytes | str, gz: bool = False):
    data = b"\n".join(x.encode() if isinstance(x, str) else x for x in lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# ------------------------------------------------------------------------------ JSON lines


def test_jsonl_keeps_good_lines_and_skips_bad_ones(tmp_path):
    path = write(
        tmp_path / "events.jsonl",
        line(messageId="a"),
        b"",
        b'{"type": "track", "userId": "u1", "event": ',  # line 3: not JSON
        line(messageId="c", userId=...),  # line 4: no user
        b"   ",
        line(messageId="e", timestamp="2026-13-01"),  # line 6
        line(messageId="f", type="identify", traits={"plan": "pro"}),
        b"[1, 2]",  # line 8: JSON, not an object
    )
    result = read_log(path)
    assert isinstance(result, LogRead)
    assert [m.message_id for m in result.messages] == ["a", "f"]
    assert [(s.line, s.field) for s in result.skipped] == [
        (3, "json"),
        (4, "userId"),
        (6, "timestamp"),
        (8, "message"),
    ]
    first = result.skipped[0]
    assert isinstance(first, Skipped) and first.path == str(path)
    assert first.message.startswith("invalid JSON")
    assert str(result.skipped[1]) == f"{path}:4: userId: missing: a message needs a userId or an anonymousId"


def test_strict_raises_log_error_naming_file_line_and_field(tmp_path):
    path = write(tmp_path / "events.jsonl", line(), line(userId=...), b"{bad")
    with pytest.raises(LogError) as info:
        read_log(path, strict=True)
    e = info.value
    assert (e.path, e.line, e.field) == (str(path), 2, "userId")
    assert str(e).startswith(f"{path}:2: userId: ")
    assert gc.isenabled()


def test_strict_on_invalid_json(tmp_path):
    path = write(tmp_path / "events.ndjson", line(), b"{bad")
    with pytest.raises(LogError, match=r"events\.ndjson:2: json: invalid JSON"):
        read_log(path, strict=True)


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line(messageId="a") + b"\r\n" + line(messageId="b") + b"\r\n")
    result = read_log(path)
    assert [m.message_id for m in result.messages] == ["a", "b"] and not result.skipped


def test_jsonl_normalises_through_parse_message(tmp_path):
    path = write(
        tmp_path / "events.json",
        line(type="page", name="Home", event=..., messageId=...),
        line(type="screen", name="Cart"),
        line(type="alias", previousId="anon"),
        line(type="group", groupId=9),
    )
    page, screen, alias, group = read_log(path).messages
    assert (page.event, page.properties["name"]) == ("Page Viewed", "Home")
    assert page.message_id.startswith("auto-")
    assert screen.event == "Screen Viewed"
    assert alias.previous_id == "anon" and group.group_id == "9"


def test_missing_message_ids_are_stable_across_reads(tmp_path):
    path = write(tmp_path / "events.jsonl", line(), line(event="F"))
    first = [m.message_id for m in read_log(path).messages]
    assert first == [m.message_id for m in read_log(path).messages]
    assert len(set(first)) == 2


def test_mapping_renames_jsonl_keys(tmp_path):
    path = write(
        tmp_path / "events.jsonl",
        b'{"uid": "u7", "name_of_event": "E", "ts": "2026-01-01T00:00:00Z", "type": "track", "tz": "Asia/Tokyo"}',
        line(),  # already Segment-shaped: left alone
    )
    mapping = {"user_id": "uid", "event": "name_of_event", "timestamp": "ts", "timezone": "tz"}
    a, b = read_log(path, mapping=mapping).messages
    assert (a.user_id, a.event, a.timezone) == ("u7", "E", "Asia/Tokyo")
    assert b.user_id == "u1"


def test_gzip_jsonl(tmp_path):
    path = write(tmp_path / "events.jsonl.gz", line(messageId="a"), b"nope", line(messageId="c"), gz=True)
    result = read_log(path)
    assert [m.message_id for m in result.messages] == ["a", "c"]
    assert [(s.line, s.field) for s in result.skipped] == [(2, "json")]


def test_gzip_is_recognised_by_magic_bytes_and_format_is_sniffed(tmp_path):
    jsonl = write(tmp_path / "events.log", line(messageId="a"), gz=True)
    assert [m.message_id for m in read_log(jsonl).messages] == ["a"]
    csv_gz = write(tmp_path / "export.dat", "userId,event,timestamp", "u1,E,2026-01-01", gz=True)
    assert [m.user_id for m in read_log(csv_gz).messages] == ["u1"]
    plain = write(tmp_path / "events.gz", line(messageId="p"))  # says gz, is not
    assert [m.message_id for m in read_log(plain).messages] == ["p"]


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    data = gzip.compress(b"\n".join(line(messageId=str(i)) for i in range(2000)) + b"\n")
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = read_log(path)
    assert 0 < len(result.messages) < 2000
    assert [s.field for s in result.skipped] == ["file"]
    assert result.skipped[0].line == len(result.messages) + 1
    with pytest.raises(LogError, match="file"):
        read_log(path, strict=True)


@pytest.mark.parametrize("name", ["corrupt.dat", "corrupt.jsonl", "corrupt.csv.gz"])
def test_corrupt_gzip_is_a_skipped_file_entry(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b\x00\x00junk")
    result = read_log(path)
    assert result.messages == [] and [(s.line, s.field) for s in result.skipped] == [(1, "file")]
    with pytest.raises(LogError, match=r":1: file: "):
        read_log(path, strict=True)


def test_missing_file_raises_log_error(tmp_path):
    with pytest.raises(LogError) as info:
        read_log(tmp_path / "nope.jsonl")
    assert info.value.line == 0 and "cannot open" in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert read_log(path) == LogRead([], [])
    blank = tmp_path / "blank"
    blank.write_bytes(b"\n\n")
    assert read_log(blank) == LogRead([], [])


def test_decode_only_counts_non_blank_lines(tmp_path):
    path = write(tmp_path / "events.jsonl", line(), b"", line(), b"{bad", line())
    assert decode_only(path) == 4
    gz = write(tmp_path / "events.jsonl.gz", line(), line(), gz=True)
    assert decode_only(gz) == 2


# ------------------------------------------------------------------------------ CSV


def test_csv_with_mapping_and_numeric_coercion(tmp_path):
    path = write(
        tmp_path / "orders.csv",
        "uid,what,ts,price,ratio,zip,phone,flag,huge,sci,inf,note",
        "u1,Order Completed,2026-01-01T10:00:00Z,250,0.5,007,+3361234,true,"
        "123456789012345678901234567890,1e3,1e999,",
        "u2,Order Completed,2026-01-01T11:00:00+01:00,-3,12.0,0,  12,false,,,, hi ",
    )
    result = read_log(path, mapping=parse_mapping("user_id=uid, event=what, timestamp=ts"))
    assert not result.skipped
    a, b = result.messages
    assert (a.type, a.user_id, a.event, a.timestamp) == ("track", "u1", "Order Completed", utc("2026-01-01T10:00:00"))
    assert a.properties == {
        "price": 250,
        "ratio": 0.5,
        "zip": "007",
        "phone": "+3361234",
        "flag": "true",
        "huge": "123456789012345678901234567890",
        "sci": 1000.0,
        "inf": "1e999",
    }
    assert type(a.properties["price"]) is int and type(a.properties["ratio"]) is float
    assert b.timestamp == utc("2026-01-01T10:00:00")
    assert b.properties == {"price": -3, "ratio": 12.0, "zip": 0, "phone": "  12", "flag": "false", "note": " hi "}


@pytest.mark.parametrize(
    ("cell", "value"),
    [("0", 0), ("-0", 0), ("42", 42), ("-1.25", -1.25), ("2E2", 200.0), ("01", "01"), ("1.", "1."),
     (".5", ".5"), ("1_000", "1_000"), ("nan", "nan"), ("Infinity", "Infinity"), ("٣", "٣"),
     ("18446744073709551615", 18446744073709551615), ("18446744073709551616", "18446744073709551616")],
)
def test_coerce_cell(cell, value):
    assert coerce_cell(cell) == value and type(coerce_cell(cell)) is type(value)


def test_csv_recognises_segment_and_snake_headers_without_mapping(tmp_path):
    path = write(
        tmp_path / "events.csv",
        "type,user_id,anonymousId,event,timestamp,messageId,plan,previousId,groupId,timezone",
        "identify,u1,,,2026-01-01,m1,pro,,,Europe/Paris",
        ",,a1,Signed Up,2026-01-02,m2,,,,",
        "alias,u1,,,2026-01-03,m3,,a1,,",
        "Group,u1,,,2026-01-04,m4,gold,,g1,",
    )
    result = read_log(path)
    assert not result.skipped
    identify, signup, alias, group = result.messages
    assert (identify.type, identify.traits, identify.timezone) == ("identify", {"plan": "pro"}, "Europe/Paris")
    assert (signup.type, signup.anonymous_id, signup.event, signup.properties) == ("track", "a1", "Signed Up", {})
    assert (alias.previous_id, group.group_id, group.traits) == ("a1", "g1", {"plan": "gold"})


def test_csv_mapped_field_takes_precedence_over_a_same_named_column(tmp_path):
    path = write(tmp_path / "e.csv", "userId,customer,event,timestamp", "legacy,c9,E,2026-01-01")
    (m,) = read_log(path, mapping={"user_id": "customer"}).messages
    assert m.user_id == "c9" and m.properties == {"userId": "legacy"}


def test_csv_line_numbers_skips_and_blank_rows(tmp_path):
    path = write(
        tmp_path / "events.csv",
        "userId,event,timestamp,note",  # 1
        "u1,E,2026-01-01,plain",  # 2
        "",  # 3
        'u2,E,2026-01-01,"two',  # 4: a cell over two lines
        'lines"',  # 5
        ",E,2026-01-01,no user",  # 6
        ",,,",  # 7: blank row
        "u3,E,not a time,x",  # 8
        "u4,E,2026-01-01,x,extra",  # 9: too many cells
        "u5,E,2026-01-01,x,,",  # 10: trailing empty cells are fine
        "u6,,2026-01-01,x",  # 11: no event
    )
    result = read_log(path)
    assert [m.user_id for m in result.messages] == ["u1", "u2", "u5"]
    assert result.messages[1].properties == {"note": "two\nlines"}
    assert [(s.line, s.field) for s in result.skipped] == [
        (6, "userId"),
        (8, "timestamp"),
        (9, "csv"),
        (11, "event"),
    ]
    with pytest.raises(LogError, match=r"events\.csv:6: userId"):
        read_log(path, strict=True)


def test_csv_mapped_column_missing_from_header(tmp_path):
    path = write(tmp_path / "events.csv", "userId,event,timestamp", "u1,E,2026-01-01")
    with pytest.raises(LogError, match="'ts'"):
        read_log(path, mapping={"timestamp": "ts"})


def test_gzip_csv(tmp_path):
    path = write(tmp_path / "events.csv.gz", "\ufeffuser,event,ts,price", "u1,Buy,2026-01-01T00:00:00Z,19.90", gz=True)
    (m,) = read_log(path, mapping={"user_id": "user", "timestamp": "ts"}).messages
    assert (m.user_id, m.event, m.properties) == ("u1", "Buy", {"price": 19.9})


def test_csv_header_only_and_empty(tmp_path):
    assert read_log(write(tmp_path / "a.csv", "userId,event,timestamp")) == LogRead([], [])
    empty = tmp_path / "b.csv"
    empty.write_bytes(b"")
    assert read_log(empty) == LogRead([], [])


# ------------------------------------------------------------------------------ --map text


def test_parse_mapping():
    assert parse_mapping("user_id=userId,event=event,timestamp=ts") == {
        "user_id": "userId", "event": "event", "timestamp": "ts"}
    assert parse_mapping(" user_id = User ID , ") == {"user_id": "User ID"}
    assert parse_mapping("") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("user_id", "not field=column"),
        ("userid=x", "unknown field 'userid'"),
        ("user_id=", "needs both"),
        ("=x", "needs both"),
        ("user_id=a,user_id=b", "mapped twice"),
        ("user_id=a,anonymous_id=a", "both user_id and anonymous_id"),
    ],
)
def test_parse_mapping_errors(text, says):
    with pytest.raises(MappingError, match=says):
        parse_mapping(text)


def test_read_log_checks_a_mapping_dict(tmp_path):
    with pytest.raises(MappingError):
        read_log(write(tmp_path / "e.jsonl", line()), mapping={"email": "mail"})


# ------------------------------------------------------------------------------ several logs


def test_read_logs_sorts_by_time_stably(tmp_path):
    a = write(
        tmp_path / "a.jsonl",
        line(messageId="a1", timestamp="2026-01-03T00:00:00Z"),
        line(messageId="a2", timestamp="2026-01-01T00:00:00Z"),
        line(messageId="a3", timestamp="2026-01-02T00:00:00Z"),
        line(messageId="a4", timestamp="2026-01-02T01:00:00+01:00"),  # same instant as a3
        b"junk",
    )
    b = write(
        tmp_path / "b.csv",
        "userId,event,timestamp,messageId",
        "u,E,2026-01-02T00:00:00Z,b1",
        "u,E,2025-12-31T00:00:00Z,b2",
        "u,E,2026-01-02T00:00:00Z,b3",
    )
    result = read_logs([a, b])
    assert [m.message_id for m in result.messages] == ["b2", "a2", "a3", "a4", "b1", "b3", "a1"]
    assert [(s.path, s.line) for s in result.skipped] == [(str(a), 5)]


def test_read_logs_since_until_inclusive(tmp_path):
    path = write(
        tmp_path / "a.jsonl",
        *(line(messageId=f"d{d}", timestamp=f"2026-01-0{d}T00:00:00Z") for d in range(1, 6)),
    )
    ids = lambda **kw: [m.message_id for m in read_logs([path], **kw).messages]  # noqa: E731
    assert ids(since=utc("2026-01-02"), until=utc("2026-01-04")) == ["d2", "d3", "d4"]
    assert ids(since=datetime(2026, 1, 4)) == ["d4", "d5"]  # naive is UTC
    assert ids(until="2026-01-02T00:00:00Z") == ["d1", "d2"]
    assert ids(since="2026-01-02T01:00:00+01:00", until="2026-01-02T00:00:00") == ["d2"]
    with pytest.raises(ValueError, match="since"):
        read_logs([path], since="last week")


def test_read_logs_strict_and_gc_restored(tmp_path):
    good = write(tmp_path / "a.jsonl", line())
    bad = write(tmp_path / "b.jsonl", line(), b"{")
    with pytest.raises(LogError, match=r"b\.jsonl:2"):
        read_logs([good, bad], strict=True)
    assert gc.isenabled()


# ------------------------------------------------------------------------------ progress


def test_progress_reports_bytes_read(tmp_path):
    pad = "x" * 300
    lines = [line(messageId=str(i), properties={"pad": pad}) for i in range(8000)]  # ~3 MB
    plain = write(tmp_path / "big.jsonl", *lines)
    seen: list[int] = []
    assert len(read_log(plain, progress=seen.append).messages) == 8000
    size = plain.stat().st_size
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == size

    packed = write(tmp_path / "big.jsonl.gz", *lines, gz=True)
    seen_gz: list[int] = []
    read_log(packed, progress=seen_gz.append)
    assert seen_gz[-1] == packed.stat().st_size

    seen_all: list[int] = []
    read_logs([plain, packed], progress=seen_all.append)
    assert seen_all == sorted(seen_all) and seen_all[-1] == size + packed.stat().st_size


def test_csv_progress(tmp_path):
    rows = [f"u{i},E,2026-01-01,{'y' * 200}" for i in range(6000)]
    path = write(tmp_path / "big.csv", "userId,event,timestamp,pad", *rows)
    seen: list[int] = []
    assert len(read_log(path, progress=seen.append).messages) == 6000
    assert seen[-1] == path.stat().st_size and len(seen) >= 2


# ------------------------------------------------------------------------------ junk files

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

junk_lines = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([line(), line(userId=...), b'{"type":', b"userId,event,timestamp", b'"a,b', b"\x1f\x8b"]),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk_lines, st.sampled_from(["x.jsonl", "x.csv", "x.dat", "x.csv.gz"]), st.booleans())
def test_junk_files_never_raise(tmp_path, lines, name, packed):
    path = tmp_path / name
    data = b"\n".join(lines)
    path.write_bytes(gzip.compress(data) if packed else data)
    result = read_log(path)
    assert all(isinstance(s, Skipped) and s.line >= 1 for s in result.skipped)
    assert gc.isenabled()


def test_parse_time():
    from engine.dryrun.eventlog import parse_time

    assert parse_time(None, "since") is None
    assert parse_time("2026-01-01T01:00:00+01:00", "since") == utc("2026-01-01T00:00:00")
    assert parse_time(datetime(2026, 1, 1), "until").tzinfo is timezone.utc
    with pytest.raises(ValueError, match="until: not an ISO-8601 time"):
        parse_time("tomorrow", "until")


# ------------------------------------------------------------------------------ open_logs (streaming)

from engine.dryrun.eventlog import SortedLog, open_logs  # noqa: E402
from engine.core.messages import Message  # noqa: E402


def same_as_read_logs(paths, **kw) -> SortedLog:
    """open_logs gives read_logs' messages (equal, in the same order) and skipped lines."""
    expected = read_logs(paths, **kw)
    log = open_logs(paths, **kw)
    assert list(log) == expected.messages
    assert log.skipped == expected.skipped
    assert log.count == len(expected.messages)
    stamps = [m.timestamp for m in expected.messages]
    assert (log.first, log.last) == ((stamps[0], stamps[-1]) if stamps else (None, None))
    return log


def shuffled_lines(n: int = 40) -> list[bytes]:
    days = [(7 * i) % n for i in range(n)]  # out of order, with equal times
    return [line(messageId=f"m{i}", timestamp=f"2026-01-01T00:{d // 2:02d}:00Z") for i, d in enumerate(days)]


def test_open_logs_jsonl_in_order_with_bad_lines(tmp_path):
    path = write(
        tmp_path / "events.jsonl",
        b"\xef\xbb\xbf" + line(messageId="a"),
        b"",
        b'{"type": "track", "userId": "u1", "event": ',
        line(messageId="c", userId=...),
        b"   \r",
        line(messageId="f", type="identify", traits={"plan": "pro"}, timestamp="2026-01-02T00:00:00Z"),
        line(messageId="g", type="page", name="Home", timestamp="2026-01-02T00:00:00+01:00") + b"\r",
    )
    log = same_as_read_logs([path])
    assert [(s.line, s.field) for s in log.skipped] == [(3, "json"), (4, "userId")]
    assert list(log) == list(log)  # iterating again reads the file again
    assert isinstance(next(iter(log)), Message)


def test_open_logs_unsorted_plain_and_gzip(tmp_path):
    lines = shuffled_lines()
    plain = write(tmp_path / "a.jsonl", *lines)
    packed = write(tmp_path / "b.jsonl.gz", *lines, b"junk", gz=True)
    for path in (plain, packed):
        with same_as_read_logs([path]) as log:
            assert list(log) == list(log)
    same_as_read_logs([plain, packed, plain])  # equal times: path order, then line order


def test_open_logs_gzip_in_order_and_truncated(tmp_path):
    lines = [line(messageId=str(i), timestamp=f"2026-01-01T00:00:{i:02d}Z") for i in range(50)]
    same_as_read_logs([write(tmp_path / "a.jsonl.gz", *lines, gz=True)])
    data = gzip.compress(b"\n".join(shuffled_lines(400)) + b"\n")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    log = same_as_read_logs([cut])
    assert log.skipped[-1].field == "file" and 0 < log.count < 400


def test_open_logs_csv_with_mapping_quotes_and_line_ends(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"\xef\xbb\xbfuid,ev,ts,price,note,tz\r\n"
        b"u1,Order Completed,2026-01-02T00:00:00Z,250,\"two\nlines\",Europe/Paris\r\n"
        b"u2,Viewed,2026-01-01T00:00:00Z,007,\xff\xfe bad bytes,\r\n"
        b",,,,,\r\n"
        b"u3,Viewed,not a time,1,,\r"  # a lone \r ends a line too
        b"u4,Viewed,2026-01-01T00:00:00Z,1e3,\"x,y\",\r"
        b"u5,Viewed,2026-01-01T12:00:00Z,1,2,3,4\n"
        b"u6,Viewed,2025-12-31T00:00:00Z,-1.5,\"\"\"quoted\"\"\r\nacross\"\n"
    )
    mapping = parse_mapping("user_id=uid,event=ev,timestamp=ts,timezone=tz")
    log = same_as_read_logs([path], mapping=mapping)
    assert [m.user_id for m in log] == ["u6", "u2", "u4", "u1"]
    assert [(s.line, s.field) for s in log.skipped] == [(6, "timestamp"), (8, "csv")]
    unsorted = write(tmp_path / "u.csv.gz", "userId,event,timestamp", *(f"u{i},E,2026-01-0{9 - i}" for i in range(9)), gz=True)
    same_as_read_logs([unsorted, path], mapping=None)


def test_open_logs_since_until_multi_file(tmp_path):
    a = write(tmp_path / "a.jsonl", *shuffled_lines())
    b = write(tmp_path / "b.csv", "userId,event,timestamp,messageId", "u,E,2026-01-01T00:05:00Z,b1", "u,E,2025-12-31,b2")
    for kw in ({"since": "2026-01-01T00:05:00Z"}, {"until": utc("2026-01-01T00:05:00")},
               {"since": "2026-01-01T00:03:00", "until": "2026-01-01T00:09:00Z"}, {"since": "2030-01-01"}):
        same_as_read_logs([a, b], **kw)
    assert open_logs([a, b], since="2030-01-01").count == 0
    assert list(open_logs([])) == [] and open_logs([]).first is None


def test_open_logs_strict_fails_before_iterating(tmp_path):
    good = write(tmp_path / "a.jsonl", line())
    bad = write(tmp_path / "b.jsonl", line(), b"{")
    with pytest.raises(LogError, match=r"b\.jsonl:2"):
        open_logs([good, bad], strict=True)
    assert gc.isenabled()
    with pytest.raises(LogError, match="cannot open"):
        open_logs([tmp_path / "missing.jsonl"])


def test_open_logs_a_changed_file_is_an_error_not_wrong_messages(tmp_path):
    path = write(tmp_path / "a.jsonl", *shuffled_lines(10))
    log = open_logs([path])
    write(path, b"{}", *shuffled_lines(10))
    with pytest.raises(LogError, match="changed"):
        list(log)
    ordered = write(tmp_path / "b.jsonl", line(messageId="x"), line(messageId="y"))
    log = open_logs([ordered])
    write(ordered, line(messageId="x"))
    with pytest.raises(LogError, match="changed"):
        list(log)


def test_open_logs_progress_and_memory_shape(tmp_path):
    lines = [line(messageId=str(i), properties={"pad": "x" * 300}) for i in range(8000)]
    path = write(tmp_path / "big.jsonl", *lines)
    seen: list[int] = []
    log = open_logs([path], progress=seen.append)
    assert seen[-1] == path.stat().st_size and seen == sorted(seen)
    assert log.count == 8000 and not hasattr(log, "messages")


messageish = st.one_of(
    st.builds(
        lambda i, d, kind: line(messageId=f"m{i}", type=kind, timestamp=f"2026-01-{d:02d}T00:00:00Z"),
        st.integers(0, 5), st.integers(1, 4), st.sampled_from(["track", "identify", "page"]),
    ),
    st.sampled_from([b"", b"junk", b'{"type":', b"\xef\xbb\xbf" + line(), line(userId=...)]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(messageish, max_size=10), min_size=1, max_size=3), st.booleans(), st.booleans())
def test_open_logs_equals_read_logs(tmp_path, files, packed, bounded):
    paths = [write(tmp_path / f"{i}.jsonl", *lines, gz=packed) for i, lines in enumerate(files)]
    same_as_read_logs(paths, **({"since": "2026-01-02", "until": "2026-01-03"} if bounded else {}))
