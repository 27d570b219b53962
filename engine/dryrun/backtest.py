"""`journeys models`: a backtest of every model on one time split of a log, beside its baselines.

Why one split, and how it stays honest. The whole log runs through the engine exactly as in
`journeys simulate` (features on; the project's journeys too, so the engine's own sends are in the
users' message timelines, as in the daemon), and every user's features are taken at its end. A
cutoff splits the log: each model trains on the features rewound to the cutoff (`f.as_of(cutoff)`,
so nothing later exists for it) and is judged on what the users did in the horizon after it. Each
baseline is fitted in the same run on the same rewound features, so the comparison is like for
like. Users whose features cannot be rewound exactly (`Features.exact_at`: a timeline dropped
something after the cutoff) are left out of the purchase and churn judgements, and counted.

The cutoff defaults to 75 % of the log's span, at a UTC day boundary. The horizon must fit after
it; when it does not, it is shortened to the whole days that remain, and `notes` says so.

What is measured:
- purchase within the horizon, and churn (no activity within it): ROC AUC, PR AUC and Brier score
  (sklearn.metrics), a calibration table and a cumulative gains curve, beside "recency rank"
  (the more recent the last purchase, or activity, the likelier) and "population rate" (the rate
  of the same event in the horizon before the cutoff, for everyone); the model's importances;
- next products: `evaluate_recommender` (HitRate@5, NDCG@5 beside most popular and most viewed);
- best send time: `evaluate_sendtime` per channel (±1 h hit rate beside global and user mode);
- learned caps: `evaluate_fatigue` with its holdout split placed at the cutoff (log loss and ROC
  AUC of engagement per message beside the population's rate per window count).

A part that cannot be judged (too little data, nothing bought after the cutoff, a model that
raised) has `status` "not evaluated" and a `reason`; `backtest` never raises for the data. The
result is deterministic: timings are left out and floats rounded to 6 places, so the same log
gives the same dict.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from journeys.graph import format_duration

from ..core.messages import Message
from ..core.program import Program
from ..models.features import Features, seconds
from ..runtime.loop import run_until
from .scores import run_with_features

DAY = 86400
CUTOFF_SHARE = 0.75  # the default cutoff: this share of the log's span, floored to a day boundary
CALIBRATION_BINS = 10
GAINS_POINTS = 20  # the gains curve at every 5 % of the users targeted
TIMINGS = frozenset({"fit_seconds", "score_us"})  # measured, so not reproducible: left out
NOT_EVALUATED = "not evaluated"

Row = tuple[str, Features, Any]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # the clock of a run of an empty log (nothing happens)


class BacktestError(ValueError):
    """The cutoff asked for cannot split this log (`option` names the command-line option)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option


# ------------------------------------------------------------------------------- the run


def run_features(program: Program, messages: Iterable[Message]) -> tuple[list[Row], dict[str, Any]]:
    """Every user's features at the end of the log, with their zone, and the log's extent.

    The models retrain on the program's schedule during the run only when the project reads
    predictions (then they steer the journeys, whose sends the features record); otherwise no
    journey depends on them and the run skips the trainings."""
    uses_models = program.features_on
    extent = {"messages": 0, "first": None, "last": None}

    def counted(stream: Iterable[Message]):
        for m in stream:
            extent["messages"] += 1
            if extent["first"] is None or m.timestamp < extent["first"]:
                extent["first"] = m.timestamp
            if extent["last"] is None or m.timestamp > extent["last"]:
                extent["last"] = m.timestamp
            yield m

    engine = run_with_features(program, counted(messages), start=_EPOCH, train_inline=uses_models)
    if extent["last"] is None:
        return [], extent
    run_until(engine, extent["last"])
    return engine.training_rows(extent["last"]), extent


def choose_split(first: int, last: int, cutoff: int | None, horizon: int) -> tuple[int, int, list[str]]:
    """(cutoff, horizon, notes): the default cutoff at CUTOFF_SHARE of the span, on a day boundary;
    the horizon shortened to the whole days (else seconds) left after the cutoff when it does not fit."""
    notes: list[str] = []
    if cutoff is None:
        cutoff = (first + int((last - first) * CUTOFF_SHARE)) // DAY * DAY
        if cutoff <= first:
            cutoff = first + (last - first) // 2
    elif cutoff <= first or cutoff >= last:
        raise BacktestError("--cutoff", f"{_iso(cutoff)} is not inside the log, which runs from {_iso(first)} "
                                        f"to {_iso(last)}")
    left = last - cutoff
    if left < horizon:
        shorter = left // DAY * DAY or left
        notes.append(f"the horizon {format_duration(horizon)} does not fit after the cutoff {_iso(cutoff)} "
                     f"(the log ends {_iso(last)}): shortened to {format_duration(shorter)}")
        horizon = shorter
    return cutoff, horizon, notes


# ------------------------------------------------------------------------------- the backtest


def backtest(program: Program, messages: Iterable[Message], *, cutoff: datetime | None = None,
             horizon: int = 30 * DAY) -> dict[str, Any]:
    """Every model judged on one time split of the log (module docstring), as a JSON-ready dict."""
    rows, extent = run_features(program, messages)
    out: dict[str, Any] = {"log": {"messages": extent["messages"], "first": _iso_dt(extent["first"]),
                                   "last": _iso_dt(extent["last"]), "users": len(rows)}}
    if not rows or extent["first"] is None or extent["first"] == extent["last"]:
        reason = "the log holds no user with events" if not rows else "the log spans a single moment"
        out.update({"cutoff": None, "horizon": None, "horizon_seconds": None, "notes": [reason]})
        for part in ("purchase", "churn", "recommender", "sendtime", "fatigue"):
            out[part] = {"status": NOT_EVALUATED, "reason": reason}
        return out
    when, h, notes = choose_split(seconds(extent["first"]), seconds(extent["last"]),
                                  None if cutoff is None else seconds(cutoff), horizon)
    out.update({"cutoff": _iso(when), "horizon": format_duration(h), "horizon_seconds": h, "notes": notes})
    out["purchase"] = _guarded(lambda: evaluate_probability(rows, when, h, "purchase"))
    out["churn"] = _guarded(lambda: evaluate_probability(rows, when, h, "churn"))
    out["recommender"] = _guarded(lambda: evaluate_next_products(rows, when, h))
    out["sendtime"] = _guarded(lambda: evaluate_send_times(rows, when, h))
    out["fatigue"] = _guarded(lambda: evaluate_caps(rows, when, h))
    return _clean(out)


def _guarded(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part's result; a model that raises is that part's reason, never the whole backtest's."""
    try:
        return part()
    except Exception as exc:  # noqa: BLE001 - the other parts still report
        return {"status": NOT_EVALUATED, "reason": f"the evaluation failed: {type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------------------- purchase and churn


def _bought(f: Features, start: int, end: int) -> bool:
    """A purchase in (start, end]."""
    return any(start < t <= end for t, _ in f.purchases) or start < f.purchases_before[2] <= end


def _active(f: Features, start: int, end: int) -> bool:
    """Any activity in (start, end]: a session starting there (what the activity model predicts)."""
    return any(start < s <= end for s in f.sessions)


def _recency(f: Features, now: int, kind: str) -> float:
    """Days since the last purchase (purchase) or the last activity (churn); never bought: infinite."""
    t = f.last_purchase if kind == "purchase" else f.last
    return math.inf if t is None else (now - t) / DAY


def _population_rate(rows: Sequence[Row], cutoff: int, horizon: int, label: Callable[[Features, int, int], bool]
                     ) -> tuple[float | None, int, int]:
    """The event's rate in the horizon before the cutoff among the users present at its start (the
    window starts no earlier than the first user's first event): (rate, users, window seconds)."""
    first = min(f.first for _, f, _ in rows)
    start = max(cutoff - horizon, first)
    base = [f.as_of(cutoff) for _, f, _ in rows if f.first <= start and f.exact_at(cutoff)]
    base = [f for f in base if f is not None]
    if not base:
        return None, 0, cutoff - start
    return sum(label(f, start, cutoff) for f in base) / len(base), len(base), cutoff - start


def evaluate_probability(rows: Sequence[Row], cutoff: int, horizon: int, kind: str) -> dict[str, Any]:
    """Purchase (kind "purchase") or churn ("churn": no activity) within `horizon` after `cutoff`:
    the model fitted on the features as of the cutoff, beside recency rank and the population rate."""
    from ..models.purchase import fit_purchase

    family = "purchase" if kind == "purchase" else "activity"
    positive = _bought if kind == "purchase" else _active
    end = cutoff + horizon
    earlier = [(u, g, z) for u, f, z in rows if (g := f.as_of(cutoff)) is not None]
    judged = [(u, f, f.as_of(cutoff)) for u, f, _ in rows if f.first <= cutoff and f.exact_at(cutoff)]
    inexact = len(earlier) - len(judged)
    out: dict[str, Any] = {"event": "a purchase" if kind == "purchase" else "no activity",
                           "users": len(judged), "users_left_out": inexact}
    model = fit_purchase(earlier, cutoff, kind=family)
    out["training"] = {"status": model.status, "reason": model.reason, "evidence": model.evidence,
                       "metrics": dict(sorted(model.metrics.items()))}
    out["importances"] = _importances(model)
    if not judged:
        return {"status": NOT_EVALUATED, "reason": "no user had events before the cutoff", **out}
    happened = np.array([positive(f, cutoff, end) for _, f, _ in judged], dtype=int)
    y = happened if kind == "purchase" else 1 - happened
    out["positives"] = int(y.sum())
    out["rate"] = float(y.mean())
    if y.min() == y.max():
        what = "bought" if kind == "purchase" else "churned"
        return {"status": NOT_EVALUATED, "reason": f"{'every' if y.min() else 'no'} user {what} in the horizon "
                                                   f"after the cutoff: nothing to tell apart", **out}
    days = horizon / DAY
    p_model = np.array([model.probability(g, cutoff, days) for _, _, g in judged], dtype=float)
    if kind == "churn":
        p_model = 1.0 - p_model
    p_model = np.clip(np.nan_to_num(p_model, nan=0.5), 0.0, 1.0)
    recency = np.array([_recency(g, cutoff, kind) for _, _, g in judged])
    finite = recency[np.isfinite(recency)]
    recency[~np.isfinite(recency)] = (finite.max() if len(finite) else 0.0) + 1.0  # never: oldest of all
    rank = -recency if kind == "purchase" else recency  # higher: likelier
    rate, base_users, window = _population_rate(rows, cutoff, horizon, positive)
    if rate is not None and kind == "churn":
        rate = 1.0 - rate
    ids = [u for u, _, _ in judged]
    baselines: dict[str, dict[str, float | None]] = {"recency_rank": _scores(y, rank, probabilities=False)}
    if rate is not None:
        baselines["population_rate"] = _scores(y, np.full(len(y), rate), probabilities=True)
        out["population_rate"] = {"rate": rate, "users": base_users, "window": format_duration(window)}
    mine = _scores(y, p_model, probabilities=True)
    out["model"] = mine
    out["baselines"] = baselines
    out["metrics"] = comparison(mine, baselines, (("roc_auc", True), ("pr_auc", True), ("brier", False)))
    out["calibration"] = calibration_table(y, p_model)
    out["gains"] = {"share_targeted": [round(k / GAINS_POINTS, 6) for k in range(GAINS_POINTS + 1)],
                    "model": gains(y, p_model, ids), "recency_rank": gains(y, rank, ids)}
    return {"status": "ok", "reason": None, **out}


def _importances(model: Any) -> list[dict[str, Any]]:
    """The model's importances, largest first (a list: JSON's sorted keys would lose the order)."""
    read = getattr(model, "importances", None)
    if read is None:
        return []
    got = read() or {}
    items = got.items() if isinstance(got, Mapping) else got
    return [{"feature": str(k), "importance": float(v)}
            for k, v in sorted(items, key=lambda kv: (-abs(float(kv[1])), str(kv[0])))]


def _scores(y: np.ndarray, score: np.ndarray, probabilities: bool) -> dict[str, float | None]:
    """ROC AUC and PR AUC of a ranking; the Brier score too when the scores are probabilities."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    return {"roc_auc": float(roc_auc_score(y, score)), "pr_auc": float(average_precision_score(y, score)),
            "brier": float(brier_score_loss(y, score)) if probabilities else None}


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Per non-empty bin of predicted probability (equal widths, sklearn's `calibration_curve`
    binning): the mean prediction, the observed rate and the number of users."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p, side="right"), minlength=bins)
    n = counts[counts > 0]
    return [{"mean_predicted": float(a), "observed": float(b), "n": int(c)} for a, b, c in zip(predicted, observed, n)]


def gains(y: np.ndarray, score: np.ndarray, ids: Sequence[str]) -> list[float]:
    """The share of the positives found when targeting the top k/GAINS_POINTS of the users by score
    (ties broken by user id, so the curve is reproducible)."""
    order = sorted(range(len(y)), key=lambda i: (-float(score[i]), ids[i]))
    found = np.concatenate([[0], np.cumsum(y[order])])
    total = found[-1] or 1
    return [float(found[round(len(y) * k / GAINS_POINTS)] / total) for k in range(GAINS_POINTS + 1)]


def comparison(model: Mapping[str, float | None], baselines: Mapping[str, Mapping[str, float | None]],
               metrics: Sequence[tuple[str, bool]]) -> list[dict[str, Any]]:
    """One row per metric: the model's value, each baseline's, and which is best ("model" or a
    baseline's name; the model on a tie)."""
    rows = []
    for name, higher in metrics:
        value = model.get(name)
        others = {b: v.get(name) for b, v in baselines.items()}
        best, best_value = "model", value
        for b, v in others.items():
            if v is None:
                continue
            if best_value is None or (v > best_value + 1e-12 if higher else v < best_value - 1e-12):
                best, best_value = b, v
        rows.append({"metric": name, "higher_is_better": higher, "model": value, "baselines": others, "best": best})
    return rows


# ------------------------------------------------------------------------------- the other families


def evaluate_next_products(rows: Sequence[Row], cutoff: int, horizon: int) -> dict[str, Any]:
    from ..models.recommend import evaluate_recommender

    got = evaluate_recommender(rows, cutoff, horizon_days=horizon / DAY)
    got["training"] = {"status": got.pop("status")}  # the model's, fitted as of the cutoff
    k = got["k"]
    if not got["users"]:
        return {"status": NOT_EVALUATED, "reason": "nobody bought or viewed a product after the cutoff", **got}
    model = {**got["model"], **{f"category_{m}": v for m, v in got["categories"]["model"].items()}}
    baselines = {b: {**got[b], **{f"category_{m}": v for m, v in got["categories"][b].items()}}
                 for b in ("most_popular", "most_viewed")}
    names = [f"hit_rate_at_{k}", f"ndcg_at_{k}", f"history_hit_rate_at_{k}", f"history_ndcg_at_{k}"]
    if got["categories"]["users"]:
        kc = got["categories"]["k"]
        names += [f"category_hit_rate_at_{kc}", f"category_ndcg_at_{kc}"]
    return {"status": "ok", "reason": None, **got, "metrics": comparison(model, baselines, [(n, True) for n in names])}


def evaluate_send_times(rows: Sequence[Row], cutoff: int, horizon: int) -> dict[str, Any]:
    """Every channel users engaged on (the busiest first), else their activity."""
    from ..models.sendtime import ACTIVITY, ENGAGED, evaluate_sendtime

    counts: dict[str, int] = {}
    for _, f, _ in rows:
        for c, es in f.engagements.items():
            n = sum(1 for t, k in es if k in ENGAGED and t <= cutoff)
            if n:
                counts[c] = counts.get(c, 0) + n
    channels = sorted(counts, key=lambda c: (-counts[c], c)) or [ACTIVITY]
    per: dict[str, Any] = {}
    metrics = []
    for channel in channels:
        got = evaluate_sendtime(rows, cutoff, channel=channel, horizon_days=horizon / DAY)
        per[channel] = got
        if got["users"]:
            metrics += [{**row, "metric": f"hit_rate_1h {channel}"} for row in comparison(
                got["model"], {"global_mode": got["global_mode"], "user_mode": got["user_mode"]},
                [("hit_rate_1h", True)])]
    if not metrics:
        return {"status": NOT_EVALUATED, "reason": "nobody engaged or was active after the cutoff", "channels": per}
    return {"status": "ok", "reason": None, "channels": per, "metrics": metrics}


def evaluate_caps(rows: Sequence[Row], cutoff: int, horizon: int) -> dict[str, Any]:
    """The fatigue curves judged on the messages sent after the cutoff: `evaluate_fatigue` fitted
    through the horizon's end with its holdout split placed so that every training label (a
    message's attribution window) closed by the cutoff."""
    from ..models.fatigue import DEFAULTS, evaluate_fatigue

    attribution = float(DEFAULTS["attribution_days"])
    got = evaluate_fatigue(rows, cutoff + horizon, holdout_days=horizon / DAY + attribution)
    channels = sorted({k.split("_", 1)[0] for k in got if k.endswith("_holdout_messages")})
    metrics = []
    for ch in channels:
        model = {"logloss": got[f"{ch}_logloss"], "roc_auc": got[f"{ch}_auc"]}
        base = {"population_curve": {"logloss": got[f"{ch}_logloss_population"],
                                     "roc_auc": got[f"{ch}_auc_population"]}}
        metrics += [{**row, "metric": f"{row['metric']} {ch}"}
                    for row in comparison(model, base, (("logloss", False), ("roc_auc", True)))]
    out = {"split": _iso(cutoff - int(attribution * DAY)), "details": dict(sorted(got.items()))}
    if not metrics:
        learned = "no channel was learned" if not got.get("status_ok") else (
            "fewer than 100 labelled messages on one side of the split, or only one outcome")
        return {"status": NOT_EVALUATED, "reason": f"too little data: {learned}", **out}
    return {"status": "ok", "reason": None, **out, "metrics": metrics}


# ------------------------------------------------------------------------------- output


def _clean(value: Any) -> Any:
    """Floats rounded to 6 places (NaN and infinities to None), timings dropped, keys sorted."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])) if k not in TIMINGS}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return round(v, 6) if math.isfinite(v) else None
    return value


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def _iso_dt(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(seconds(moment))
