"""The learned frequency cap: per user and channel, how many messages a window should hold.

What is learned. Every message a user received is an example: `n`, the messages of its channel
the user received in the window (`window_days`, default 7) ending with it, this one included;
whether it was engaged with (an open answered it; a channel that never shows opens, such as SMS,
uses clicks); whether an unsubscribe followed it. Attribution is last touch, as the features keep
no message ids: an open or an unsubscribe answers the latest message of its channel before it, if
that was sent at most `attribution_days` earlier (most opens come within hours; a second open of
the same message adds nothing). Answering the oldest unanswered message instead would hand the
open of today's message to yesterday's unopened one — engagement would seem to fall faster with n
than it does.

The curve. Fatigue usually has a tolerance: engagement per message holds until the user gets more
than some number of messages a window, then falls, and unsubscribes start. So each user has a
latent tolerance c (1..C_MAX) and engagement level p (on a grid of P_GRID), and, with population
parameters k, u0 and u1 per channel,

    P(engaged | n) = p * exp(-k * max(0, n - c))
    P(unsubscribe | n) = min(0.5, u0 + u1 * max(0, n - c))

The population prior over (c, p) and k, u0, u1 are fitted by EM over all users (a finite-mixture,
empirical-Bayes fit); a user's posterior over (c, p) is the prior times the likelihood of their own
examples. That is the shrinkage: a user with two examples keeps the population's prior, one with
twenty moves as far as their evidence says, and no per-user weight has to be tuned.

The objective (stated, because the cap is only as good as it): a cap of m messages a window, sent
evenly, gives every message n = m, so per window it earns

    value(m) = m * (E[P(engaged | m)] - unsubscribe_cost * E[P(unsubscribe | m)])

opens net of unsubscribes, an unsubscribe costing `unsubscribe_cost` engagements (default
UNSUBSCRIBE_COST = 20: the engagements a subscriber would still have given — a few months of a
weekly opener). The cap is the argmax of value(m) within the marketer's bounds [lo, hi]
(expectations under the user's posterior). A cap for another window length is the weekly cap
scaled to it (the same rate), rounded, within the bounds.

Fallbacks. A user without features or examples on the channel gets the population cap (the argmax
under the prior). A channel with too little data (fewer than `min_examples` labelled messages or
`min_users` users) is not learned: its cap is the marketer's upper bound, as before any training,
and `reason` says so. Leak-free: features are rewound to `as_of`, and a message is an example only
once its attribution window has closed by `as_of`. Metrics come from an internal time split: the
curve fitted on messages whose labels closed `holdout_days` before `as_of`, scored on the later
ones beside the population's empirical engagement rate per n (log loss, ROC AUC).

Scoring reads the user's ≤ 24 messages and engagements and multiplies a small precomputed table:
tens of microseconds, numpy only.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import logsumexp

from engine.models.features import CLICK, MAX_ENGAGEMENTS, MAX_MESSAGES, OPEN, UNSUBSCRIBE, Features

DAY = 86400
C_MAX = 15                    # tolerances 1..C_MAX (C_MAX also stands for "more than we ever saw")
N_MAX = MAX_MESSAGES          # window counts above this are pooled (the timeline holds no more)
P_GRID = (0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 0.95)
M_MAX = 60                    # the largest weekly cap the value table covers
UNSUBSCRIBE_COST = 20.0
EM_ITERATIONS = 40
DEFAULTS: Mapping[str, float] = {
    "window_days": 7.0, "attribution_days": 2.0, "holdout_days": 14.0, "unsubscribe_cost": UNSUBSCRIBE_COST,
    "min_examples": 200, "min_users": 20,
}

# ---------------------------------------------------------------------- examples from features


def examples(f: Features | None, channel: str, as_of: int, window: int, attribution: int) -> list[tuple[int, int, int, int]]:
    """(time, n, engaged 0/1, unsubscribed 0/1) per message of `channel` whose label closed by
    `as_of`. A message whose window may hold messages the bounded timeline dropped is left out
    (its n is unknown), as is one older than the oldest kept engagement of a full timeline."""
    if f is None:
        return []
    sent = [t for t in f.messages.get(channel, ()) if t <= as_of]
    if not sent:
        return []
    events = [e for e in f.engagements.get(channel, ()) if e[0] <= as_of]
    oldest_known = events[0][0] if len(f.engagements.get(channel, ())) >= MAX_ENGAGEMENTS else None
    full = len(f.messages.get(channel, ())) >= MAX_MESSAGES
    kind = OPEN if any(k == OPEN for _, k in events) else CLICK
    engaged = [0] * len(sent)
    unsub = [0] * len(sent)
    for te, k in events:
        if k == kind or k == UNSUBSCRIBE:
            j = bisect_right(sent, te) - 1
            if j >= 0 and te - sent[j] <= attribution:
                (engaged if k == kind else unsub)[j] = 1
    out = []
    lo = 0
    for i, t in enumerate(sent):
        while sent[lo] <= t - window:
            lo += 1
        if t + attribution > as_of or (full and t - window < sent[0]) or (oldest_known is not None and t < oldest_known):
            continue
        out.append((t, i - lo + 1, engaged[i], unsub[i]))
    return out


def _counts(rows: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """(3, N_MAX): messages, engaged, unsubscribed per window count 1..N_MAX."""
    out = np.zeros((3, N_MAX))
    for _, n, e, u in rows:
        b = min(n, N_MAX) - 1
        out[0, b] += 1
        out[1, b] += e
        out[2, b] += u
    return out


def _evidence(rows: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """The user's counts as one vector against `ChannelCurve._stack`: per window count, engaged,
    not engaged, unsubscribed, stayed (4 * N_MAX)."""
    v = [0.0] * (4 * N_MAX)
    for _, n, e, u in rows:
        b = min(n, N_MAX) - 1
        v[b + (0 if e else N_MAX)] += 1.0
        v[b + (2 * N_MAX if u else 3 * N_MAX)] += 1.0
    return np.array(v)


# ---------------------------------------------------------------------- the curve family


def _excess(ns: np.ndarray) -> np.ndarray:
    """max(0, n - c) for n in `ns` (rows) and c in 1..C_MAX (columns)."""
    return np.maximum(0, ns[:, None] - np.arange(1, C_MAX + 1)[None, :])


def _log_tables(k: float, u0: float, u1: float, ns: np.ndarray) -> np.ndarray:
    """(4, len(ns), C*P): log P(engaged), log P(not engaged), log P(unsubscribe), log P(stay) per
    window count and (c, p) cell (c major)."""
    x = _excess(ns)
    pe = (np.exp(-k * x)[:, :, None] * np.asarray(P_GRID)[None, None, :]).reshape(len(ns), -1)
    h = np.repeat(np.clip(u0 + u1 * x, 1e-9, 0.5), len(P_GRID), axis=1)
    return np.stack([np.log(pe), np.log1p(-pe), np.log(h), np.log1p(-h)])


@dataclass(frozen=True)
class ChannelCurve:
    """One channel's population: prior over (tolerance, level) and the decay and unsubscribe
    parameters; `examples`/`users`: what it was fitted on."""

    k: float
    u0: float
    u1: float
    prior_c: tuple[float, ...]
    prior_p: tuple[float, ...]
    examples: int = 0
    users: int = 0
    _log_prior: np.ndarray = field(init=False, repr=False, compare=False)
    _stack: np.ndarray = field(init=False, repr=False, compare=False)
    _gain: np.ndarray = field(init=False, repr=False, compare=False)
    _risk: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prior = np.outer(self.prior_c, self.prior_p).ravel()
        object.__setattr__(self, "_log_prior", np.log(np.maximum(prior, 1e-300)))
        tables = _log_tables(self.k, self.u0, self.u1, np.arange(1, N_MAX + 1))
        object.__setattr__(self, "_stack", np.ascontiguousarray(tables.reshape(4 * N_MAX, -1)))
        x = _excess(np.arange(1, M_MAX + 1))  # (M, C)
        gain = (np.exp(-self.k * x)[:, :, None] * np.asarray(P_GRID)[None, None, :]).reshape(M_MAX, -1)
        object.__setattr__(self, "_gain", gain)
        object.__setattr__(self, "_risk", np.repeat(np.clip(self.u0 + self.u1 * x, 1e-9, 0.5), len(P_GRID), axis=1))

    def posterior(self, evidence: np.ndarray | None) -> np.ndarray:
        """The user's posterior over the (c, p) cells given `_evidence(rows)`; the prior without."""
        log_post = self._log_prior if evidence is None else self._log_prior + evidence @ self._stack
        w = np.exp(log_post - log_post.max())
        return w / w.sum()

    def net_table(self, cost: float) -> np.ndarray:
        """(M_MAX, C*P): value(m) of each cell, so that value(m) = table @ posterior."""
        return np.arange(1, M_MAX + 1)[:, None] * (self._gain - cost * self._risk)

    def engagement(self, post: np.ndarray, n: int) -> float:
        """P(engaged) of a message that is the n-th of its window, under the posterior."""
        return float(self._gain[min(n, M_MAX) - 1] @ post)

    def to_plain(self) -> dict[str, Any]:
        return {"k": self.k, "u0": self.u0, "u1": self.u1, "prior_c": list(self.prior_c),
                "prior_p": list(self.prior_p), "examples": self.examples, "users": self.users}

    @classmethod
    def from_plain(cls, d: Mapping[str, Any]) -> "ChannelCurve":
        return cls(k=float(d["k"]), u0=float(d["u0"]), u1=float(d["u1"]), prior_c=tuple(map(float, d["prior_c"])),
                   prior_p=tuple(map(float, d["prior_p"])), examples=int(d["examples"]), users=int(d["users"]))


def fit_curve(counts: np.ndarray) -> ChannelCurve:
    """EM for the population prior and k, u0, u1 from users' counts (U, 3, N_MAX).
    Deterministic: a fixed start and a fixed number of iterations. Users with the same counts are
    one row with a weight (most users' evidence is a handful of small counts), which keeps a large
    population cheap."""
    rows, weight = np.unique(counts.reshape(len(counts), -1), axis=0, return_counts=True)
    counts = rows.reshape(-1, 3, N_MAX)
    weight = weight.astype(float)
    k, u0, u1 = 0.3, 0.002, 0.005
    pc = np.full(C_MAX, 1.0 / C_MAX)
    pp = np.full(len(P_GRID), 1.0 / len(P_GRID))
    ns = np.arange(1, N_MAX + 1)
    x = _excess(ns)
    grid = np.asarray(P_GRID)
    m, e, u = (np.ascontiguousarray(counts[:, i]) for i in range(3))
    stacked = np.concatenate([e, m - e, u, m - u], axis=1)     # (U, 4N), against _log_tables
    for _ in range(EM_ITERATIONS):
        log_prior = (np.log(pc)[:, None] + np.log(pp)[None, :]).ravel()
        log_post = stacked @ _log_tables(k, u0, u1, ns).reshape(4 * N_MAX, -1) + log_prior[None, :]
        log_post -= logsumexp(log_post, axis=1, keepdims=True)
        w = np.exp(log_post) * weight[:, None]              # (U, C*P), users weighted
        cells = w.sum(axis=0).reshape(C_MAX, len(P_GRID))
        # priors: the mean posterior, with a light Dirichlet floor so no cell dies for good
        pc = cells.sum(axis=1) + 0.5
        pc /= pc.sum()
        pp = cells.sum(axis=0) + 0.5
        pp /= pp.sum()
        # k: expected engagement log-likelihood from sufficient statistics per (n, c, p)
        a_e = (w.T @ e).T.reshape(N_MAX, C_MAX, len(P_GRID))
        a_m = (w.T @ (m - e)).T.reshape(N_MAX, C_MAX, len(P_GRID))

        def neg_eng(kk: float, a_e: np.ndarray = a_e, a_m: np.ndarray = a_m) -> float:
            pe = np.exp(-kk * x)[:, :, None] * grid[None, None, :]
            return -float((a_e * np.log(pe)).sum() + (a_m * np.log1p(-pe)).sum())

        k = float(minimize_scalar(neg_eng, bounds=(0.0, 5.0), method="bounded", options={"xatol": 1e-4}).x)
        wc = w.reshape(len(w), C_MAX, len(P_GRID)).sum(axis=2)   # (U, C)
        b_u = (wc.T @ u).T                                        # (N, C)
        b_s = (wc.T @ (m - u)).T

        def neg_uns(theta: np.ndarray, b_u: np.ndarray = b_u, b_s: np.ndarray = b_s) -> float:
            h = np.clip(theta[0] + theta[1] * x, 1e-9, 0.5)
            return -float((b_u * np.log(h)).sum() + (b_s * np.log1p(-h)).sum())

        res = minimize(neg_uns, np.array([u0, u1]), method="L-BFGS-B", bounds=[(1e-6, 0.2), (0.0, 0.5)])
        u0, u1 = float(res.x[0]), float(res.x[1])
    return ChannelCurve(k=round(k, 6), u0=round(u0, 8), u1=round(u1, 8),
                        prior_c=tuple(round(float(v), 8) for v in pc), prior_p=tuple(round(float(v), 8) for v in pp),
                        examples=int((m.sum(axis=1) * weight).sum()), users=int(weight.sum()))


# ---------------------------------------------------------------------- the model


@dataclass(frozen=True)
class FatigueModel:
    """Per channel, the population's fatigue curve; per user, the posterior their examples give."""

    curves: Mapping[str, ChannelCurve]
    window_days: float = 7.0
    attribution_days: float = 2.0
    unsubscribe_cost: float = UNSUBSCRIBE_COST
    status: str = "ok"
    reason: str | None = None
    evidence: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    _net: Mapping[str, np.ndarray] = field(init=False, repr=False, compare=False)
    _population: Mapping[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        net = {ch: c.net_table(self.unsubscribe_cost) for ch, c in self.curves.items()}
        object.__setattr__(self, "_net", net)
        object.__setattr__(self, "_population", {ch: net[ch] @ c.posterior(None) for ch, c in self.curves.items()})

    def values(self, f: Features | None, channel: str, now: int | None = None) -> np.ndarray | None:
        """value(m) for weekly caps m = 1..M_MAX for this user (the population's without
        evidence); None for a channel not learned. `now`: labels count once closed by then
        (default: the latest thing the features know, the last event or the last send)."""
        curve = self.curves.get(channel)
        if curve is None:
            return None
        sent = f.messages.get(channel) if f is not None else None
        if not sent:
            return self._population[channel]
        rows = examples(f, channel, max(f.last, sent[-1]) if now is None else now, int(self.window_days * DAY),
                        int(self.attribution_days * DAY))
        if not rows:
            return self._population[channel]
        return self._net[channel] @ curve.posterior(_evidence(rows))

    def cap(self, f: Features | None, channel: str, window_days: float = 7.0, lo: int = 1, hi: int = 15,
            now: int | None = None) -> int:
        """The cap per `window_days` within [lo, hi] that maximises expected engagement net of
        unsubscribes (module docstring); the lower cap on a tie. Cold start: the population's; a
        channel not learned: hi."""
        lo = max(0, int(lo))
        hi = max(lo, int(hi))
        values = self.values(f, channel, now)
        if values is None:
            return hi
        if window_days == self.window_days and lo >= 1 and hi <= M_MAX:
            return lo + int(np.argmax(values[lo - 1:hi]))
        scale = self.window_days / window_days if window_days > 0 else 1.0  # model windows per asked window
        best, best_value = lo, -math.inf
        for m in range(lo, hi + 1):
            v = _interpolate(values, m * scale)
            if v > best_value + 1e-12:
                best, best_value = m, v
        return best

    def population_cap(self, channel: str, lo: int = 1, hi: int = 15) -> int:
        return self.cap(None, channel, self.window_days, lo, hi)

    def to_plain(self) -> dict[str, Any]:
        return {"kind": "fatigue", "window_days": self.window_days, "attribution_days": self.attribution_days,
                "unsubscribe_cost": self.unsubscribe_cost, "status": self.status, "reason": self.reason,
                "evidence": self.evidence, "metrics": dict(sorted(self.metrics.items())),
                "curves": {ch: c.to_plain() for ch, c in sorted(self.curves.items())}}

    @classmethod
    def from_plain(cls, d: Mapping[str, Any]) -> "FatigueModel":
        return cls(curves={ch: ChannelCurve.from_plain(c) for ch, c in d["curves"].items()},
                   window_days=float(d["window_days"]), attribution_days=float(d["attribution_days"]),
                   unsubscribe_cost=float(d["unsubscribe_cost"]), status=d["status"], reason=d["reason"],
                   evidence=int(d["evidence"]), metrics={k: float(v) for k, v in d["metrics"].items()})


def _interpolate(values: np.ndarray, m: float) -> float:
    """value(m) for a fractional m between the integer caps the table holds (value(0) = 0; beyond
    M_MAX the last value)."""
    if m <= 0:
        return 0.0
    if m >= M_MAX:
        return float(values[-1])
    i = int(m)
    lower = float(values[i - 1]) if i else 0.0
    return lower + (float(values[i]) - lower) * (m - i)


# ---------------------------------------------------------------------- training


def _channel_rows(users: Sequence[tuple[str, Features, Any]], as_of: int, channel: str, window: int,
                  attribution: int) -> list[list[tuple[int, int, int, int]]]:
    out = []
    for _, f, _ in users:
        g = f.as_of(as_of) if f is not None else None
        rows = examples(g, channel, as_of, window, attribution)
        if rows:
            out.append(rows)
    return out


def fit_fatigue(users: Sequence[tuple[str, Features, Any]], as_of: int, *, window_days: float = 7.0,
                channels: Sequence[str] = ("email", "push", "sms"), attribution_days: float | None = None,
                holdout_days: float | None = None, unsubscribe_cost: float | None = None,
                min_examples: int | None = None, min_users: int | None = None) -> FatigueModel:
    """Fit each channel's curve on the users' messages up to `as_of` (see the module docstring)."""
    attribution_days = DEFAULTS["attribution_days"] if attribution_days is None else attribution_days
    holdout_days = DEFAULTS["holdout_days"] if holdout_days is None else holdout_days
    cost = DEFAULTS["unsubscribe_cost"] if unsubscribe_cost is None else unsubscribe_cost
    min_examples = int(DEFAULTS["min_examples"] if min_examples is None else min_examples)
    min_users = int(DEFAULTS["min_users"] if min_users is None else min_users)
    window, attribution = int(window_days * DAY), int(attribution_days * DAY)
    curves: dict[str, ChannelCurve] = {}
    metrics: dict[str, float] = {}
    short: list[str] = []
    evidence = 0
    for channel in channels:
        per_user = _channel_rows(users, as_of, channel, window, attribution)
        n_examples = sum(len(r) for r in per_user)
        if n_examples < min_examples or len(per_user) < min_users:
            if n_examples:
                short.append(f"{channel}: {n_examples} labelled messages from {len(per_user)} users "
                             f"({min_examples} and {min_users} needed)")
            continue
        curves[channel] = fit_curve(np.stack([_counts(r) for r in per_user]))
        evidence += n_examples
        metrics.update(_holdout_metrics(per_user, channel, as_of - int(holdout_days * DAY), cost))
        curve = curves[channel]
        metrics[f"{channel}_examples"] = float(n_examples)
        metrics[f"{channel}_users"] = float(len(per_user))
        metrics[f"{channel}_k"] = curve.k
        metrics[f"{channel}_population_cap_7d"] = float(
            FatigueModel({channel: curve}, window_days, attribution_days, cost).cap(None, channel, window_days, 1, 15))
    if not curves:
        reason = "; ".join(short) if short else "no messages with engagement data on " + ", ".join(channels)
        return FatigueModel({}, window_days, attribution_days, cost, status="fallback", reason="too little data: " + reason,
                            evidence=0, metrics=metrics)
    return FatigueModel(curves, window_days, attribution_days, cost, status="ok",
                        reason=None if not short else "not learned: " + "; ".join(short), evidence=evidence,
                        metrics=metrics)


def _holdout_metrics(per_user: list[list[tuple[int, int, int, int]]], channel: str, split: int,
                     cost: float) -> dict[str, float]:
    """The curve fitted on labels closed by `split`, scored on later messages beside the population's
    engagement rate per n: log loss and ROC AUC (empty when either side is too small)."""
    from sklearn.metrics import log_loss, roc_auc_score

    train = [[r for r in rows if r[0] <= split] for rows in per_user]
    test = [[r for r in rows if r[0] > split] for rows in per_user]
    fitted = [r for r in train if r]
    if sum(len(r) for r in fitted) < 100 or sum(len(r) for r in test) < 100:
        return {}
    curve = fit_curve(np.stack([_counts(r) for r in fitted]))
    pooled = _counts([x for r in fitted for x in r])
    rate = (pooled[1] + 1.0) / (pooled[0] + 2.0)   # population engagement per n, Laplace-smoothed
    y, ours, base = [], [], []
    for tr, te in zip(train, test):
        if not te:
            continue
        post = curve.posterior(_evidence(tr) if tr else None)
        for _, n, e, _ in te:
            y.append(e)
            ours.append(curve.engagement(post, n))
            base.append(rate[min(n, N_MAX) - 1])
    if len(set(y)) < 2:
        return {}
    ours_a, base_a = np.clip(ours, 1e-6, 1 - 1e-6), np.clip(base, 1e-6, 1 - 1e-6)
    return {f"{channel}_holdout_messages": float(len(y)),
            f"{channel}_logloss": round(float(log_loss(y, ours_a, labels=[0, 1])), 6),
            f"{channel}_logloss_population": round(float(log_loss(y, base_a, labels=[0, 1])), 6),
            f"{channel}_auc": round(float(roc_auc_score(y, ours_a)), 6),
            f"{channel}_auc_population": round(float(roc_auc_score(y, base_a)), 6)}


def evaluate_fatigue(users: Sequence[tuple[str, Features, Any]], as_of: int, **settings: Any) -> dict[str, float]:
    """The time-split backtest `journeys models` prints: the training metrics of a fit at `as_of`
    (per channel: held-out log loss and ROC AUC beside the population curve's)."""
    model = fit_fatigue(users, as_of, **settings)
    return {"status_ok": 1.0 if model.status == "ok" else 0.0, "evidence": float(model.evidence), **model.metrics}
