"""Benchmark and convenience entry: write a synthetic Segment event log.

    python benchmarks/generate.py --events 1000000 --users 100000 --seed 1 --out /tmp/events.jsonl

The same options as `journeys generate` (see engine/dryrun/generate.py); the time taken is printed to
stderr with the summary. Figures go to docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.dryrun.generate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
