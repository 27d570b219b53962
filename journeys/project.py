"""A marketers' project on disk: journeys.toml, journeys/*.journey, templates/, tests/*.test.

Loading never raises for the user's mistakes: unreadable files, bad TOML and syntax errors all
become diagnostics, and everything that did parse is kept for the checks that follow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import ast as A
from .config import ProjectConfig, declared_names, load_config
from .diagnostics import Diagnostics
from .parser import parse_file
from .templates import Template, discover

CONFIG_FILE = "journeys.toml"
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache"}


@dataclass
class Project:
    root: Path
    config: ProjectConfig
    journey_files: list[A.SourceFile] = field(default_factory=list)
    test_files: list[A.SourceFile] = field(default_factory=list)
    templates: dict[tuple[str, str], Template] = field(default_factory=dict)
    declared: dict[str, set[str]] = field(default_factory=dict)  # journeys.toml names, valid or not
    has_config: bool = False
    lines: dict[str, list[str]] = field(default_factory=dict)  # display path → source lines
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    def items(self, kind: type) -> list:
        return [i for f in self.journey_files for i in f.items if isinstance(i, kind)]

    @property
    def journeys(self) -> list[A.Journey]:
        return self.items(A.Journey)

    @property
    def segments(self) -> list[A.Segment]:
        return self.items(A.Segment)

    @property
    def policies(self) -> list[A.Policy]:
        return self.items(A.Policy)

    @property
    def scenarios(self) -> list[A.Scenario]:
        return [i for f in self.test_files for i in f.items if isinstance(i, A.Scenario)]


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def find_root(path: Path) -> Path:
    """The nearest directory at or above `path` that holds journeys.toml (else `path`'s directory)."""
    start = path if path.is_dir() else path.parent
    for d in (start, *start.parents):
        if (d / CONFIG_FILE).is_file():
            return d
    return start


def _walk(base: Path, suffix: str) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(suffix))
    return out


def load_project(path: str | Path) -> Project:
    path = Path(path)
    root = find_root(path.resolve())
    diags = Diagnostics()
    cfg_path = root / CONFIG_FILE
    config = load_config(cfg_path, display_path(cfg_path), diags)
    project = Project(root=root, config=config, diagnostics=diags, has_config=cfg_path.is_file(),
                      declared=declared_names(cfg_path))
    if path.is_file():
        sources = [path.resolve()]
    else:
        base = path.resolve()
        sources = _walk(base / "journeys" if (base / "journeys").is_dir() else base, ".journey")
        sources += _walk(base / "tests", ".test") if (base / "tests").is_dir() else []
    for src in sources:
        display = display_path(src)
        result = parse_file(src, display)
        diags.extend(result.diagnostics)
        project.lines[display] = result.lines
        (project.test_files if src.suffix == ".test" else project.journey_files).append(result.file)
    project.templates = discover(root, diags, display_path)
    for tpl in project.templates.values():
        project.lines[tpl.path] = tpl.lines
    if cfg_path.is_file():
        try:
            project.lines[display_path(cfg_path)] = cfg_path.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            pass
    return project
