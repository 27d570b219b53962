"""The daemon's answers as tables, for people (`journeys admin ... --json` prints them as they came).

Each function takes the admin API's JSON as it is and prints it on `out` (a rich Console); a
field an older or newer daemon leaves out shows as empty, never as an error.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_text, value))
    return str(value)


def _table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=escape(title) if title else None, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*(Text(_text(v)) for v in row))  # Text: a value's [brackets] are no markup
    return table


def pairs(out: Console, title: str, values: Mapping[str, Any]) -> None:
    out.print(_table(title, ("field", "value"), values.items()))


def readiness(out: Console, body: Mapping[str, Any]) -> None:
    verdict = "ready" if body.get("ready") else "NOT READY"
    pairs(out, f"Daemon: {verdict}", {k: v for k, v in body.items() if k != "ready"})


def pauses(out: Console, items: list[Mapping[str, Any]]) -> None:
    if not items:
        out.print("No journey is paused.")
        return
    out.print(_table("Paused", ("journey", "since", "by", "reason", "held sends"),
                     ([p.get("journey"), p.get("since"), p.get("by"), p.get("reason"), p.get("held")] for p in items)))


def pause_log(out: Console, items: list[Mapping[str, Any]]) -> None:
    if not items:
        out.print("No pause or resume yet.")
        return
    out.print(_table("Pause log (newest first)", ("at", "journey", "event", "by", "reason", "held", "released",
                                                  "dropped"),
                     ([e.get("at"), e.get("journey"), e.get("event"), e.get("by"), e.get("reason"), e.get("held"),
                       e.get("released"), e.get("dropped")] for e in items)))


def journeys(out: Console, body: Mapping[str, Any], paused: Iterable[str]) -> None:
    paused = set(paused)
    found = list(body.get("journeys", []))
    names = {j.get("journey") for j in found}
    found += [{"journey": name, "in_flight": 0, "steps": []} for name in sorted(paused - names - {"*"})]
    if not found:
        out.print("No user is in a journey.")
    else:
        rows = []
        for j in found:
            steps = ", ".join(f"{s.get('path') or '(entry)'}{' ' + s['wait'] if s.get('wait') else ''}: "
                              f"{s.get('users')}" for s in j.get("steps", []))
            rows.append([j.get("journey"), j.get("in_flight"),
                         "yes" if j.get("journey") in paused or "*" in paused else "", steps])
        out.print(_table("Journeys", ("journey", "users in flight", "paused", "where they are"), rows))
    if "*" in paused:
        out.print("Every send is paused (*).")


def user(out: Console, body: Mapping[str, Any]) -> None:
    pairs(out, f"User {body.get('userId')}", {
        "aliases": body.get("aliases"), "audiences": body.get("audiences"), "segments": body.get("segments"),
        "next wake": body.get("next_wake")})
    out.print(_table("Traits", ("trait", "value"), sorted((body.get("traits") or {}).items())))
    out.print(_table("Journeys", ("journey", "version", "step", "wait", "since", "wake"),
                     ([i.get("journey"), i.get("version"), i.get("path"), i.get("wait"), i.get("since"),
                       i.get("wake")] for i in body.get("journeys", []))))
    out.print(_table("Recent actions", ("time", "journey", "kind", "target", "outcome", "status", "error"),
                     ([a.get("time"), a.get("journey"), a.get("kind"), a.get("target"), a.get("outcome"),
                       a.get("status"), a.get("error")] for a in body.get("recent_actions", []))))


def trace(out: Console, body: Mapping[str, Any]) -> None:
    lines = body.get("trail", [])
    out.print(f"Trace of {body.get('userId')} ({', '.join(body.get('ids', []))}): {len(lines)} lines", markup=False)
    for line in lines:
        out.print(line.get("line", ""), markup=False, highlight=False)


def dead_letters(out: Console, body: Mapping[str, Any]) -> None:
    entries = body.get("entries", [])
    if not entries:
        out.print("No dead letters.")
        return
    out.print(_table("Dead letters", ("id", "state", "connector", "user", "kind", "target", "attempts", "error"),
                     ([e.get("id"), e.get("state"), e.get("connector"), e.get("user_id"), e.get("kind"),
                       e.get("target"), e.get("attempts"), e.get("last_error")] for e in entries)))
