"""Best send time per user and channel: when, in the user's own local time, they engage.

A user's evidence is thin — a handful of opens — so their raw mode hour is noisy. The model keeps
the population's distribution of engagement hours per channel (in local time, each user counting
once) and, at scoring time, builds the user's histogram from their features:
- engagements of the channel (opens, clicks, conversions) weigh 1, session starts `session_weight`
  (any activity says the user is awake and online, but less than an open of this channel does);
- each is decayed with age (half-life `half_life_days`, default 60 days);
- the histogram is smoothed over neighbouring hours (circularly: 23 h is beside 0 h) and shrunk
  toward the population's distribution, empirical-Bayes style: p = (h + κ·prior) / (n + κ), where n
  is the user's decayed evidence. The prior strength κ and the session weight are learned at
  training time on an internal time split (the last `validation_days` before as_of): the pair from a
  small grid whose predicted hour most often lands within ±1 h of the user's next engagement. When
  there is too little data for that, κ = DEFAULT_PRIOR_STRENGTH (4 engagements' worth).

A user with no history, or a channel nobody engaged with, gets the population's distribution (of
that channel, else of all activity); with no data at all, a bump at FALLBACK_HOUR (10 h local).
Hours are local: every timestamp is converted with the user's own tzinfo (DST-correct).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from engine.models.features import CLICK, CONVERT, OPEN, Features

DAY, HOUR = 86400, 3600
ENGAGED = frozenset({OPEN, CLICK, CONVERT})
ACTIVITY = "*"  # the population distribution of session starts, for channels without engagements
FALLBACK_HOUR = 10
DEFAULT_PRIOR_STRENGTH = 4.0
DEFAULT_SESSION_WEIGHT = 0.25
KERNEL = (0.2, 0.6, 0.2)  # circular smoothing over the hour before, the hour, the hour after
PRIOR_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
SESSION_GRID = (0.1, 0.25, 0.5, 1.0)
DEFAULTS: Mapping[str, float] = MappingProxyType({
    "half_life_days": 60.0, "validation_days": 14.0, "horizon_days": 14.0, "min_users": 30,
})


def local_hour(t: int, zone: tzinfo | None) -> int:
    return datetime.fromtimestamp(t, zone or timezone.utc).hour


def circular_distance(a: int, b: int) -> int:
    d = abs(a - b) % 24
    return min(d, 24 - d)


def _smooth(h: np.ndarray) -> np.ndarray:
    """Circular smoothing along the last axis (24 hours)."""
    a, b, c = KERNEL
    return a * np.roll(h, 1, axis=-1) + b * h + c * np.roll(h, -1, axis=-1)


def _window(p: np.ndarray) -> np.ndarray:
    """Each hour's probability together with its two neighbours': the chance of engaging within ±1 h."""
    return np.roll(p, 1, axis=-1) + p + np.roll(p, -1, axis=-1)


def _histograms(f: Features | None, zone: tzinfo | None, channel: str, now: int,
                half_life: float) -> tuple[np.ndarray, np.ndarray]:
    """The user's decayed local-hour histograms as of `now`: engagements of `channel`, session starts."""
    eng, ses = np.zeros(24), np.zeros(24)
    if f is None:
        return eng, ses
    z = zone or timezone.utc
    for t, kind in f.engagements.get(channel, ()):
        if kind in ENGAGED and t <= now:
            eng[datetime.fromtimestamp(t, z).hour] += 0.5 ** ((now - t) / half_life)
    for t in f.sessions:
        if t <= now:
            ses[datetime.fromtimestamp(t, z).hour] += 0.5 ** ((now - t) / half_life)
    return eng, ses


@dataclass(frozen=True)
class SendTimeModel:
    """Per-user, per-channel engagement-hour distributions shrunk toward the population's."""

    status: str
    reason: str | None
    evidence: int
    metrics: Mapping[str, float]
    population: Mapping[str, tuple[float, ...]]   # channel (or ACTIVITY) → 24 probabilities, local time
    prior_strength: float = DEFAULT_PRIOR_STRENGTH
    session_weight: float = DEFAULT_SESSION_WEIGHT
    half_life_days: float = 60.0
    as_of: int = 0
    settings: Mapping[str, float] = field(default_factory=lambda: DEFAULTS)

    def _prior(self, channel: str) -> np.ndarray:
        p = self.population.get(channel) or self.population.get(ACTIVITY)
        if p is None:
            p = _smooth(np.eye(24)[FALLBACK_HOUR]) + 1e-3
        return np.asarray(p) / np.sum(p)

    def distribution(self, f: Features | None, zone: tzinfo | None, channel: str, now: int) -> list[float]:
        """24 probabilities: how likely the user engages on `channel` in each local hour."""
        eng, ses = _histograms(f, zone, channel, now, self.half_life_days * DAY)
        h = _smooth(eng + self.session_weight * ses)
        p = (h + self.prior_strength * self._prior(channel)) / (h.sum() + self.prior_strength)
        return p.tolist()

    def best_hour(self, f: Features | None, zone: tzinfo | None, channel: str, now: int) -> int:
        """The local hour (0-23) around which (±1 h) the user is likeliest to engage on `channel`."""
        return int(np.argmax(_window(np.asarray(self.distribution(f, zone, channel, now)))))

    def next_best_time(self, f: Features | None, zone: tzinfo | None, channel: str, now: int,
                       within_seconds: int) -> int:
        """When to send (seconds UTC): now if the current local hour is the best reachable one, else the
        start of the best local hour (ranked as `best_hour` ranks them: by the chance of engaging within
        ±1 h) that begins within (now, now + within_seconds]; the earliest among equals. With a window
        shorter than the rest of this hour, now. Hour starts are stepped in UTC from the current local
        hour's start, so they stay local hour starts across daylight-saving changes."""
        p = _window(np.asarray(self.distribution(f, zone, channel, now))).tolist()  # as best_hour ranks them
        z = zone or timezone.utc
        local = datetime.fromtimestamp(now, z)
        best_t, best_p = now, p[local.hour]
        t = now - local.minute * 60 - local.second + HOUR
        while t <= now + within_seconds:
            q = p[datetime.fromtimestamp(t, z).hour]
            if q > best_p:
                best_t, best_p = t, q
            t += HOUR
        return best_t

    def to_plain(self) -> dict[str, Any]:
        return {"kind": "sendtime", "version": 1, "status": self.status, "reason": self.reason,
                "evidence": self.evidence, "metrics": dict(sorted(self.metrics.items())),
                "population": {c: list(p) for c, p in sorted(self.population.items())},
                "prior_strength": self.prior_strength, "session_weight": self.session_weight,
                "half_life_days": self.half_life_days, "as_of": self.as_of,
                "settings": dict(sorted(self.settings.items()))}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> "SendTimeModel":
        return cls(data["status"], data["reason"], data["evidence"], MappingProxyType(dict(data["metrics"])),
                   MappingProxyType({c: tuple(p) for c, p in data["population"].items()}),
                   data["prior_strength"], data["session_weight"], data["half_life_days"], data["as_of"],
                   MappingProxyType(dict(data["settings"])))


# ---------------------------------------------------------------------------- training

def _settings(settings: Mapping[str, Any]) -> dict[str, float]:
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown send-time settings: {', '.join(sorted(unknown))}")
    return {**DEFAULTS, **settings}


def _channels(users: Sequence[tuple[str, Features | None, Any]]) -> list[str]:
    return sorted({c for _, f, _ in users if f is not None for c, es in f.engagements.items()
                   if any(k in ENGAGED for _, k in es)})


def _population(hists: Sequence[tuple[np.ndarray, np.ndarray]], session_weight: float) -> np.ndarray:
    """The users' decayed histograms pooled, smoothed, never zero: the hour of an engagement drawn
    from the whole population (active users weigh more, as they do in what a send reaches; on
    MovieLens this beat each-user-counts-once as a prior). For a channel, only the users who engaged
    on it count (their sessions weighted in); when nobody did (or for ACTIVITY), all session starts."""
    engaged = [e + session_weight * x for e, x in hists if e.sum() > 0]
    rows = engaged or [x for _, x in hists]
    total = np.sum(rows, axis=0) if rows else np.zeros(24)
    p = _smooth(total) + 1e-3 * max(float(total.sum()), 1.0)
    return p / p.sum()


def _next_hour(f: Features | None, zone: tzinfo | None, channel: str, start: int, end: int) -> int | None:
    """The local hour of the user's first engagement of `channel` in (start, end], else of their first
    session start there (their next activity), else None."""
    if f is None:
        return None
    eng = [t for t, k in f.engagements.get(channel, ()) if k in ENGAGED and start < t <= end]
    ses = [t for t in f.sessions if start < t <= end]
    first = min(eng) if eng else (min(ses) if ses else None)
    return None if first is None else local_hour(first, zone)


def fit_sendtime(users: Sequence[tuple[str, Features | None, Any]], as_of: int, **settings: Any) -> SendTimeModel:
    """Learn the population's local-hour distributions per channel as of `as_of`, and the prior
    strength and session weight on an internal time split."""
    s = _settings(settings)
    half_life = s["half_life_days"] * DAY
    channels = _channels(users)
    kappa, sw, metrics = DEFAULT_PRIOR_STRENGTH, DEFAULT_SESSION_WEIGHT, {}
    cut = as_of - int(s["validation_days"] * DAY)
    trial = _validation(users, cut, as_of, channels, half_life, int(s["min_users"]))
    if trial is not None:
        (kappa, sw), metrics = trial
    hists = {c: [_histograms(f, z, c, as_of, half_life) for _, f, z in users if f is not None]
             for c in channels + [ACTIVITY]}
    population = {c: tuple(round(float(x), 8) for x in _population(hists[c], sw)) for c in channels + [ACTIVITY]}
    with_data = sum(1 for _, ses in hists[ACTIVITY] if ses.sum() > 0)
    evidence = sum(sum(1 for t in f.sessions if t <= as_of) + sum(1 for es in f.engagements.values()
                   for t, k in es if k in ENGAGED and t <= as_of) for _, f, _ in users if f is not None)
    if with_data < int(s["min_users"]):
        status, reason = "fallback", f"too little data: {with_data} users with activity, {int(s['min_users'])} needed"
        if not with_data:
            population = {}
    else:
        status, reason = "ok", None
    return SendTimeModel(status, reason, evidence, MappingProxyType(metrics), MappingProxyType(population),
                         kappa, sw, s["half_life_days"], as_of, MappingProxyType(s))


def _validation(users, cut, end, channels, half_life, min_users):
    """Choose (κ, session weight) by the ±1 h hit rate of the next engagement in (cut, end]."""
    hists: dict[str, list] = {}
    rows = []  # (eng hist, session hist, true hour, channel)
    for c in channels or [ACTIVITY]:
        hists[c] = []
        for _, f, z in users:
            if f is None:
                continue
            h = _histograms(f.as_of(cut), z, c, cut, half_life)
            hists[c].append(h)
            truth = _next_hour(f, z, c, cut, end)
            if truth is not None:
                rows.append((*h, truth, c))
    if len(rows) < min_users:
        return None
    eng = np.array([r[0] for r in rows])
    ses = np.array([r[1] for r in rows])
    truth = np.array([r[2] for r in rows])
    chan = [r[3] for r in rows]
    best = None
    for sw in SESSION_GRID:
        priors = {c: _population(hs, sw) for c, hs in hists.items()}
        prior = np.array([priors[c] for c in chan])
        h = _smooth(eng + sw * ses)
        for kappa in PRIOR_GRID:
            hour = np.argmax(_window(h + kappa * prior), axis=1)  # the denominator does not change it
            d = np.abs(hour - truth) % 24
            hit = float(np.mean(np.minimum(d, 24 - d) <= 1))
            if best is None or hit > best[0] + 1e-9:
                best = (hit, kappa, sw)
    return (best[1], best[2]), {"validation_users": float(len(rows)), "hit_rate_1h": best[0]}


# ---------------------------------------------------------------------------- time-split evaluation

def _user_mode(f: Features | None, zone: tzinfo | None, channel: str, now: int, fallback: int) -> int:
    """Baseline: the user's most frequent local hour (engagements of the channel and session starts,
    undecayed), ties to the most recent; the global mode when they have none."""
    counts: dict[int, list[int]] = {}
    if f is not None:
        times = [t for t, k in f.engagements.get(channel, ()) if k in ENGAGED] + list(f.sessions)
        for t in times:
            if t <= now:
                c = counts.setdefault(local_hour(t, zone), [0, 0])
                c[0] += 1
                c[1] = max(c[1], t)
    if not counts:
        return fallback
    return max(counts, key=lambda h: (counts[h][0], counts[h][1]))


def evaluate_sendtime(users: Sequence[tuple[str, Features | None, Any]], cutoff: int, *, channel: str | None = None,
                      horizon_days: float = 14.0, truth: Mapping[str, int] | None = None, pairs: bool = False,
                      **settings: Any) -> dict[str, Any]:
    """Time-split backtest: fit as of `cutoff`; for each user active within `horizon_days` after it,
    a hit when the predicted local hour is within ±1 h (circularly) of the local hour of their next
    engagement of `channel` (else their next session start) — the model beside "global mode hour"
    (the population's, as of the cutoff, unsmoothed) and "user's mode hour" (as of the cutoff).
    `channel` defaults to the channel with the most engagements (ACTIVITY when there are none).
    `truth` (user → time of their next engagement, e.g. from the raw log) replaces the times read from
    the features; `pairs` adds, per judged user (in `users` order), whether each predictor hit."""
    if channel is None:
        counts: dict[str, int] = {}
        for _, f, _ in users:
            for c, es in (f.engagements.items() if f else ()):
                counts[c] = counts.get(c, 0) + sum(1 for _, k in es if k in ENGAGED)
        channel = max(sorted(counts), key=counts.__getitem__) if counts else ACTIVITY
    earlier = [(u, f.as_of(cutoff) if f is not None else None, z) for u, f, z in users]
    started = time.perf_counter()
    model = fit_sendtime(earlier, cutoff, **settings)
    fit_seconds = time.perf_counter() - started
    end = cutoff + int(horizon_days * DAY)
    pooled = np.zeros(24)
    for _, f, z in earlier:
        if f is not None:
            for t in [t for t, k in f.engagements.get(channel, ()) if k in ENGAGED] + list(f.sessions):
                pooled[local_hour(t, z)] += 1
    global_mode = int(np.argmax(pooled)) if pooled.any() else FALLBACK_HOUR
    hits = {"model": 0, "global_mode": 0, "user_mode": 0}
    n, score_seconds = 0, 0.0
    judged: dict[str, list] = {"users": [], "history": [], "model": [], "global_mode": [], "user_mode": []}
    for (u, f, z), (_, past, _) in zip(users, earlier):
        if truth is None:
            hour_true = _next_hour(f, z, channel, cutoff, end)
        else:
            hour_true = local_hour(truth[u], z) if u in truth else None
        if hour_true is None:
            continue
        n += 1
        started = time.perf_counter()
        hour = model.best_hour(past, z, channel, cutoff)
        score_seconds += time.perf_counter() - started
        got = {"model": circular_distance(hour, hour_true) <= 1,
               "global_mode": circular_distance(global_mode, hour_true) <= 1,
               "user_mode": circular_distance(_user_mode(past, z, channel, cutoff, global_mode), hour_true) <= 1}
        for name, hit in got.items():
            hits[name] += hit
        if pairs:
            judged["users"].append(u)
            judged["history"].append(past is not None and (bool(past.sessions) or bool(past.engagements.get(channel))))
            for name, hit in got.items():
                judged[name].append(hit)
    out: dict[str, Any] = {"users": n, "channel": channel, "cutoff": cutoff, "status": model.status,
                           "prior_strength": model.prior_strength, "session_weight": model.session_weight,
                           "fit_seconds": round(fit_seconds, 3), "score_us": round(score_seconds / max(n, 1) * 1e6, 1)}
    for name, h in hits.items():
        out[name] = {"hit_rate_1h": round(h / max(n, 1), 4)}
    if pairs:
        out["pairs"] = judged
    return out
