"""Store URLs, read and checked without opening anything: which kind of store a URL names, its file
or its schema, and its text with the password hidden.

    sqlite:///relative.db, sqlite:////abs.db, a plain path, :memory:   → SQLite (`sqlite_path`)
    postgresql://user@host:5432/dbname?schema=name (or postgres://)     → PostgreSQL (`parse_url`)

Every module that takes a store URL reads it here (the stores, `engine.store.open`, the daemon, the
dry-run), so that one URL means one thing everywhere; nothing here imports a driver.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def is_postgres(url: str) -> bool:
    """A PostgreSQL URL (postgresql:// or postgres://), not a SQLite path."""
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(path_or_url: str) -> str:
    """The file name (or ":memory:") of a store URL or path."""
    if path_or_url.startswith("sqlite://"):
        rest = path_or_url[len("sqlite://"):]
        if rest in ("", "/", "/:memory:"):
            return ":memory:"
        if not rest.startswith("/"):
            raise ValueError(f"not a SQLite URL: {path_or_url!r} (sqlite:///relative.db or sqlite:////abs.db)")
        return rest[1:]  # sqlite:///rel -> rel, sqlite:////abs -> /abs
    if not path_or_url:
        raise ValueError("an empty SQLite path")
    return path_or_url


def resolve(url: str, base: Path | None) -> str:
    """A store URL from journeys.toml: a relative SQLite path is relative to the project (`base`)."""
    if is_postgres(url) or base is None:
        return url
    path = sqlite_path(url)
    if path == ":memory:" or Path(path).is_absolute():
        return url
    return str((base / path).resolve())


DEFAULT_SCHEMA = "journeys"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def redact(url: str) -> str:
    """The URL for messages and logs: the password (in the user part or a `password` parameter)
    replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = "&".join(f"{k}=***" if k == "password" else f"{k}={v}" if v else k
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_url(url: str) -> tuple[str, str]:
    """(the libpq connection URL without `schema`, the schema name) of a store URL. ValueError, naming
    the URL without its password, when it is not one."""
    if not is_postgres(url):
        raise ValueError(f"{redact(url)}: not a PostgreSQL URL (postgresql://user@host:5432/dbname?schema=name)")
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in params if k == "schema"]
    if len(schemas) > 1:
        raise ValueError(f"{redact(url)}: schema is given {len(schemas)} times")
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"{redact(url)}: schema {schema!r} is not a plain lower-case name "
                         "(letters a-z, digits and _, not starting with a digit, at most 63)")
    rest = urlencode([(k, v) for k, v in params if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def with_schema(url: str, schema: str) -> str:
    """`url` with its `schema` parameter set to `schema` (tests give each run its own)."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode([*params, ("schema", schema)]),
                       parts.fragment))
