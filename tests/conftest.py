from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"

CONFIG = """
[project]
name = "fixture"

[connectors.smtp]
channel = "email"
type = "smtp"
host = "127.0.0.1"
password_env = "SMTP_PASSWORD"

[connectors.fcm]
channel = "push"
type = "fcm"

[connectors.meta]
channel = "ads"
type = "meta_custom_audiences"

[audiences.hot_browsers]
sync = ["meta"]

[audiences.warm_browsers]
sync = ["meta"]

[webhooks.crm_nudge]
url = "https://crm.example.com/hook"
secret_env = "CRM_SECRET"
"""

TEMPLATES = {
    "email/browse_abandon.j2": "---\nsubject: About {{ product }}\nfrom: shop@example.com\n---\n<p>Hi {{ user.first_name | default('there') }}, still thinking about {{ product }}?</p>\n",
    "email/welcome.j2": "---\nsubject: Welcome\nfrom: shop@example.com\n---\n<p>Welcome!</p>\n",
    "push/finish_checkout.j2": "---\ntitle: Your cart is waiting\n---\nFinish your order of {{ total }}.\n",
}


def language_examples() -> str:
    """Every journey-language code block of LANGUAGE.md, as one source text."""
    from .lang_examples import example_blocks

    return "\n".join(example_blocks())


@pytest.fixture
def make_project(tmp_path):
    """A small valid project; pass journey sources (file name → text) to add to it."""

    def make(files: dict[str, str] | None = None, config: str = CONFIG, templates: dict | None = None) -> Path:
        (tmp_path / "journeys").mkdir(exist_ok=True)
        (tmp_path / "journeys.toml").write_text(config)
        for rel, text in (templates if templates is not None else TEMPLATES).items():
            p = tmp_path / "templates" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        for name, text in (files or {}).items():
            p = tmp_path / name if "/" in name else tmp_path / "journeys" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        return tmp_path

    return make


@pytest.fixture
def make(tmp_path):
    """An engine harness from journey source text (`tests/engine_helpers.Harness`): `make(source)`
    gives a fresh project and engine each call."""
    import itertools

    from .engine_helpers import Harness

    counter = itertools.count()

    def make(source: str, start: str = "2026-01-01 00:00", **kw) -> Harness:
        return Harness.from_source(tmp_path / f"p{next(counter)}", source, start, **kw)

    return make


# ---------------------------------------------------------------------------------- PostgreSQL

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server (JOURNEYS_TEST_PG, default a local trust-auth server's `test` database).
    Unreachable: the PostgreSQL tests are skipped on a laptop, but fail in CI (CI=true), where a
    server is part of the job and a skip would hide that nothing ran."""
    import os

    import psycopg

    url = os.environ.get("JOURNEYS_TEST_PG", PG_DEFAULT)
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as e:
        message = f"PostgreSQL is not reachable at {url} (JOURNEYS_TEST_PG): {e}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def pg_url(postgres_url) -> str:
    """A store URL with a schema of its own (a uuid: test runs in parallel never meet), dropped after."""
    import uuid

    import psycopg
    from psycopg import sql

    from engine.store.urls import with_schema

    schema = f"test_{uuid.uuid4().hex}"
    yield with_schema(postgres_url, schema)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
