"""Benchmark: where the dry-run's CPU goes, by part, on a project with models (the shop).

    python benchmarks/dryrun_parts.py --log /tmp/log100k.jsonl [--project examples/shop]

One `simulate` over the log (in-memory store, the report only), with the process CPU time of
three parts measured by wrapping them, and the rest:
- training: `Engine.train_models` (every family fitted at each `retrain` moment, over all users);
- predictions: `_Run.predictions` (each message's `recommended` and `predicted`, scored when the
  step decides it);
- parsing: the run's second parse of each line (`engine.dryrun.eventlog._jsonl_message`);
- the engine core: everything else (steps, timers, the store, the report).
Per part: seconds, share and µs per event; and the engine core's rate alone. The libraries the
models import (scikit-learn, SciPy) are imported before the clock starts: a one-off cost.
What the remaining gap to the issue's targets is made of: docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core import step as step_module  # noqa: E402
from engine.dryrun import eventlog  # noqa: E402
from engine.dryrun.simulate import load_program, simulate  # noqa: E402
from engine.runtime import loop  # noqa: E402

spent: dict[str, float] = {"training": 0.0, "predictions": 0.0, "parsing": 0.0}


def charged(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[part] += time.process_time() - began
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, required=True, help="a JSONL log (journeys generate)")
    ap.add_argument("--project", type=Path, default=ROOT / "examples" / "shop")
    args = ap.parse_args()

    loop.Engine.train_models = charged("training", loop.Engine.train_models)  # type: ignore[method-assign]
    step_module._Run.predictions = charged("predictions", step_module._Run.predictions)  # type: ignore[method-assign]
    eventlog._jsonl_message = charged("parsing", eventlog._jsonl_message)  # type: ignore[assignment]
    importlib.import_module("scipy.optimize")  # what training imports, before the clock
    importlib.import_module("sklearn.ensemble")

    program = load_program(args.project)
    log = eventlog.open_logs([str(args.log)])
    for part in spent:
        spent[part] = 0.0  # the index pass parsed every line once: not the run's
    began = time.process_time()
    with log:
        simulate(program, log)
    total = time.process_time() - began
    n = log.count
    core = total - sum(spent.values())
    print(f"{n:,} events, {total:.1f} s CPU: {n / total:,.0f} events per CPU second")
    for part, seconds in [*spent.items(), ("engine core (the rest)", core)]:
        print(f"  {part:24s} {seconds:6.1f} s  {100 * seconds / total:5.1f} %  {1e6 * seconds / n:7.1f} µs/event")
    print(f"the engine core alone: {n / core:,.0f} events per CPU second")


if __name__ == "__main__":
    main()
