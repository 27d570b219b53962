"""Connections for the daemon's HTTP threads to read a PostgreSQL store (/metrics).

The store's own connection belongs to the worker thread (engine.store.pg_store), and a scrape must not
wait for a batch of the worker; SQLite readers open a read-only connection per request, which
costs microseconds, but a PostgreSQL connection costs a round trip, authentication and a backend
process. So each store URL gets one small `psycopg_pool.ConnectionPool` (1 to 2 connections,
opened on first use, kept for the life of the process), configured as the store's connection is
(`pg_store.connect`: time zone UTC, search_path the store's schema), in autocommit: every read is
its own statement. `close_all()` closes them (the Worker's stop, or a test).
"""

from __future__ import annotations

import threading
from typing import Any

_pools: dict[str, Any] = {}
_lock = threading.Lock()
TIMEOUT = 2.0  # seconds a reader waits for a connection (the worker's is not shared)


def pool(url: str) -> Any:
    """The pool of the store at `url` (a PostgreSQL store URL, with its `schema` parameter)."""
    with _lock:
        found = _pools.get(url)
        if found is not None:
            return found
        from psycopg import sql
        from psycopg_pool import ConnectionPool

        from ..store.urls import parse_url

        conninfo, schema = parse_url(url)

        def configure(conn: Any) -> None:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))

        extra = {} if "connect_timeout" in conninfo else {"connect_timeout": 5}
        created = ConnectionPool(conninfo, min_size=1, max_size=2, kwargs={"autocommit": True, **extra},
                                 configure=configure, timeout=TIMEOUT, name="journeys-readers", open=False)
        created.open(wait=False)
        _pools[url] = created
        return created


def close_all() -> None:
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for p in pools:
        p.close()
