"""Next best products: the recommender recovers planted co-purchase groups, beats "most popular" and
"user's most viewed" on a time split, leaves out what was just bought, and stores bytes-identically."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engine.models.features import observe
from engine.models.recommend import (FALLBACK_USER_LIFE, FALLBACK_WEIGHTS, JUST_BOUGHT, Recommender, evaluate_recommender,
                                     fit_recommender)

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_predict_items", ROOT / "benchmarks" / "_predict_items.py")
items = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(items)
DAY = 86400
CUT = items.START + 90 * DAY


@pytest.fixture(scope="module")
def shop():
    return items.shop_population(600, seed=7)


@pytest.fixture(scope="module")
def model(shop):
    return fit_recommender([(u, f.as_of(CUT), z) for u, f, z in shop], CUT)


def test_beats_both_baselines_on_a_time_split(shop):
    r = evaluate_recommender(shop, CUT)
    assert r["target"] == "purchase" and r["users"] >= 200
    for metric in ("hit_rate_at_5", "ndcg_at_5"):
        assert r["model"][metric] > r["most_popular"][metric] + 0.2
        assert r["model"][metric] > r["most_viewed"][metric] + 0.02
    assert r["categories"]["model"]["hit_rate_at_3"] > r["categories"]["most_popular"]["hit_rate_at_3"]


def test_neighbours_recover_the_planted_groups(model):
    assert model.status == "ok" and model.reason is None and model.evidence > 0
    in_group = total = 0
    for product, neighbours in model.tables.neighbours.items():
        for other, _ in neighbours[:4]:
            total += 1
            in_group += other.rsplit("-", 1)[0] == product.rsplit("-", 1)[0]
    assert in_group / total > 0.8
    assert max(len(n) for n in model.tables.neighbours.values()) <= 50
    assert len(model.tables.popular) <= 200
    assert model.metrics["ndcg_at_5"] > model.metrics["popular_ndcg_at_5"]


def _user(events):
    f = None
    for day, name, props in events:
        f = observe(f, name, datetime.fromtimestamp(CUT - day * DAY, timezone.utc), props)
    return f


def test_just_bought_left_out_and_never_fewer_than_k(model):
    group = [f"c03-g2-p{i}" for i in range(5)]
    order = {"products": [{"product_id": group[0], "category": "c03"}]}
    recent = _user([(10, "Product Viewed", {"product_id": group[1], "category": "c03"}),
                    (5, "Order Completed", order)])
    recs = model.products(recent, CUT, k=5)
    assert len(recs) == 5 and len(set(recs)) == 5
    assert group[0] not in recs
    assert set(recs) & set(group[1:])  # its group comes first
    old = _user([(10 + JUST_BOUGHT // DAY, "Order Completed", order)])
    assert model.products(old, CUT, k=5)  # bought long ago: may come back
    assert len(model.products(recent, CUT, k=150)) == 150


def test_cold_users_get_the_popular_products(model):
    popular = [p for p, _ in model.tables.popular[:5]]
    assert model.products(None, CUT, 5) == popular
    stranger = _user([(1, "Product Viewed", {"product_id": "never-seen", "category": "new"})])
    assert len(model.products(stranger, CUT, 5)) == 5
    assert len(model.categories(None, CUT, 3)) == 3


def test_training_ignores_what_came_after_as_of(shop, model):
    later = fit_recommender(shop, CUT)  # features that still hold the days after CUT
    assert later.to_plain() == model.to_plain()


def test_plain_round_trip_is_identical(model, shop):
    plain = json.loads(json.dumps(model.to_plain()))
    again = Recommender.from_plain(plain)
    assert json.dumps(again.to_plain(), sort_keys=True) == json.dumps(model.to_plain(), sort_keys=True)
    for _, f, _ in shop[:50]:
        assert again.products(f.as_of(CUT), CUT) == model.products(f.as_of(CUT), CUT)
        assert again.categories(f.as_of(CUT), CUT) == model.categories(f.as_of(CUT), CUT)


def test_too_little_data_falls_back_to_popularity():
    users = [("a", _user([(3, "Product Viewed", {"product_id": "x", "category": "c"})]), None),
             ("b", None, None)]
    m = fit_recommender(users, CUT)
    assert m.status == "fallback" and "too little data" in m.reason
    assert m.products(None, CUT, 5) == ["x"]  # the catalog has one product
    assert fit_recommender([], CUT).products(None, CUT, 3) == []


def test_movielens_real_log():
    folder = items.movielens_dir()  # fetched once from PyPI (recbole's wheel) into .cache/
    if folder is None:
        pytest.skip("MovieLens 100k: recbole's wheel could not be fetched from the package registry")
    ml = items.movielens_population(folder)
    cut = int(datetime(1998, 1, 1, tzinfo=timezone.utc).timestamp())
    r = evaluate_recommender(ml, cut, horizon_days=14)
    assert r["users"] >= 50
    assert r["model"]["ndcg_at_5"] >= r["most_popular"]["ndcg_at_5"] - 0.005
    assert r["model"]["ndcg_at_5"] > r["most_viewed"]["ndcg_at_5"]


def _grocery(n_users: int, seed: int = 11):
    """Users who reorder their own staples every week or so (plus a product of the catalog now and
    then): what they bought last week is what they buy next."""
    import random
    rnd = random.Random(seed)
    catalog = [f"g{i}" for i in range(300)]
    users = []
    for u in range(n_users):
        staples = rnd.sample(catalog, 4)
        f = None
        t = items.START + rnd.randrange(10 * DAY)
        while t < CUT + 30 * DAY:
            basket = [p for p in staples if rnd.random() < 0.7] + [rnd.choice(catalog)]
            f = observe(f, "Order Completed", datetime.fromtimestamp(t, timezone.utc),
                        {"products": [{"product_id": p, "category": "food"} for p in basket]})
            t += rnd.randrange(5 * DAY, 10 * DAY)
        users.append((f"u{u}", f, None))
    return users


def test_reorders_are_learned_on_the_internal_split():
    grocery = _grocery(300)
    model = fit_recommender([(u, f.as_of(CUT), z) for u, f, z in grocery], CUT)
    assert model.status == "ok" and model.repeat and model.self_weight > 0
    r = evaluate_recommender(grocery, CUT, horizon_days=10)
    assert r["model"]["hit_rate_at_5"] > r["most_viewed"]["hit_rate_at_5"] + 0.2  # it excludes what was just bought
    assert r["model"]["hit_rate_at_5"] >= r["most_bought"]["hit_rate_at_5"] - 0.02
    _, f, _ = grocery[0]
    recent = {p for t, kind, p, _ in f.as_of(CUT).items if CUT - t <= JUST_BOUGHT}
    assert set(model.products(f.as_of(CUT), CUT)) & recent  # just bought, and back
    again = Recommender.from_plain(json.loads(json.dumps(model.to_plain())))
    assert again.repeat and again.products(f.as_of(CUT), CUT) == model.products(f.as_of(CUT), CUT)
    plain = model.to_plain()
    del plain["weights"]["repeat"]  # stored before `repeat` existed: just bought left out, as then
    assert not Recommender.from_plain(plain).repeat


def test_shop_leaves_just_bought_out(model):
    assert not model.repeat


def test_no_history_on_the_internal_split_uses_the_fallback_weights():
    # one old user makes the log 100 days old (a 30-day internal split); the 40 users who buy in it have
    # nothing before it, so every candidate ranks the same and none may win by being first in the grid
    old = ("old", _user([(100, "Order Completed", {"products": [{"product_id": "x"}, {"product_id": "y"}]})]),
           None)
    new = [(f"u{i}", _user([(10, "Order Completed", {"products": [{"product_id": f"p{i % 4}"},
                                                                             {"product_id": f"p{i % 4 + 1}"}]})]), None)
           for i in range(40)]
    m = fit_recommender([old] + new, CUT)
    assert m.status == "ok" and not m.metrics
    assert (m.self_weight, m.popular_weight) == FALLBACK_WEIGHTS and not m.repeat
    assert m.user_half_life_days == FALLBACK_USER_LIFE


def test_a_young_log_keeps_history_before_its_internal_split():
    # the log is 20 days old: the internal split takes its last 10 days, not all 30 of validation_days
    users = [(f"u{i}", _user([(20 - i / 1000, "Order Completed", {"products": [{"product_id": f"p{i % 5}"}]}),
                               (3, "Order Completed", {"products": [{"product_id": f"p{i % 5}"},
                                                                              {"product_id": f"q{i % 3}"}]})]), None)
             for i in range(60)]
    m = fit_recommender(users, CUT)
    assert m.status == "ok" and m.metrics["validation_users"] == 60
    assert m.repeat and m.self_weight > 0  # each user bought their product again: learnt
