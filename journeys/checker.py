"""`journeys check`: every problem of every file of a project, collected in one pass.

The checks read the typed tree and the project's configuration and templates; they never stop at
the first problem, and they never raise for anything the parser accepted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from . import ast as A
from .config import locate
from .diagnostics import Diagnostic, Diagnostics, Span
from .expr_check import ExprChecker, Scope
from .functions import (AUTO_CAP_CHANNELS, AUTO_CAP_LIMIT, BEST_TIME_WINDOW_SECONDS, CAP_CHANNELS, CHANNELS,
                        EVERY_DAYS, PREDICTION_HORIZON_DAYS, PREDICTION_MODELS, parse_prediction_key, prediction_key)
from .graph import AudienceNode, CompiledJourney, CompiledProject, SendNode, WebhookNode, slugify as slug
from .project import CONFIG_FILE, Project, display_path, load_project
from .scenario_check import check_scenarios
from .suggest import closest, did_you_mean
from .templates import ALWAYS_PROVIDED, PROVIDED_BY_CHANNEL, VIEWED_HELPERS, VIEWED_SUFFIX


def check_project(project: Project) -> Diagnostics:
    """All diagnostics of a loaded project: loading and syntax first, then the checks below."""
    return check_and_compile(project)[0]


def check_and_compile(project: Project):
    """The diagnostics, and the compiled project when there are no errors (else None): callers
    that need both get the one compilation the check already did."""
    diags = Diagnostics()
    diags.extend(project.diagnostics)
    segments = {s.name.value for s in project.segments}
    ex = ExprChecker(diags, segments)
    _check_uniqueness(project, diags)
    for policy in project.policies:
        _check_policy(policy, ex)
    for segment in project.segments:
        ex.expr(segment.condition, Scope())
    _check_segment_cycles(project.segments, diags)
    template_predictions: set[tuple[str, int]] = set()
    for journey in project.journeys:
        JourneyChecker(project, ex, diags, template_predictions).check(journey)
    _check_audience_sync(project, diags)
    check_scenarios(project, diags)
    compiled = _check_compiles(project, diags) if not diags.has_errors else None
    if compiled is not None:
        compiled = replace(_check_journey_order(project, compiled, diags),
                           template_predictions=frozenset(template_predictions))
    return diags, compiled


def _check_compiles(project: Project, diags: Diagnostics):
    """A project that checks clean must compile: if it does not, that is our bug, said plainly."""
    from .compiler import compile_project

    try:
        compiled = compile_project(project.journey_files)
    except Exception as e:  # noqa: BLE001 - CompileError or any other: a diagnostic, never a traceback
        diags.error("J000", f"internal error: the checked project does not compile: {e}", getattr(e, "span", None),
                    "please report this with the journey attached")
        return None
    return replace(compiled, dedupe_days=project.config.ingest.dedupe_days, retrain=project.config.models.retrain)


def _check_journey_order(project: Project, compiled: CompiledProject, diags: Diagnostics) -> CompiledProject:
    """`[journeys] order` of journeys.toml: the order in which journeys act on one event at one
    moment (entries, exits, waits, and so which send a shared cap lets through). Listed journeys
    come first, in the listed order; the others follow in file order. Returns the project in that
    order. Warns about a name that is no journey (a removed journey, or a typo: ignored), and where
    journeys whose order is only the file order send through one policy cap."""
    cfg_display = display_path(project.root / CONFIG_FILE)
    lines = project.lines.get(cfg_display, [])
    line, col = locate(lines, ("journeys", "order"))
    where = Span.point(cfg_display, line, col, len("order"))
    declared: list[str] = []
    for name in project.config.journeys.order:
        if name not in compiled.journeys:
            diags.warning("J060", f"`journeys.order` names \"{name}\", which is not a journey: it is ignored", where,
                          did_you_mean(name, compiled.journeys, quote='"',
                                       otherwise="journeys: " + ", ".join(f'"{n}"' for n in compiled.journeys)))
        elif name in declared:
            diags.warning("J060", f"`journeys.order` names \"{name}\" twice: its first place counts", where,
                          "list each journey once")
        else:
            declared.append(name)
    seen = set(declared)
    ordered = [*declared, *(n for n in compiled.journeys if n not in seen)]
    compiled = replace(compiled, journeys={n: compiled.journeys[n] for n in ordered})
    for policy in project.policies:
        for cap in (s for s in policy.statements if isinstance(s, A.Cap)):
            channels = {r.channel.value for r in cap.rules}
            if "all" in channels:  # `all` counts the message channels (engine.core.delivery)
                channels = (channels - {"all"}) | set(CHANNELS)
            rivals = [n for n, j in compiled.journeys.items() if n not in seen and _capped_channels(j) & channels]
            if len(rivals) < 2:
                continue
            names = ", ".join(f'"{n}"' for n in rivals)
            listed = ", ".join(f'"{n}"' for n in [*declared, *rivals])
            diags.warning("J061", f"journeys {names} send under this cap and journeys.toml does not say which "
                          "acts first: when two of them send at the same moment, the file order decides which "
                          "one the cap lets through", cap.span,
                          f"declare the order in journeys.toml (first acts first):\n[journeys]\norder = [{listed}]")
    return compiled


def _capped_channels(j: CompiledJourney) -> set[str]:
    """The cap channels a journey's actions count against (audience removals are never capped)."""
    out: set[str] = set()
    for node in j.nodes.values():
        if isinstance(node, SendNode):
            out.add(node.channel)
        elif isinstance(node, AudienceNode) and node.op == "add":
            out.add("ads")
        elif isinstance(node, WebhookNode):
            out.add("webhook")
    return out


class ProjectError(Exception):
    """The project does not check clean: nothing can be served, simulated or tested. Carries the
    diagnostics."""

    def __init__(self, project: Project, diagnostics: list[Diagnostic]):
        super().__init__(f"{len(diagnostics)} problem(s) in the project")
        self.project = project
        self.diagnostics = diagnostics


def load_checked(path: str | Path) -> tuple[Project, CompiledProject]:
    """Load, check and compile a project; ProjectError (with the diagnostics) unless it is clean.
    What every command that runs journeys starts with (serve, simulate, test, diff, replay, reload)."""
    project = load_project(path)
    diagnostics, compiled = check_and_compile(project)
    if compiled is None or diagnostics.has_errors:
        raise ProjectError(project, [d for d in diagnostics])
    return project, compiled


def check_environment(project: Project, environ: Mapping[str, str]) -> Diagnostics:
    """`journeys check --env`: every secret journeys.toml names is set in this environment. Kept
    apart from the check of the files, whose result must not depend on where it runs (CI checks
    journeys without the production secrets); run it where the daemon will run."""
    diags = Diagnostics()
    cfg_display = display_path(project.root / CONFIG_FILE)
    lines = project.lines.get(cfg_display, [])
    for loc, var in project.config.secrets():
        if not environ.get(var):
            line, col = locate(lines, loc)
            diags.error("J046", f"the environment variable `{var}` is not set (`{'.'.join(loc)}`)",
                        Span.point(cfg_display, line, col, len(loc[-1])),
                        f"set {var} where the daemon runs; journeys.toml never holds the secret itself")
    return diags


def _check_audience_sync(project: Project, diags: Diagnostics) -> None:
    """Each audience syncs to declared ad connectors; the span points into journeys.toml."""
    cfg_display = display_path(project.root / CONFIG_FILE)
    lines = project.lines.get(cfg_display, [])
    declared = project.declared.get("connectors", set())
    for name, audience in project.config.audiences.items():
        for target in audience.sync:
            connector = project.config.connectors.get(target)
            if connector is None and target not in declared:
                line, col = locate(lines, ("audiences", name, "sync"))
                diags.error("J014", f"audience `{name}` syncs to `{target}`, which is not a connector",
                            Span.point(cfg_display, line, col, 4),
                            did_you_mean(target, declared, quote='"',
                                         otherwise=f"declare it under [connectors.{target}] with channel = \"ads\""))
            elif connector is not None and connector.channel != "ads":
                line, col = locate(lines, ("audiences", name, "sync"))
                diags.error("J014", f"audience `{name}` syncs to `{target}`, a {connector.channel} connector",
                            Span.point(cfg_display, line, col, 4), "an audience syncs to connectors with channel = \"ads\"")


def _check_uniqueness(project: Project, diags: Diagnostics) -> None:
    seen: dict[str, A.Journey] = {}
    for j in project.journeys:
        key = slug(j.name.value)
        if not key:
            diags.error("J044", f"journey name `{j.name.value}` has no letter or digit to make step paths of",
                        j.name.span, "name it with words, e.g. \"Browse abandonment\"")
            continue
        if key in seen:
            first = seen[key].name
            same = first.value == j.name.value
            diags.error("J021", f"journey `{j.name.value}` is declared twice" if same else
                        f"journey `{j.name.value}` has the same step paths as `{first.value}` ({key}/...)",
                        j.name.span, f"the first one is at {first.span}; rename one of them")
        else:
            seen[key] = j
    segs: dict[str, A.Segment] = {}
    for s in project.segments:
        if s.name.value in segs:
            diags.error("J022", f"segment `{s.name.value}` is declared twice", s.name.span,
                        f"the first one is at {segs[s.name.value].name.span}; rename or remove one")
        else:
            segs[s.name.value] = s
    for extra in project.policies[1:]:
        diags.error("J023", "a project has one policy block; this is another one", extra.span,
                    f"merge it into the policy at {project.policies[0].span}")


def _check_policy(policy: A.Policy, ex: ExprChecker) -> None:
    zones = [s for s in policy.statements if isinstance(s, A.TimezoneDecl)]
    for s in policy.statements:
        if isinstance(s, A.TimezoneDecl):
            ex.timezone(s.name)
        elif isinstance(s, A.Cap):
            _check_cap(s, ex)
        elif isinstance(s, A.QuietHours):
            _check_quiet(s, ex)
    for extra in zones[1:]:
        ex.diags.error("J024", "the policy sets its timezone twice", extra.span, f"keep the one at {zones[0].span}")


def _check_cap(cap: A.Cap, ex: ExprChecker) -> None:
    for rule in cap.rules:
        if rule.channel.value not in CAP_CHANNELS:
            ex.diags.error("J015", f"unknown channel `{rule.channel.value}` in a cap", rule.channel.span,
                           did_you_mean(rule.channel.value, CAP_CHANNELS,
                                        otherwise="a cap counts " + ", ".join(CAP_CHANNELS)))
        elif rule.auto:
            _check_auto_cap(rule, ex)
        ex.duration(rule.window)
    if cap.when is not None:
        ex.expr(cap.when, Scope())


def _check_auto_cap(rule: A.CapRule, ex: ExprChecker) -> None:
    """A learned cap: one message channel, `max` given, 1 <= min <= max <= AUTO_CAP_LIMIT."""
    channel, diags = rule.channel.value, ex.diags
    window = rule.window if rule.window.unit in A.Duration.UNITS else "7d"
    if channel not in AUTO_CAP_CHANNELS:
        if channel == "all":
            diags.error("J083", "a learned cap learns one channel at a time, not `all`", rule.channel.span,
                        "write one rule per channel: " + ", ".join(f"`{c} auto per {window} max 5`"
                                                                   for c in AUTO_CAP_CHANNELS)
                        + "; a fixed `all N per ...` can stand beside them")
        else:
            diags.error("J083", f"a learned cap learns from the engagement that follows messages; `{channel}` "
                        "has none", rule.channel.span,
                        f"give {channel} a fixed count (`{channel} 3 per {window}`), or learn "
                        + ", ".join(AUTO_CAP_CHANNELS))
    seen: dict[str, A.CapBound] = {}
    for b in rule.bounds:
        if b.kind in seen:
            diags.error("J024", f"`{b.kind}` is given twice in this cap rule", b.span,
                        f"the first one is at {seen[b.kind].span}; keep one")
        seen.setdefault(b.kind, b)
    low, high = seen.get("min"), seen.get("max")
    if high is None:
        diags.error("J083", "a learned cap needs `max`: the most messages any user may get in the window",
                    rule.span, f"write `{channel} auto per {window} max 5` (and `min 2` if every user should get at "
                    "least 2); the engine learns each user's cap between the two")
    for b in (low, high):
        if b is not None and not 1 <= b.value <= AUTO_CAP_LIMIT:
            diags.error("J083", f"`{b.kind} {b.value}` is outside 1 to {AUTO_CAP_LIMIT}", b.span,
                        f"a learned cap's bounds are whole numbers from 1 to {AUTO_CAP_LIMIT}")
    if low is not None and high is not None and low.value > high.value and high.value >= 1:
        diags.error("J083", f"`min {low.value}` is above `max {high.value}`", low.span,
                    f"the engine learns a cap between them: write `min {high.value} max {low.value}`")


def _check_quiet(q: A.QuietHours, ex: ExprChecker) -> None:
    ex.time_of_day(q.start)
    ex.time_of_day(q.end)
    ex.timezone(q.tz)


def _check_segment_cycles(segments: list[A.Segment], diags: Diagnostics) -> None:
    refs: dict[str, list[A.Text]] = defaultdict(list)
    by_name = {}
    for s in segments:
        by_name.setdefault(s.name.value, s)
        refs[s.name.value] += [n.segment for n in s.condition.walk() if isinstance(n, A.InSegment)]
    reported: set[str] = set()
    for start in by_name:
        # depth-first search for a path back to `start`
        stack = [(start, [start])]
        visited = set()
        while stack:
            name, path = stack.pop()
            for ref in refs.get(name, ()):
                if ref.value == start:
                    if start not in reported:
                        reported.update(path)
                        cycle = " → ".join(f'"{p}"' for p in path + [start])
                        diags.error("J020", f"segment `{start}` refers to itself: {cycle}",
                                    by_name[start].name.span if len(path) > 1 else ref.span,
                                    "a segment cannot be defined in terms of itself; break the loop")
                    continue
                if ref.value in by_name and ref.value not in visited:
                    visited.add(ref.value)
                    stack.append((ref.value, path + [ref.value]))


DECLARATIONS = (A.EntryEvent, A.EntrySegment, A.EntrySchedule, A.ExitEvent, A.ExitSegment, A.ExitCondition,
                A.Reenter, A.Goal, A.Cap, A.QuietHours, A.OnExit)
ACTIONS = (A.Send, A.AudienceChange, A.Webhook, A.SetTrait)


_KEEP = object()  # a block that leaves `current_event` as it was (JourneyChecker._paths)


class JourneyChecker:
    def __init__(self, project: Project, ex: ExprChecker, diags: Diagnostics,
                 template_predictions: set[tuple[str, int]] | None = None):
        self.project = project
        # (model, horizon seconds) the templates of the sends read as `predicted.MODEL_HORIZON`
        self.template_predictions = template_predictions if template_predictions is not None else set()
        self.ex = ex
        self.diags = diags
        self.aliases: frozenset[str] = frozenset()
        self.viewed_alias = False
        self.exit_events: dict[str, A.ExitEvent] = {}
        # where the steps being checked can be reached without the templates' optional events:
        # `event` (no starting event: a schedule, or a segment joined by a profile update) and
        # `current_event` (none after a timer: a wait, a wait until, a wait for's timeout; maybe
        # none in `on exit`): the reason, or None while the event is certainly there
        self.lacks: dict[str, str | None] = {"event": None, "current_event": None}

    def check(self, j: A.Journey) -> None:
        self._order(j)
        decls = [i for i in j.items if isinstance(i, DECLARATIONS)]
        entries = [d for d in decls if isinstance(d, (A.EntryEvent, A.EntrySegment, A.EntrySchedule))]
        if not entries:
            self.diags.error("J025", f"journey `{j.name.value}` has no entry: nobody can ever start it", j.name.span,
                             'add one, e.g. `entry when event "Product Viewed"`')
        for extra in entries[1:]:
            self.diags.error("J024", "a journey has one entry; this is a second one", extra.span,
                             f"keep the entry at {entries[0].span}, or make two journeys")
        self.aliases = frozenset(e.alias.value for e in entries if isinstance(e, A.EntryEvent) and e.alias)
        self.viewed_alias = any(isinstance(e, A.EntryEvent) and e.alias and e.match.event.value.endswith(VIEWED_SUFFIX)
                                for e in entries)
        for kind, label in ((A.Reenter, "reenter rule"), (A.QuietHours, "quiet hours")):
            found = [d for d in decls if isinstance(d, kind)]
            for extra in found[1:]:
                self.diags.error("J024", f"a journey has one {label}; this is a second one", extra.span,
                                 f"keep the one at {found[0].span}")
        goals: dict[str, A.Goal] = {}
        for d in decls:
            if isinstance(d, A.Goal):
                if d.name.value in goals:
                    self.diags.error("J024", f"goal `{d.name.value}` is declared twice", d.name.span,
                                     f"the first one is at {goals[d.name.value].name.span}")
                goals.setdefault(d.name.value, d)
            if isinstance(d, A.ExitEvent):
                self.exit_events.setdefault(d.match.event.value, d)
        entry = entries[0] if entries else None
        started = None if isinstance(entry, A.EntryEvent) else (
            "the journey starts on a schedule, with no event" if isinstance(entry, A.EntrySchedule) else
            "a profile update, not an event, can make the user join the entry segment")
        self.lacks = {"event": started, "current_event": started}
        for d in decls:
            if isinstance(d, A.OnExit):
                self.lacks = {"event": started, "current_event": "a run can end after a timer, with no event"}
            self._declaration(d)
        self.lacks = {"event": started, "current_event": started}
        self._steps(j.steps, top=True)

    def _order(self, j: A.Journey) -> None:
        first_step = next((i for i in j.items if not isinstance(i, DECLARATIONS)), None)
        if first_step is None:
            return
        seen_step = False
        for item in j.items:
            if not isinstance(item, DECLARATIONS):
                seen_step = True
            elif seen_step:
                self.diags.error("J026", "declarations come before the first step", item.span,
                                 f"move this above the first step (at {first_step.span})")

    # ------------------------------------------------------------ declarations

    def _declaration(self, d) -> None:
        ex = self.ex
        scope = Scope(aliases=self.aliases)
        if isinstance(d, A.EntryEvent):
            ex.event_match(d.match, matching_alias=d.alias.value if d.alias is not None else None)
        elif isinstance(d, A.EntrySegment):
            ex.segment_ref(d.segment)
        elif isinstance(d, A.EntrySchedule):
            self._schedule(d)
        elif isinstance(d, A.ExitEvent):
            ex.event_match(d.match, self.aliases)
        elif isinstance(d, A.ExitSegment):
            ex.segment_ref(d.segment)
        elif isinstance(d, A.ExitCondition):
            ex.expr(d.condition, scope)
        elif isinstance(d, A.Reenter):
            if d.mode == "after" and d.after is None:
                self.diags.error("J039", "`reenter after` needs a duration", d.span, "write `reenter after 7d`")
            elif d.mode != "after" and d.after is not None:
                self.diags.error("J039", f"`reenter {d.mode}` takes no duration", d.after.span,
                                 f"write `reenter after {d.after}` or `reenter {d.mode}`")
            ex.duration(d.after)
        elif isinstance(d, A.Goal):
            ex.event_match(d.match, self.aliases)
            ex.duration(d.within)
        elif isinstance(d, A.Cap):
            _check_cap(d, ex)
        elif isinstance(d, A.QuietHours):
            _check_quiet(d, ex)
        elif isinstance(d, A.OnExit):
            self._on_exit(d.steps)

    def _schedule(self, d: A.EntrySchedule) -> None:
        ex = self.ex
        ex.timezone(d.tz)
        ex.segment_ref(d.segment)
        if d.every is not None:
            if d.every.value.lower() not in EVERY_DAYS:
                self.diags.error("J033", f"`every {d.every.value}` is not a day the schedule knows", d.every.span,
                                 did_you_mean(d.every.value, EVERY_DAYS,
                                              otherwise="write `every day`, `every weekday`, `every weekend` or a day name"))
            ex.time_of_day(d.at)
        if d.cron is not None:
            from apscheduler.triggers.cron import CronTrigger  # only projects with cron entries pay for it

            try:
                CronTrigger.from_crontab(d.cron.value, timezone="UTC")
            except (ValueError, TypeError, KeyError) as e:
                self.diags.error("J033", f"invalid cron expression `{d.cron.value}`: {e}", d.cron.span,
                                 "five fields: minute hour day-of-month month day-of-week, e.g. `0 10 * * MON`")

    def _on_exit(self, steps) -> None:
        for s in steps:
            if not isinstance(s, ACTIONS):
                self.diags.error("J027", f"`on exit` runs instantly when the journey ends; a {_step_word(s)} cannot stand in it",
                                 s.span, "keep only send, add/remove audience, webhook and set in `on exit`")
            else:
                self._step(s)

    # ------------------------------------------------------------ steps

    def _steps(self, steps, top: bool = False) -> None:
        exit_step, warned = None, False
        for s in steps:
            if exit_step is not None and not warned:  # the first unreachable step says it for the block
                self.diags.warning("J051", "this step never runs: the journey exits before it", s.span,
                                   f"remove it, or move the `exit` at {exit_step.span}")
                warned = True
            if isinstance(s, A.ExitStep):
                exit_step = exit_step or s
            if isinstance(s, DECLARATIONS):  # pragma: no cover - the grammar keeps them out of blocks
                continue
            self._step(s)

    def _paths(self, blocks: list[tuple[list, Any]], through: bool) -> None:
        """Check alternative blocks (if arms, split arms, wait for outcomes), each from the state
        before it, `current_event` set as the block says (`_KEEP` leaves it, None: it is there, a
        text: why it is gone); after them, an optional event is there only if it is there at the
        end of every path (`through`: one path goes past them all, as an `if` without `else`)."""
        before = dict(self.lacks)
        ends = [before] if through else []
        for steps, current in blocks:
            self.lacks = dict(before)
            if current is not _KEEP:
                self.lacks["current_event"] = current
            self._steps(steps)
            ends.append(self.lacks)
        self.lacks = {var: next((e[var] for e in ends if e[var] is not None), None) for var in before}

    def _step(self, s) -> None:
        ex = self.ex
        scope = Scope(aliases=self.aliases)
        if isinstance(s, A.Wait):
            ex.duration(s.duration)
            self.lacks["current_event"] = f"the step runs after `wait` (line {s.span.line}), a timer"
        elif isinstance(s, A.WaitUntil):
            ex.time_of_day(s.at)
            ex.timezone(s.tz)
            self.lacks["current_event"] = f"the step can run after `wait until` (line {s.span.line}), a timer"
        elif isinstance(s, A.WaitFor):
            self._wait_for(s)
        elif isinstance(s, A.If):
            for b in s.branches:
                if b.condition is not None:
                    ex.expr(b.condition, scope)
            self._paths([(b.steps, _KEEP) for b in s.branches],
                         through=all(b.condition is not None for b in s.branches))
        elif isinstance(s, A.Split):
            self._split(s)
        elif isinstance(s, A.Send):
            self._send(s)
        elif isinstance(s, A.AudienceChange):
            self._declared("audiences", s.audience, "J012", "audience")
        elif isinstance(s, A.Webhook):
            self._declared("webhooks", s.name, "J013", "webhook")
            self._pairs(s.data)
        elif isinstance(s, A.SetTrait):
            ex.expr(s.value, scope)

    def _wait_for(self, s: A.WaitFor) -> None:
        self.ex.event_match(s.match, self.aliases)
        self.ex.duration(s.timeout)
        seen: dict[str, A.WaitBranch] = {}
        for b in s.branches:
            if b.outcome in seen:
                self.diags.error("J024", f"`on {b.outcome}` appears twice in this wait", b.span,
                                 f"merge it into the one at {seen[b.outcome].span}")
            seen.setdefault(b.outcome, b)
        timeout = f"the step can run after the timeout of `wait for` (line {s.span.line}), a timer"
        outcomes = {"event": None, "timeout": timeout}
        self._paths([(b.steps, outcomes.get(b.outcome)) for b in s.branches] +
                    [([], gone) for outcome, gone in outcomes.items() if outcome not in seen], through=False)
        exit_rule = self.exit_events.get(s.match.event.value)
        if exit_rule is not None and exit_rule.match.where is None:
            self.diags.warning("J050", f"the journey exits on `{s.match.event.value}` before this wait can see it",
                               s.match.span, f"the exit rule at {exit_rule.span} ends the journey first; "
                               "wait for another event, or remove the exit rule")

    def _split(self, s: A.Split) -> None:
        total = 0.0
        names: dict[str, A.SplitArm] = {}
        controls = []
        for arm in s.arms:
            total += arm.percent
            if not arm.has_percent_sign or arm.percent <= 0:
                self.diags.error("J038", f"a split share is a percentage above 0, e.g. `{arm.percent:g}%`", arm.span,
                                 f"write `{max(arm.percent, 1):g}%`")
            key = "control" if arm.is_control else slug(arm.name.value)
            if arm.is_control:
                controls.append(arm)
            elif not key:
                self.diags.error("J044", f"split arm name `{arm.name.value}` has no letter or digit to make step paths of",
                                 arm.name.span, 'name it with words, e.g. "discount"')
            elif key in names or key == "control":
                first = names.get(key)
                self.diags.error("J037", f"split arm `{arm.name.value}` has the same step paths as "
                                 f"{'the control group' if first is None else '`' + first.name.value + '`'} (…/{key}/…)",
                                 arm.name.span, (f"the first one is at {first.name.span}; " if first else "") + "rename one")
            else:
                names[key] = arm
        self._paths([(arm.steps, _KEEP) for arm in s.arms], through=True)
        for extra in controls[1:]:
            self.diags.error("J037", "a split has one control group", extra.span, "merge the control shares")
        if abs(total - 100.0) > 1e-9:
            self.diags.error("J030", f"the shares of this split add up to {total:g} %, not 100 %", s.span,
                             f"{'add' if total < 100 else 'remove'} {abs(100 - total):g} % "
                             f"{'(a control group takes the rest: `' + format(100 - total, 'g') + '% control`)' if total < 100 and not controls else ''}".rstrip())

    def _send(self, s: A.Send) -> None:
        channel = s.channel.value
        self._pairs(s.data)
        self._best_time(s)
        if channel not in CHANNELS:
            self.diags.error("J015", f"unknown channel `{channel}`", s.channel.span,
                             did_you_mean(channel, CHANNELS, otherwise="send on " + ", ".join(CHANNELS)))
            return
        if s.via is not None:
            self._connector(s.via, channel)
        elif self.project.has_config and self.project.config.default_connector(channel) is None:
            named = self.project.config.connectors_for(channel)
            self.diags.error("J045", f"no {channel} connector to send with", s.channel.span,
                             f"mark one of {', '.join(named)} with `default = true` in journeys.toml, or name one "
                             f"with `via \"{named[0]}\"`" if named else
                             f"declare one in journeys.toml: [connectors.NAME] with channel = \"{channel}\"")
        tpl = self.project.templates.get((channel, s.template.value))
        if tpl is None:
            names = [n for (c, n) in self.project.templates if c == channel]
            self.diags.error("J011", f"unknown {channel} template `{s.template.value}`", s.template.span,
                             did_you_mean(s.template.value, names, quote='"',
                                          otherwise=f"create templates/{channel}/{s.template.value}.j2"))
            return
        self._template_predictions(s, tpl)
        provided = ALWAYS_PROVIDED | PROVIDED_BY_CHANNEL.get(channel, set()) | set(self.aliases) | {p.key.value for p in s.data}
        if self.viewed_alias:
            provided |= VIEWED_HELPERS
        for var, (line, col) in sorted(tpl.variables.items()):
            if var not in provided:
                self.diags.error("J035", f"template `{s.template.value}` uses `{var}`, which this send does not provide",
                                 s.template.span,
                                 f"add it: `with {{ {var}: ... }}`, or default it in {tpl.path}:{line}:{col}: "
                                 f"`{{{{ {var} | default(\"...\") }}}}`")
        for var, (line, col) in sorted(tpl.unguarded.items()):
            why = self.lacks.get(var)
            if why is not None and var not in {p.key.value for p in s.data}:
                self.diags.warning("J062", f"template `{s.template.value}` reads `{var}`, which this send may not "
                                   f"have: {why}", s.template.span,
                                   f"guard it in {tpl.path}:{line}:{col}: `{{% if {var} %}}...{{% endif %}}` or "
                                   f"`{{{{ {var}.name | default(\"...\") }}}}`; `event` is the event that started "
                                   "the run, in every step of a run an event started")

    def _best_time(self, s: A.Send) -> None:
        window = s.best_time
        if window is None:
            return
        before = len(self.diags)
        self.ex.duration(window)
        if len(self.diags) > before or window.unit not in A.Duration.UNITS:
            return
        low, high = BEST_TIME_WINDOW_SECONDS
        if not low <= window.seconds <= high:
            self.diags.error("J082", f"`at best time within {window}`: the window is 1h to 7d", window.span,
                             "the message waits at most this long for the user's best moment: write `within 24h` "
                             "for the best hour of the next day, up to `within 7d` for the best hour of the week"
                             if window.seconds > high else
                             "the message waits at most this long for the user's best moment: at least `within 1h`; "
                             "to send at once, leave `at best time` out")

    def _template_predictions(self, s: A.Send, tpl) -> None:
        """`predicted.purchase_30d` in a template: a model and a horizon the engine can serve, named
        as `journeys.functions.prediction_key` names it; the pair joins the project's predictions."""
        for key, (line, col) in sorted(tpl.predicted.items()):
            where = f"{tpl.path}:{line}:{col}"
            parsed = parse_prediction_key(key)
            if parsed is None or parsed[0] not in PREDICTION_MODELS:
                hit = closest(parsed[0] if parsed else key, PREDICTION_MODELS)
                self.diags.error("J080", f"template `{s.template.value}` reads `predicted.{key}`, which is no "
                                 "prediction", s.template.span,
                                 (f"did you mean `{hit}`? " if hit else "") + f"in {where}, write MODEL_HORIZON: "
                                 f"`predicted.purchase_30d`, `predicted.churn_60d`; the models are "
                                 + ", ".join(PREDICTION_MODELS))
                continue
            model, seconds = parsed
            low, high = PREDICTION_HORIZON_DAYS
            canonical = prediction_key(model, seconds)
            if not low * 86400 <= seconds <= high * 86400:
                self.diags.error("J081", f"template `{s.template.value}` reads `predicted.{key}`: a horizon is "
                                 f"{low}d to {high}d", s.template.span,
                                 f"in {where}, write e.g. `predicted.{model}_30d`")
            elif canonical != key:
                self.diags.error("J081", f"template `{s.template.value}` reads `predicted.{key}`, which the "
                                 f"engine names `predicted.{canonical}`", s.template.span,
                                 f"in {where}, write `predicted.{canonical}` (whole days are written in days)")
            else:
                self.template_predictions.add(parsed)

    def _pairs(self, pairs) -> None:
        seen: dict[str, A.Pair] = {}
        for p in pairs:
            if p.key.value in seen:
                self.diags.error("J024", f"`{p.key.value}` is given twice in `with {{...}}`", p.key.span,
                                 f"the first one is at {seen[p.key.value].key.span}; keep one")
            seen.setdefault(p.key.value, p)
            self.ex.expr(p.value, Scope(aliases=self.aliases))

    def _connector(self, via: A.Text, channel: str) -> None:
        cfg = self.project.config.connectors.get(via.value)
        declared = self.project.declared.get("connectors", set())
        if cfg is None and via.value not in declared:
            self.diags.error("J014", f"unknown connector `{via.value}`", via.span,
                             did_you_mean(via.value, declared, quote='"',
                                          otherwise=f"declare it in journeys.toml under [connectors.{via.value}]"))
        elif cfg is not None and cfg.channel != channel:
            self.diags.error("J014", f"connector `{via.value}` delivers {cfg.channel}, not {channel}", via.span,
                             "choose a connector of this channel: " + ", ".join(self.project.config.connectors_for(channel)))

    def _declared(self, section: str, name: A.Text, code: str, what: str) -> None:
        declared = self.project.declared.get(section, set())
        if name.value not in declared:
            self.diags.error(code, f"unknown {what} `{name.value}`", name.span,
                             did_you_mean(name.value, declared, quote='"',
                                          otherwise=f"declare it in journeys.toml under [{section}.{name.value}]"))


def _step_word(s) -> str:
    return {A.Wait: "wait", A.WaitUntil: "wait", A.WaitFor: "wait for", A.If: "if", A.Split: "split",
            A.ExitStep: "exit"}.get(type(s), type(s).__name__.lower())
