"""Purchase likelihood and churn risk within any horizon: a calibrated discrete-time hazard model.

The question "will this user buy within h days?" has labels only for moments at least h days
before training time, and marketers ask for any h — 45 days, or a year when the log holds nine
months. So the model answers a shorter, always-labelled question: P(a purchase within the next
period | the user's features now), a gradient-boosted classifier trained on examples "features as
of anchor t, purchase in (t, t + period]" for anchors every period back from `as_of`. A horizon is
the product of the per-period survivals, with the user's features rolled forward assuming nothing
happens (the features are functions of the timelines and the clock, so rolling is exact):

    P(no purchase in h) = prod_k (1 - hazard(features at now + k*period)).

Composing far beyond the history seen in training would read rolled features (recency, age) past
anything the trees were fitted on, where trees stay flat and over-promise. So the composition runs
up to the *trusted horizon* (half the history) and, beyond it, survival is continued by the BG/NBD
buy-till-you-die model fitted on the same users (engine.models._rfm), conditioned on no purchase
until then. Probabilities are Platt-calibrated on a time-split holdout inside the training data
(the latest `validation` days), never on the future.

`kind="activity"` models any session instead of purchases: its `churn` is P(no activity within h).
For `kind="purchase"` (the default) `churn` is P(no purchase within h). Scores are pure Python on
exported trees: no scikit-learn call per score.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from engine.models._rfm import (
    ACTIVITY,
    DAY,
    NAMES,
    PURCHASE,
    BetaGeo,
    Trees,
    beta_geo_of,
    calibration_table,
    extension,
    one_thread,
    reference_gbm,
    scores,
    vector,
)
from engine.models._rfm import transactions as transactions_of
from engine.models.features import Features

MIN_EXAMPLES = 200  # labelled (user, period) examples below which the model falls back
MIN_POSITIVES = 30  # and positive ones
MAX_EXAMPLES = 400_000  # above this, a deterministic sample of users is taken (training time)
VERSION = 1


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass(frozen=True)
class PurchaseModel:
    """P(a purchase — or, for kind "activity", a session — within a horizon), and churn = 1 - it."""

    kind: str
    status: str  # "ok" or "fallback"
    reason: str | None
    evidence: int  # labelled (user, period) examples
    metrics: Mapping[str, float]
    period_days: int
    trusted_days: float  # composed by the classifier up to here, continued by BG/NBD beyond
    population_hazard: float  # per period: the cold start, and every score when falling back
    platt: tuple[float, float] = (0.0, 1.0)  # calibrated hazard = sigmoid(a + b * margin)
    trees: Trees | None = None
    beta_geo: BetaGeo | None = None
    gains: tuple[float, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ scores

    def probability(self, f: Features | None, now: int, horizon_days: float) -> float:
        """P(at least one purchase/session in (now, now + horizon_days]); the population value for
        a user with no features (or before their first event) and for every user when falling back."""
        if horizon_days <= 0:
            return 0.0
        period = self.period_days
        if f is None or f.first > now or self.trees is None:
            return 1.0 - (1.0 - self.population_hazard) ** (horizon_days / period)
        a, b = self.platt
        near = min(horizon_days, self.trusted_days)
        survival, done, hazard = 1.0, 0.0, self.population_hazard
        while done < near:
            step = min(period, near - done)
            hazard = _sigmoid(a + b * self.trees.margin(vector(f, now + int(done * DAY))))
            survival *= (1.0 - hazard) ** (step / period)
            done += step
        if horizon_days > near:
            ext = extension(self.beta_geo, f, now, self.kind, near, horizon_days)
            # no transaction yet: BG/NBD has nothing to say, the last hazard carries on
            survival *= ext if ext != 1.0 else (1.0 - hazard) ** ((horizon_days - near) / period)
        return min(max(1.0 - survival, 0.0), 1.0)

    def probabilities(self, features: Sequence[Features | None], now: int, horizon_days: float) -> np.ndarray:
        """`probability` for many users at once (the same arithmetic, vectorised over users)."""
        return self.curves(features, now, (horizon_days,))[0]

    def curves(self, features: Sequence[Features | None], now: int, horizons: Sequence[float]) -> list[np.ndarray]:
        """`probabilities` for several horizons, the per-period hazards computed once."""
        known = [i for i, f in enumerate(features) if f is not None and f.first <= now]
        users = [features[i] for i in known]
        period, (a, b) = self.period_days, self.platt
        hazards: list[np.ndarray] = []
        out = []
        for horizon in horizons:
            p = np.full(len(features), self.probability(None, now, horizon))
            if horizon <= 0 or self.trees is None or not users:
                out.append(p)
                continue
            near = min(horizon, self.trusted_days)
            survival, done, k = np.ones(len(users)), 0.0, 0
            hazard = np.full(len(users), self.population_hazard)
            while done < near:
                if k == len(hazards):
                    X = np.array([vector(f, now + k * period * DAY) for f in users], dtype=float)
                    hazards.append(1.0 / (1.0 + np.exp(-(a + b * self.trees.margins(X)))))
                hazard, step = hazards[k], min(period, near - done)
                survival *= (1.0 - hazard) ** (step / period)
                done, k = done + step, k + 1
            if horizon > near:
                ext = np.array([extension(self.beta_geo, f, now, self.kind, near, horizon) for f in users])
                survival *= np.where(ext != 1.0, ext, (1.0 - hazard) ** ((horizon - near) / period))
            p[known] = np.clip(1.0 - survival, 0.0, 1.0)
            out.append(p)
        return out

    def churn(self, f: Features | None, now: int, horizon_days: float) -> float:
        """P(NO purchase — for kind "activity", no session — in (now, now + horizon_days])."""
        return 1.0 - self.probability(f, now, horizon_days)

    def importances(self) -> dict[str, float]:
        """Feature name -> share of the trees' split gain (sums to 1; empty when falling back)."""
        total = sum(self.gains)
        return {n: g / total for n, g in zip(NAMES, self.gains)} if total > 0 else {}

    # ------------------------------------------------------------------ storage

    def to_plain(self) -> dict[str, Any]:
        return {"version": VERSION, "kind": self.kind, "status": self.status, "reason": self.reason,
                "evidence": self.evidence, "metrics": dict(sorted(self.metrics.items())),
                "period_days": self.period_days, "trusted_days": self.trusted_days,
                "population_hazard": self.population_hazard, "platt": list(self.platt),
                "trees": None if self.trees is None else
                {"baseline": self.trees.baseline, "trees": [[list(part) for part in t] for t in self.trees.trees]},
                "beta_geo": None if self.beta_geo is None else self.beta_geo.to_plain(),
                "gains": list(self.gains), "features": list(NAMES)}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> PurchaseModel:
        trees = data["trees"]
        if trees is not None and list(data.get("features", NAMES)) != list(NAMES):
            raise ValueError("stored purchase model reads other features: retrain it")
        return cls(kind=data["kind"], status=data["status"], reason=data["reason"], evidence=data["evidence"],
                   metrics=dict(data["metrics"]), period_days=data["period_days"],
                   trusted_days=data["trusted_days"], population_hazard=data["population_hazard"],
                   platt=(data["platt"][0], data["platt"][1]),
                   trees=None if trees is None else Trees(trees["baseline"], tuple(
                       (tuple(t[0]), tuple(t[1]), tuple(t[2]), tuple(t[3]), tuple(t[4])) for t in trees["trees"])),
                   beta_geo=None if data["beta_geo"] is None else BetaGeo(*data["beta_geo"]),
                   gains=tuple(data["gains"]))


# ---------------------------------------------------------------------- training

def _happened(f: Features, kind: str, start: int, end: int) -> bool:
    """Did the user buy (or start a session) in (start, end]? Exact while f.exact_at(start)."""
    times = f.sessions if kind == ACTIVITY else [t for t, _ in f.purchases]
    return any(start < t <= end for t in reversed(times))


def _at(f: Features | None, t: int) -> Features | None:
    return f.as_of(t) if f is not None and f.exact_at(t) else None


def examples(features: Sequence[Features], as_of: int, period_days: int, kind: str,
             max_examples: int = MAX_EXAMPLES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, labels, anchors): every user's features at anchors as_of - k*period (k >= 1) and
    whether they bought in the period after. Only windows that ended by `as_of` are used."""
    period = period_days * DAY
    start = min((f.first for f in features), default=as_of)
    anchors = list(range(as_of - period, start - 1, -period))
    users = list(features)
    expected = sum(1 for t in anchors for f in users if f.first <= t)
    if expected > max_examples:  # a deterministic sample of users, the same for every anchor
        keep = max_examples / expected
        users = [f for f in users if zlib.crc32(repr((f.first, f.last)).encode()) / 2**32 < keep]
    rows, labels, when = [], [], []
    for t in anchors:
        for f in users:
            g = _at(f, t) if f.first <= t else None
            if g is not None:
                rows.append(vector(g, t))
                labels.append(_happened(f, kind, t, t + period))
                when.append(t)
    return (np.asarray(rows, dtype=float).reshape(-1, len(NAMES)), np.asarray(labels, dtype=float),
            np.asarray(when, dtype=np.int64))


def _classifier(seed: int, max_trees: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    # shallow trees, strongly regularised: composed over many periods, a smooth hazard extrapolates
    # better than a sharp one (measured on CDNOW: 3-leaf trees beat 7-, 15- and 31-leaf ones)
    return HistGradientBoostingClassifier(max_iter=max_trees, learning_rate=0.1, max_leaf_nodes=3,
                                          min_samples_leaf=200, l2_regularization=1.0, early_stopping=False,
                                          random_state=seed)


def _platt(margins: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling of the trees' margin on the time-split holdout: logit P = a + b * margin."""
    from sklearn.linear_model import LogisticRegression
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(margins.reshape(-1, 1), labels)
    return float(lr.intercept_[0]), float(lr.coef_[0, 0])


def _level(margins: np.ndarray, labels: np.ndarray, slope: float) -> float:
    """The intercept that keeps the mean calibrated hazard on all training windows at their
    observed rate, for a given slope."""
    from scipy.optimize import brentq
    target = float(labels.mean())

    def gap(a: float) -> float:
        return float((1.0 / (1.0 + np.exp(-(a + slope * margins)))).mean()) - target
    return float(brentq(gap, -30.0, 30.0))


def _fallback(kind: str, period_days: int, reason: str, evidence: int, hazard: float,
              trusted: float) -> PurchaseModel:
    return PurchaseModel(kind=kind, status="fallback", reason=reason, evidence=evidence, metrics={},
                         period_days=period_days, trusted_days=trusted, population_hazard=hazard)


def period_for(span_days: float) -> int:
    """The hazard's period for a history of `span_days`: 30 days once four of them fit (labels from
    several anchors, a holdout among them), else the largest of 14 and 7 days that fits four times,
    else 7 (a log of a few weeks: a young shop, a short backtest, the example shop's sample)."""
    for days in (30, 14, 7):
        if span_days >= 4 * days:
            return days
    return 7


def fit_purchase(users: Sequence[tuple[str, Features | None, Any]], as_of: int, *,
                 horizons: Sequence[int] = (30, 60, 90), kind: str = PURCHASE, period_days: int | None = None,
                 min_examples: int = MIN_EXAMPLES, min_positives: int = MIN_POSITIVES, max_trees: int = 150,
                 max_examples: int = MAX_EXAMPLES, seed: int = 0) -> PurchaseModel:
    """Train as of `as_of` from the users' features (rewound to `as_of`; users not exactly
    rewindable there are skipped). `horizons` are those whose metrics are measured on the internal
    time split; every horizon can be scored. `period_days`: the hazard's period; by default 30
    days, shorter for a history too short to hold four of them (`period_for`)."""
    if kind not in (PURCHASE, ACTIVITY):
        raise ValueError(f"kind must be {PURCHASE!r} or {ACTIVITY!r}, not {kind!r}")
    features = [g for _, f, _ in users if (g := _at(f, as_of)) is not None]
    span_days = (as_of - min((f.first for f in features), default=as_of)) / DAY
    if period_days is None:
        period_days = period_for(span_days)
    period = period_days * DAY
    trusted = max(float(period_days), span_days / 2)
    X, y, when = examples(features, as_of, period_days, kind, max_examples)
    # the latest whole periods (up to 3, at most a third of the history) are the time-split holdout
    validation_periods = max(1, min(3, int(span_days / 3 // period_days)))
    split = as_of - validation_periods * period
    late = when + period > split
    hazard = float(y[late].mean()) if late.any() else (float(y.mean()) if len(y) else 0.0)
    positives = int(y.sum())
    if len(y) < min_examples or positives < min_positives or len(set(y[~late])) < 2 or len(set(y[late])) < 2:
        return _fallback(kind, period_days, f"too little data: {len(y)} labelled examples with {positives} "
                         f"positives ({min_examples} and {min_positives} needed, before and after "
                         f"{validation_periods * period_days} days before training time)", len(y), hazard, trusted)
    with one_thread():
        early_model = _classifier(seed, max_trees).fit(X[~late], y[~late])
    # trees: as many as the holdout's log loss wants
    losses = [_log_loss(y[late], p[:, 1]) for p in early_model.staged_predict_proba(X[late])]
    n_trees = int(np.argmin(losses)) + 1
    early = Trees.of(early_model, n_trees)
    # Calibration: the holdout sets the slope (how sharp the hazards are); the level comes from all
    # the history, because a level fitted on the latest weeks alone carries their season into every
    # horizon (on CDNOW it cost 0.002-0.004 Brier on each of three splits). The holdout's own
    # intercept is reported as drift.
    drift, slope = _platt(early.margins(X[late]), y[late])
    with one_thread():
        final_model = _classifier(seed, n_trees).fit(X, y)
    trees = Trees.of(final_model, n_trees)
    platt = (_level(trees.margins(X), y, slope), slope)
    model = PurchaseModel(kind=kind, status="ok", reason=None, evidence=len(y), metrics={},
                          period_days=period_days, trusted_days=trusted, population_hazard=hazard, platt=platt,
                          trees=trees, beta_geo=beta_geo_of(features, as_of, kind),
                          gains=tuple(trees.gains(final_model, n_trees)))
    early_platt = (_level(early.margins(X[~late]), y[~late], slope), slope)
    metrics = _holdout_metrics(replace(model, trees=early, platt=early_platt), features, split, as_of, horizons, kind)
    metrics.update({"trees": float(n_trees), "validation_days": float(validation_periods * period_days),
                    "period_log_loss": float(losses[n_trees - 1]), "holdout_slope": slope,
                    "holdout_drift": drift})
    return replace(model, metrics=metrics)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _holdout_metrics(early: PurchaseModel, features: Sequence[Features], split: int, as_of: int,
                     horizons: Sequence[int], kind: str) -> dict[str, float]:
    """ROC AUC, PR AUC and Brier of the early model (trees fitted before `split`) composed over each
    horizon that fits in (split, as_of]: how the model did on the latest, unseen stretch."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
    probe = replace(early, beta_geo=beta_geo_of([g for f in features if (g := _at(f, split)) is not None], split, kind))
    out: dict[str, float] = {}
    days = (as_of - split) // DAY
    chosen = sorted({int(h) for h in horizons if 0 < h <= days} | {int(days)})
    pairs = [(g, f) for f in features if (g := _at(f, split)) is not None]
    for h, p in zip(chosen, probe.curves([g for g, _ in pairs], split, chosen)):
        y = np.array([_happened(f, kind, split, split + h * DAY) for _, f in pairs], dtype=float)
        if 0 < y.sum() < len(y):
            out[f"roc_auc_{h}d"] = float(roc_auc_score(y, p))
            out[f"pr_auc_{h}d"] = float(average_precision_score(y, p))
            out[f"brier_{h}d"] = float(brier_score_loss(y, p))
            out[f"base_rate_{h}d"] = float(y.mean())
    return out


# ---------------------------------------------------------------------- backtest

def evaluate_purchase(users: Sequence[tuple[str, Features | None, Any]], cutoff: int, holdout_end: int, *,
                      at_cutoff: Mapping[str, Features | None] | None = None, kind: str = PURCHASE,
                      reference: bool = False, **settings: Any) -> dict[str, Any]:
    """Time-split backtest: train as of `cutoff` on nothing later, predict "buys (or is active) in
    (cutoff, holdout_end]" for every user known by the cutoff, beside baselines fitted in the same
    run: BG/NBD on the same transactions, recency alone (a ranking: ROC AUC only), the population
    rate (Brier only) and, with `reference`, the cross-validated GBM of `reference_gbm`.

    `users` hold features as of `holdout_end` (the labels are read from them); `at_cutoff` gives
    each user's features at the cutoff when the caller has them (else they are rewound; a user whose
    timelines cannot be rewound exactly is left out and counted in "skipped")."""
    import time

    from sklearn.metrics import roc_auc_score
    ids, before, labels, skipped = [], [], [], 0
    for uid, f, _ in users:
        g = at_cutoff.get(uid) if at_cutoff is not None else (_at(f, cutoff) if f is not None else None)
        if at_cutoff is None and f is not None and f.first <= cutoff and g is None:
            skipped += 1
        if g is None or g.first > cutoff or f is None:
            continue
        ids.append(uid)
        before.append(g)
        labels.append(_happened(f, kind, cutoff, holdout_end))
    y = np.asarray(labels, dtype=float)
    horizon = (holdout_end - cutoff) / DAY
    started = time.perf_counter()
    model = fit_purchase([(u, g, None) for u, g in zip(ids, before)], cutoff, kind=kind, **settings)
    train_seconds = time.perf_counter() - started
    p = model.probabilities(before, cutoff, horizon)
    sample = before[:: max(1, len(before) // 2000)]
    started = time.perf_counter()
    for g in sample:
        model.probability(g, cutoff, horizon)
    score_us = (time.perf_counter() - started) / max(len(sample), 1) * 1e6
    started = time.perf_counter()
    for g in sample:
        model.probability(g, cutoff, 30)
    score_us_30d = (time.perf_counter() - started) / max(len(sample), 1) * 1e6
    out: dict[str, Any] = {"horizon_days": horizon, "users": len(ids), "skipped": skipped,
                           "base_rate": float(y.mean()) if len(y) else 0.0, "status": model.status,
                           "reason": model.reason, "train_seconds": train_seconds, "score_us": score_us,
                           "score_us_30d": score_us_30d,
                           "model": scores(y, p) if 0 < y.sum() < len(y) else {},
                           "calibration": calibration_table(y, p), "importances": model.importances()}
    if not 0 < y.sum() < len(y):
        return out
    bg = model.beta_geo if model.beta_geo is not None else beta_geo_of(before, cutoff, kind)
    if bg is not None:
        q = np.array([1.0 - extension(bg, g, cutoff, kind, 0.0, horizon) if transactions_of(g, kind) else
                      float(y.mean()) for g in before])
        out["bgnbd"] = scores(y, q)
    last = [transactions_of(g, kind) for g in before]
    out["recency"] = {"roc_auc": float(roc_auc_score(y, [t[2] if t else -1e18 for t in last]))}
    population = np.full(len(y), model.probability(None, cutoff, horizon))
    out["population"] = {"brier": float(np.mean((population - y) ** 2))}
    if reference:
        X = np.array([vector(g, cutoff) for g in before])
        out["reference_gbm"] = scores(y, reference_gbm(X, y))
    return out
