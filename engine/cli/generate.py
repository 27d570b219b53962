"""`journeys generate`: the synthetic event log generator on the command line (see engine.dryrun.generate)."""

from __future__ import annotations

import sys
import time

import typer


def generate_command(
    events: int = typer.Option(100_000, "--events", min=0, help="About this many messages."),
    users: int = typer.Option(10_000, "--users", min=1, help="Distinct people."),
    seed: int = typer.Option(1, "--seed", help="The same seed and options give the same bytes."),
    start: str = typer.Option("2026-03-02T00:00:00Z", "--start", help="First instant of the window, ISO-8601."),
    days: int = typer.Option(28, "--days", min=1, help="Length of the window in days."),
    out: str = typer.Option("-", "--out", "-o", help='Output file ("-": stdout); gzip when it ends in .gz.'),
    plant: bool = typer.Option(False, "--plant", help="Identified customers with planted purchase cycles, preferred "
                               "hours, tastes and fatigue curves (what the models should find)."),
    truth: str = typer.Option(None, "--truth", help="With the planted population (implies --plant): write its "
                              "parameters, one JSON object per user, to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
) -> None:
    """Write a synthetic e-commerce event log (Segment-spec JSON lines) for dry-runs and benchmarks."""
    from ..dryrun.generate import generate, parse_start
    from ._common import usage_error

    try:
        parse_start(start)
    except ValueError:
        raise usage_error(f"--start: not an ISO-8601 instant: {start!r}")
    began = time.perf_counter()
    summary = generate(out, events=events, users=users, seed=seed, start=start, days=days, plant=plant, truth=truth)
    if not quiet:
        where = "stdout" if out == "-" else out
        print(f"wrote {summary.events} messages for {summary.users} users ({summary.identified_users} identified) "
              f"to {where} in {time.perf_counter() - began:.2f}s", file=sys.stderr)
