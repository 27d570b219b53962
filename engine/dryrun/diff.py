"""`journeys diff`: what a change to the journeys does, statically and on real events.

The base revision is read with git (`git archive`, into a temporary directory) and never touches
the working tree. Both sides are checked and compiled by the same code as `journeys check`; with
events, both run through the same dry-run as `journeys simulate`. Nothing here decides anything
about journeys: it compares what the compiler and the engine produced.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from journeys.checker import load_checked
from journeys.graph import CompiledJourney

from ..core.effects import SENT, Action, Effect
from ..core.program import Program
from .simulate import simulate


class DiffError(Exception):
    """A revision that cannot be read (not a git repository, an unknown revision, no project)."""


def checkout(project: Path, rev: str, into: Path) -> Path:
    """Write the project directory as it is at `rev` under `into`; returns the project's copy."""
    project = project.resolve()
    try:
        top = subprocess.run(["git", "-C", str(project), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise DiffError(f"{project} is not in a git repository") from e
    rel = project.relative_to(Path(top).resolve()).as_posix() if project != Path(top).resolve() else "."
    r = subprocess.run(["git", "-C", top, "archive", "--format=tar", rev, "--", rel], capture_output=True)
    if r.returncode != 0:
        raise DiffError(f"cannot read {rel} at {rev}: {r.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        tar.extractall(into, filter="data")
    copy = into / rel
    if not copy.exists():
        raise DiffError(f"{rel} does not exist at {rev}")
    return copy


# ---------------------------------------------------------------------------------- static


@dataclass
class JourneyChange:
    name: str
    status: str  # added | removed | changed | unchanged
    old_version: str | None = None
    new_version: str | None = None
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: list[tuple[str, str, str]] = field(default_factory=list)  # path, before, after
    declarations: list[tuple[str, str, str]] = field(default_factory=list)  # what, before, after

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "old_version": self.old_version,
                "new_version": self.new_version, "steps_added": self.steps_added,
                "steps_removed": self.steps_removed,
                "steps_changed": [{"path": p, "before": b, "after": a} for p, b, a in self.steps_changed],
                "declarations": [{"what": w, "before": b, "after": a} for w, b, a in self.declarations]}


def _step_text(j: CompiledJourney, path: str) -> str:
    node = j.nodes[path]
    edges = ", ".join(f"{label or 'next'} → {target or 'end'}" for label, target in node.targets())
    return f"{node.describe()} ({edges})"


def _declarations(j: CompiledJourney) -> dict[str, str]:
    out = {"entry": j.entry.describe(), "reenter": j.reenter.mode + (f" {j.reenter.seconds}s" if j.reenter.seconds
                                                                      else "")}
    out.update({f"exit when {m}": "" for m in j.exits.events})
    out.update({f'exit when user leaves segment "{s}"': "" for s in j.exits.segments})
    out.update({f"exit when {c.source}": "" for c in j.exits.conditions})
    out.update({f'goal "{g.name}"': f"{g.match} within {g.seconds}s" for g in j.goals})
    for n, cap in enumerate(j.caps, 1):
        out[f"cap {n}"] = ", ".join(r.describe() if r.auto else f"{r.channel} {r.count} per {r.seconds}s"
                                         for r in cap.rules) + (
            f" when {cap.when.source}" if cap.when else "")
    if j.quiet_hours is not None:
        q = j.quiet_hours
        out["quiet hours"] = f"{q.start}-{q.end} {q.tz or 'user time'}"
    if j.segments:
        out["segments"] = ", ".join(j.segments)
    return out


def compare_journeys(old: dict[str, CompiledJourney], new: dict[str, CompiledJourney]) -> list[JourneyChange]:
    """Each journey's change, in the new order. A journey whose place among the journeys of both
    sides moved (`[journeys] order`, or a renamed file) shows an `order` change: the order decides
    which of two same-moment sends a shared cap lets through, although no version changes."""
    names = list(new) + [n for n in old if n not in new]
    both_old = [n for n in old if n in new]
    both_new = [n for n in new if n in old]
    out = []
    for name in names:
        a, b = old.get(name), new.get(name)
        if a is None:
            out.append(JourneyChange(name, "added", None, b.version, steps_added=list(b.nodes)))  # type: ignore[union-attr]
            continue
        if b is None:
            out.append(JourneyChange(name, "removed", a.version, None, steps_removed=list(a.nodes)))
            continue
        change = JourneyChange(name, "unchanged" if a.version == b.version else "changed", a.version, b.version)
        change.steps_added = [p for p in b.nodes if p not in a.nodes]
        change.steps_removed = [p for p in a.nodes if p not in b.nodes]
        for p in b.nodes:
            if p in a.nodes:
                before, after = _step_text(a, p), _step_text(b, p)
                if before != after:
                    change.steps_changed.append((p, before, after))
        da, db = _declarations(a), _declarations(b)
        for key in list(db) + [k for k in da if k not in db]:
            if da.get(key) != db.get(key):
                change.declarations.append((key, da.get(key, "(none)") or key, db.get(key, "(none)") or key))
        before, after = both_old.index(name), both_new.index(name)
        if before != after:
            change.declarations.append(("order", f"{before + 1} of {len(both_old)}", f"{after + 1} of {len(both_new)}"))
        out.append(change)
    return out


# ---------------------------------------------------------------------------------- outcomes


class _PerUser:
    """A sink keeping, per user, the actions that went out: to show whose messages change."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = defaultdict(list)

    def emit(self, effects: Sequence[Effect]) -> None:
        for e in effects:
            if isinstance(e, Action) and e.outcome == SENT:
                self.sent[e.user].append(f"{e.time.strftime('%Y-%m-%d %H:%M')} {e.kind} {e.target} ({e.journey})")


@dataclass
class Outcomes:
    before: dict[str, Any]
    after: dict[str, Any]
    users_changed: int
    sample: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "users_changed": self.users_changed,
                "sample": self.sample}


def compare_outcomes(old: Program, new: Program, messages: Sequence[Any], sample: int = 10) -> Outcomes:
    runs = []
    for program in (old, new):
        per_user = _PerUser()
        run = simulate(program, messages, sinks=[per_user])
        runs.append((run.report.to_json(), per_user.sent))
    (before, sent_a), (after, sent_b) = runs
    users = sorted(set(sent_a) | set(sent_b))
    changed = [u for u in users if sent_a.get(u, []) != sent_b.get(u, [])]
    return Outcomes(before["journeys"], after["journeys"], len(changed),
                    [_difference(u, sent_a.get(u, []), sent_b.get(u, [])) for u in changed[:sample]])


def _difference(user: str, before: list[str], after: list[str]) -> dict[str, Any]:
    """Only what changes for the user: the messages they lose and the ones they gain."""
    common = Counter(before) & Counter(after)
    return {"user": user, "before": _only(before, Counter(before) - common),
            "after": _only(after, Counter(after) - common)}


def _only(items: list[str], extra: Counter) -> list[str]:
    """The items counted in `extra`, in their order (a repeated message is taken as often as counted)."""
    out = []
    for m in items:
        if extra[m] > 0:
            extra[m] -= 1
            out.append(m)
    return out


def metric_rows(before: dict[str, Any], after: dict[str, Any]) -> Iterable[tuple[str, str, Any, Any]]:
    """(journey, measure, before, after) for every measure that differs, in a stable order."""
    for name in list(after) + [n for n in before if n not in after]:
        a, b = before.get(name, {}), after.get(name, {})
        for key in ("entered", "completed", "still_in"):
            if a.get(key, 0) != b.get(key, 0):
                yield name, key, a.get(key, 0), b.get(key, 0)
        for group in ("reached", "templates", "suppressed", "capped_by_rule", "exited", "conversions"):
            ga, gb = a.get(group, {}), b.get(group, {})
            for k in sorted(set(ga) | set(gb)):
                if ga.get(k, 0) != gb.get(k, 0):
                    yield name, f"{group}: {k}", ga.get(k, 0), gb.get(k, 0)
        for split in sorted(set(a.get("splits", {})) | set(b.get("splits", {}))):
            sa, sb = a.get("splits", {}).get(split, {}), b.get("splits", {}).get(split, {})
            for arm in sorted(set(sa) | set(sb)):
                for goal, rate in sorted((sb.get(arm) or sa.get(arm) or {}).get("rate", {}).items()):
                    ra = (sa.get(arm) or {}).get("rate", {}).get(goal)
                    rb = (sb.get(arm) or {}).get("rate", {}).get(goal)
                    if ra != rb:
                        yield name, f"{split} {arm}: {goal} rate", ra, rb
                    ua = (sa.get(arm) or {}).get("uplift", {}).get(goal)
                    ub = (sb.get(arm) or {}).get("uplift", {}).get(goal)
                    if ua != ub:
                        yield name, f"{split} {arm}: {goal} uplift", ua, ub


def load_both(project: Path, rev: str, workdir: Path) -> tuple[Any, Any]:
    """(base compiled project, working-tree compiled project); ProjectError from either side."""
    base = checkout(project, rev, workdir)
    return load_checked(base)[1], load_checked(project)[1]


__all__ = ["DiffError", "JourneyChange", "Outcomes", "checkout", "compare_journeys", "compare_outcomes",
           "load_both", "metric_rows"]
