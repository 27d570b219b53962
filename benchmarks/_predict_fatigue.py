"""The learned frequency cap against the planted truth, in a closed loop.

    .venv/bin/python benchmarks/_predict_fatigue.py --users 4000 --days 84 --seed 1

1. `journeys generate --plant` writes a population whose users have planted fatigue curves
   (engine/dryrun/generate.py, "planted structure"), and the truth: per user and channel p0, k, c,
   u0, u1 and the best weekly cap.
2. The users' features are built from the log by the engine's own `observe`, and `fit_fatigue`
   learns as of the end of the log.
3. Recovery: learned caps beside the planted best caps (mean absolute error, share exact and
   within ±1), beside the best single cap for everyone.
4. Closed loop: a campaign wants to send DEMAND messages a week to every subscriber for WEEKS
   weeks; the cap lets through m a week, evenly spread, so the j-th message of the first week sees
   n = j and later ones n = m. With the planted curves, expected opens and unsubscribes follow
   exactly (a subscriber survives each message with 1 - P(unsubscribe)). Policies: the learned
   per-user caps; the best single fixed cap for everyone, chosen with hindsight over 1..15 on the
   same objective; the planted best caps (the ceiling). The objective is the model's:
   opens - UNSUBSCRIBE_COST * unsubscribes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.dryrun.generate import iter_chunks, parse_start  # noqa: E402
from engine.models.fatigue import FatigueModel, fit_fatigue  # noqa: E402
from engine.models.features import Features, observe  # noqa: E402

CHANNELS = ("push", "email")
DEMAND = 15          # messages a week the campaign would send without a cap
WEEKS = 12
FIXED_CAPS = range(1, 16)


def planted_log(users: int, days: int, seed: int, events: int = 0) -> tuple[bytes, list[dict]]:
    """The planted log's bytes and its truth rows."""
    truth: list[dict] = []
    data = b"".join(iter_chunks(events=events, users=users, seed=seed, days=days, plant=True, truth=truth))
    return data, truth


def features_from_log(lines: Iterable[bytes]) -> dict[str, tuple[Features, ZoneInfo]]:
    """Each identified user's features after the log (events with a userId), and their zone."""
    out: dict[str, list] = {}
    for line in lines:
        m = orjson.loads(line)
        uid = m.get("userId")
        if not uid or m["type"] not in ("track", "page"):
            continue
        name = m.get("event") or "Page Viewed"
        when = parse_start(m["timestamp"])
        slot = out.get(uid)
        if slot is None:
            slot = out[uid] = [None, ZoneInfo(m.get("context", {}).get("timezone") or "UTC")]
        slot[0] = observe(slot[0], name, when, m.get("properties") or {})
    return {u: (f, z) for u, (f, z) in out.items()}


def curve(params: Mapping[str, float], n: int) -> tuple[float, float]:
    """The planted P(open) and P(unsubscribe) of a message that is the n-th of its week."""
    excess = max(0, n - params["c"])
    return params["p_open"] * math.exp(-params["k"] * excess), params["u0"] + params["u1"] * excess


def simulate(params: Mapping[str, float], cap: int, demand: int = DEMAND, weeks: int = WEEKS) -> tuple[float, float]:
    """Expected (opens, unsubscribes) of one subscriber under `cap` (see the module docstring)."""
    m = max(0, min(cap, demand))
    alive, opens, unsubs = 1.0, 0.0, 0.0
    for j in range(m * weeks):
        p, h = curve(params, min(j + 1, m))
        opens += alive * p
        unsubs += alive * h
        alive *= 1.0 - h
    return opens, unsubs


def closed_loop(population: Sequence[Mapping[str, float]], caps: Sequence[int], cost: float) -> dict[str, float]:
    opens = unsubs = 0.0
    for params, cap in zip(population, caps):
        o, u = simulate(params, cap)
        opens += o
        unsubs += u
    return {"opens": opens, "unsubscribes": unsubs, "net": opens - cost * unsubs}


def evaluate(model: FatigueModel, features: Mapping[str, tuple[Features, ZoneInfo]], truth: Sequence[dict],
             channel: str) -> dict[str, float]:
    """Recovery and closed-loop figures for one channel, over the users subscribed to it in the
    planted population (those who unsubscribed during the log included: their cap is still known)."""
    cost = model.unsubscribe_cost
    rows = [r for r in truth if r["fatigue"][channel]["subscribed"]]
    learned = [model.cap(features.get(r["user_id"], (None,))[0], channel, 7.0, 1, 15) for r in rows]
    planted = [r["fatigue"][channel]["best_cap"] for r in rows]
    population = [r["fatigue"][channel] for r in rows]
    fixed = {c: closed_loop(population, [c] * len(rows), cost) for c in FIXED_CAPS}
    best_fixed = max(FIXED_CAPS, key=lambda c: fixed[c]["net"])
    ours = closed_loop(population, learned, cost)
    oracle = closed_loop(population, planted, cost)
    pop_cap = model.population_cap(channel, 1, 15)
    n = len(rows)
    return {
        "users": n,
        "cap_mae": sum(abs(a - b) for a, b in zip(learned, planted)) / n,
        "cap_exact": sum(a == b for a, b in zip(learned, planted)) / n,
        "cap_within_1": sum(abs(a - b) <= 1 for a, b in zip(learned, planted)) / n,
        "fixed_cap": best_fixed,
        "fixed_cap_mae": sum(abs(best_fixed - b) for b in planted) / n,
        "fixed_cap_within_1": sum(abs(best_fixed - b) <= 1 for b in planted) / n,
        "population_cap": pop_cap,
        "learned_opens": ours["opens"], "learned_unsubscribes": ours["unsubscribes"], "learned_net": ours["net"],
        "fixed_opens": fixed[best_fixed]["opens"], "fixed_unsubscribes": fixed[best_fixed]["unsubscribes"],
        "fixed_net": fixed[best_fixed]["net"],
        "oracle_opens": oracle["opens"], "oracle_unsubscribes": oracle["unsubscribes"], "oracle_net": oracle["net"],
    }


def run(users: int, days: int, seed: int, events: int = 0) -> dict[str, object]:
    began = time.perf_counter()
    data, truth = planted_log(users, days, seed, events)
    generated = time.perf_counter()
    features = features_from_log(data.splitlines())
    built = time.perf_counter()
    as_of = max(f.last for f, _ in features.values())
    as_of = max([as_of] + [ts[-1] for f, _ in features.values() for ts in f.messages.values()])
    rows = sorted((u, f, z) for u, (f, z) in features.items())
    model = fit_fatigue(rows, as_of)
    fitted = time.perf_counter()
    sample = [f for _, f, _ in rows[:2000]]
    t0 = time.perf_counter()
    for f in sample:
        model.cap(f, "push", 7.0, 1, 15)
    score_us = (time.perf_counter() - t0) / len(sample) * 1e6
    result: dict[str, object] = {
        "events": data.count(b"\n"), "users": users, "days": days, "seed": seed,
        "seconds": {"generate": round(generated - began, 2), "features": round(built - generated, 2),
                    "fit": round(fitted - built, 2)},
        "score_us": round(score_us, 1), "status": model.status, "reason": model.reason, "evidence": model.evidence,
        "metrics": dict(model.metrics),
    }
    for channel in CHANNELS:
        result[channel] = evaluate(model, features, truth, channel)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=4000)
    p.add_argument("--days", type=int, default=84)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--events", type=int, default=0, help="extra browsing budget (see journeys generate --plant)")
    args = p.parse_args(argv)
    result = run(args.users, args.days, args.seed, args.events)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
