"""What the purchase and churn models read from a user's features, and the buy-till-you-die model
they lean on past the horizons their labels cover.

`vector(f, now, kind)` turns one user's timelines into a fixed row of numbers as of `now`: recency,
frequency and monetary value, inter-purchase gaps, sessions, items viewed and added, messages and
engagement. Every column is computed from the timelines and `now` alone, so moving `now` forward
without new events gives exactly the row the user would have if nothing happened in between: that
is how a hazard model is composed over any horizon (see purchase.py). "Never" is -1, a value no
real duration takes, so trees split it off.

`BetaGeo` is the BG/NBD model (Fader, Hardie and Lee, 2005): purchases at a Poisson rate while
alive, a coin flip after each purchase that ends the customer, both heterogeneous across customers
(gamma and beta). Its maximum-likelihood fit takes a second with scipy; it extrapolates to any
horizon by its structure, which a classifier trained on, say, nine months of labels cannot do for
a twelve-month question.

Also here: `Trees`, a boosted ensemble exported to plain lists (scored in pure Python, stored as
JSON), and for the backtests the metrics, the calibration table and the reference GBM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

from engine.models.features import (
    ADD,
    CLICK,
    CONVERT,
    OPEN,
    UNSUBSCRIBE,
    VIEW,
    Features,
)

DAY = 86400
WEEK = 7 * DAY
NEVER = -1.0
PURCHASE, ACTIVITY = "purchase", "activity"

NAMES = (
    "purchases", "days_since_purchase", "age_days", "purchases_30d", "purchases_90d", "purchases_365d",
    "mean_gap_days", "recency_over_gap", "last_gap_days", "log_mean_amount", "log_last_amount",
    "days_since_session", "sessions_7d", "sessions_30d", "sessions", "purchases_per_30d",
    "items_30d", "days_since_add", "adds_since_purchase",
    "engagements_30d", "days_since_engagement", "messages_30d", "unsubscribed",
)
_ENGAGED = frozenset({OPEN, CLICK, CONVERT})


def vector(f: Features, now: int) -> list[float]:
    """The row of `NAMES` for one user as of `now`, from features as they stood at `now` or earlier
    (`f.as_of(now)`): nothing later may be in them. Pure Python, a few microseconds."""
    n = f.frequency
    age = (now - f.first) / DAY
    last_purchase = f.last_purchase
    recency = (now - last_purchase) / DAY if last_purchase is not None else NEVER
    times = [t for t, _ in f.purchases]
    n30 = n90 = n365 = 0
    for t in reversed(times):
        d = now - t
        if d > 365 * DAY:
            break
        n365 += 1
        n90 += d <= 90 * DAY
        n30 += d <= 30 * DAY
    if len(times) >= 2:
        mean_gap = (times[-1] - times[0]) / (len(times) - 1) / DAY
        last_gap = (times[-1] - times[-2]) / DAY
    else:
        mean_gap = last_gap = NEVER
    over_gap = recency / mean_gap if mean_gap > 0 and recency >= 0 else NEVER
    log_mean = math.log1p(f.revenue_cents / n / 100) if n else NEVER
    log_last = math.log1p(f.purchases[-1][1] / 100) if f.purchases else NEVER
    sessions = f.sessions
    since_session = (now - sessions[-1]) / DAY if sessions else NEVER
    s7 = s30 = 0
    for s in reversed(sessions):
        d = now - s
        if d > 30 * DAY:
            break
        s30 += 1
        s7 += d <= 7 * DAY
    items30 = adds_after = 0
    last_add = None
    for t, kind, _, _ in f.items:
        if kind == ADD:
            last_add = t
            adds_after += last_purchase is None or t > last_purchase
        if (kind == VIEW or kind == ADD) and now - t <= 30 * DAY:
            items30 += 1
    engaged30 = 0
    last_engaged = None
    unsubscribed = 0.0
    for events in f.engagements.values():
        for t, kind in events:
            if kind in _ENGAGED:
                engaged30 += now - t <= 30 * DAY
                last_engaged = t if last_engaged is None or t > last_engaged else last_engaged
            elif kind == UNSUBSCRIBE:
                unsubscribed = 1.0
    messages30 = sum(1 for times_ in f.messages.values() for t in times_ if now - t <= 30 * DAY)
    return [float(n), recency, age, float(n30), float(n90), float(n365), mean_gap, over_gap, last_gap, log_mean,
            log_last, since_session, float(s7), float(s30), float(f.session_count), 30.0 * n / max(age, 1.0),
            float(items30), (now - last_add) / DAY if last_add is not None else NEVER, float(adds_after),
            float(engaged30), (now - last_engaged) / DAY if last_engaged is not None else NEVER,
            float(messages30), unsubscribed]


@dataclass(frozen=True)
class Trees:
    """A boosted ensemble as plain lists: per tree (feature, threshold, left, right, value) with
    feature -1 at leaves. `margin(x)` = baseline + the leaves reached (x <= threshold goes left)."""

    baseline: float
    trees: tuple[tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...]], ...]

    def margin(self, x: Sequence[float]) -> float:
        s = self.baseline
        for feature, threshold, left, right, value in self.trees:
            n = 0
            while feature[n] >= 0:
                n = left[n] if x[feature[n]] <= threshold[n] else right[n]
            s += value[n]
        return s

    def margins(self, X: np.ndarray) -> np.ndarray:
        """`margin` of every row of X at once (training and batch scoring)."""
        s = np.full(len(X), self.baseline)
        rows = np.arange(len(X))
        for feature, threshold, left, right, value in self.trees:
            f, t, lo, hi, v = (np.asarray(a) for a in (feature, threshold, left, right, value))
            n = np.zeros(len(X), dtype=np.int64)
            while True:
                inner = f[n] >= 0
                if not inner.any():
                    break
                go_left = X[rows, np.maximum(f[n], 0)] <= t[n]
                n = np.where(inner, np.where(go_left, lo[n], hi[n]), n)
            s += v[n]
        return s

    @classmethod
    def of(cls, estimator: Any, n_trees: int) -> Trees:
        """Export the first `n_trees` trees of a fitted binary HistGradientBoostingClassifier."""
        out = []
        for (predictor,) in estimator._predictors[:n_trees]:
            nodes = predictor.nodes
            out.append((tuple(-1 if leaf else int(f) for f, leaf in zip(nodes["feature_idx"], nodes["is_leaf"])),
                        tuple(float(t) for t in nodes["num_threshold"]), tuple(int(i) for i in nodes["left"]),
                        tuple(int(i) for i in nodes["right"]), tuple(float(v) for v in nodes["value"])))
        return cls(float(np.ravel(estimator._baseline_prediction)[0]), tuple(out))

    def gains(self, estimator: Any, n_trees: int) -> list[float]:
        total = [0.0] * len(NAMES)
        for (predictor,) in estimator._predictors[:n_trees]:
            for node in predictor.nodes:
                if not node["is_leaf"]:
                    total[int(node["feature_idx"])] += max(float(node["gain"]), 0.0)
        return total


def transactions(f: Features, kind: str) -> tuple[int, int, int] | None:
    """(repeat count, first, latest time) of the transactions BG/NBD counts — purchases, or sessions
    for `kind="activity"` — or None before the first. When the oldest have fallen off a timeline the
    user's first event stands in for the first transaction (a heavy buyer either way)."""
    if kind == ACTIVITY:
        if not f.sessions:
            return None
        first = f.first if f.sessions_before else f.sessions[0]
        return f.session_count - 1, first, f.sessions[-1]
    last = f.last_purchase
    if last is None:
        return None
    first = f.first if f.purchases_before[0] else f.purchases[0][0]
    return f.frequency - 1, first, last


@dataclass(frozen=True, slots=True)
class BetaGeo:
    """Fitted BG/NBD parameters (time in weeks)."""

    r: float
    alpha: float
    a: float
    b: float

    def survival(self, x: float, tx: float, T: float, weeks: float) -> float:
        """P(no transaction in (T, T + weeks]) for a customer with `x` repeat transactions, the
        latest at `tx`, observed for `T` (weeks since the first): alive and silent, or gone."""
        alive = 1.0
        if x > 0:
            log_ratio = (math.log(self.a) - math.log(max(self.b + x - 1, 1e-12))
                         + (self.r + x) * (math.log(self.alpha + T) - math.log(self.alpha + tx)))
            alive = 1.0 / (1.0 + math.exp(min(log_ratio, 700.0)))
        silent = math.exp((self.r + x) * (math.log(self.alpha + T) - math.log(self.alpha + T + weeks)))
        return 1.0 - alive + alive * silent

    def survival_array(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, weeks: float | np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", divide="ignore"):
            log_ratio = (np.log(self.a) - np.log(np.maximum(self.b + x - 1, 1e-12))
                         + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + tx)))
            alive = np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0))), 1.0)
        silent = np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + T + weeks)))
        return 1.0 - alive + alive * silent

    def to_plain(self) -> list[float]:
        return [self.r, self.alpha, self.a, self.b]


def fit_beta_geo(x: Sequence[float], tx: Sequence[float], T: Sequence[float]) -> BetaGeo | None:
    """Maximum likelihood on (repeat count, recency, age) in weeks; None when it does not converge
    to finite parameters (too few customers, or none repeats)."""
    x_, tx_, T_ = (np.asarray(v, dtype=float) for v in (x, tx, T))
    if len(x_) < 20 or not (x_ > 0).any():
        return None
    positive = x_ > 0

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(np.clip(log_params, -20, 20))
        head = gammaln(r + x_) - gammaln(r) + r * math.log(alpha) + betaln(a, b + x_) - betaln(a, b)
        still = -(r + x_) * np.log(alpha + T_)
        gone = np.full_like(x_, -np.inf)
        gone[positive] = (math.log(a) - np.log(b + x_[positive] - 1) - (r + x_[positive]) * np.log(alpha + tx_[positive]))
        return float(-(head + np.logaddexp(still, gone)).sum())

    start = np.log([0.5, max(float(T_.mean()), 1e-3), 1.0, 1.0])
    best = minimize(negative_log_likelihood, start, method="L-BFGS-B")
    if not best.success:  # the gradient-free way, slower but sure-footed
        coarse = minimize(negative_log_likelihood, start, method="Nelder-Mead",
                          options={"maxiter": 4000, "xatol": 1e-5, "fatol": 1e-6})
        best = coarse if coarse.fun < best.fun else best
    params = np.exp(np.clip(best.x, -20, 20))
    if not np.isfinite(best.fun) or not np.all(np.isfinite(params)):
        return None
    return BetaGeo(*(float(p) for p in params))


def beta_geo_of(features: Sequence[Features], now: int, kind: str) -> BetaGeo | None:
    """BG/NBD fitted on every user's transactions as of `now`."""
    rows = [t for f in features if (t := transactions(f, kind)) is not None and t[1] <= now]
    if not rows:
        return None
    x = [r[0] for r in rows]
    tx = [(r[2] - r[1]) / WEEK for r in rows]
    T = [(now - r[1]) / WEEK for r in rows]
    return fit_beta_geo(x, tx, T)


def extension(model: BetaGeo | None, f: Features | None, now: int, kind: str, from_days: float,
              to_days: float) -> float:
    """P(no transaction in (now + from_days, now + to_days] | none in (now, now + from_days]) by
    BG/NBD: how the survival a classifier gave up to `from_days` continues to `to_days`. 1 for a
    user BG/NBD cannot describe (no transaction yet), whose survival the caller extends itself."""
    if model is None or f is None or to_days <= from_days:
        return 1.0
    tr = transactions(f, kind)
    if tr is None:
        return 1.0
    x, first, last = tr
    tx, T = (last - first) / WEEK, max(now - first, last - first) / WEEK
    near = model.survival(x, tx, T, from_days / 7)
    return model.survival(x, tx, T, to_days / 7) / near if near > 0 else 1.0


# ---------------------------------------------------------------------- backtest helpers

def one_thread():
    """Fits run on one OpenMP thread: on a busy machine (a daemon, or tests beside other work)
    HistGradientBoosting's threads wait on each other, ten times slower than one (measured: 33 s
    against 2.9 s on a loaded 2-core box); the fits here are small enough for one core."""
    import contextlib
    try:
        from sklearn.utils.fixes import _get_threadpool_controller
        return _get_threadpool_controller().limit(limits=1, user_api="openmp")
    except (ImportError, AttributeError, TypeError, ValueError):  # no such helper: the default threads
        return contextlib.nullcontext()


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "brier": float(brier_score_loss(y, np.clip(p, 0.0, 1.0)))}


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Deciles of the prediction: mean predicted beside the observed rate, and how many users."""
    order = np.argsort(p, kind="stable")
    return [{"predicted": float(p[idx].mean()), "observed": float(y[idx].mean()), "users": float(len(idx))}
            for idx in np.array_split(order, bins) if len(idx)]


def reference_gbm(X: np.ndarray, y: np.ndarray, seed: int = 0,
                  grid: dict[str, list[Any]] | None = None) -> np.ndarray:
    """An upper reference, not a deployable model: a gradient-boosted classifier on the features at
    the cutoff, trained on the HOLDOUT labels of other customers (5-fold cross-validation over
    customers), tuned on a small grid by inner cross-validation. Out-of-fold probabilities."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
    grid = grid or {"learning_rate": [0.03, 0.1], "max_leaf_nodes": [7, 15], "min_samples_leaf": [50, 200]}
    base = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=seed)
    search = base.set_params(**{k: v[0] for k, v in grid.items()}) if all(len(v) == 1 for v in grid.values()) else \
        GridSearchCV(base, grid, cv=StratifiedKFold(3, shuffle=True, random_state=seed), scoring="roc_auc")
    with one_thread():
        return cross_val_predict(search, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                             method="predict_proba")[:, 1]
