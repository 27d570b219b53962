"""The dry-run's summary tables in the terminal, drawn from the report's JSON form (so the table
and `--json` can never disagree)."""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.table import Table


def _sum(d: Mapping[str, int]) -> int:
    return sum(d.values())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def render_summary(report: Mapping[str, Any], console: Console) -> None:
    p = report["parameters"]
    console.print(f"[bold]{p.get('messages', 0)}[/] events from {', '.join(p.get('events', []))}"
                  f" ({p.get('skipped', 0)} lines skipped), {report['users']} users")
    # ten columns in 120 characters: two-word headers on two lines, no padding at the edges, and
    # a journey's name kept whole (the conversions wrap first)
    table = Table(title="Journeys", title_justify="left", pad_edge=False)
    for col in ("journey", "entered", "still\nin", "completed", "exited", "sent", "audience\nupdates", "suppressed",
                "deferred", "conversions"):
        table.add_column(col, justify="left" if col == "journey" else "right", no_wrap=col == "journey")
    for name, j in report["journeys"].items():
        table.add_row(
            name, str(j["entered"]), str(j["still_in"]), str(j["completed"]), str(_sum(j["exited"])),
            str(_sum(j["sent"])), str(_sum(j["audience_updates"])), str(_sum(j["suppressed"])),
            str(_sum(j["deferred_by_quiet_hours"])), ", ".join(f"{g} {n}" for g, n in j["conversions"].items()) or "-")
    console.print(table)
    _models(report.get("models") or [], console)

    steps = Table(title="Steps reached, and why runs ended early", title_justify="left")
    for col in ("journey", "step path or exit reason", "count"):
        steps.add_column(col, justify="right" if col == "count" else "left")
    for name, j in report["journeys"].items():
        for path, n in j["reached"].items():
            steps.add_row(name, path, str(n))
        for reason, n in sorted(j["exited"].items()):
            steps.add_row(name, f"exited: {reason}", str(n))
        for reason, n in sorted(j.get("parked", {}).items()):
            steps.add_row(name, f"parked: {reason}", str(n))
    if steps.row_count:
        console.print(steps)

    sends = Table(title="Sent, and audiences updated", title_justify="left")
    for col in ("journey", "action", "count"):
        sends.add_column(col, justify="right" if col == "count" else "left")
    for name, j in report["journeys"].items():
        for action, n in sorted(j["templates"].items()):
            sends.add_row(name, action, str(n))
    if sends.row_count:
        console.print(sends)

    details = Table(title="Why sends did not go out", title_justify="left")
    for col in ("journey", "reason", "rule", "count"):
        details.add_column(col, justify="right" if col == "count" else "left")
    for name, j in report["journeys"].items():
        for rule, n in sorted(j["capped_by_rule"].items()):
            details.add_row(name, "cap", rule, str(n))
        for reason, n in sorted(j["suppressed"].items()):
            if reason != "cap":
                details.add_row(name, reason, "", str(n))
        for rule, n in sorted(j["deferred_by_quiet_hours"].items()):
            details.add_row(name, "deferred", rule, str(n))
        for error, n in sorted(j.get("failed", {}).items()):
            details.add_row(name, "failed", error, str(n))
    if details.row_count:
        console.print(details)

    splits = Table(title="Splits against control", title_justify="left")
    for col in ("journey", "split", "arm", "users", "goal", "conversions", "rate", "uplift"):
        splits.add_column(col, justify="right" if col in ("users", "conversions", "rate", "uplift") else "left")
    for name, j in report["journeys"].items():
        for split, arms in j["splits"].items():
            for arm, row in sorted(arms.items(), key=lambda kv: (kv[0] == "control", kv[0])):
                for goal, n in row["conversions"].items():
                    uplift = row.get("uplift", {}).get(goal)
                    splits.add_row(name, split, arm, str(row["users"]), goal, str(n), _pct(row["rate"][goal]),
                                   "-" if arm == "control" else (_pct(uplift) if uplift is not None else "n/a"))
    if splits.row_count:
        console.print(splits)


def _models(trainings: list[Mapping[str, Any]], console: Console) -> None:
    """One table of the models' trainings: when, on how many users, each family's status (why the
    latest fell back, or left a channel unlearned, under the table)."""
    if not trainings:
        return
    families = sorted({n for t in trainings for n in t["summary"]["models"]})
    table = Table(title="Models trained (as of each moment, on what came before it)", title_justify="left")
    for col in ("as of", "users", *families):
        table.add_column(col, justify="right" if col == "users" else "left")
    for t in trainings:
        summary = t["summary"]
        cells = []
        for name in families:
            family = summary["models"].get(name)
            status = "-" if family is None else family["status"]
            if name in summary.get("problems", {}):
                status += " (kept the last good version)"
            cells.append(status)
        table.add_row(t["time"], str(summary["users"]), *cells)
    console.print(table)
    for name, family in sorted(trainings[-1]["summary"]["models"].items()):
        if family["reason"]:
            console.print(f"  {name} (latest): {family['reason']}", highlight=False)
