"""`journeys simulate`: the command line around `engine.dryrun.simulate`.

Everything heavy is imported when the command runs, so that `journeys check` never imports the
engine.

`--workers N` splits the run by connected identity over N processes (engine.dryrun.partitioned),
or over N actors of a Dask cluster with `--executor dask://host:8786`; the output is byte for byte
that of `--workers 1` (one process, this one). Default: one partition per core (per worker thread
of the cluster), except for a log under `SMALL_LOG` messages (the processes would cost more than
they save) and with `--store` (one store, one process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

SMALL_LOG = 20_000  # messages: below this, the default is to run in this process
_SMALL_FILES = SMALL_LOG * 100  # bytes of logs below which no process is started ahead of the count


def simulate_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    events: List[Path] = typer.Option(..., "--events", "-e", help="Event log: JSONL or CSV, gzip too. Repeatable."),
    mapping: Optional[str] = typer.Option(None, "--map", help="CSV columns, e.g. user_id=userId,event=event,timestamp=ts"),
    since: Optional[str] = typer.Option(None, "--from", help="Only events at or after this time (ISO-8601; UTC if no offset)."),
    until: Optional[str] = typer.Option(None, "--until", help="Only events up to this time; timers due by then fire. Default: the last event."),
    journey: List[str] = typer.Option([], "--journey", help="Run only this journey (repeatable)."),
    strict: bool = typer.Option(False, "--strict", help="A bad line is fatal instead of skipped."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole report as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write the report as one self-contained HTML page."),
    sends_out: Optional[Path] = typer.Option(None, "--sends", help="Write every action as JSON lines."),
    trace: Optional[str] = typer.Option(None, "--trace", help="Print this user's timeline."),
    store: Optional[str] = typer.Option(None, "--store", help="Keep the run's state in a store instead of memory: a SQLite file (sqlite:///path.db) or a PostgreSQL schema (postgresql://user@host/db?schema=name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary table."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Partitions to split the run into by connected identity, each in a process of its own; the output is the same. Default: one per core (one in this process for a log under 20,000 events or with --store); 1: in this process."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Run the partitions on a Dask cluster: dask://host:8786 (needs journeys[cluster]; the workers read the logs and the project at the same paths)."),
) -> None:
    """Replay recorded events through the engine on a virtual clock: what would be sent, to whom, when, why."""
    import orjson
    from rich.console import Console
    from rich.text import Text

    from ..dryrun.eventlog import LogError, open_logs, parse_time
    from ..dryrun.partitioned.partition import PartitionFailed
    from ..dryrun.simulate import SendsWriter, StoreInUse, open_dry_run_store, simulate
    from ..dryrun.summary import render_summary
    from ..dryrun.trace import Trace
    from ..store.base import StoreError
    from ._common import checked_inputs, usage_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if workers is not None and workers < 1:
        raise usage_error("--workers: at least 1")
    if store and (executor or (workers or 1) > 1):
        raise usage_error("--store keeps one run's state in one store: it runs in one process "
                          "(leave out --workers and --executor)")
    program, columns = checked_inputs(project, events, mapping, err, "simulating", journey or None)
    total = sum(f.stat().st_size for f in events)
    pool = _partitions(project, journey, workers, executor, store, total, err, program)

    with _progress(err) as progress, pool:
        task = progress.add_task("reading", total=total) if progress else None
        try:
            log = open_logs([str(f) for f in events], columns, strict, since, until,
                            progress=(lambda n: progress.update(task, completed=n)) if progress else None,
                            observe=pool.links.observe if pool.links else None)
        except LogError as e:
            err.print(Text(f"error: {e}", style="bold red"))
            raise typer.Exit(1)
        except ValueError as e:  # --from / --until
            raise usage_error(str(e))
        for s in log.skipped[:10]:
            err.print(Text(f"skipped {s}", style="yellow"))
        if len(log.skipped) > 10:
            err.print(Text(f"... and {len(log.skipped) - 10} more skipped lines (all listed in --json)", style="yellow"))
        try:
            the_store = open_dry_run_store(store) if store else None
        except (StoreInUse, ValueError) as e:
            raise usage_error(f"--store: {e}")
        except StoreError as e:  # unreachable, or a schema from a newer Journeys
            err.print(Text(f"error: --store: {e}", style="bold red"))
            raise typer.Exit(1)
        run_task = progress.add_task("simulating", total=log.count) if progress else None
        advance = (lambda n: progress.update(run_task, completed=n)) if progress else None
        end = parse_time(until, "until") if until else None
        try:  # the messages are read from the files again as the run goes
            with log:
                plan = pool.plan(log)
                if plan is not None:
                    parted = pool.run(program, plan, log, end, sends_out, trace, advance)
                    report, lines = parted.report, parted.trace
                else:
                    tracer = Trace(trace) if trace else None
                    writer = SendsWriter(sends_out) if sends_out else None
                    sinks = [s for s in (tracer, writer) if s is not None]
                    run = simulate(program, log, until=end, store=the_store, sinks=sinks, templates=project,
                                   progress=advance)
                    if writer:
                        writer.close()
                    report, lines = run.report, tracer.lines() if tracer else None
        except (LogError, PartitionFailed) as e:  # a log changed since it was first read; a partition failed
            err.print(Text(f"error: {e}", style="bold red"))
            raise typer.Exit(1)

    parameters = {
        "project": str(project), "events": [str(f) for f in events], "map": mapping, "from": since, "until": until,
        "journeys": list(journey), "messages": log.count, "skipped": len(log.skipped),
        "skipped_lines": [str(s) for s in log.skipped[:1000]],
    }
    report = report.to_json(parameters)
    if json_out:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
    if html_out:
        from ..dryrun.html_report import render_report

        html_out.write_text(render_report(report, program), encoding="utf-8")
    out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    if trace:
        out.print(Text(f"trace of {trace}", style="bold"))
        for line in lines or [f"(no events for {trace})"]:
            out.print(Text(line))
        out.print()
    if not quiet:
        render_summary(report, out)
    if hasattr(the_store, "close"):
        the_store.close()


def _partitions(project: Path, journeys: List[str], workers: Optional[int], executor: Optional[str],
                store: Optional[str], size: int, err: Any, program: Any) -> "_Pool":
    """How many partitions, and where: started now when the run will surely be split, so that they
    load the project while this process indexes the log."""
    from rich.text import Text

    from ._common import usage_error

    if store or workers == 1:
        return _Pool(None, 1, False)
    pool: Any = None  # the executor
    if executor:
        from ..dryrun.partitioned.cluster import DaskExecutor, ExecutorError

        try:
            pool = DaskExecutor(executor)
        except ExecutorError as e:
            err.print(Text(f"error: --executor: {e}", style="bold red"))
            raise typer.Exit(1)
        wanted = workers or pool.slots()
    else:
        from ..dryrun.partitioned.local import LocalExecutor

        cores = getattr(os, "process_cpu_count", os.cpu_count)() or 1
        wanted = workers or cores
        if wanted > 1:
            pool = LocalExecutor(program=program)
    if wanted <= 1:
        if pool is not None:
            pool.close()
        if executor:
            raise usage_error("--executor: the cluster has one worker thread; give --workers N")
        return _Pool(None, 1, False)
    split = _Pool(pool, wanted, workers is not None or bool(executor), project, journeys)
    if split.explicit or size >= _SMALL_FILES:
        from ..dryrun.partitioned.cluster import ExecutorError
        from ..dryrun.partitioned.partition import PartitionFailed

        try:
            split.start()
        except (ExecutorError, PartitionFailed) as e:  # a cluster without workers, or one that failed them
            pool.close()
            err.print(Text(f"error: {'--executor: ' if executor else ''}{e}", style="bold red"))
            raise typer.Exit(1)
    return split


class _Pool:
    """The partitions of one run, if it is split: a context that stops them whatever happens."""

    def __init__(self, executor: Any, wanted: int, explicit: bool, project: Path | None = None,
                 journeys: List[str] = ()):
        from ..dryrun.partitioned.identity import Links

        self.executor, self.wanted, self.explicit = executor, wanted, explicit
        self.links = Links() if executor is not None else None
        self.project, self.journeys = project, journeys
        self.started = False

    def start(self) -> None:
        from ..dryrun.partitioned.partition import PartitionSpec

        if not self.started:
            self.executor.start(PartitionSpec(str(self.project), tuple(self.journeys)), self.wanted)
            self.started = True

    def plan(self, log: Any) -> Any:
        """The partitions of `log`, or None to run it in this process."""
        if self.links is None or (not self.explicit and log.count < SMALL_LOG):
            return None
        plan = self.links.plan(log, self.wanted)
        return plan if len(plan.logs) > 1 else None

    def run(self, program: Any, plan: Any, log: Any, end: Any, sends: Optional[Path], trace: Optional[str],
            progress: Any) -> Any:
        from ..dryrun.partitioned.coordinator import run_partitioned

        self.start()
        self.executor.progress = progress
        return run_partitioned(program, plan.logs, self.executor, start=log.first, end=end or log.last, sends=sends,
                               trace=(trace, plan.partition_of(trace)) if trace else None)

    def __enter__(self) -> "_Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.close()


class _progress:
    """A rich progress bar on stderr when it is a terminal; nothing in pipes and CI logs."""

    def __init__(self, console):
        self.console = console
        self.bar = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                            console=self.console, transient=True)
        self.bar.__enter__()
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
