"""`journeys test`: the command line around `engine.dryrun.scenarios` (output like pytest, JUnit XML)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer


def test_command(
    path: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write the results as JUnit XML, for CI."),
    match: Optional[str] = typer.Option(None, "-k", help="Run only scenarios whose name contains this text."),
) -> None:
    """Run the scenarios of tests/*.test through the engine; exit 1 if any fails."""
    from rich.console import Console
    from rich.text import Text

    from journeys.checker import ProjectError, load_checked

    from ..core.program import Program
    from ..dryrun.scenarios import run_scenario
    from ._common import existing, project_errors

    existing(path)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        project, compiled = load_checked(path)
    except ProjectError as e:
        raise project_errors(e, err, f"{path}: the project has errors; fix them before testing")
    program = Program.build(compiled)
    began = time.perf_counter()
    outcomes = []
    for f in project.test_files:
        for scenario in f.items:
            if match and match.lower() not in scenario.name.value.lower():
                continue
            started = time.perf_counter()
            outcome = run_scenario(program, scenario, f.path)
            outcomes.append((outcome, time.perf_counter() - started))
            status = Text(" PASSED", style="green") if outcome.passed else Text(" FAILED", style="bold red")
            out.print(Text(f"{outcome.file}:{outcome.line} {outcome.name}") + status)
    failed = [o for o, _ in outcomes if not o.passed]
    for o in failed:
        out.print()
        out.print(Text(f"____ {o.name} ____", style="bold red"))
        out.print(Text(f"{o.file}:{o.line}"))
        for failure in o.failures:
            out.print(Text(f"  {failure}", style="red"))
        for user, lines in o.traces.items():
            out.print(Text(f"  trace of {user}:", style="bold"))
            for line in lines or ["(nothing happened)"]:
                out.print(Text(f"    {line}"))
    seconds = time.perf_counter() - began
    passed = len(outcomes) - len(failed)
    summary = f"{passed} passed, {len(failed)} failed in {seconds:.2f}s" if outcomes else "no scenarios found"
    out.print(Text(summary, style="bold red" if failed else "bold green"))
    if junit:
        _write_junit(junit, outcomes, seconds)
    raise typer.Exit(1 if failed else 0)


def _write_junit(path: Path, outcomes, seconds: float) -> None:
    import xml.etree.ElementTree as ET

    failures = sum(not o.passed for o, _ in outcomes)
    suite = ET.Element("testsuite", name="journeys", tests=str(len(outcomes)), failures=str(failures),
                       errors="0", time=f"{seconds:.3f}")
    for o, took in outcomes:
        case = ET.SubElement(suite, "testcase", classname=o.file, name=o.name, time=f"{took:.3f}",
                             file=o.file, line=str(o.line))
        if not o.passed:
            failure = ET.SubElement(case, "failure", message=o.failures[0])
            body = list(o.failures)
            for user, lines in o.traces.items():
                body += [f"trace of {user}:"] + [f"  {line}" for line in lines]
            failure.text = "\n".join(body)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)
