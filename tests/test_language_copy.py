"""The repository's copy of LANGUAGE.md is the shared contract, word for word."""

import pytest

from .lang_examples import COPY_LANGUAGE_MD, SHARED_LANGUAGE_MD


@pytest.mark.skipif(not SHARED_LANGUAGE_MD.is_file(), reason="no shared/ beside this clone")
def test_copy_matches_the_shared_page():
    assert COPY_LANGUAGE_MD.read_text(encoding="utf-8") == SHARED_LANGUAGE_MD.read_text(encoding="utf-8")
