"""`journeys generate --plant --truth FILE`: the planted population's log shows what its truth file
says — purchase cycles, preferred hours, tastes and co-purchases, and fatigue curves — and the
ordinary log does not change."""

from __future__ import annotations

import collections
import hashlib
import math
import statistics
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest

from engine.dryrun.generate import (CLUSTER_SIZE, N_PRODUCTS, _timing, iter_chunks, main, planted_best_cap)

OPTIONS = dict(events=0, users=500, seed=11, days=84)


def _planted(**options) -> tuple[bytes, list[dict]]:
    truth: list[dict] = []
    return b"".join(iter_chunks(plant=True, truth=truth, **options)), truth


@pytest.fixture(scope="module")
def planted():
    data, truth = _planted(**OPTIONS)
    messages = [orjson.loads(line) for line in data.splitlines()]
    return data, {r["user_id"]: r for r in truth}, messages


def _when(m: dict) -> datetime:
    return datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))


def _local_hours(t: datetime, zone: str) -> float:
    local = t.astimezone(ZoneInfo(zone))
    return local.hour + local.minute / 60


def _hour_distance(a: float, b: float) -> float:
    d = abs(a - b) % 24
    return min(d, 24 - d)


def test_same_arguments_same_bytes_and_truth(planted, tmp_path):
    data, truth, _ = planted
    again, truth_again = _planted(**OPTIONS)
    assert again == data and {r["user_id"]: r for r in truth_again} == truth
    other, _ = _planted(**{**OPTIONS, "seed": 12})
    assert other != data
    # the command line writes the same log and the truth as JSON lines, in user order
    out, tfile = tmp_path / "p.jsonl", tmp_path / "truth.jsonl"
    assert main(["--users", "500", "--events", "0", "--seed", "11", "--days", "84", "--truth", str(tfile),
                 "--out", str(out), "-q"]) == 0
    assert out.read_bytes() == data
    rows = [orjson.loads(line) for line in tfile.read_bytes().splitlines()]
    assert [r["user_id"] for r in rows] == sorted(truth) and rows[0] == truth[rows[0]["user_id"]]


def test_ordinary_log_is_unchanged_by_the_new_option():
    plain = b"".join(iter_chunks(events=6000, users=600, seed=7))
    assert b"".join(iter_chunks(events=6000, users=600, seed=7, plant=False)) == plain
    # the bytes the generator wrote for these options before --plant existed
    assert hashlib.sha256(plain).hexdigest() == "6b8678dd07b30defc7a989be14636254cb5ac81d653edfa9c1c2f1bac09086ad"
    assert b"Delivered" not in plain


def test_every_user_identified_in_their_zone(planted):
    _, truth, messages = planted
    identified = {m["userId"]: m for m in messages if m["type"] == "identify"}
    assert set(identified) == set(truth)
    for uid, m in identified.items():
        assert m["traits"]["timezone"] == m["context"]["timezone"] == truth[uid]["timezone"]


def test_purchase_cycles_and_churn(planted):
    _, truth, messages = planted
    orders = collections.defaultdict(list)
    for m in messages:
        if m.get("event") == "Order Completed":
            orders[m["userId"]].append(_when(m))
    planted_cycles, observed = [], []
    for uid, times in orders.items():
        churn = truth[uid]["churn_at"]
        if churn:
            assert max(times) < _when({"timestamp": churn}) + timedelta(hours=1)   # nothing after the lapse
        if len(times) >= 5:
            gaps = [(b - a).total_seconds() / 86400 for a, b in zip(times, times[1:])]
            planted_cycles.append(math.log(truth[uid]["cycle_days"]))
            observed.append(math.log(statistics.mean(gaps)))
    assert len(observed) > 100
    assert statistics.correlation(planted_cycles, observed) > 0.85
    churned = [r for r in truth.values() if r["churn_at"]]
    assert 0.15 * len(truth) < len(churned) < 0.5 * len(truth)


def test_preferred_hours_show_in_sessions_and_opens(planted):
    _, truth, messages = planted
    near = collections.Counter()
    for m in messages:
        uid = m.get("userId")
        if not uid or m["type"] not in ("page", "track"):
            continue
        kind = "page" if m["type"] == "page" else ("open" if m["event"].endswith("Opened") else
                                                   "send" if m["event"].endswith("Delivered") else None)
        if kind:
            r = truth[uid]
            d = _hour_distance(_local_hours(_when(m), r["timezone"]), r["best_hour_local"] + 0.5)
            near[kind, d <= 1.5] += 1
    share = {k: near[k, True] / (near[k, True] + near[k, False]) for k in ("page", "open", "send")}
    assert share["page"] > 0.7                       # sessions gather around the preferred hour
    assert share["open"] > share["send"] * 1.3       # opens more than the sends that caused them


def test_tastes_and_co_purchases(planted):
    _, truth, messages = planted
    in_favourites = total = 0
    baskets = 0
    for m in messages:
        if m.get("event") == "Product Viewed":
            total += 1
            in_favourites += m["properties"]["category"] in truth[m["userId"]]["tastes"]
        elif m.get("event") == "Order Completed" and len(m["properties"]["products"]) > 1:
            baskets += 1
            ids = [int(p["product_id"][1:]) - 1000 for p in m["properties"]["products"]]
            assert len({i % 7 for i in ids}) == 1                             # one category
            cluster = {(i // 7) // CLUSTER_SIZE for i in ids}
            assert len(cluster) == 1 or max(cluster) >= (N_PRODUCTS // 7) // CLUSTER_SIZE - 1  # one cluster
    assert in_favourites / total > 0.7
    assert baskets > 100


def _message_outcomes(messages, truth):
    """Per delivered message: (user, channel, n in the last 7 days, opened, unsubscribed, local hour),
    matched by campaign_id (the planted log carries it on deliveries, opens and unsubscribes)."""
    sent = collections.defaultdict(list)
    reacted = collections.defaultdict(set)
    for m in messages:
        name = m.get("event") or ""
        if name.endswith("Delivered"):
            sent[m["userId"], name.split()[0].lower()].append((_when(m), m["properties"]["campaign_id"]))
        elif name.endswith("Opened") or name == "Unsubscribed":
            reacted[m["userId"], m["properties"]["campaign_id"]].add("unsub" if name == "Unsubscribed" else "open")
    for (uid, channel), items in sent.items():
        for i, (t, cid) in enumerate(items):
            n = sum(1 for u, _ in items[:i + 1] if u > t - timedelta(days=7))
            yield uid, channel, n, "open" in reacted[uid, cid], "unsub" in reacted[uid, cid], \
                _local_hours(t, truth[uid]["timezone"])


def test_open_rate_follows_the_planted_fatigue_curve(planted):
    _, truth, messages = planted
    observed = collections.Counter()
    expected = collections.defaultdict(float)
    below = collections.Counter()
    for uid, channel, n, opened, unsub, hour in _message_outcomes(messages, truth):
        f = truth[uid]["fatigue"][channel]
        excess = max(0, n - f["c"])
        p = f["p0"] * _timing(hour, truth[uid]["best_hour_local"]) * math.exp(-f["k"] * excess)
        b = min(n, 12)
        observed[b, "n"] += 1
        observed[b, "open"] += opened
        expected[b] += p
        side = "below" if excess == 0 else ("above" if excess >= 3 else None)
        if side:
            below[side, "n"] += 1
            below[side, "open"] += opened
            below[side, "unsub"] += unsub
    for b in range(1, 13):
        n = observed[b, "n"]
        assert n > 200
        mean = expected[b] / n
        assert abs(observed[b, "open"] / n - mean) < 4 * math.sqrt(mean * (1 - mean) / n) + 0.01, b
    rate = {s: below[s, "open"] / below[s, "n"] for s in ("below", "above")}
    assert rate["above"] < rate["below"] / 2        # fatigue: far fewer opens past the tolerance
    unsub = {s: below[s, "unsub"] / below[s, "n"] for s in ("below", "above")}
    assert unsub["above"] > 3 * unsub["below"]      # and more unsubscribes


def test_truth_best_cap_is_the_documented_argmax(planted):
    _, truth, _ = planted
    for r in list(truth.values())[:100]:
        for channel, f in r["fatigue"].items():
            assert r["best_cap"][channel] == f["best_cap"] == planted_best_cap(f["p_open"], f["k"], f["c"], f["u0"], f["u1"])
            assert 1 <= f["best_cap"] <= 15
    caps = collections.Counter(f["best_cap"] for r in truth.values() for f in r["fatigue"].values())
    assert len(caps) >= 8                            # caps differ from user to user


def test_no_deliveries_after_an_unsubscribe(planted):
    _, truth, messages = planted
    gone = {}
    for m in messages:
        if m.get("event") == "Unsubscribed":
            gone[m["userId"], m["properties"]["channel"]] = _when(m)
            assert truth[m["userId"]]["fatigue"][m["properties"]["channel"]]["unsubscribed_at"] == m["timestamp"]
    assert gone
    for m in messages:
        name = m.get("event") or ""
        if name.endswith("Delivered"):
            key = (m["userId"], name.split()[0].lower())
            assert key not in gone or _when(m) < gone[key]
    start = datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert all(start <= _when(m) < start + timedelta(days=84) for m in messages)
