"""A small harness for engine tests: journeys from source text, messages from compact tuples, the
dry-run loop on a virtual clock, and queries over what came out.

    run = Harness.from_source(tmp_path, '''
        journey "J" { entry when event "A"  send email "hello" }
    ''')
    run.feed([("2026-03-02 10:00", "u1", "A", {"x": 1})])
    assert run.actions(template="hello", outcome="sent")

Templates named by `send email|push|sms "NAME"` are written automatically (a valid front matter and
an empty body), so a journey's source text is all a test needs. Audiences `hot` and `warm` and the
webhooks `crm_nudge` and `ping` are declared in the configuration.

Message tuples (times are "YYYY-MM-DD HH:MM[:SS]" in UTC, an ISO string with an offset, or an aware
datetime):
- `(time, user, event[, props])`: a track call by a known user;
- `(time, ("anon", ANON_ID), event[, props])`: a track call by an anonymous id only;
- `(time, (USER, ANON_ID), event[, props])`: a track call with both ids;
- `(time, user, "identify", traits)` / `(time, ("anon", A), "identify", traits)` /
  `(time, (USER, A), "identify", traits)`: an identify call;
- `(time, user, "alias", previous_id)`: an alias call.
A message id is derived from the tuple's position unless a dict with "messageId" is appended as the
last item: `(time, user, event, props, {"messageId": "m1"})`.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Sequence

from engine.core.effects import Action, Conversion, Effect, Transition
from engine.core.messages import Message
from engine.core.program import Program
from engine.runtime.clock import VirtualClock
from engine.runtime.loop import Engine, handle_all
from engine.runtime.sinks import Recorder
from engine.store.base import MemoryStore
from journeys.checker import check_and_compile
from journeys.project import load_project

UTC = timezone.utc

CONFIG = """
[project]
name = "engine-tests"

[connectors.smtp]
channel = "email"
type = "smtp"
host = "127.0.0.1"
password_env = "SMTP_PASSWORD"

[connectors.fcm]
channel = "push"
type = "fcm"

[connectors.twilio]
channel = "sms"
type = "twilio"

[connectors.meta]
channel = "ads"
type = "meta_custom_audiences"

[audiences.hot]
sync = ["meta"]

[audiences.warm]
sync = ["meta"]

[webhooks.crm_nudge]
url = "https://crm.example.com/hook"

[webhooks.ping]
url = "https://crm.example.com/ping"
"""

_FRONT = {"email": "---\nsubject: Hi\nfrom: shop@example.com\n---\n", "push": "---\ntitle: Hi\n---\n", "sms": ""}
_SEND = re.compile(r'\bsend\s+(email|push|sms)\s+"([^"]+)"')


def t(text: str | datetime) -> datetime:
    """A UTC datetime from "YYYY-MM-DD HH:MM[:SS]" (UTC) or an ISO string with an offset."""
    if isinstance(text, datetime):
        return text.astimezone(UTC) if text.tzinfo else text.replace(tzinfo=UTC)
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def compile_source(root: Path, source: str, templates: dict[str, str] | None = None):
    """Write a project (journeys.toml, templates, one journey file) under `root` and compile it.
    Fails the test on any error diagnostic. Returns the compiled project."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "journeys").mkdir(exist_ok=True)
    (root / "journeys.toml").write_text(CONFIG)
    source = textwrap.dedent(source)
    wanted = {f"{ch}/{name}.j2": _FRONT[ch] + "Hello {{ user.id }}\n" for ch, name in _SEND.findall(source)}
    wanted.update(templates or {})
    for rel, text in wanted.items():
        p = root / "templates" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (root / "journeys" / "main.journey").write_text(source)
    diags, compiled = check_and_compile(load_project(root))
    errors = [d for d in diags if d.is_error]
    assert compiled is not None and not errors, "\n".join(str(d) for d in diags)
    return compiled


def _ids(who: Any) -> tuple[str | None, str | None]:
    """(user_id, anonymous_id) from a tuple's second item."""
    if isinstance(who, tuple):
        a, b = who
        return (None, b) if a == "anon" else (a, b)
    return who, None


def message(item: Sequence[Any], n: int = 0) -> Message:
    """A `Message` from a compact tuple (see the module's docstring)."""
    item = list(item)
    extra: dict[str, Any] = {}
    if len(item) >= 4 and isinstance(item[-1], dict) and "messageId" in item[-1]:
        extra = item.pop()
    when, who, name = item[0], item[1], item[2]
    rest = item[3] if len(item) > 3 else None
    user_id, anon = _ids(who)
    mid = extra.get("messageId") or f"m{n}-{name}-{user_id or anon}"
    ts = t(when)
    tz = extra.get("timezone")
    if name == "identify":
        return Message("identify", mid, ts, user_id, anon, traits=MappingProxyType(dict(rest or {})), timezone=tz)
    if name == "alias":
        return Message("alias", mid, ts, user_id, None, previous_id=rest)
    return Message("track", mid, ts, user_id, anon, event=name, properties=MappingProxyType(dict(rest or {})),
                   timezone=tz)


@dataclass
class Harness:
    program: Program
    start: datetime
    engine: Engine = field(init=False)
    store: MemoryStore = field(init=False)
    recorder: Recorder = field(init=False)
    clock: VirtualClock = field(init=False)
    fed: int = 0

    def __post_init__(self) -> None:
        self.store, self.recorder, self.clock = MemoryStore(), Recorder(), VirtualClock(self.start)
        self.engine = Engine(self.program, self.store, self.clock, self.recorder)

    @classmethod
    def from_source(cls, root: Path, source: str, start: str | datetime = "2026-01-01 00:00",
                    templates: dict[str, str] | None = None) -> "Harness":
        return cls(Program.build(compile_source(root, source, templates)), t(start))

    # ------------------------------------------------------------------ running

    def feed(self, items: Iterable[Sequence[Any] | Message], until: str | datetime | None = None, *,
             sort: bool = True) -> "Harness":
        """Run the dry-run loop over these messages, then to `until`. Like `journeys simulate`
        (whose log reader sorts), the messages are first sorted by time, stably; `sort=False`
        feeds them as given (the clock never goes back: a late message is taken at the later time)."""
        msgs = []
        for item in items:
            msgs.append(item if isinstance(item, Message) else message(item, self.fed))
            self.fed += 1
        if sort:
            msgs.sort(key=lambda m: m.timestamp)
        handle_all(self.engine, msgs, t(until) if until is not None else None)
        return self

    def until(self, moment: str | datetime) -> "Harness":
        return self.feed([], until=moment)

    # ------------------------------------------------------------------ queries

    @property
    def effects(self) -> list[Effect]:
        return self.recorder.effects

    def json(self) -> list[dict]:
        return [e.to_json() for e in self.recorder.effects]

    def actions(self, user: str | None = None, *, channel: str | None = None, kind: str | None = None,
                template: str | None = None, outcome: str | None = None, journey: str | None = None,
                path: str | None = None, reason: str | None = None) -> list[Action]:
        """Actions as recorded (every decision, so a deferred send appears twice: deferred, then its
        final outcome), filtered by whatever is given."""
        out = []
        for a in self.recorder.actions:
            if ((user is None or a.user == user) and (channel is None or a.channel == channel)
                    and (kind is None or a.kind == kind) and (template is None or a.target == template)
                    and (outcome is None or a.outcome == outcome) and (journey is None or a.journey == journey)
                    and (path is None or a.path == path) and (reason is None or a.reason == reason)):
                out.append(a)
        return out

    def sent(self, user: str | None = None, **kw: Any) -> list[Action]:
        return self.actions(user, outcome="sent", **kw)

    def sent_times(self, user: str | None = None, **kw: Any) -> list[datetime]:
        return [a.time for a in self.sent(user, **kw)]

    def transitions(self, user: str | None = None, *, kind: str | None = None, journey: str | None = None,
                    path: str | None = None) -> list[Transition]:
        return [e for e in self.effects if isinstance(e, Transition)
                and (user is None or e.user == user) and (kind is None or e.kind == kind)
                and (journey is None or e.journey == journey) and (path is None or e.path == path)]

    def entries(self, user: str | None = None, journey: str | None = None) -> list[Transition]:
        return self.transitions(user, kind="entered", journey=journey)

    def conversions(self, user: str | None = None, *, goal: str | None = None,
                    journey: str | None = None) -> list[Conversion]:
        return [e for e in self.effects if isinstance(e, Conversion)
                and (user is None or e.user == user) and (goal is None or e.goal == goal)
                and (journey is None or e.journey == journey)]

    def state(self, user: str):
        return self.store.profiles.get(user)

    def traits(self, user: str) -> dict:
        s = self.state(user)
        return dict(s.traits) if s is not None else {}

    def in_flight(self, user: str) -> dict:
        s = self.state(user)
        return dict(s.instances) if s is not None else {}
