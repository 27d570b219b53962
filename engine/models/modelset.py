"""One version of every model, trained together as of one moment: what the core scores with.

A `ModelSet` is immutable. The runtime trains a new one on the schedule (`train`) from the users'
features as they stand at that moment — in the daemon from its store, in the dry-run from the
store of its virtual clock — so a score at time t only ever comes from a version trained at or
before t, on features that held nothing later (the leak test holds the dry-run to it).

Training is per family (purchase, activity, recommender, send time, fatigue): a family that
cannot train (too little data) says why and scores with its population fallback; a family whose
training raises keeps the previous version's (the last good one), and the set records the
problem for the logs, the metrics and the report. Before the first training there is no
population either: predictions are None (a comparison with None is false), recommendations
empty, best times the ordinary send time, auto caps their upper bound. Purchase and churn scores
stay None until their model has MIN_POPULATION labelled examples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Mapping, Sequence

import orjson

from .features import Features

UserRow = tuple[str, Features, tzinfo]
DAY = 86400
# A purchase or churn score needs at least this many labelled examples behind it, even the
# population rate a model falls back on: a rate from three users is noise, and a journey that acts
# on it (a win-back to a whole tiny population) does harm. Below it the score is None.
MIN_POPULATION = 30


@dataclass(frozen=True)
class Family:
    """How to train one kind of model and read a stored version back."""

    name: str
    fit: Callable[..., Any]
    load: Callable[[dict], Any]


def _families() -> tuple[Family, ...]:
    from .fatigue import FatigueModel, fit_fatigue
    from .purchase import PurchaseModel, fit_purchase
    from .recommend import Recommender, fit_recommender
    from .sendtime import SendTimeModel, fit_sendtime
    return (
        Family("purchase", lambda users, as_of: fit_purchase(users, as_of, kind="purchase"), PurchaseModel.from_plain),
        Family("activity", lambda users, as_of: fit_purchase(users, as_of, kind="activity"), PurchaseModel.from_plain),
        Family("recommender", fit_recommender, Recommender.from_plain),
        Family("sendtime", fit_sendtime, SendTimeModel.from_plain),
        Family("fatigue", fit_fatigue, FatigueModel.from_plain),
    )


@dataclass(frozen=True)
class ModelSet:
    """`version`: a stable id (the training moment and a digest of the fitted models);
    `trained_at`: the training moment (seconds since 1970), None before the first training;
    `window`: (first, last) event time the training data held; `users`: how many users it read;
    `models`: family name → fitted model; `problems`: family name → why it kept the last good
    version (training raised)."""

    version: str = "untrained"
    trained_at: int | None = None
    window: tuple[int, int] | None = None
    users: int = 0
    models: Mapping[str, Any] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ scores

    def predict(self, f: Features | None, now: int, model: str, horizon_seconds: int,
                user: str | None = None) -> float | None:
        """`predicted purchase in 30d` (probability of a purchase within the horizon) and
        `predicted churn in 60d` (probability of no activity within it). `user` names who is
        scored: the models read only the features, but a scenario's pinned scores key on it
        (engine.dryrun.scenarios)."""
        family = {"purchase": "purchase", "churn": "activity"}.get(model)
        m = self.models.get(family) if family is not None else None
        if m is None or m.evidence < MIN_POPULATION:  # no model, or too few examples for even a population rate
            return None
        p = m.probability(f, now, horizon_seconds / DAY)
        return _clip(p if model == "purchase" else 1.0 - p)

    def recommended(self, f: Features | None, now: int, k: int = 10) -> dict[str, list]:
        """Templates' `recommended`: `products` (dicts with `product_id`, `category`) and
        `categories` (names), best first; empty before the first training."""
        m = self.models.get("recommender")
        if m is None:
            return {"products": [], "categories": []}
        category = m.tables.categories
        products, categories = m.both(f, now, k, k)
        return {"products": [{"product_id": p, "category": category.get(p, "")} for p in products],
                "categories": categories}

    def best_hour(self, f: Features | None, zone: tzinfo, channel: str, now: int) -> int | None:
        """The user's best local hour (0-23) for `channel`; None before the first training."""
        m = self.models.get("sendtime")
        return None if m is None else m.best_hour(f, zone, channel, now)

    def best_time(self, f: Features | None, zone: tzinfo, channel: str, now: int, within: int) -> int:
        """When to send within `within` seconds of `now` (seconds since 1970): now before the
        first training."""
        m = self.models.get("sendtime")
        return now if m is None else m.next_best_time(f, zone, channel, now, within)

    def cap(self, f: Features | None, channel: str, window_seconds: int, low: int, high: int) -> int:
        """The learned cap for `cap CHANNEL auto per WINDOW min LOW max HIGH`: within the bounds;
        the upper bound before the first training."""
        m = self.models.get("fatigue")
        if m is None:
            return high
        return max(low, min(high, m.cap(f, channel, window_seconds / DAY, low, high)))

    # ------------------------------------------------------------------ describing and storing

    def describe(self) -> dict[str, Any]:
        """What reports, logs and `journeys models` print: per family its status, reason,
        evidence and training metrics (JSON values, stable order)."""
        families = {}
        for name, m in sorted(self.models.items()):
            families[name] = {"status": m.status, "reason": m.reason, "evidence": m.evidence,
                              "metrics": dict(sorted(m.metrics.items()))}
        return {"version": self.version, "trained_at": _iso(self.trained_at),
                "window": None if self.window is None else [_iso(self.window[0]), _iso(self.window[1])],
                "users": self.users, "models": families, "problems": dict(sorted(self.problems.items()))}

    def to_plain(self) -> dict[str, Any]:
        return {"version": self.version, "trained_at": self.trained_at,
                "window": None if self.window is None else list(self.window), "users": self.users,
                "models": {n: m.to_plain() for n, m in sorted(self.models.items())},
                "problems": dict(sorted(self.problems.items()))}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> "ModelSet":
        loaders = {f.name: f.load for f in _families()}
        return cls(version=data["version"], trained_at=data["trained_at"],
                   window=None if data["window"] is None else (data["window"][0], data["window"][1]),
                   users=data["users"],
                   models={n: loaders[n](m) for n, m in data["models"].items() if n in loaders},
                   problems=dict(data.get("problems") or {}))


UNTRAINED = ModelSet()


def train(users: Sequence[UserRow], as_of: int, previous: ModelSet = UNTRAINED,
          log: Callable[[str], None] | None = None) -> ModelSet:
    """Every family fitted on `users` (their features as they stood at `as_of`, seconds).

    Deterministic: users are taken in id order, the families fit with fixed seeds, so the same
    features give the same version in the daemon and the dry-run."""
    rows = sorted(users, key=lambda r: r[0])
    return assemble(rows, as_of, fit_families(rows, as_of, family_names()), previous, log)


def family_names() -> list[str]:
    return [family.name for family in _families()]


# What each family costs to fit relative to the others (CPU seconds of the four trainings of the
# 100k-event shop log, docs/performance.md): how `shares` splits them; 1.0 for one not measured.
FAMILY_COST = {"recommender": 4.9, "activity": 4.0, "purchase": 1.2, "fatigue": 1.2, "sendtime": 1.1}


@dataclass(frozen=True)
class FitFailed:
    """A family whose fit raised: why, as the set's `problems` say it."""

    problem: str


def fit_families(rows: Sequence[UserRow], as_of: int, names: Sequence[str]) -> dict[str, Any]:
    """The families `names` fitted on `rows` (in user id order): name → model, or `FitFailed`.
    Each family is independent of the others, so they can be fitted in different processes
    (engine.dryrun.partitioned) and `assemble`d into the version `train` gives."""
    fitted: dict[str, Any] = {}
    for family in _families():
        if family.name in names:
            try:
                fitted[family.name] = family.fit(rows, as_of)
            except Exception as exc:  # noqa: BLE001 - one family's failure must not stop the others
                fitted[family.name] = FitFailed(f"{type(exc).__name__}: {exc}")
    return fitted


def assemble(rows: Sequence[UserRow], as_of: int, fitted: Mapping[str, Any], previous: ModelSet = UNTRAINED,
             log: Callable[[str], None] | None = None) -> ModelSet:
    """The version made of every family's fit (`fit_families`, over `rows` in user id order): a
    family that failed keeps `previous`'s model, and the set says why."""
    models: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for family in _families():
        model = fitted[family.name]
        if not isinstance(model, FitFailed):
            models[family.name] = model
            continue
        problems[family.name] = model.problem
        if family.name in previous.models:
            models[family.name] = previous.models[family.name]
        if log is not None:
            log(f"models: training {family.name} failed ({problems[family.name]}); "
                + ("keeping the last good version" if family.name in previous.models else "no version yet"))
    first = min((r[1].first for r in rows), default=None)
    window = None if first is None else (first, as_of)
    body = {n: m.to_plain() for n, m in sorted(models.items())}
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    version = f"{datetime.fromtimestamp(as_of, timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{digest}"
    return ModelSet(version=version, trained_at=as_of, window=window, users=len(rows), models=models,
                    problems=problems)


def shares(parts: int) -> list[list[str]]:
    """The families split into at most `parts` groups of about equal cost (the costliest first, each
    to the cheapest group so far; ties to the first group): deterministic."""
    names = family_names()
    groups: list[list[str]] = [[] for _ in range(max(1, min(parts, len(names))))]
    load = [0.0] * len(groups)
    for name in sorted(names, key=lambda n: (-FAMILY_COST.get(n, 1.0), n)):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += FAMILY_COST.get(name, 1.0)
    return groups


def _clip(p: float) -> float:
    return 0.0 if p < 0.0 else 1.0 if p > 1.0 else float(p)


def _iso(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
