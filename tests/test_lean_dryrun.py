"""The dry-run's lean path (issue 21, item 1): the collector kept out of the run, no `run_due` call
per message when nothing is due, refusal reasons built only for a sink that reads them — each with
the same output as the plain path."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import pytest

from engine.core.effects import Transition
from engine.core.step import UNEXPLAINED
from engine.dryrun.eventlog import open_logs
from engine.dryrun.generate import generate
from engine.dryrun.report import Report
from engine.dryrun.simulate import SendsWriter, collector_kept_out, load_program, simulate
from engine.dryrun.trace import Trace
from engine.runtime.clock import VirtualClock
from engine.runtime.loop import Engine, handle_all
from engine.runtime.sinks import Discard, FanOut, Recorder, reads_reasons
from engine.store.base import MemoryStore

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


@pytest.fixture(scope="module")
def shop():
    return load_program(SHOP)


@pytest.fixture(scope="module")
def messages(tmp_path_factory):
    log = tmp_path_factory.mktemp("lean") / "events.jsonl"
    generate(log, events=6000, users=400, seed=3)
    with open_logs([log]) as read:
        return list(read)


def test_the_collector_is_restored_after_the_run():
    before = gc.get_threshold()
    with collector_kept_out():
        assert gc.get_threshold() != before
    assert gc.get_threshold() == before and gc.isenabled()
    gc.disable()
    try:
        with collector_kept_out():
            pass
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()
    with pytest.raises(KeyError), collector_kept_out():
        raise KeyError("x")
    assert gc.get_threshold() == before and gc.isenabled()


def test_only_sinks_that_read_reasons_get_them(tmp_path, shop):
    writer = SendsWriter(tmp_path / "s.jsonl")
    assert not reads_reasons(Report(shop)) and not reads_reasons(writer) and not reads_reasons(Discard())
    assert not reads_reasons(FanOut(Report(shop), writer))
    assert reads_reasons(FanOut(Report(shop), Trace("u"))) and reads_reasons(Recorder())
    assert reads_reasons(object())  # a sink that does not say (the daemon's trail, its outbox) reads them
    writer.close()


def _effects(shop, messages, sink, alone: bool):
    engine = Engine(shop, MemoryStore(keep_actions=False), VirtualClock(messages[0].timestamp), sink)
    if alone:
        handle_all(engine, messages, messages[-1].timestamp)
    else:  # the daemon's rule, one `run_due` per message
        for m in messages:
            engine.take(m, m.timestamp)
        engine.run_due(messages[-1].timestamp)
    return engine


def test_skipping_run_due_when_nothing_is_due_changes_nothing(shop, messages):
    plain, lean = Recorder(), Recorder()
    a = _effects(shop, messages, plain, alone=False)
    b = _effects(shop, messages, lean, alone=True)
    assert [e.to_json() for e in plain.effects] == [e.to_json() for e in lean.effects]
    assert a.store.profiles == b.store.profiles and a.store.wakes == b.store.wakes
    assert any(isinstance(e, Transition) and e.kind == "resumed" for e in lean.effects)  # timers did fire


class _Silent(Recorder):
    reads_reasons = False


def test_refusals_are_counted_alike_and_explained_only_when_read(shop, messages):
    told, untold = Recorder(), _Silent()
    _effects(shop, messages, told, alone=True)
    _effects(shop, messages, untold, alone=True)
    assert len(told.effects) == len(untold.effects)
    unexplained = 0
    for a, b in zip(told.effects, untold.effects):
        if isinstance(a, Transition) and a.kind == "not_entered" and b.detail != a.detail:
            unexplained += 1  # a reason that takes formatting ("reenter after 7d: last entry at ...")
            assert b.detail == UNEXPLAINED and a.detail != UNEXPLAINED
            a = replace(a, detail=UNEXPLAINED)
        assert a == b
    assert unexplained > 0
    quiet = simulate(shop, messages).report.to_json()
    traced = simulate(shop, messages, sinks=[Trace("nobody")]).report.to_json()
    assert quiet == traced
