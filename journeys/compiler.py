"""Typed tree → compiled project: journeys as graphs of step nodes, segments and policy as closures.

The compiler trusts the checker: it reports nothing, but it never loops (segment cycles are
walked with a visited set) and never crashes on a tree the grammar accepts; what the checker
should have rejected (two entries, a duration without unit, an unknown function, two paths that
collide...) raises `CompileError` with the span it is about.

Step paths: top-level steps are `<slug>/<n>` from 1; an `if` nests `<path>/then/<n>`,
`<path>/elif1/<n>`..., `<path>/else/<n>`; `wait for` nests `<path>/event/<n>` and
`<path>/timeout/<n>`; a split arm `<path>/<arm slug>/<n>` (the control group is `<path>/control`
and has no steps); `on exit` steps are `<slug>/on_exit/<n>`.
"""

from __future__ import annotations

from typing import Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import ast as A
from . import graph as G
from .expr import CompileError, compile_expr, compile_match, window_seconds
from .functions import AUTO_CAP_CHANNELS, AUTO_CAP_LIMIT, BEST_TIME_WINDOW_SECONDS, EVERY_DAYS
from .needs import (HistoryNeeds, SegmentIndex, expression_needs, history_read_by, live_needs, match_properties,
                    segment_closure, segment_references, segments_named_in)
from .version import journey_version

__all__ = ["CompileError", "compile_project", "compile_journey", "compile_segment", "compile_policy"]


# ---------------------------------------------------------------------------------- project


def compile_project(files: Iterable[A.SourceFile]) -> G.CompiledProject:
    policies: list[A.Policy] = []
    segments: dict[str, A.Segment] = {}
    journeys: list[tuple[A.Journey, str]] = []
    for f in files:
        for item in f.items:
            if isinstance(item, A.Policy):
                policies.append(item)
            elif isinstance(item, A.Segment):
                if item.name.value in segments:
                    raise CompileError(f'segment "{item.name.value}" is defined twice', item.name.span)
                segments[item.name.value] = item
            elif isinstance(item, A.Journey):
                journeys.append((item, f.path))
    index = SegmentIndex(segments)
    compiled_segments = {name: compile_segment(seg, index) for name, seg in segments.items()}
    compiled: dict[str, G.CompiledJourney] = {}
    slugs: dict[str, str] = {}
    for journey, path in journeys:
        cj = compile_journey(journey, index, file=path)
        if cj.name in compiled:
            raise CompileError(f'journey "{cj.name}" is defined twice', journey.name.span)
        if cj.slug in slugs:
            raise CompileError(f'journeys "{slugs[cj.slug]}" and "{cj.name}" have the same path prefix '
                               f'`{cj.slug}`', journey.name.span)
        slugs[cj.slug] = cj.name
        compiled[cj.name] = cj
    policy, policy_needs = compile_policy(policies, index)
    needs = HistoryNeeds.union([policy_needs, *(j.needs for j in compiled.values()),
                                *(s.needs for s in compiled_segments.values())])
    return G.CompiledProject(compiled, compiled_segments, policy, needs)


def compile_segment(segment: A.Segment, segments: Mapping[str, A.Segment]) -> G.CompiledSegment:
    refs = segment_closure(segment_references(segment.condition), segments)
    return G.CompiledSegment(segment.name.value, compile_expr(segment.condition), tuple(refs),
                             _needs_of(segment.condition, refs, segments), span=segment.span)


def compile_policy(policies: Iterable[A.Policy],
                   segments: Mapping[str, A.Segment] | None = None) -> tuple[G.CompiledPolicy, HistoryNeeds]:
    """The policy (several blocks merge; a setting given twice is an error) and the history its
    cap conditions need."""
    timezone: str | None = None
    caps: list[G.Cap] = []
    quiet: G.QuietHours | None = None
    needs = HistoryNeeds()
    for policy in policies:
        for stmt in policy.statements:
            if isinstance(stmt, A.TimezoneDecl):
                if timezone is not None:
                    raise CompileError("the policy sets the timezone twice", stmt.span)
                timezone = _zone_name(stmt.name.value, stmt.name.span)
            elif isinstance(stmt, A.Cap):
                caps.append(_cap(stmt))
                if stmt.when is not None:
                    refs = segment_closure(segment_references(stmt.when), segments or {})
                    needs = needs | _needs_of(stmt.when, refs, segments or {})
            elif isinstance(stmt, A.QuietHours):
                if quiet is not None:
                    raise CompileError("the policy sets quiet hours twice", stmt.span)
                quiet = _quiet(stmt)
    return G.CompiledPolicy(timezone or "UTC", tuple(caps), quiet), needs


# ---------------------------------------------------------------------------------- journeys


def compile_journey(journey: A.Journey, segments: Mapping[str, A.Segment], *,
                    file: str | None = None) -> G.CompiledJourney:
    """One journey; `segments` are all the project's segment trees by name (for the version id and
    the history needs of the segments it references)."""
    name = journey.name.value
    slug = G.slugify(name)
    if not slug:
        raise CompileError(f'the journey name "{name}" has no letter or digit to make its path from',
                           journey.name.span)
    aliases = frozenset(d.alias.value for d in journey.declarations
                        if isinstance(d, A.EntryEvent) and d.alias is not None)
    decl = _Declarations(journey, aliases)
    steps = _Steps(slug, aliases)
    first = steps.block(journey.steps, slug, None)
    on_exit = steps.on_exit(decl.on_exit, slug)
    segments = SegmentIndex.of(segments)
    nodes = list(journey.walk())  # one walk for the segments it names, the history it reads, its waits
    named = segments_named_in(nodes)
    refs = segment_closure(named, segments)
    live = {m.event.value for m in decl.live_matches}
    live |= {s.match.event.value for s in nodes if isinstance(s, A.WaitFor)}
    needs = _needs_of(journey, refs, segments, nodes) | live_needs(live)
    if decl.entry.kind == "first_event" and decl.entry.match is not None:
        event = decl.entry.match.event  # earlier events are matched again: keep what the filter reads
        entry = next(d for d in journey.declarations if isinstance(d, A.EntryEvent))
        needs = needs | HistoryNeeds(ever=frozenset({event}), properties={event: match_properties(entry.match)})
    return G.CompiledJourney(
        name=name, slug=slug, version=journey_version(journey, segments, named=named), entry=decl.entry,
        exits=G.Exits(tuple(decl.exit_events), tuple(decl.exit_segments), tuple(decl.exit_conditions)),
        reenter=decl.reenter, goals=tuple(decl.goals), caps=tuple(decl.caps), quiet_hours=decl.quiet,
        nodes=steps.nodes, first=first, on_exit=on_exit, needs=needs, segments=tuple(refs),
        file=file, span=journey.span,
    )


def _needs_of(node: A.Node, refs: Iterable[str], segments: Mapping[str, A.Segment],
              nodes: Iterable[A.Node] | None = None) -> HistoryNeeds:
    """What `node` reads itself (`nodes`: its walk, if the caller made it) plus what the (already
    transitive) segments `refs` read."""
    index = SegmentIndex.of(segments)
    own = history_read_by(nodes) if nodes is not None else expression_needs(node)
    return HistoryNeeds.union([own, *(index.needs(r) for r in refs if r in index)])


class _Declarations:
    """The declarations of one journey, compiled; each may appear once unless it is a list."""

    def __init__(self, journey: A.Journey, aliases: frozenset[str]):
        self.aliases = aliases  # the entry's `as` names: the named events, in `where` too
        self.entry: G.Entry | None = None
        self.reenter: G.Reentry | None = None
        self.quiet: G.QuietHours | None = None
        self.exit_events: list = []
        self.exit_segments: list[str] = []
        self.exit_conditions: list = []
        self.goals: list[G.Goal] = []
        self.caps: list[G.Cap] = []
        self.on_exit: list[A.Node] = []
        self.live_matches: list[A.EventMatch] = []
        for d in journey.declarations:
            self._add(d)
        if self.entry is None:
            raise CompileError(f'journey "{journey.name.value}" has no entry', journey.name.span)
        self.reenter = self.reenter or G.Reentry("never", None)

    def _add(self, d: A.Node) -> None:
        if isinstance(d, (A.EntryEvent, A.EntrySegment, A.EntrySchedule)):
            if self.entry is not None:
                raise CompileError("a journey has one entry; this is a second one", d.span)
            self.entry = _entry(d)
            if isinstance(d, A.EntryEvent):
                self.live_matches.append(d.match)
        elif isinstance(d, A.ExitEvent):
            self.exit_events.append(compile_match(d.match, self.aliases))
            self.live_matches.append(d.match)
        elif isinstance(d, A.ExitSegment):
            self.exit_segments.append(d.segment.value)
        elif isinstance(d, A.ExitCondition):
            self.exit_conditions.append(compile_expr(d.condition, self.aliases))
        elif isinstance(d, A.Reenter):
            if self.reenter is not None:
                raise CompileError("`reenter` is given twice", d.span)
            self.reenter = _reenter(d)
        elif isinstance(d, A.Goal):
            if any(g.name == d.name.value for g in self.goals):
                raise CompileError(f'goal "{d.name.value}" is defined twice', d.name.span)
            reads = d.match.where is not None and any(isinstance(n, A.Name) and n.name in self.aliases
                                                      for n in d.match.where.walk())
            self.goals.append(G.Goal(d.name.value, compile_match(d.match, self.aliases), window_seconds(d.within),
                                     reads_named=reads))
            self.live_matches.append(d.match)
        elif isinstance(d, A.Cap):
            self.caps.append(_cap(d))
        elif isinstance(d, A.QuietHours):
            if self.quiet is not None:
                raise CompileError("quiet hours are given twice", d.span)
            self.quiet = _quiet(d)
        elif isinstance(d, A.OnExit):
            self.on_exit.extend(d.steps)
        else:
            raise CompileError(f"unexpected {type(d).__name__} among the declarations", getattr(d, "span", None))


def _entry(d: A.Node) -> G.Entry:
    if isinstance(d, A.EntryEvent):
        alias = d.alias.value if d.alias is not None else None
        return G.Entry("first_event" if d.first else "event", match=compile_match(d.match), alias=alias)
    if isinstance(d, A.EntrySegment):
        return G.Entry("segment", segment=d.segment.value)
    assert isinstance(d, A.EntrySchedule)
    tz = _tz(d.tz)
    segment = d.segment.value if d.segment is not None else None
    if d.every is not None:
        day = EVERY_DAYS.get(d.every.value) or EVERY_DAYS.get(d.every.value.lower())
        if day is None:
            raise CompileError(f"`every {d.every.value}`: expected one of {', '.join(EVERY_DAYS)}", d.every.span)
        at = _minute(d.at)
        cron = f"{at % 60} {at // 60} * * {day}"
        return G.Entry("schedule", schedule=G.Schedule(cron, tz, d.every.value.lower(), at), segment=segment)
    cron = (d.cron.value if d.cron is not None else "").strip()
    if len(cron.split()) != 5:
        raise CompileError(f'cron "{cron}" needs 5 fields: minute hour day month weekday',
                           d.cron.span if d.cron else d.span)
    return G.Entry("schedule", schedule=G.Schedule(" ".join(cron.split()), tz), segment=segment)


def _reenter(d: A.Reenter) -> G.Reentry:
    if d.mode == "after":
        if d.after is None:
            raise CompileError("`reenter after` needs a duration, such as `reenter after 7d`", d.span)
        return G.Reentry("after", window_seconds(d.after))
    return G.Reentry(d.mode, None)


def _cap(d: A.Cap) -> G.Cap:
    return G.Cap(tuple(_cap_rule(r) for r in d.rules), compile_expr(d.when) if d.when is not None else None)


def _cap_rule(r: A.CapRule) -> G.CapRule:
    seconds = window_seconds(r.window)
    if not r.auto:
        return G.CapRule(r.channel.value, r.count, seconds)
    low, high = r.bound("min") or 1, r.bound("max")
    if high is None or r.channel.value not in AUTO_CAP_CHANNELS or not (1 <= low <= high <= AUTO_CAP_LIMIT):
        raise CompileError("a learned cap needs `max`, a message channel and 1 <= min <= max <= "
                           f"{AUTO_CAP_LIMIT}", r.span)
    return G.CapRule(r.channel.value, high, seconds, auto=True, low=low, high=high)


def _quiet(d: A.QuietHours) -> G.QuietHours:
    return G.QuietHours(_minute(d.start), _minute(d.end), _tz(d.tz))


def _minute(t: A.TimeOfDay | None) -> int:
    if t is None or not t.valid:
        raise CompileError(f"`{t}` is not a time of day (00:00 to 23:59)", getattr(t, "span", None))
    return t.hour * 60 + t.minute


def _tz(tz: A.Timezone) -> str | None:
    if tz.is_user:
        return None
    return _zone_name(tz.name.value, tz.name.span)


def _zone_name(name: str, span) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CompileError(f'unknown timezone "{name}" (expected an IANA name such as "Europe/Berlin")', span) from None
    return name


# ---------------------------------------------------------------------------------- steps


class _Steps:
    """Turns blocks of steps into nodes. A parent node is added before its children, so `nodes`
    is in source order, depth first; `cont` is where a block continues when it is done."""

    def __init__(self, slug: str, aliases: frozenset[str] = frozenset()):
        self.slug = slug
        self.aliases = aliases
        self.nodes: dict[str, G.Node] = {}

    def block(self, steps: Iterable[A.Node], prefix: str, cont: str | None) -> str | None:
        """Compiles the block; returns where entering it leads (its first step, or `cont`)."""
        steps = tuple(steps)
        paths = [f"{prefix}/{i}" for i in range(1, len(steps) + 1)]
        for i, step in enumerate(steps):
            self.step(step, paths[i], paths[i + 1] if i + 1 < len(paths) else cont)
        return paths[0] if paths else cont

    def on_exit(self, steps: list[A.Node], slug: str) -> tuple[str, ...]:
        prefix = f"{slug}/on_exit"
        self.block(steps, prefix, None)
        return tuple(f"{prefix}/{i}" for i in range(1, len(steps) + 1))

    def add(self, node: G.Node) -> None:
        if node.path in self.nodes:
            raise CompileError(f"two steps would have the path `{node.path}`: rename one (split arm names "
                               "must differ in more than case and punctuation, and not be `control`)", node.span)
        self.nodes[node.path] = node

    def step(self, s: A.Node, path: str, nxt: str | None) -> None:
        span = getattr(s, "span", None)
        if isinstance(s, A.Wait):
            self.add(G.WaitNode(path, nxt, window_seconds(s.duration), span=span))
        elif isinstance(s, A.WaitUntil):
            self.add(G.WaitUntilNode(path, nxt, _minute(s.at), _tz(s.tz), span=span))
        elif isinstance(s, A.WaitFor):
            self._wait_for(s, path, nxt)
        elif isinstance(s, A.If):
            self._if(s, path, nxt)
        elif isinstance(s, A.Split):
            self._split(s, path, nxt)
        elif isinstance(s, A.Send):
            self.add(G.SendNode(path, nxt, s.channel.value, s.template.value, _data(s.data, self.aliases),
                                s.via.value if s.via is not None else None, _best_time(s), span=span))
        elif isinstance(s, A.AudienceChange):
            self.add(G.AudienceNode(path, nxt, s.op, s.audience.value, span=span))
        elif isinstance(s, A.Webhook):
            self.add(G.WebhookNode(path, nxt, s.name.value, _data(s.data, self.aliases), span=span))
        elif isinstance(s, A.SetTrait):
            self.add(G.SetTraitNode(path, nxt, s.trait.value, compile_expr(s.value, self.aliases), span=span))
        elif isinstance(s, A.ExitStep):
            self.add(G.ExitNode(path, None, span=span))
        else:
            raise CompileError(f"unexpected {type(s).__name__} among the steps", span)

    @staticmethod
    def _first(steps: tuple, prefix: str, cont: str | None) -> str | None:
        return f"{prefix}/1" if steps else cont

    def _wait_for(self, s: A.WaitFor, path: str, nxt: str | None) -> None:
        blocks: dict[str, tuple] = {}
        for b in s.branches:
            if b.outcome in blocks:
                raise CompileError(f"`on {b.outcome}` is given twice", b.span)
            blocks[b.outcome] = tuple(b.steps)
        ev, to = blocks.get("event", ()), blocks.get("timeout", ())
        self.add(G.WaitForNode(path, nxt, compile_match(s.match, self.aliases), window_seconds(s.timeout),
                               self._first(ev, f"{path}/event", nxt), self._first(to, f"{path}/timeout", nxt),
                               span=s.span))
        self.block(ev, f"{path}/event", nxt)
        self.block(to, f"{path}/timeout", nxt)

    def _if(self, s: A.If, path: str, nxt: str | None) -> None:
        arms, blocks, else_steps = [], [], None
        for i, b in enumerate(s.branches):
            if b.condition is None:
                if else_steps is not None or i != len(s.branches) - 1:
                    raise CompileError("`else` must come once, last", b.span)
                else_steps = tuple(b.steps)
                continue
            label = "then" if i == 0 else f"elif{i}"
            steps = tuple(b.steps)
            condition = compile_expr(b.condition, self.aliases)
            arms.append(G.BranchArm(label, condition, self._first(steps, f"{path}/{label}", nxt)))
            blocks.append((steps, f"{path}/{label}"))
        else_steps = else_steps or ()
        self.add(G.BranchNode(path, nxt, tuple(arms), self._first(else_steps, f"{path}/else", nxt), span=s.span))
        for steps, prefix in blocks:
            self.block(steps, prefix, nxt)
        self.block(else_steps, f"{path}/else", nxt)

    def _split(self, s: A.Split, path: str, nxt: str | None) -> None:
        arms, blocks, control = [], [], None
        seen: dict[str, str] = {"control": "control"}
        for arm in s.arms:
            if arm.is_control:
                if control is not None:
                    raise CompileError("a split has one control group", arm.span)
                control = arm.percent
                continue
            slug = G.slugify(arm.name.value)
            if not slug:
                raise CompileError(f'split arm "{arm.name.value}" has no letter or digit to make its path from',
                                   arm.span)
            if slug in seen:
                raise CompileError(f'split arm "{arm.name.value}" gets the path segment `{slug}`, as does '
                                   f'"{seen[slug]}": give arms names that differ in letters or digits', arm.span)
            seen[slug] = arm.name.value
            steps = tuple(arm.steps)
            arms.append(G.SplitArmNode(arm.name.value, slug, arm.percent, self._first(steps, f"{path}/{slug}", nxt)))
            blocks.append((steps, f"{path}/{slug}"))
        self.add(G.SplitNode(path, nxt, tuple(arms), control, span=s.span))
        for steps, prefix in blocks:
            self.block(steps, prefix, nxt)


def _best_time(s: A.Send) -> int | None:
    if s.best_time is None:
        return None
    seconds = window_seconds(s.best_time)
    low, high = BEST_TIME_WINDOW_SECONDS
    if not low <= seconds <= high:
        raise CompileError(f"`at best time within {s.best_time}`: the window is 1h to 7d", s.best_time.span)
    return seconds


def _data(pairs: Iterable[A.Pair], aliases: frozenset[str]) -> tuple:
    out, keys = [], set()
    for p in pairs:
        if p.key.value in keys:
            raise CompileError(f"`{p.key.value}` is given twice", p.key.span)
        keys.add(p.key.value)
        out.append((p.key.value, compile_expr(p.value, aliases)))
    return tuple(out)
