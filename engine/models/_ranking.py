"""Ranking on a time split: what the recommender's internal split (`recommend.fit_recommender`) and its
backtest (`recommend.evaluate_recommender`) share — the products each user went on to buy, an even
sample of them, HitRate@k and NDCG@k — and the baselines the backtest judges the model beside (most
popular, the user's most viewed, and for reference the user's most bought). Kept apart from the model
so that the model's module holds what scores a user, and this one what judges a ranking.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn.metrics import ndcg_score

from engine.models.features import ADD, PURCHASE, VIEW, Features

DAY = 86400
JUST_BOUGHT = 30 * DAY  # products purchased this recently are not recommended


def padded(top: list[str], fallback: Iterable[str], k: int, last: set[str], avoid: Iterable[str]) -> list[str]:
    """`top` filled up to k from `fallback`, skipping `last` and `avoid` unless nothing else is left."""
    out = list(top)
    if len(out) >= k:
        return out
    seen = set(out)
    fallback = list(fallback)
    avoid = set(avoid)
    for tier in (lambda p: p not in last and p not in avoid, lambda p: p not in last, lambda p: True):
        for p in fallback:
            if len(out) >= k:
                return out
            if p not in seen and tier(p):
                out.append(p)
                seen.add(p)
    return out


def targets(users: Sequence[tuple[str, Features | None, Any]], start: int, end: int,
             min_users: int) -> tuple[dict[str, set[str]], str]:
    """Per user, the products purchased in (start, end]; if fewer than `min_users` users purchased,
    the products interacted with in any way ("interaction")."""
    for kinds, name in (((PURCHASE,), "purchase"), ((PURCHASE, ADD, VIEW), "interaction")):
        out: dict[str, set[str]] = {}
        for uid, f, _ in users:
            if f is None:
                continue
            got = {pid for t, kind, pid, _ in f.items if start < t <= end and kind in kinds and pid}
            if got:
                out[uid] = got
        if len(out) >= min_users or name == "interaction":
            return out, name
    return {}, "interaction"


def sample(earlier: Sequence[tuple[str, Features | None, Any]], truth: Mapping[str, set[str]],
            limit: int) -> list[tuple[str, Features | None, Any]]:
    """At most `limit` of the users in `truth`, spread evenly over them (deterministic)."""
    chosen = [row for row in earlier if row[0] in truth]
    step = max(1, math.ceil(len(chosen) / limit))
    return chosen[::step]


def judge(rank, earlier: Sequence[tuple[str, Features | None, Any]], truth: Mapping[str, set[str]], now: int,
           k: int) -> tuple[float, float]:
    """HitRate@k and NDCG@k (sklearn) of `rank(f, now, k)` over the users in `truth`."""
    lists, wanted = [], []
    for uid, f, _ in earlier:
        if uid in truth:
            lists.append(rank(f, now, k))
            wanted.append(truth[uid])
    return metrics(lists, wanted, k)


def ndcg_per_user(lists: Sequence[list[str]], wanted: Sequence[set[str]], k: int) -> np.ndarray:
    """Each user's NDCG@k (binary relevance; the same figure as sklearn's ndcg_score per row)."""
    gain = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(gain)
    out = np.zeros(len(lists))
    for r, (ranked, want) in enumerate(zip(lists, wanted)):
        if want:
            dcg = sum(gain[c] for c, pid in enumerate(ranked[:k]) if pid in want)
            out[r] = dcg / ideal[min(k, len(want)) - 1]
    return out


def hit_rate(lists: Sequence[list[str]], wanted: Sequence[set[str]], k: int) -> float:
    return sum(any(p in want for p in ranked[:k]) for ranked, want in zip(lists, wanted)) / max(len(lists), 1)


def metrics(lists: Sequence[list[str]], wanted: Sequence[set[str]], k: int) -> tuple[float, float]:
    """HitRate@k and NDCG@k (sklearn, binary relevance) of ranked lists against the wanted sets."""
    if not lists:
        return 0.0, 0.0
    width = k + max(len(w) for w in wanted)
    y_true = np.zeros((len(lists), width))
    y_score = np.full((len(lists), width), -1.0)
    hits = 0
    for r, (ranked, want) in enumerate(zip(lists, wanted)):
        ranked = ranked[:k]
        for c, pid in enumerate(ranked):
            y_score[r, c] = k - c
            y_true[r, c] = 1.0 if pid in want else 0.0
        missing = [p for p in want if p not in ranked]
        y_true[r, k:k + len(missing)] = 1.0
        hits += any(p in want for p in ranked)
    return hits / len(lists), float(ndcg_score(y_true, y_score, k=k))


def just_bought(f: Features | None, now: int) -> set[str]:
    """The products the user purchased within JUST_BOUGHT before `now`."""
    return {pid for t, kind, pid, _ in (f.items if f else ()) if kind == PURCHASE and 0 <= now - t <= JUST_BOUGHT}


def most_popular(popular: Sequence[str]):
    """Baseline: the most popular products as of training, less what the user just bought."""
    return lambda f, now, k: padded([], popular, k, just_bought(f, now), ())


def most_viewed(popular: Sequence[str]):
    """Baseline: the user's own most interacted products (views first), as of now, padded with popular."""
    def rank(f: Features | None, now: int, k: int) -> list[str]:
        counts: dict[str, tuple[int, int]] = {}
        just = set()
        for t, kind, pid, _ in (f.items if f else ()):
            if t <= now and pid:
                v, last = counts.get(pid, (0, 0))
                counts[pid] = (v + (kind == VIEW) * 1000 + 1, max(last, t))
                if kind == PURCHASE and now - t <= JUST_BOUGHT:
                    just.add(pid)
        top = [p for p in sorted(counts, key=lambda p: (-counts[p][0], -counts[p][1], p)) if p not in just][:k]
        return padded(top, popular, k, just, ())
    return rank


def most_bought(popular: Sequence[str]):
    """Reference (not one of the issue's baselines): the user's most purchased products (by count, then
    the latest), what they just bought included — the reorder heuristic of grocery — padded with popular."""
    def rank(f: Features | None, now: int, k: int) -> list[str]:
        counts: dict[str, tuple[int, int]] = {}
        for t, kind, pid, _ in (f.items if f else ()):
            if t <= now and pid and kind == PURCHASE:
                n, last = counts.get(pid, (0, 0))
                counts[pid] = (n + 1, max(last, t))
        top = sorted(counts, key=lambda p: (-counts[p][0], -counts[p][1], p))[:k]
        return padded(top, popular, k, set(), ())
    return rank
