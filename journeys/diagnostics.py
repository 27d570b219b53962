"""Diagnostics: what the checker tells a marketer, collected rather than raised.

Every problem becomes a `Diagnostic` with a stable code (see `journeys.codes`), a severity and the
exact span it is about. Rendering follows Rust and Elm: the code and message, an arrow to
`file:line:col`, the source line, a caret under the span and a `help:` line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Span:
    """A region of one source file. Lines and columns are 1-based; end_col is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def point(cls, file: str, line: int, col: int, width: int = 1) -> "Span":
        return cls(file, line, col, line, col + max(width, 1))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span | None
    help: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def as_json(self) -> dict:
        s = self.span
        return {
            "path": s.file if s else None,
            "line": s.line if s else None,
            "column": s.col if s else None,
            "end_line": s.end_line if s else None,
            "end_column": s.end_col if s else None,
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "help": self.help,
        }

    def sort_key(self) -> tuple:
        s = self.span
        return (s.file, s.line, s.col, self.code) if s else ("", 0, 0, self.code)


@dataclass
class Diagnostics:
    """An append-only collection; checks add to it and never stop at the first problem."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None, help: str | None = None) -> None:
        self.items.append(Diagnostic(code, Severity.ERROR, message, span, help))

    def warning(self, code: str, message: str, span: Span | None, help: str | None = None) -> None:
        self.items.append(Diagnostic(code, Severity.WARNING, message, span, help))

    def extend(self, other: Iterable[Diagnostic]) -> None:
        self.items.extend(other)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def render(diag: Diagnostic, source_line: str | None) -> str:
    """Render one diagnostic as plain text (the terminal adds colour on top of this)."""
    out = [f"{diag.severity.value}[{diag.code}]: {diag.message}"]
    s = diag.span
    if s is not None:
        gutter = " " * len(str(s.line))
        out.append(f"{gutter}--> {s.file}:{s.line}:{s.col}")
        if source_line is not None:
            line = source_line.rstrip("\n").expandtabs(1)
            if len(line) > 200:  # a 10 MB one-liner must not flood the terminal
                start = max(0, s.col - 80)
                line = line[start : start + 160]
                col = s.col - start
            else:
                col = s.col
            width = (s.end_col - s.col) if s.end_line == s.line else len(line) - col + 1
            width = max(1, min(width, max(1, len(line) - col + 1)))
            out.append(f"{gutter} |")
            out.append(f"{s.line} | {line}")
            out.append(f"{gutter} | {' ' * (col - 1)}{'^' * width}")
    for note in diag.notes:
        out.append(f"  = note: {note}")
    if diag.help:  # a help of several lines (a corrected block) keeps them under its first
        out.append("  = help: " + diag.help.replace("\n", "\n" + " " * len("  = help: ")))
    return "\n".join(out)
