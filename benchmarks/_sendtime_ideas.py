"""Send-time ideas against "user's mode hour" on real logs: a negative result, kept reproducible.

    .venv/bin/python benchmarks/_sendtime_ideas.py                       # all three logs, about 45 s
    .venv/bin/python benchmarks/_sendtime_ideas.py --logs ml100k,instacart

Why this exists. Issue 19 asks the best-send-time model to beat "user's mode hour" on a real log.
The engine's model (engine.models.sendtime: a decayed, smoothed histogram of the user's local
hours shrunk toward the population's, κ learned on an internal split) ties it on MovieLens 100k,
MovieLens 1M and Instacart (docs/performance.md, "Predictions"). This script records the ideas
tried to close that gap, each judged the same way, so that the next attempt starts from the numbers
rather than from the same ideas:

- current model: the engine's own `evaluate_sendtime` (test) and `fit_sendtime` (its internal
  split's hit rate), nothing rebuilt;
- 1. first passage: the user's hour distribution turned into the distribution of the hour of their
  *first* activity after the cutoff, given their recent rate (sessions per day over a window of
  1/7/28/90 days, scaled by 0-8): hours that come round soon after the cutoff gain;
- 3a. half-life (15 d … none) × κ (the engine fixes 60 days and learns κ);
- 3b. the engine's model or the user's mode, whichever hit more on the internal split;
- smoothing width (the engine's kernel, none, Gaussian σ 0.5-3 h) × κ;
- shrinking toward learned hour profiles (a mixture of 2/4/8 multinomials fitted by EM on the
  population's per-user histograms) instead of toward the one population distribution, × κ;
- sessions after ≥ G h of silence (3/8/16/24 h) weigh 1, the others w (0-0.5), × κ: "when they
  come back" rather than "when they are on";
- 2. an upper bound, not a model: sessions on the weekday of the next activity (known from the
  answer) weigh 1, the others w (all-days included), × κ: what knowing the weekday would be worth;
- ceiling, not a model: every fixed setting of the rows above (1, 3a, smoothing, profiles, silence),
  the one that scores best *on the test answers themselves* — the most any of these grids could
  show, and more than an honest choice can.

Every model row chooses its parameters per cutoff on the internal split only, as the engine does:
the users active in the `validation_days` (14) before the cutoff, judged on the hour of their first
session start there from what came before. The test: each real log replayed (benchmarks/_real_logs.py,
the cutoffs and 14-day horizons of benchmarks/_predict_items.py), a hit when the predicted local
hour is within ±1 h (circularly) of the local hour of the user's first event after the cutoff;
users without history get the population's choice. Each row is paired with "user's mode hour" on
the same (user, cutoff) pairs: pairs only the row hits, only the user's mode hits, and the exact
two-sided McNemar p (binomial test of the discordant pairs, as _predict_items does). The user's mode
is recomputed here and checked pair by pair against the engine's baseline.

The logs hold no engagements (no messages were sent): the hours are session starts (30 min of
silence), as the engine sees them. Deterministic (EM seeded); figures and the command in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.models.sendtime import (DEFAULTS, FALLBACK_HOUR, KERNEL, PRIOR_GRID, SESSION_GRID,  # noqa: E402
                                    _smooth, _window, evaluate_sendtime, fit_sendtime)

import _predict_items as items  # noqa: E402
import _real_logs as real  # noqa: E402

DAY, HOUR = 86400, 3600
UTC = timezone.utc
HORIZON_DAYS = 14.0
VALIDATION_DAYS = float(DEFAULTS["validation_days"])
HALF_LIFE = float(DEFAULTS["half_life_days"])
# the engine's grid as it acts: with no engagements, κ and the session weight sw only matter as κ/sw
KAPPAS = tuple(sorted({k / s for k in PRIOR_GRID for s in SESSION_GRID}))
HALF_LIVES = (60.0, 15.0, 30.0, 120.0, 365.0, None)  # None: no decay
SIGMAS = ("engine", 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)   # "engine": its (0.2, 0.6, 0.2) kernel
PROFILES = (2, 4, 8)
GAPS, GAP_WEIGHTS = (3, 8, 16, 24), (0.0, 0.1, 0.25, 0.5)
RATE_WINDOWS, RATE_SCALES = (1, 7, 28, 90), (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
OTHER_DAYS = (1.0, 0.3, 0.1, 0.0)


def _movielens_100k() -> Any:
    folder = items.movielens_dir()
    return items.movielens_100k_log(folder) if folder else real.Unavailable("MovieLens 100k: recbole wheel unavailable")


# the logs, loaders and cutoffs of _predict_items.real_logs (14-day horizons)
LOGS: dict[str, tuple[str, Callable[[], Any], list[int]]] = {
    "ml100k": ("MovieLens 100k", _movielens_100k, items._cutoffs(datetime(1997, 10, 1, tzinfo=UTC), 14, 13)),
    "ml1m": ("MovieLens 1M", real.movielens_1m, items._cutoffs(datetime(2000, 6, 1, tzinfo=UTC), 28, 13)),
    "instacart": ("Instacart", real.instacart, [real.INSTACART_START + d * DAY for d in range(56, 337, 28)]),
}

_LOCAL: dict[tuple[int, Any], int] = {}


def _local(t: int, zone: Any) -> int:
    """Local seconds: t plus the zone's UTC offset then (so // HOUR % 24 is the local hour)."""
    v = _LOCAL.get((t, zone))
    if v is None:
        v = _LOCAL[(t, zone)] = t + int(datetime.fromtimestamp(t, zone or UTC).utcoffset().total_seconds())
    return v


def hits(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    d = np.abs(np.asarray(pred) - truth) % 24
    return np.minimum(d, 24 - d) <= 1


# ---------------------------------------------------------------------------- one split

@dataclass
class Split:
    """The users judged as of `at` (their sessions up to then, flattened) and the population then."""

    at: int
    users: list[str]
    truth: np.ndarray      # local hour of the next activity
    truth_day: np.ndarray  # its local day number (for the weekday bound)
    wait: np.ndarray       # seconds from `at` to it
    now: np.ndarray        # local seconds at `at`
    history: np.ndarray    # judged user has a session before `at`
    idx: np.ndarray        # flattened sessions: judged user index, local hour, age (s), local day, gap before (s)
    hour: np.ndarray
    age: np.ndarray
    day: np.ndarray
    gap: np.ndarray
    pop_hour: np.ndarray   # every user's sessions up to `at`
    pop_age: np.ndarray
    pop_rows: np.ndarray   # every user's decayed (engine half-life) hour histogram, for the profiles
    mode: np.ndarray       # user's mode hour (the engine's baseline rule), global mode without history
    global_mode: int

    @property
    def n(self) -> int:
        return len(self.users)


def make_split(population: list[tuple[str, Any, Any]], at: int, truth: dict[str, int]) -> Split:
    users, tr, trd, wait, now, hist = [], [], [], [], [], []
    idx, hour, age, day, gap, modes = [], [], [], [], [], []
    pop_hour, pop_age, pop_rows = [], [], []
    for u, f, z in population:
        ts = np.array([t for t in (f.sessions if f is not None else ()) if t <= at], dtype=np.int64)
        loc = np.array([_local(int(t), z) for t in ts], dtype=np.int64)
        h = (loc // HOUR) % 24
        if len(ts):
            pop_hour.append(h)
            pop_age.append(at - ts)
            row = np.zeros(24)
            np.add.at(row, h, 0.5 ** ((at - ts) / (HALF_LIFE * DAY)))
            pop_rows.append(row)
        if u not in truth:
            continue
        i = len(users)
        users.append(u)
        t_loc = _local(truth[u], z)
        tr.append((t_loc // HOUR) % 24)
        trd.append(t_loc // DAY)
        wait.append(truth[u] - at)
        now.append(_local(at, z))
        hist.append(len(ts) > 0)
        idx.append(np.full(len(ts), i))
        hour.append(h)
        age.append(at - ts)
        day.append(loc // DAY)
        gap.append(np.diff(np.concatenate([[-10 ** 12], ts])))
        counts: dict[int, list[int]] = {}
        for hh, t in zip(h.tolist(), ts.tolist()):
            c = counts.setdefault(hh, [0, 0])
            c[0] += 1
            c[1] = max(c[1], t)
        modes.append(max(counts, key=lambda k: (counts[k][0], counts[k][1])) if counts else -1)

    def cat(xs: list[np.ndarray], dtype: Any = np.int64) -> np.ndarray:
        return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)

    ph = cat(pop_hour)
    gm = int(np.argmax(np.bincount(ph, minlength=24))) if len(ph) else FALLBACK_HOUR
    return Split(at, users, np.array(tr, dtype=np.int64), np.array(trd, dtype=np.int64), np.array(wait, float),
                 np.array(now, dtype=np.int64), np.array(hist, bool), cat(idx), cat(hour), cat(age, float),
                 cat(day), cat(gap, float), ph, cat(pop_age, float),
                 np.array(pop_rows) if pop_rows else np.zeros((0, 24)),
                 np.array([gm if m < 0 else m for m in modes], dtype=np.int64), gm)


def internal_truth(population: list[tuple[str, Any, Any]], start: int, end: int) -> dict[str, int]:
    """The engine's internal split: each user's first session start in (start, end]."""
    out = {}
    for u, f, _ in population:
        first = [t for t in (f.sessions if f is not None else ()) if start < t <= end]
        if first:
            out[u] = min(first)
    return out


# ---------------------------------------------------------------------------- the pieces of the ideas

def histograms(s: Split, half_life: float | None = HALF_LIFE, weight: np.ndarray | None = None) -> np.ndarray:
    w = np.ones(len(s.age)) if half_life is None else 0.5 ** (s.age / (half_life * DAY))
    if weight is not None:
        w = w * weight
    out = np.zeros((s.n, 24))
    np.add.at(out, (s.idx, s.hour), w)
    return out


def population_prior(s: Split, half_life: float | None = HALF_LIFE) -> np.ndarray:
    """The population's distribution as the engine builds it for activity (`_population`): every
    session, decayed, pooled, smoothed, never zero."""
    w = np.ones(len(s.pop_age)) if half_life is None else 0.5 ** (s.pop_age / (half_life * DAY))
    total = np.bincount(s.pop_hour, weights=w, minlength=24)
    p = _smooth(total) + 1e-3 * max(float(total.sum()), 1.0)
    return p / p.sum()


def best_hours(user: np.ndarray, prior: np.ndarray, kappa: float) -> np.ndarray:
    """The hour whose ±1 h window holds the most of user + κ·prior (the engine's `best_hour`)."""
    return np.argmax(_window(user + kappa * prior), axis=1)


def kernel(sigma: Any) -> np.ndarray:
    if sigma == "engine":
        k = np.zeros(24)
        k[0], k[1], k[-1] = KERNEL[1], KERNEL[2], KERNEL[0]
        return k
    if sigma == 0:
        return np.eye(24)[0]
    d = np.minimum(np.arange(24), 24 - np.arange(24))
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum()


def convolve(h: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.real(np.fft.ifft(np.fft.fft(h, axis=1) * np.fft.fft(k)[None, :], axis=1))


def em_profiles(rows: np.ndarray, k: int, iters: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """A mixture of k multinomials over the 24 hours, fitted by EM to the users' histograms."""
    rows = rows[rows.sum(1) > 0]
    if len(rows) < 5 * k:
        return None
    rng = np.random.default_rng(seed)
    pi = np.full(k, 1 / k)
    phi = 0.5 * rng.dirichlet(np.full(24, 5.0), k) + 0.5 * (rows.sum(0) / rows.sum())[None, :]
    for _ in range(iters):
        r = _responsibilities(rows, pi, phi)
        pi = r.mean(0) + 1e-9
        pi /= pi.sum()
        phi = r.T @ rows + 0.1
        phi /= phi.sum(1, keepdims=True)
    return pi, phi


def _responsibilities(h: np.ndarray, pi: np.ndarray, phi: np.ndarray) -> np.ndarray:
    ll = h @ np.log(phi.T + 1e-12) + np.log(pi)[None, :]
    ll -= ll.max(1, keepdims=True)
    r = np.exp(ll)
    return r / r.sum(1, keepdims=True)


def rates(s: Split, window_days: float) -> np.ndarray:
    """Sessions per day over the last `window_days` (or since the user's oldest kept session)."""
    recent = np.bincount(s.idx, weights=(s.age <= window_days * DAY).astype(float), minlength=s.n)
    oldest = np.zeros(s.n)
    np.maximum.at(oldest, s.idx, s.age)
    return recent / np.minimum(window_days, np.maximum(oldest / DAY, 1.0))


def first_passage(p: np.ndarray, rate: np.ndarray, now: np.ndarray, days: float = HORIZON_DAYS) -> np.ndarray:
    """From each user's hour distribution `p` and rate (per day), the distribution of the local hour
    of their first activity after `now` (a Poisson process with hourly intensity rate·p(hour))."""
    n, steps = p.shape[0], int(24 * days)
    hours = ((now // HOUR) % 24)[:, None] + np.arange(steps)[None, :]
    hours %= 24
    x = np.maximum(rate, 1e-6)[:, None] * p[np.arange(n)[:, None], hours]
    x[:, 0] *= 1 - (now % HOUR) / HOUR          # only the rest of the current hour
    before = np.cumsum(x, 1) - x
    first = np.exp(-before) * -np.expm1(-x)
    out = np.zeros((n, 24))
    np.add.at(out, (np.repeat(np.arange(n), steps), hours.ravel()), first.ravel())
    return out / np.maximum(out.sum(1, keepdims=True), 1e-300)


# ---------------------------------------------------------------------------- the ideas: setting → hits

Grid = dict[Any, np.ndarray]


def half_life_grid(s: Split) -> Grid:
    out = {}
    for hl in HALF_LIVES:
        h, p = _smooth(histograms(s, hl)), population_prior(s, hl or HALF_LIFE)
        for k in KAPPAS:
            out[(hl, k)] = hits(best_hours(h, p, k), s.truth)
    return out


def smoothing_grid(s: Split) -> Grid:
    h, p = histograms(s), population_prior(s)
    out = {}
    for sigma in SIGMAS:
        hs = convolve(h, kernel(sigma))
        for k in KAPPAS:
            out[(sigma, k)] = hits(best_hours(hs, p, k), s.truth)
    return out


def profile_grid(s: Split) -> Grid:
    h, p = histograms(s), population_prior(s)
    out = {}
    for n in PROFILES:
        fitted = em_profiles(s.pop_rows, n)
        q = p[None, :].repeat(s.n, 0) if fitted is None else _smooth(_responsibilities(h, *fitted) @ fitted[1])
        for k in KAPPAS:
            out[(n, k)] = hits(np.argmax(_window(_smooth(h) + k * q), axis=1), s.truth)
    return out


def silence_grid(s: Split) -> Grid:
    p = population_prior(s)
    out = {}
    for g, w in [(None, 1.0)] + [(g, w) for g in GAPS for w in GAP_WEIGHTS]:
        h = _smooth(histograms(s, weight=np.where(s.gap >= (g or 0) * HOUR, 1.0, w)))
        for k in KAPPAS:
            out[(g, w, k)] = hits(best_hours(h, p, k), s.truth)
    return out


def weekday_grid(s: Split) -> Grid:
    """Upper bound: weighs the sessions by whether they fell on the weekday of the answer."""
    p = population_prior(s)
    same = ((s.day - s.truth_day[s.idx]) % 7 == 0) if s.n else np.zeros(0, bool)
    out = {}
    for w in OTHER_DAYS:
        h = _smooth(histograms(s, weight=np.where(same, 1.0, w)))
        for k in KAPPAS:
            out[(w, k)] = hits(best_hours(h, p, k), s.truth)
    return out


def first_passage_grid(inner: Split, test: Split) -> tuple[Grid, Grid]:
    """κ for the base distribution chosen on the internal split (as the engine would), then the rate."""
    base = {}
    for s in (inner, test):
        base[id(s)] = (_smooth(histograms(s)), population_prior(s))
    h, p = base[id(inner)]
    kappa = max(KAPPAS, key=lambda k: (hits(best_hours(h, p, k), inner.truth).mean() if inner.n else 0.0,
                                       -KAPPAS.index(k)))
    grids: tuple[Grid, Grid] = ({}, {})
    for s, grid in zip((inner, test), grids):
        h, p = base[id(s)]
        dist = h + kappa * p
        dist /= dist.sum(1, keepdims=True)
        for window in RATE_WINDOWS:
            r = rates(s, window)
            for a in RATE_SCALES:
                grid[(window, a)] = hits(np.argmax(_window(first_passage(dist, a * r, s.now)), axis=1), s.truth)
    return grids


# ---------------------------------------------------------------------------- one log

FAMILIES = ("first_passage", "half_life", "smoothing", "profiles", "silence", "weekday")


def evaluate(name: str) -> dict[str, Any]:
    label, load, cutoffs = LOGS[name]
    started = time.perf_counter()
    log = load()
    if isinstance(log, real.Unavailable):
        return {"log": label, "skipped": log.why}
    snaps = real.replay(log, cutoffs, HORIZON_DAYS)
    del log
    per_cut = []
    for c in snaps:
        engine = evaluate_sendtime(c.population, c.cutoff, horizon_days=HORIZON_DAYS, truth=c.next_event, pairs=True)
        earlier = [(u, f.as_of(c.cutoff) if f is not None else None, z) for u, f, z in c.population]
        fitted = fit_sendtime(earlier, c.cutoff)  # the same fit, for its internal split's hit rate
        start = c.cutoff - int(VALIDATION_DAYS * DAY)
        test = make_split(c.population, c.cutoff, c.next_event)
        inner = make_split(c.population, start, internal_truth(c.population, start, c.cutoff))
        judged = engine["pairs"]
        if judged["users"] != test.users or list(hits(test.mode, test.truth)) != judged["user_mode"]:
            raise AssertionError(f"{label} {c.cutoff}: the recomputed user's mode differs from the engine's")
        fp = first_passage_grid(inner, test)
        grids = {"first_passage": fp}
        for fam, fn in (("half_life", half_life_grid), ("smoothing", smoothing_grid), ("profiles", profile_grid),
                        ("silence", silence_grid), ("weekday", weekday_grid)):
            grids[fam] = (fn(inner), fn(test))
        per_cut.append({
            "cutoff": c.cutoff, "grids": grids, "test": test, "inner": inner,
            "engine": np.array(judged["model"], bool), "global": np.array(judged["global_mode"], bool),
            "user_mode": np.array(judged["user_mode"], bool),
            "engine_internal": (fitted.metrics.get("hit_rate_1h"), int(fitted.metrics.get("validation_users", 0))),
            "kappa": engine["prior_strength"] / engine["session_weight"]})
    return {"log": label, "cutoffs": len(snaps), "seconds": time.perf_counter() - started,
            **summarise(per_cut)}


def _paired(row: np.ndarray, base: np.ndarray) -> dict[str, Any]:
    from scipy.stats import binomtest
    only_row, only_base = int(np.sum(row & ~base)), int(np.sum(base & ~row))
    p = binomtest(only_row, only_row + only_base, 0.5).pvalue if only_row + only_base else 1.0
    return {"only_row": only_row, "only_base": only_base, "p": float(f"{p:.3g}")}


def summarise(per_cut: list[dict[str, Any]]) -> dict[str, Any]:
    um = np.concatenate([r["user_mode"] for r in per_cut])
    waits = np.concatenate([r["test"].wait for r in per_cut]) / HOUR
    inner_n = sum(r["inner"].n for r in per_cut)
    rows: list[dict[str, Any]] = []

    def add(name: str, internal: float | None, test: np.ndarray, chosen: str = "") -> None:
        rows.append({"row": name, "internal": internal, "test": float(test.mean()), "chosen": chosen}
                    | ({} if test is um else _paired(test, um)))

    def cat(key: Callable[[dict[str, Any]], np.ndarray]) -> np.ndarray:
        return np.concatenate([key(r) for r in per_cut])

    add("user's mode hour (baseline)", float(cat(lambda r: hits(r["inner"].mode, r["inner"].truth)).mean()), um)
    add("global mode hour", float(cat(lambda r: hits(np.full(r["inner"].n, r["inner"].global_mode),
                                                      r["inner"].truth)).mean()), cat(lambda r: r["global"]))
    eng_int = [(h, n) for h, n in (r["engine_internal"] for r in per_cut) if h is not None]
    eng_rate = sum(h * n for h, n in eng_int) / max(1, sum(n for _, n in eng_int))
    add("current model (engine's fit/evaluate_sendtime)", eng_rate, cat(lambda r: r["engine"]),
        _most_common([f"κ/sw {r['kappa']:g}" for r in per_cut]))

    chosen: dict[str, list[Any]] = {}
    for fam in FAMILIES:
        chosen[fam] = [max(r["grids"][fam][0], key=lambda k: r["grids"][fam][0][k].mean()) if r["inner"].n
                       else next(iter(r["grids"][fam][0])) for r in per_cut]

    def picked(fam: str, part: int) -> np.ndarray:
        return np.concatenate([r["grids"][fam][part][key] for r, key in zip(per_cut, chosen[fam])])

    titles = {
        "first_passage": "1. first passage (rate window × scale)",
        "half_life": "3a. half-life × κ",
        "smoothing": "smoothing width × κ",
        "profiles": "shrink to learned hour profiles (K × κ)",
        "silence": "sessions after ≥ G h silence (G × w × κ)",
    }
    for fam, title in titles.items():
        internal = picked(fam, 0)
        add(title, float(internal.mean()) if len(internal) else None, picked(fam, 1), _most_common(chosen[fam], fam))
        if fam == "half_life":
            um_int = [hits(r["inner"].mode, r["inner"].truth).mean() if r["inner"].n else 0.0 for r in per_cut]
            picks = ["user's mode" if r["engine_internal"][0] is None or u > r["engine_internal"][0] else "model"
                     for r, u in zip(per_cut, um_int)]
            both = np.concatenate([r["engine"] if pick == "model" else r["user_mode"]
                                   for r, pick in zip(per_cut, picks)])
            inner_both = np.concatenate([hits(r["inner"].mode, r["inner"].truth) for r, pick in zip(per_cut, picks)
                                         if pick != "model"])
            n_model = sum(r["engine_internal"][1] for r, pick in zip(per_cut, picks) if pick == "model")
            hit_model = sum(r["engine_internal"][0] * r["engine_internal"][1] for r, pick in zip(per_cut, picks)
                            if pick == "model")
            add("3b. engine's model or user's mode, chosen internally",
                (hit_model + float(inner_both.sum())) / max(1, n_model + len(inner_both)), both, _most_common(picks))
    add("2. upper bound: knows the next activity's weekday", float(picked("weekday", 0).mean()),
        picked("weekday", 1), _most_common(chosen["weekday"], "weekday"))

    settings = [(fam, key) for fam in titles for key in per_cut[0]["grids"][fam][1]
                if all(key in r["grids"][fam][1] for r in per_cut)]
    score = {s: float(cat(lambda r: r["grids"][s[0]][1][s[1]]).mean()) for s in settings}
    best = max(settings, key=lambda s: score[s])
    ceiling = cat(lambda r: r["grids"][best[0]][1][best[1]])
    add(f"ceiling: best of {len(settings)} fixed settings chosen ON THE TEST ANSWERS (not a model)", None, ceiling,
        _setting(best[0], best[1]))
    return {"pairs": len(um), "with_history": int(cat(lambda r: r["test"].history).sum()), "internal_pairs": inner_n,
            "median_wait_h": float(np.median(waits)), "within_3h": float(np.mean(waits < 3)), "rows": rows}


def _setting(fam: str, key: Any) -> str:
    def f(x: Any) -> str:
        return "none" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))
    names = {"first_passage": ("window d", "scale"), "half_life": ("half-life d", "κ"), "smoothing": ("σ h", "κ"),
             "profiles": ("K", "κ"), "silence": ("G h", "w", "κ"), "weekday": ("other days w", "κ")}[fam]
    return f"{fam}: " + ", ".join(f"{n} {f(v)}" for n, v in zip(names, key))


def _most_common(picks: list[Any], fam: str | None = None) -> str:
    (pick, n), = Counter(picks).most_common(1)
    return f"{_setting(fam, pick).split(': ', 1)[1] if fam else pick} ({n}/{len(picks)} cutoffs)"


def table(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"{result['log']}: skipped — {result['skipped']}\n"
    lines = [f"{result['log']}: {result['cutoffs']} cutoffs, {HORIZON_DAYS:g}-day horizons, {result['pairs']:,} pairs "
             f"({result['with_history']:,} with history), internal splits {result['internal_pairs']:,} pairs; "
             f"next activity a median {result['median_wait_h']:.0f} h after the cutoff, "
             f"{100 * result['within_3h']:.1f} % within 3 h; {result['seconds']:.0f} s",
             f"  {'row':<82}{'internal':>9}{'test':>8}{'only row / only mode':>22}{'p':>10}   most chosen setting"]
    for r in result["rows"]:
        internal = "–" if r["internal"] is None else f"{r['internal']:.4f}"
        paired = f"{r['only_row']} / {r['only_base']}" if "p" in r else ""
        p = f"{r['p']:.3g}" if "p" in r else ""
        lines.append(f"  {r['row']:<82}{internal:>9}{r['test']:>8.4f}{paired:>22}{p:>10}   {r['chosen']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", default="ml100k,ml1m,instacart", help="comma-separated: " + ", ".join(LOGS))
    names = [n.strip() for n in ap.parse_args().logs.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOGS]
    if unknown:
        ap.error(f"unknown log(s): {', '.join(unknown)} (known: {', '.join(LOGS)})")
    started = time.perf_counter()
    for name in names:
        print(table(evaluate(name)), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
