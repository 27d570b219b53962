""""Did you mean …?" for names a marketer misspelt."""

from __future__ import annotations

import difflib
from typing import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[hit[0]] if hit else None


def did_you_mean(word: str, choices: Iterable[str], quote: str = "`", otherwise: str | None = None) -> str | None:
    hit = closest(word, choices)
    if hit is not None:
        return f"did you mean {quote}{hit}{quote}?"
    return otherwise
