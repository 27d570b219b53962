"""fast_init keeps a frozen dataclass what it was: signature, defaults, factories, frozenness,
equality, hash; only quicker. Checked on every class the engine applies it to."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from engine.core import effects, state, step as core
from journeys import evaluation
from journeys.fast_init import fast_init

APPLIED = [effects.Action, effects.Transition, effects.TraitChange, effects.Conversion, effects.Received,
           state.Instance, state.PendingGoal, state.SendRecord, state.UserState,
           core.Track, core.Identify, core.Wake, core.Scheduled, evaluation.Event]


@pytest.mark.parametrize("cls", APPLIED, ids=lambda c: c.__name__)
def test_the_engines_classes_keep_their_signature(cls):
    params = inspect.signature(cls.__init__).parameters
    fields = dataclasses.fields(cls)
    assert list(params)[1:] == [f.name for f in fields]
    for f in fields:
        p = params[f.name]
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty


def test_defaults_factories_frozenness_equality_and_hash():
    @fast_init
    @dataclass(frozen=True, slots=True)
    class Point:
        x: int
        y: int = 2
        tags: list = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class Plain:
        x: int
        y: int = 2
        tags: list = field(default_factory=list)

    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, []) and p.tags is not Point(1).tags  # a new list each time
    assert Point(1, 3, [4]) == Point(x=1, y=3, tags=[4]) and repr(Point(1)) == repr(Plain(1)).replace("Plain", "Point")
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))
    with pytest.raises(FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    assert dataclasses.replace(p, y=7) == Point(1, 7)


def test_only_for_frozen_slotted_dataclasses():
    @dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclass(slots=True)
    class NotFrozen:
        x: int

    for cls in (NoSlots, NotFrozen):
        with pytest.raises(TypeError, match="frozen dataclasses with slots"):
            fast_init(cls)
