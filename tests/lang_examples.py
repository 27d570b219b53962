"""The examples of ../shared/LANGUAGE.md (the language's contract), parsed and compiled once.

The page lives in shared/ beside the repository (as for tests/conftest.py).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from journeys.compiler import compile_project
from journeys.parser import parse_text

SHARED_LANGUAGE_MD = Path(__file__).resolve().parents[2] / "shared" / "LANGUAGE.md"
# A copy travels with the repository so the tests run on any clone; test_language_copy keeps it true.
COPY_LANGUAGE_MD = Path(__file__).resolve().parent / "data" / "LANGUAGE.md"
LANGUAGE_MD = SHARED_LANGUAGE_MD if SHARED_LANGUAGE_MD.is_file() else COPY_LANGUAGE_MD


def language_page() -> str:
    return LANGUAGE_MD.read_text(encoding="utf-8")


def example_blocks() -> list[str]:
    """Every fenced block of the page except the `shop/` directory tree."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", language_page(), re.S | re.M)
    return [b for b in blocks if not b.lstrip().startswith("shop/")]


@lru_cache(maxsize=1)
def parsed_files():
    files = []
    for i, block in enumerate(example_blocks()):
        result = parse_text(block, f"example{i}.journey")
        assert not result.diagnostics, result.diagnostics
        files.append(result.file)
    return tuple(files)


@lru_cache(maxsize=1)
def project():
    return compile_project(list(parsed_files()))
