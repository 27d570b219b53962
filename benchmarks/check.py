"""Benchmark: `journeys check` on 200 journey files, about 10,000 lines.

    python benchmarks/check.py [--files 200] [--runs 7]

Builds a project in a temporary directory from the shop example (every journey renamed per file,
so that all files are valid and distinct), then times, over several runs:
- a cold start: a new process running `journeys check` (interpreter start, imports, grammar load);
- a warm check: `load_project` + `check_project` in this process, grammar already loaded.
Prints the medians. Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
sys.path.insert(0, str(ROOT))


def build_project(dest: Path, files: int) -> int:
    """Copy the shop (config, templates, segments, policy) and write `files` journey files."""
    shutil.copy(SHOP / "journeys.toml", dest / "journeys.toml")
    shutil.copytree(SHOP / "templates", dest / "templates")
    (dest / "journeys").mkdir()
    journeys, shared = [], []
    for src in sorted((SHOP / "journeys").glob("*.journey")):
        text = src.read_text()
        (journeys if re.search(r"^journey ", text, re.M) else shared).append(text)
    for i, text in enumerate(shared):
        (dest / "journeys" / f"shared_{i}.journey").write_text(text)
    body = "\n".join(journeys)
    body = re.sub(r"^segment .*?(?=^\S|\Z)", "", body, flags=re.M | re.S)  # segments stay in shared files
    body = _first_lines(body, 10_000 // files if files else 50)
    lines = 0
    for n in range(files):
        text = re.sub(r'^journey "([^"]+)"', lambda m: f'journey "{m.group(1)} {n}"', body, flags=re.M)
        (dest / "journeys" / f"j{n:03d}.journey").write_text(text)
        lines += text.count("\n")
    return lines


def _first_lines(body: str, target: int) -> str:
    """Whole journeys from the top of `body`, as many as fit in about `target` lines."""
    blocks = re.split(r"(?m)^(?=journey )", body)
    out, n = [], 0
    for b in blocks:
        if not b.strip():
            continue
        if n >= target:
            break
        out.append(b)
        n += b.count("\n")
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    from journeys.checker import check_project
    from journeys.parser import parser
    from journeys.project import load_project

    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        lines = build_project(dest, args.files)
        total_lines = sum(p.read_text().count("\n") for p in dest.rglob("*.journey"))

        cold = []
        for _ in range(args.runs):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(dest)], capture_output=True, text=True,
                               cwd=ROOT)
            cold.append(time.perf_counter() - t)
            if r.returncode != 0:
                sys.exit(f"the benchmark project does not check clean:\n{r.stdout[-3000:]}")

        t = time.perf_counter()
        parser()
        grammar_load = time.perf_counter() - t
        warm = []
        for _ in range(args.runs):
            t = time.perf_counter()
            diags = check_project(load_project(dest))
            warm.append(time.perf_counter() - t)
            assert not diags.has_errors

    print(f"project: {args.files} journey files + shared, {total_lines} lines ({lines} in the journey files)")
    print(f"cold `journeys check` (new process), median of {args.runs}: {statistics.median(cold):.3f} s "
          f"(min {min(cold):.3f}, max {max(cold):.3f})")
    print(f"warm load+check (in process), median of {args.runs}: {statistics.median(warm):.3f} s "
          f"(min {min(warm):.3f}, max {max(warm):.3f})")
    print(f"grammar load in this process (cached on disk by Lark): {grammar_load:.3f} s")


if __name__ == "__main__":
    main()
