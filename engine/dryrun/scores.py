"""`journeys score`: every user's predictions as of a moment, from the dry-run's own engine.

The log's events before `as_of` run through the engine on its virtual clock exactly as in
`journeys simulate` (journeys included: their sends are messages the fatigue model counts), the
models train as of `as_of` from the features that holds, and every user is scored at `as_of`.
Nothing at or after `as_of` is read: the leak test (tests/test_predictions_engine.py) changes the
log after it and expects the same bytes.

One row per user, `user_id` first, then a column per score, each named after its model:
`purchase_30d`, `churn_30d` per horizon, `best_hour_email`/`best_hour_push` (local hour, 0-23),
`next_products`/`next_categories` (best first, space-separated), `cap_push_7d`... per learned
cap (the project's `auto` rules with their bounds, else email and push per 7 days within 1-10).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import chain
from typing import Iterable, Sequence

from journeys.graph import format_duration

from ..core.messages import Message
from ..core.program import Program
from ..core.step import user_zone
from ..models.features import seconds
from ..models.modelset import ModelSet
from ..runtime.clock import VirtualClock
from ..runtime.loop import Engine, handle_all, run_until
from ..runtime.sinks import Discard
from ..store.base import MemoryStore

DAY = 86400
SEND_CHANNELS = ("email", "push")
DEFAULT_CAP = (7 * DAY, 1, 10)  # window, min, max: the caps scored when the project learns none


@dataclass(frozen=True)
class Scores:
    header: list[str]
    rows: list[list[str]]
    models: ModelSet

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()


def learned_caps(program: Program) -> list[tuple[str, int, int, int]]:
    """(channel, window seconds, min, max) of every `auto` cap rule, or the default ones."""
    found: dict[tuple[str, int], tuple[int, int]] = {}
    caps = list(program.policy.caps) + [c for j in program.journeys.values() for c in j.caps]
    for cap in caps:
        for rule in cap.rules:
            if getattr(rule, "auto", False):
                found.setdefault((rule.channel, rule.seconds), (rule.low, rule.high))
    if not found:
        window, low, high = DEFAULT_CAP
        return [(c, window, low, high) for c in SEND_CHANNELS]
    return [(c, w, lo, hi) for (c, w), (lo, hi) in sorted(found.items())]


def run_with_features(program: Program, messages: Iterable[Message], start: datetime | None = None,
                      train_inline: bool = True) -> Engine:
    """`messages` (in time order) through an engine that keeps every user's features, in memory,
    effects discarded; the clock starts at the first message (else at `start`). The caller fires
    what is due after the last message (`run_until`)."""
    stream = iter(messages)
    first = next(stream, None)
    at = first.timestamp if first is not None else start
    assert at is not None, "no message and no start"
    engine = Engine(replace(program, features_on=True), MemoryStore(keep_actions=False), VirtualClock(at), Discard(),
                    train_inline=train_inline)
    if first is not None:
        handle_all(engine, chain((first,), stream), None)
    return engine


def score(program: Program, messages: Iterable[Message], as_of: datetime, horizons: Sequence[int]) -> Scores:
    """Scores of every user as of `as_of`, from the messages before it (`horizons` in seconds)."""
    engine = run_with_features(program, (m for m in messages if m.timestamp < as_of), start=as_of)
    run_until(engine, as_of - timedelta(microseconds=1))
    program, store = engine.program, engine.store
    with store.transaction():
        models = engine.train_models(as_of)
    now = seconds(as_of)
    caps = learned_caps(program)
    header = ["user_id"]
    for h in horizons:
        header += [f"purchase_{format_duration(h)}", f"churn_{format_duration(h)}"]
    header += [f"best_hour_{c}" for c in SEND_CHANNELS] + ["next_products", "next_categories"]
    header += [f"cap_{c}_{format_duration(w)}" for c, w, _, _ in caps]
    rows = []
    for uid in sorted(store.users()):
        state = store.load(uid)
        if state is None:
            continue
        f = state.features.as_of(now) if state.features is not None else None
        zone = user_zone(state.traits, program)
        row = [uid]
        for h in horizons:
            row += [_number(models.predict(f, now, "purchase", h)), _number(models.predict(f, now, "churn", h))]
        row += [_whole(models.best_hour(f, zone, c, now)) for c in SEND_CHANNELS]
        picks = models.recommended(f, now, 5)
        row += [" ".join(p["product_id"] for p in picks["products"]), " ".join(picks["categories"])]
        row += [str(models.cap(f, c, w, lo, hi)) for c, w, lo, hi in caps]
        rows.append(row)
    return Scores(header, rows, models)


def _whole(n: int | None) -> str:
    return "" if n is None else str(n)


def _number(p: float | None) -> str:
    return "" if p is None else f"{p:.6f}"
