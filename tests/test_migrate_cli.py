"""`journeys migrate`, and `journeys simulate --store` on PostgreSQL, as a user runs them: a real
process, its output and exit code (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
SAMPLE = SHOP / "events" / "sample.jsonl"


def journeys(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, at, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}" if at else url  # trust auth ignores the password


def test_migrate_a_postgres_schema_then_nothing_left_to_do(pg_url):
    url = with_password(pg_url, "s3cret")
    first = journeys("migrate", "--store", url)
    assert first.returncode == 0, first.stderr
    from engine.store.migrations import latest

    n = latest()
    assert f"schema version 0 -> {n} (migrated {n} steps)" in first.stdout, first.stdout
    assert "s3cret" not in first.stdout and ":***@" in first.stdout
    again = journeys("migrate", "--store", url)
    assert again.returncode == 0 and f"schema version {n} -> {n} (up to date)" in again.stdout


def test_migrate_refuses_a_schema_from_a_newer_journeys(pg_url):
    from engine.store.migrations import latest
    from engine.store.pg_store import PostgresStore

    newer = latest() + 1
    with PostgresStore(pg_url) as s:
        s.conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (newer,))
    r = journeys("migrate", "--store", pg_url)
    assert r.returncode == 1 and f"version {newer}" in r.stderr and "upgrade Journeys" in r.stderr
    assert "Traceback" not in r.stderr


def test_migrate_errors_name_the_store_without_its_password(tmp_path):
    down = journeys("migrate", "--store", "postgresql://me:s3cret@127.0.0.1:1/db?schema=x")
    assert down.returncode == 1 and "cannot connect" in down.stderr and "me:***@127.0.0.1:1" in down.stderr
    bad = journeys("migrate", "--store", "postgresql://me:s3cret@127.0.0.1/db?schema=No-Such")
    assert bad.returncode == 2 and "not a plain lower-case name" in bad.stderr
    for r in (down, bad):
        assert "s3cret" not in r.stderr and "Traceback" not in r.stderr


def test_migrate_takes_the_store_from_journeys_toml_relative_to_the_project(tmp_path):
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys.toml").write_text('[project]\nname = "p"\n\n[store]\nurl = "sqlite:///data/j.db"\n')
    r = journeys("migrate", str(tmp_path), cwd=tmp_path.parent)
    assert r.returncode == 0, r.stderr
    assert "schema version 0 -> 1" in r.stdout and (tmp_path / "data" / "j.db").is_file()
    r = journeys("migrate", str(tmp_path), cwd=tmp_path.parent)
    assert r.returncode == 0 and "schema version 1 -> 1 (up to date)" in r.stdout


@pytest.fixture(scope="module")
def short_log(tmp_path_factory) -> Path:
    log = tmp_path_factory.mktemp("log") / "events.jsonl"
    log.write_bytes(b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:3000]))
    return log


def test_simulate_on_postgres_matches_memory_and_can_run_again(pg_url, short_log, tmp_path):
    r = journeys("simulate", str(SHOP), "--events", str(short_log), "--json", str(tmp_path / "memory.json"), "--quiet")
    assert r.returncode == 0, r.stderr
    in_memory = json.loads((tmp_path / "memory.json").read_text())
    for _ in range(2):  # a second run replaces the first run's state instead of deduplicating everything
        r = journeys("simulate", str(SHOP), "--events", str(short_log), "--store", pg_url,
                     "--json", str(tmp_path / "pg.json"), "--quiet")
        assert r.returncode == 0, r.stderr
        on_postgres = json.loads((tmp_path / "pg.json").read_text())
        assert on_postgres["journeys"] == in_memory["journeys"]
    from engine.store.pg_store import PostgresStore

    with PostgresStore(pg_url) as s:
        assert s.conn.execute("SELECT count(*) FROM instances").fetchone()[0] == sum(
            j["still_in"] for j in on_postgres["journeys"].values())


def test_simulate_never_writes_over_a_postgres_store_that_is_not_its_own(pg_url, short_log):
    from engine.core.state import new_user
    from engine.store.pg_store import PostgresStore

    with PostgresStore(pg_url) as s:  # a daemon's store
        s.save(new_user("u1"), "UTC")
    r = journeys("simulate", str(SHOP), "--events", str(short_log), "--store", pg_url, "--quiet")
    assert r.returncode == 2 and "not a dry-run's" in r.stderr and "Traceback" not in r.stderr
    with PostgresStore(pg_url) as s:
        assert s.users() == ["u1"]
