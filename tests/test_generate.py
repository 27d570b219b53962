"""The synthetic event-log generator (engine/dryrun/generate.py): determinism, Segment shape, the mix of
events the shop's journeys need, and the committed sample (examples/shop/events)."""

from __future__ import annotations

import collections
import gzip
import io
import re
import shlex
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest

from engine.dryrun.generate import Summary, generate, iter_chunks, main
from tests.conftest import SHOP

SAMPLE = SHOP / "events" / "sample.jsonl"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TYPES = {"track", "page", "identify", "alias"}


def _bytes(**options) -> bytes:
    return b"".join(iter_chunks(**options))


@pytest.fixture(scope="module")
def small() -> bytes:
    return _bytes(events=6000, users=600, seed=7)


@pytest.fixture(scope="module")
def messages(small) -> list[dict]:
    return [orjson.loads(line) for line in small.splitlines()]


def _when(m: dict) -> datetime:
    return datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))


def _name(m: dict) -> str | None:
    return m.get("event") or ("Page Viewed" if m["type"] == "page" else None)


def test_same_seed_same_bytes_other_seed_other_bytes(small):
    assert _bytes(events=6000, users=600, seed=7) == small
    assert _bytes(events=6000, users=600, seed=8) != small
    assert _bytes(events=6000, users=600, seed=7, days=14) != small


def test_every_line_is_a_segment_message(small, messages):
    assert small.endswith(b"\n") and b"\n\n" not in small
    ids = set()
    start = datetime(2026, 3, 2, tzinfo=timezone.utc)
    previous = ""
    for m in messages:
        assert m["type"] in TYPES
        assert TS.match(m["timestamp"]), m["timestamp"]
        assert m["timestamp"] >= previous          # sorted (fixed-width ISO strings sort as times)
        previous = m["timestamp"]
        assert start <= _when(m) < start + timedelta(days=28)
        assert m["messageId"] not in ids
        ids.add(m["messageId"])
        assert m.get("userId") or m.get("anonymousId")
        ZoneInfo(m["context"]["timezone"])         # a real IANA zone
        if m["type"] == "track":
            assert isinstance(m["event"], str) and isinstance(m["properties"], dict)
        elif m["type"] == "page":
            assert m["properties"]["category"] and m["properties"]["path"].startswith("/")
        elif m["type"] == "identify":
            assert m["userId"] and m["anonymousId"] and "@" in m["traits"]["email"]
            assert m["traits"]["first_name"]
        else:
            assert m["previousId"] and m["userId"]
    assert all(m["messageId"].startswith("g7-") for m in messages)


def test_properties_the_journeys_read(messages):
    by = collections.defaultdict(list)
    for m in messages:
        by[_name(m) or m["type"]].append(m.get("properties"))
    assert {"product_id", "name", "category", "price"} <= set(by["Product Viewed"][0])
    assert {"product_id", "name", "price"} <= set(by["Product Added"][0])
    assert {"revenue", "cart_id"} <= set(by["Checkout Started"][0])
    coupons = {p["coupon"] for p in by["Order Completed"]}
    assert None in coupons and len(coupons) > 1
    assert all(p["order_id"] and p["reason"] for p in by["Payment Failed"])
    assert {"discount"} <= {p["campaign_type"] for p in by["Push Opened"]}
    assert {p["channel"] for p in by["Unsubscribed"]} == {"email"}
    assert {"events", "home"} <= {p["category"] for p in by["Page Viewed"]}


def test_size_is_about_what_was_asked():
    summary = Summary(0, 0)
    data = _bytes(events=20000, users=2000, seed=3, summary=summary)
    lines = data.count(b"\n")
    assert lines == summary.events == sum(summary.counts.values())
    assert abs(lines - 20000) < 20000 * 0.03
    assert summary.users == 2000
    actors = {orjson.loads(line).get("anonymousId") for line in data.splitlines()}
    assert len(actors) > 1900                      # (nearly) every user shows up


def test_anonymous_history_then_identify(messages):
    anonymous_first: set[str] = set()
    stitched = 0
    for m in messages:
        if "userId" not in m:
            anonymous_first.add(m["anonymousId"])
        elif m["type"] == "identify" and m["anonymousId"] in anonymous_first:
            stitched += 1
    assert stitched >= 10
    # the same anonymousId appears with a userId afterwards
    known = {m["anonymousId"] for m in messages if m.get("userId") and m.get("anonymousId")}
    assert len(known & anonymous_first) >= 10
    assert any(m["type"] == "alias" for m in messages)
    # some identify before anything else
    first_seen: dict[str, dict] = {}
    for m in messages:
        first_seen.setdefault(m.get("anonymousId") or m["userId"], m)
    assert any(m["type"] == "identify" for m in first_seen.values())


def test_every_event_the_shop_journeys_use_occurs(messages):
    used = set()
    for path in (SHOP / "journeys").glob("*.journey"):
        used |= set(re.findall(r'event "([^"]+)"', path.read_text()))
    assert {"Product Viewed", "Order Completed", "Page Viewed", "Push Dismissed"} <= used
    present = collections.Counter(_name(m) for m in messages)
    assert not used - set(present), f"never generated: {sorted(used - set(present))}"
    # a funnel: many views, fewer adds, fewer checkouts, fewer orders
    assert present["Product Viewed"] > present["Product Added"] > present["Checkout Started"] \
        > present["Order Completed"] > present["Payment Failed"] > 0
    for extra in ("Email Opened", "Email Clicked", "Unsubscribed"):
        assert present[extra] > 0


def test_timezones_around_the_world_including_dst(messages):
    zones = {m["context"]["timezone"] for m in messages}
    assert {"Europe/Berlin", "America/New_York", "Europe/Istanbul", "Asia/Tokyo",
            "Australia/Sydney", "America/Sao_Paulo", "UTC"} <= zones
    start, end = datetime(2026, 3, 2, tzinfo=timezone.utc), datetime(2026, 3, 30, tzinfo=timezone.utc)
    changing = {z for z in zones if start.astimezone(ZoneInfo(z)).utcoffset() != end.astimezone(ZoneInfo(z)).utcoffset()}
    assert {"Europe/Berlin", "America/New_York"} <= changing
    # evening activity, some after 21:00 local, and busier weekends
    hours = collections.Counter()
    weekdays = collections.Counter()
    for m in messages:
        if m["type"] == "page":
            local = _when(m).astimezone(ZoneInfo(m["context"]["timezone"]))
            hours[local.hour] += 1
            weekdays[local.weekday()] += 1
    assert sum(hours[h] for h in (21, 22, 23)) > sum(hours[h] for h in (2, 3, 4, 5)) * 5
    assert hours[20] > hours[9]
    assert min(weekdays[5], weekdays[6]) > max(weekdays[d] for d in range(5)) * 0.9


def test_gzip_output_and_stdout(tmp_path, capsysbinary):
    plain, packed = tmp_path / "e.jsonl", tmp_path / "e.jsonl.gz"
    assert main(["--events", "2000", "--users", "200", "--seed", "5", "--out", str(plain), "-q"]) == 0
    assert main(["--events", "2000", "--users", "200", "--seed", "5", "--out", str(packed), "-q"]) == 0
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    with gzip.open(packed, "rb") as f:
        assert f.read() == plain.read_bytes()
    first = packed.read_bytes()
    main(["--events", "2000", "--users", "200", "--seed", "5", "--out", str(packed), "-q"])
    assert packed.read_bytes() == first            # no mtime or name in the gzip header
    assert main(["--events", "2000", "--users", "200", "--seed", "5"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == plain.read_bytes()
    assert b"wrote" in captured.err


def test_generate_to_a_file_object_and_start_option():
    buf = io.BytesIO()
    summary = generate(buf, events=1000, users=100, seed=2, start="2025-10-20", days=7)
    lines = buf.getvalue().splitlines()
    assert len(lines) == summary.events
    first, last = orjson.loads(lines[0])["timestamp"], orjson.loads(lines[-1])["timestamp"]
    assert "2025-10-20T" <= first and last < "2025-10-27T"


def test_bad_options_are_usage_errors():
    for argv in (["--users", "0"], ["--days", "0"], ["--events", "-1"], ["--start", "yesterday"]):
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", "/dev/null"])
        assert e.value.code == 2


# ---------------------------------------------------------------- the committed sample


def test_sample_is_what_its_readme_command_writes():
    readme = (SAMPLE.parent / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python -m engine.dryrun.generate "))
    argv = shlex.split(command)[3:]
    out = argv.index("--out")
    assert argv[out + 1] == "examples/shop/events/sample.jsonl"
    del argv[out:out + 2]
    options = {argv[i].lstrip("-"): int(argv[i + 1]) for i in range(0, len(argv), 2)}
    assert _bytes(**options) == SAMPLE.read_bytes(), \
        "the generator changed: regenerate the sample with the command in its README"
    assert SAMPLE.stat().st_size < 4_000_000


def test_sample_gives_every_journey_and_segment_someone():
    messages = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines()]
    user_of: dict[str, str] = {}
    tz: dict[str, str] = {}
    for m in messages:
        if m["type"] == "identify":
            user_of[m["anonymousId"]] = m["userId"]
            if "timezone" in m["traits"]:
                tz[m["userId"]] = m["traits"]["timezone"]
        elif m["type"] == "alias":
            user_of[m["previousId"]] = m["userId"]
    events = collections.defaultdict(list)      # actor -> [(time, name, properties)]
    for m in messages:
        if _name(m):
            actor = m.get("userId") or user_of.get(m["anonymousId"], m["anonymousId"])
            events[actor].append((_when(m), _name(m), m["properties"]))

    def local(actor, t):
        return t.astimezone(ZoneInfo(tz.get(actor, "Europe/Istanbul")))

    def most_in(evs, days):
        best, window = 0, collections.deque()
        for t in evs:
            window.append(t)
            while window[0] <= t - timedelta(days=days):
                window.popleft()
            best = max(best, len(window))
        return best

    members = collections.Counter()
    for actor, evs in events.items():
        def times(name, where=lambda p: True):
            return [t for t, n, p in evs if n == name and where(p)]
        orders = [p for t, n, p in evs if n == "Order Completed"]
        if most_in(times("Push Dismissed"), 14) >= 3 and not times("Push Opened"):
            members["push_fatigued"] += 1
        if most_in(times("Page Viewed", lambda p: p["category"] == "events"), 7) >= 2 and not times("Checkout Started"):
            members["event_page_lookers"] += 1
        if sum(local(actor, t).hour >= 21 for t in times("Order Completed")) >= 3:
            members["night_shoppers"] += 1
        if sum(local(actor, t).weekday() >= 5 for t in times("Product Viewed")) >= 5 \
                and len(times("Push Opened", lambda p: p["campaign_type"] == "discount")) >= 2:
            members["weekend_discount_lovers"] += 1
        if len(times("Product Added", lambda p: p["price"] >= 200)) >= 2 and all(p["coupon"] for p in orders):
            members["promo_dependent"] += 1
        if most_in(times("Product Viewed"), 7) >= 5:
            members["hot_browsers"] += 1
        views, adds = times("Product Viewed"), times("Product Added")
        if any(not any(v < a <= v + timedelta(hours=1) for a in adds) for v in views):
            members["browse abandonment"] += 1
        checkouts, completed = times("Checkout Started"), times("Order Completed")
        if any(not any(c < o <= c + timedelta(days=2) for o in completed) for c in checkouts):
            members["checkout abandonment"] += 1
        if orders:
            members["first purchase"] += 1
        failed = {p["order_id"] for t, n, p in evs if n == "Payment Failed"}
        if failed:
            members["payment failure"] += 1
            if failed & {p["order_id"] for p in orders}:
                members["retried after a failure"] += 1
        for monday in (datetime(2026, 3, d) for d in (9, 16, 23)):
            ten = monday.replace(hour=10, tzinfo=ZoneInfo(tz.get(actor, "Europe/Istanbul")))
            if any(ten - timedelta(days=7) <= v < ten for v in views):
                members["monday picks"] += 1
                break
    expected = ("push_fatigued", "event_page_lookers", "night_shoppers", "weekend_discount_lovers",
                "promo_dependent", "hot_browsers", "browse abandonment", "checkout abandonment",
                "first purchase", "payment failure", "retried after a failure", "monday picks")
    assert not [k for k in expected if members[k] < 3], members
