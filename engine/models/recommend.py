"""Next best products and categories: item-to-item co-occurrence learned from the users' item timelines.

Why co-occurrence: the features keep each user's newest MAX_ITEMS interactions, so the training
matrix is tall and very sparse; item-to-item similarity on it trains in one sparse product (scipy),
needs no extra compiled dependency, and scores a user in a dictionary walk over their own items (no
matrix at scoring time). The model keeps, for the `max_products` most popular products (default 10,000),
their `neighbours` most similar products (default 50), and the `popular` most popular products
(default 200): its size is bounded whatever the catalog (about 25 bytes a neighbour, stored). Similarity is C_ij / (N_i^(1-alpha) N_j^alpha) over the recency-weighted user × product
matrix (alpha 0.5: cosine).

How a user is scored (`Recommender.products`):
- each of the user's items weighs KIND_WEIGHT[kind] (purchase 3 > add 2 > view 1) times a recency
  decay (half-life `user_half_life_days`, chosen on the internal split unless set), and passes that weight times the similarity to its
  neighbours; the sum is scaled so the best candidate has 1;
- the user's own items either get a bonus (`self_weight` times their weight scaled to a best of 1:
  re-viewed items are often bought, in a shop) or are excluded (`self_weight` < 0: nobody rates a
  film twice) or put ahead of everything else (OWN_FIRST: the user's own items, then the rest);
  popularity adds `popular_weight` times its score (best product 1). These two weights, the
  popularity's half-life (14 or 90 days) and the user's own items' half-life (30 days: by recency; 365:
  by how often they were bought, the latest first among equals) are chosen at training time on an
  internal time split (the last `validation_days` before as_of, at most half the log's age, so a young
  log keeps history before it) from a small grid, by NDCG@5: the model adapts to the log (a
  fast-moving catalog wants recent popularity, a shop wants the viewed items back, a grocery the
  user's most bought); a split where no judged user has history decides nothing (FALLBACK_WEIGHTS);
- products the user **just bought** — purchased within JUST_BOUGHT (30 days) before `now` — are left
  out (they come last, only if the catalog has no other way to reach k), unless the internal split
  finds that users buy again what they just bought (`repeat`: a grocery's reorders), in which case
  they are scored like the user's other items (self_weight up to 8: the user's own purchases, by
  recency-weighted count, ahead of anything else);
- a user with no items gets the most popular products (as of training, recency-weighted).

Evidence is weighted by recency relative to as_of (half-life `half_life_days`, default 90 days), so
yesterday's trends outweigh last year's.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import sparse

from engine.models import _ranking as ranking
from engine.models._ranking import JUST_BOUGHT
from engine.models.features import ADD, PURCHASE, VIEW, Features

DAY = 86400
KIND_WEIGHT = {PURCHASE: 3.0, ADD: 2.0, VIEW: 1.0}
DEFAULTS: Mapping[str, float] = MappingProxyType({
    "neighbours": 50, "popular": 200, "max_products": 10000, "half_life_days": 90.0, "user_half_life_days": 0.0,
    "validation_days": 30.0, "horizon_days": 30.0, "min_users": 20, "validation_users": 500, "alpha": 0.5, "popular_half_life_days": 0.0,
})
# (self_weight, popular_weight) tried on the internal split; self_weight < 0 excludes seen items, OWN_FIRST
# puts the user's own items ahead of everything else (what they bought most, then neighbours and popularity)
OWN_FIRST = 1000.0
WEIGHT_GRID = tuple((sw, pw) for sw in (-1.0, 0.0, 0.5, 2.0, 8.0, OWN_FIRST) for pw in (0.0, 0.1, 0.3, 1.0, 3.0))
FALLBACK_WEIGHTS = (0.0, 0.1)
FALLBACK_USER_LIFE = 30.0
# half-lives (days) of the user's own items tried: the short one ranks them by recency, the long one by how often
# the user bought them (the latest first among equals: a reorder log)
USER_LIVES = (30.0, 365.0)
# leave out what the user just bought, or let it come back (repeat purchases: groceries, consumables)
REPEAT_CHOICES = (False, True)
POPULAR_LIVES = (14.0, 90.0)  # popularity half-lives tried (days): fast-moving catalogs want the short one


def _decay(age: float, half_life: float) -> float:
    return 0.5 ** (max(age, 0.0) / half_life) if half_life > 0 else 1.0


# ---------------------------------------------------------------------------- the learned tables

@dataclass(frozen=True)
class _Tables:
    """What training learns: neighbours per product, popularity, each product's category."""

    neighbours: Mapping[str, tuple[tuple[str, float], ...]]
    popular: tuple[tuple[str, float], ...]          # best first, scores normalised to the best = 1
    categories: Mapping[str, str]                   # product → category
    popular_categories: tuple[tuple[str, float], ...]
    users: int                                      # users with at least one item
    interactions: int


def _learn(users: Iterable[tuple[str, Features | None, Any]], as_of: int, settings: Mapping[str, float]) -> _Tables:
    half_life = float(settings["half_life_days"]) * DAY
    index: dict[str, int] = {}
    category: dict[str, str] = {}
    pop_life = float(settings["popular_half_life_days"] or settings["half_life_days"]) * DAY
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    pvals: list[float] = []
    row = interactions = 0
    for _, f, _ in users:
        if f is None or not f.items:
            continue
        mine: dict[int, tuple[float, float]] = {}
        for t, kind, pid, cat in f.items:
            if t > as_of or not pid:
                continue
            interactions += 1
            j = index.setdefault(pid, len(index))
            if cat:
                category[pid] = cat
            w = KIND_WEIGHT.get(kind, 1.0)
            mine[j] = max(mine.get(j, (0.0, 0.0)), (w * _decay(as_of - t, half_life), w * _decay(as_of - t, pop_life)))
        if not mine:
            continue
        damp = 1.0 / math.log2(2 + len(mine))  # a heavy user's pairs count less each
        for j, (w, wp) in mine.items():
            rows.append(row)
            cols.append(j)
            vals.append(w * damp)
            pvals.append(wp * damp)
        row += 1
    products = sorted(index, key=index.__getitem__)
    if not products:
        return _Tables(MappingProxyType({}), (), MappingProxyType({}), (), 0, 0)
    x = sparse.csr_matrix((np.asarray(vals), (np.asarray(rows), np.asarray(cols))), shape=(row, len(products)))
    # popularity: how many (recency-weighted) users touched each product
    pop = np.bincount(np.asarray(cols), weights=np.asarray(pvals), minlength=len(products))
    order = sorted(range(len(products)), key=lambda j: (-pop[j], products[j]))
    top = order[:int(settings["popular"])]
    best = float(pop[top[0]]) or 1.0
    popular = tuple((products[j], round(float(pop[j]) / best, 6)) for j in top)
    cat_pop: dict[str, float] = {}
    for j in order:
        c = category.get(products[j])
        if c:
            cat_pop[c] = cat_pop.get(c, 0.0) + float(pop[j])
    cbest = max(cat_pop.values(), default=1.0) or 1.0
    popular_categories = tuple((c, round(v / cbest, 6)) for c, v in sorted(cat_pop.items(), key=lambda kv: (-kv[1], kv[0])))
    # cosine similarity between product columns, top-N per product
    co = (x.T @ x).tocsr()
    norms = np.sqrt(co.diagonal())
    co.setdiag(0)
    co.eliminate_zeros()
    alpha = float(settings["alpha"])  # 0.5: cosine; lower favours popular neighbours (→ P(j | i))
    co = sparse.diags(1.0 / np.maximum(norms, 1e-12) ** (2 - 2 * alpha)) @ co @ sparse.diags(
        1.0 / np.maximum(norms, 1e-12) ** (2 * alpha))
    co = co.tocsr()
    n = int(settings["neighbours"])
    neighbours: dict[str, tuple[tuple[str, float], ...]] = {}
    kept_products = np.zeros(len(products), dtype=bool)  # the model's size bound: the most popular only
    kept_products[order[:int(settings["max_products"])]] = True
    for j in np.flatnonzero(kept_products).tolist():
        lo, hi = co.indptr[j], co.indptr[j + 1]
        idx, sims = co.indices[lo:hi], co.data[lo:hi]
        idx, sims = idx[kept_products[idx]], sims[kept_products[idx]]
        if not len(idx):
            continue
        if len(idx) > n:
            keep = np.argpartition(-sims, n - 1)[:n]
            idx, sims = idx[keep], sims[keep]
        ranked = sorted(zip(idx.tolist(), sims.tolist()), key=lambda p: (-p[1], products[p[0]]))
        neighbours[products[j]] = tuple((products[i], round(s, 6)) for i, s in ranked)
    kept = set(neighbours) | {p for p, _ in popular}
    for nbs in neighbours.values():
        kept.update(p for p, _ in nbs)
    return _Tables(MappingProxyType(neighbours), popular,
                   MappingProxyType({p: c for p, c in sorted(category.items()) if p in kept}),
                   popular_categories, row, interactions)


# ---------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class Recommender:
    """Next best products and categories for a user (see the module's docstring for how)."""

    status: str
    reason: str | None
    evidence: int
    metrics: Mapping[str, float]
    tables: _Tables
    self_weight: float = 0.0
    popular_weight: float = 0.1
    user_half_life_days: float = 30.0
    as_of: int = 0
    settings: Mapping[str, float] = field(default_factory=lambda: DEFAULTS)
    repeat: bool = False  # True: what the user just bought may come back (reorders), scored like their other items

    def _user_weights(self, f: Features | None, now: int) -> tuple[dict[str, float], set[str], dict[str, float]]:
        """The user's products (kind × recency weight), what they just bought, their category affinity."""
        mine: dict[str, float] = {}
        cats: dict[str, float] = {}
        just: set[str] = set()
        if f is None:
            return mine, just, cats
        hl = self.user_half_life_days * DAY
        for t, kind, pid, cat in f.items:
            if t > now:
                continue
            w = KIND_WEIGHT.get(kind, 1.0) * _decay(now - t, hl)
            if pid:
                mine[pid] = mine.get(pid, 0.0) + w
                if kind == PURCHASE and now - t <= JUST_BOUGHT and not self.repeat:
                    just.add(pid)
            cat = cat or self.tables.categories.get(pid, "")
            if cat:
                cats[cat] = cats.get(cat, 0.0) + w
        return mine, just, cats

    def _components(self, mine: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
        """Neighbour evidence and the user's own items, each scaled to a best of 1."""
        near: dict[str, float] = {}
        nbrs = self.tables.neighbours
        for pid, w in mine.items():
            for other, s in nbrs.get(pid, ()):
                near[other] = near.get(other, 0.0) + w * s
        top = max(near.values(), default=1.0) or 1.0
        own_top = max(mine.values(), default=1.0) or 1.0
        return {p: v / top for p, v in near.items()}, {p: w / own_top for p, w in mine.items()}

    def _scores(self, mine: Mapping[str, float], just: set[str]) -> dict[str, float]:
        near, own = self._components(mine)
        return _mix(near, own, self.tables.popular, just, self.self_weight, self.popular_weight)

    def products(self, f: Features | None, now: int, k: int = 5) -> list[str]:
        """The k product ids the user is likeliest to want next, best first: never fewer than k when
        the model knows k products (just-bought ones come last, only if needed to reach k)."""
        return self.both(f, now, k, 0)[0]

    def categories(self, f: Features | None, now: int, k: int = 3) -> list[str]:
        """The k categories the user is likeliest to buy from next: their own decayed affinity,
        plus the categories of their recommended products, plus popularity."""
        return self.both(f, now, 0, k)[1]

    def both(self, f: Features | None, now: int, k_products: int, k_categories: int) -> tuple[list[str], list[str]]:
        """`products` and `categories` from one scoring of the user (templates read both: each
        alone scored the user's products again, half of the cost of every message's `recommended`)."""
        mine, just, cats = self._user_weights(f, now)
        scores = self._scores(mine, just)
        products: list[str] = []
        if k_products:
            top = heapq.nsmallest(k_products, scores, key=lambda p: (-scores[p], p))
            products = ranking.padded(top, (p for p, _ in self.tables.popular), k_products, just,
                                      mine if self.self_weight < 0 else ())
        return products, (self._categories(cats, scores, k_categories) if k_categories else [])

    def _categories(self, cats: Mapping[str, float], prod: Mapping[str, float], k: int) -> list[str]:
        total = sum(cats.values()) or 1.0
        scores = {c: w / total for c, w in cats.items()}
        ptotal = sum(prod.values()) or 1.0
        for pid, s in prod.items():
            c = self.tables.categories.get(pid)
            if c:
                scores[c] = scores.get(c, 0.0) + 0.5 * s / ptotal
        for c, p in self.tables.popular_categories:
            scores[c] = scores.get(c, 0.0) + 0.01 * p
        top = sorted(scores, key=lambda c: (-scores[c], c))[:k]
        return ranking.padded(top, (c for c, _ in self.tables.popular_categories), k, set(), ())

    # ------------------------------------------------------------------------ storage

    def to_plain(self) -> dict[str, Any]:
        t = self.tables
        return {
            "kind": "recommender", "version": 1, "status": self.status, "reason": self.reason,
            "evidence": self.evidence, "metrics": dict(sorted(self.metrics.items())), "as_of": self.as_of,
            "settings": dict(sorted(self.settings.items())),
            "weights": {"self": self.self_weight, "popular": self.popular_weight,
                        "user_half_life_days": self.user_half_life_days, "repeat": self.repeat},
            "neighbours": {p: [[o, s] for o, s in nb] for p, nb in sorted(t.neighbours.items())},
            "popular": [[p, s] for p, s in t.popular],
            "categories": dict(sorted(t.categories.items())),
            "popular_categories": [[c, s] for c, s in t.popular_categories],
            "users": t.users, "interactions": t.interactions,
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> "Recommender":
        tables = _Tables(
            MappingProxyType({p: tuple((o, s) for o, s in nb) for p, nb in data["neighbours"].items()}),
            tuple((p, s) for p, s in data["popular"]), MappingProxyType(dict(data["categories"])),
            tuple((c, s) for c, s in data["popular_categories"]), data["users"], data["interactions"])
        w = data["weights"]
        return cls(data["status"], data["reason"], data["evidence"], MappingProxyType(dict(data["metrics"])), tables,
                   w["self"], w["popular"], w["user_half_life_days"], data["as_of"],
                   MappingProxyType(dict(data["settings"])), bool(w.get("repeat", False)))


def _mix(near: Mapping[str, float], own: Mapping[str, float], popular: Sequence[tuple[str, float]], just: set[str],
         self_weight: float, popular_weight: float) -> dict[str, float]:
    """Neighbour evidence + self_weight × own items + popular_weight × popularity, less what was just
    bought (and the user's own items when self_weight < 0)."""
    scores = dict(near)
    if self_weight > 0:
        for pid, w in own.items():
            scores[pid] = scores.get(pid, 0.0) + self_weight * w
    if popular_weight and own:
        for pid, p in popular:
            scores[pid] = scores.get(pid, 0.0) + popular_weight * p
    for pid in (own if self_weight < 0 else ()):
        scores.pop(pid, None)
    for pid in just:
        scores.pop(pid, None)
    return scores


def _reachable(near: Mapping[str, float], own: Mapping[str, float], popular: set[str], k: int) -> dict[str, float]:
    """The neighbour evidence that can still reach a top k under any weights (what the grid search scores):
    a product neither popular nor the user's own scores its neighbour evidence alone, so only the best
    k + len(own) of those (ties kept) can make the top k — the own items may be left out, the rest only gain."""
    m = k + len(own)
    if len(near) <= m:
        return dict(near)
    floor = heapq.nlargest(m, near.values())[-1]
    return {p: v for p, v in near.items() if v >= floor or p in popular or p in own}


def _settings(settings: Mapping[str, Any]) -> dict[str, float]:
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown recommender settings: {', '.join(sorted(unknown))}")
    return {**DEFAULTS, **settings}


def _validation_seconds(users: Sequence[tuple[str, Features | None, Any]], as_of: int, days: float) -> int:
    """The internal split's length: the last `days` before as_of, but at most half of the log seen so far
    (a young log's split must leave history before it to learn from)."""
    first = min((f.first for _, f, _ in users if f is not None and f.first <= as_of), default=as_of)
    return min(int(days * DAY), max((as_of - first) // 2, DAY))


def fit_recommender(users: Sequence[tuple[str, Features | None, Any]], as_of: int, **settings: Any) -> Recommender:
    """Learn the neighbour tables as of `as_of`, choosing the scoring weights on an internal time
    split (train as of as_of - validation_days, or half the log's age if shorter, judge on the purchases —
    or, if too few users purchased, the interactions — of the days after)."""
    s = _settings(settings)
    cut = as_of - _validation_seconds(users, as_of, s["validation_days"])
    weights, metrics, repeat, user_life = FALLBACK_WEIGHTS, {}, False, float(s["user_half_life_days"] or FALLBACK_USER_LIFE)
    earlier = [(u, f.as_of(cut) if f is not None else None, z) for u, f, z in users]
    truth = ranking.targets(users, cut, as_of, int(s["min_users"]))[0]
    judged = ranking.sample(earlier, truth, int(s["validation_users"])) if len(truth) >= int(s["min_users"]) else []
    # weights are only learnt from users with items before the split: without any, every candidate
    # ranks the same (popular products) and the first of the grid would win by accident
    if any(f is not None and f.items for _, f, _ in judged):
        best: dict[tuple[bool, bool], Any] = {}
        lives = (s["popular_half_life_days"],) if s["popular_half_life_days"] else POPULAR_LIVES
        user_lives = (s["user_half_life_days"],) if s["user_half_life_days"] else USER_LIVES
        wanted = [truth[u] for u, _, _ in judged]
        for life in lives:
            val = _learn(earlier, cut, {**s, "popular_half_life_days": life})
            popular = [p for p, _ in val.popular]
            in_popular = set(popular)
            phit, pndcg = ranking.judge(ranking.most_popular(popular), judged, truth, cut, 5)
            for ulife in user_lives:
                probe = Recommender("ok", None, 0, {}, val, 0.0, 0.0, float(ulife), cut, s)
                parts = []
                for _, f, _ in judged:
                    mine, just, _ = probe._user_weights(f, cut)
                    near, own = probe._components(mine)
                    parts.append((_reachable(near, own, in_popular, 5), own, just, mine))
                for again in REPEAT_CHOICES:
                    for sw, pw in WEIGHT_GRID:
                        if again and sw < 0:
                            continue  # the user's own items are left out anyway
                        lists = []
                        for near, own, just, mine in parts:
                            just = set() if again else just
                            sc = _mix(near, own, val.popular, just, sw, pw)
                            top = heapq.nsmallest(5, sc, key=lambda p: (-sc[p], p))
                            lists.append(ranking.padded(top, popular, 5, just, mine if sw < 0 else ()))
                        per_user = ranking.ndcg_per_user(lists, wanted, 5)
                        key = (float(per_user.mean()), ranking.hit_rate(lists, wanted, 5))
                        group = (again, sw == OWN_FIRST or ulife != user_lives[0])
                        if best.get(group) is None or key > best[group][0]:
                            best[group] = (key, (sw, pw), life, (phit, pndcg), again, per_user, ulife)
        # the plain candidates' best stands unless a further kind of candidate — just-bought products
        # coming back, the user's own items first or by frequency — wins beyond the noise of the split
        # (one standard error of the paired per-user difference): a grid four times wider finds a
        # lucky best on a small split, and wrongly re-offering a purchase is the costlier mistake
        chosen = best[(False, False)]
        for group in ((False, True), (True, False), (True, True)):
            rival = best.get(group)
            if rival is not None and rival[0] > chosen[0]:
                diff = rival[5] - chosen[5]
                if diff.mean() > diff.std(ddof=1) / math.sqrt(len(diff)):
                    chosen = rival
        best = chosen
        weights, repeat, user_life = best[1], best[4], float(best[6])
        s["popular_half_life_days"] = best[2]
        metrics = {"validation_users": float(len(truth)), "hit_rate_at_5": best[0][1], "ndcg_at_5": best[0][0],
                   "popular_hit_rate_at_5": best[3][0], "popular_ndcg_at_5": best[3][1]}
    tables = _learn(users, as_of, s)
    with_pairs = sum(1 for nb in tables.neighbours.values() if nb)
    if tables.users < int(s["min_users"]) or not with_pairs:
        status, reason = "fallback", (f"too little data: {tables.users} users with items, {int(s['min_users'])} needed"
                                      if tables.users < int(s["min_users"]) else "no products seen together")
        weights = (0.0, 1.0)
    else:
        status, reason = "ok", None
    return Recommender(status, reason, tables.interactions, MappingProxyType(metrics), tables, weights[0], weights[1],
                       user_life, as_of, MappingProxyType(s), repeat and status == "ok")


# ---------------------------------------------------------------------------- time-split evaluation

def evaluate_recommender(users: Sequence[tuple[str, Features | None, Any]], cutoff: int, *, k: int = 5,
                         horizon_days: float = 30.0, truth: Mapping[str, set[str]] | None = None,
                         pairs: bool = False, **settings: Any) -> dict[str, Any]:
    """Time-split backtest: fit as of `cutoff` on the users' features as of then; for each user who
    purchased (else interacted, if fewer than min_users purchased) within `horizon_days` after it,
    HitRate@k and NDCG@k of their next products — the model beside "most popular" and "user's most
    viewed", both as of `cutoff` and with the same just-bought exclusion (and, for reference, "user's
    most bought", reorders included).

    `users` carry features from after the cutoff (the labels); note that a timeline keeps only its
    newest MAX_ITEMS, so a very active user's oldest items before the cutoff may be gone. `truth`
    (user → products purchased after the cutoff, e.g. whole baskets from the raw log) replaces the
    labels read from the features (target "given"); `pairs` adds, per judged user (in `users` order),
    whether each ranker hit (for paired tests)."""
    s = _settings(settings)
    earlier = [(u, f.as_of(cutoff) if f is not None else None, z) for u, f, z in users]
    if truth is None:
        truth, target = ranking.targets(users, cutoff, cutoff + int(horizon_days * DAY), int(s["min_users"]))
    else:
        truth, target = {u: set(v) for u, v in truth.items() if v}, "given"
    started = time.perf_counter()
    model = fit_recommender(earlier, cutoff, **settings)
    fit_seconds = time.perf_counter() - started
    popular = [p for p, _ in model.tables.popular]
    rankers = {"model": model.products, "most_popular": ranking.most_popular(popular), "most_viewed": ranking.most_viewed(popular),
               "most_bought": ranking.most_bought(popular)}
    out: dict[str, Any] = {"users": len(truth), "target": target, "cutoff": cutoff, "k": k,
                           "fit_seconds": round(fit_seconds, 3), "status": model.status,
                           "weights": {"self": model.self_weight, "popular": model.popular_weight,
                                       "repeat": model.repeat, "user_life": model.user_half_life_days}}
    known = {u for u, f, _ in earlier if f is not None and f.items}
    with_history = {u: v for u, v in truth.items() if u in known}
    out["users_with_history"] = len(with_history)
    judged = [(u, f) for u, f, _ in earlier if u in truth]
    warm = [u in known for u, _ in judged]
    wanted = [truth[u] for u, _ in judged]
    if pairs:
        out["pairs"] = {"users": [u for u, _ in judged], "history": warm}
    for name, rank in rankers.items():
        lists = [rank(f, cutoff, k) for _, f in judged]
        hit, ndcg = ranking.metrics(lists, wanted, k)
        hit_h, ndcg_h = ranking.metrics([x for x, w in zip(lists, warm) if w], [x for x, w in zip(wanted, warm) if w], k)
        out[name] = {f"hit_rate_at_{k}": round(hit, 4), f"ndcg_at_{k}": round(ndcg, 4),
                     f"history_hit_rate_at_{k}": round(hit_h, 4), f"history_ndcg_at_{k}": round(ndcg_h, 4)}
        if pairs:
            out["pairs"][name] = [any(p in want for p in x[:k]) for x, want in zip(lists, wanted)]
    scored = [f for u, f, _ in earlier if u in truth][:2000]
    started = time.perf_counter()
    for f in scored:
        model.products(f, cutoff, k)
    out["score_us"] = round((time.perf_counter() - started) / max(len(scored), 1) * 1e6, 1)
    # categories: the next purchases' categories, beside the most popular and the user's most viewed
    cat_truth = {}
    if target == "given":
        category = dict(model.tables.categories)
        for _, f, _ in users:
            category.update((p, c) for _, _, p, c in (f.items if f else ()) if c)
        for u, want in truth.items():
            cats = {category.get(p, "") for p in want} - {""}
            if cats:
                cat_truth[u] = cats
    for u, f, _ in users:
        if target != "given" and u in truth and f is not None:
            cats = {c or model.tables.categories.get(p, "") for t, kind, p, c in f.items
                    if cutoff < t <= cutoff + int(horizon_days * DAY) and p in truth[u]} - {""}
            if cats:
                cat_truth[u] = cats
    kc = 3
    pop_cats = [c for c, _ in model.tables.popular_categories]

    def viewed_cats(f: Features | None, now: int, k: int) -> list[str]:
        counts: dict[str, int] = {}
        for t, kind, p, c in (f.items if f else ()):
            c = c or model.tables.categories.get(p, "")
            if t <= now and c:
                counts[c] = counts.get(c, 0) + 1
        return ranking.padded(sorted(counts, key=lambda c: (-counts[c], c))[:k], pop_cats, k, set(), ())
    out["categories"] = {"users": len(cat_truth), "k": kc}
    for name, rank in (("model", model.categories), ("most_popular", lambda f, now, k: pop_cats[:k]),
                       ("most_viewed", viewed_cats)):
        hit, ndcg = ranking.judge(rank, earlier, cat_truth, cutoff, kc)
        out["categories"][name] = {f"hit_rate_at_{kc}": round(hit, 4), f"ndcg_at_{kc}": round(ndcg, 4)}
    return out
