"""Versioned schema migrations for the PostgreSQL store.

A PostgreSQL store lives for years while the engine changes under it, and several processes may
open it at the same moment (a rolling deploy, `journeys migrate` next to a running daemon). So the
schema is a numbered list of steps, `POSTGRES`, each applied once and recorded in the table
`schema_migrations (version, applied_at)` of the store's schema. Version 1 is the schema the
engine reads today; a change to it is a new step at the end, never an edit of an old one.

`migrate` runs in one transaction under `pg_advisory_xact_lock` (a key derived from the schema
name): the first process to arrive applies the missing steps, the others wait for its commit and
then find nothing left to do. DDL is transactional in PostgreSQL, so a step that fails leaves the
schema as it was. A schema at a version this engine does not know (written by a newer Journeys)
is refused with `SchemaTooNew` rather than read wrongly.

SQLite keeps its own single-version check (`engine.store.sqlite_store`, table `schema_version`): its
file is created whole at version 1 and any other version is refused. Its steps join this module
when it gets a version 2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .base import StoreError
from .outbox import BY_CONNECTOR, HELD_INDEX, INDEXES


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]  # run in order, in the schema, in the migration's transaction


# Ids are COLLATE "C" (byte order, which for UTF-8 is code-point order): `ORDER BY user_id` is
# Python's `sorted`, and the (wake, user_id) index serves `next_timer` without a sort.
_V1 = (
    """CREATE TABLE profiles (
        user_id text COLLATE "C" PRIMARY KEY,
        zone text NOT NULL,
        state bytea NOT NULL,
        wake timestamptz)""",
    "CREATE INDEX profiles_wake ON profiles (wake, user_id)",
    "CREATE INDEX profiles_zone ON profiles (zone, user_id)",
    """CREATE TABLE identities (
        alias text COLLATE "C" PRIMARY KEY,
        user_id text COLLATE "C" NOT NULL)""",
    'CREATE TABLE messages (message_id text COLLATE "C" PRIMARY KEY)',
    """CREATE TABLE actions (
        id text COLLATE "C" PRIMARY KEY, time timestamptz NOT NULL, "user" text COLLATE "C",
        journey text, version text, path text, kind text, target text, outcome text, reason text,
        rule text, json text NOT NULL)""",
    'CREATE INDEX actions_user ON actions ("user")',
    """CREATE TABLE instances (
        user_id text COLLATE "C", journey text COLLATE "C", version text NOT NULL,
        entry integer NOT NULL, path text, wait text, wake timestamptz,
        PRIMARY KEY (user_id, journey))""",
    """CREATE TABLE outbox (
        id text COLLATE "C" PRIMARY KEY, action_id text NOT NULL, connector text NOT NULL,
        user_id text NOT NULL, kind text NOT NULL, target text NOT NULL, payload text NOT NULL,
        created timestamptz NOT NULL, next_at timestamptz NOT NULL, state text NOT NULL,
        attempts integer NOT NULL, last_error text, provider_id text)""",
    "CREATE INDEX outbox_due ON outbox (state, next_at, id)",
)

# Several `journeys serve` workers on one database (engine.store.pg_inbox, engine.daemon.partitions): the inbox
# every worker's ingest appends to, split in partitions by a hash of the sender's id; the leases
# that give each partition to one worker; the workers' heartbeats; the claims that make a
# scheduled entry fire once per partition across the cluster; and the daemon's side tables.
PARTITIONS = 64
_V2 = (
    """CREATE TABLE inbox (
        seq bigserial PRIMARY KEY, part smallint NOT NULL, received_at timestamptz NOT NULL,
        raw bytea NOT NULL)""",
    "CREATE INDEX inbox_part ON inbox (part, seq)",
    """CREATE TABLE inbox_failed (
        seq bigint PRIMARY KEY, raw bytea NOT NULL, error text NOT NULL, at timestamptz NOT NULL)""",
    "CREATE TABLE partitions (part smallint PRIMARY KEY, owner text, expires timestamptz)",
    f"INSERT INTO partitions (part) SELECT generate_series(0, {PARTITIONS - 1})",
    """CREATE TABLE workers (
        id text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL, started timestamptz NOT NULL,
        seen timestamptz NOT NULL)""",
    """CREATE TABLE schedule_runs (
        name text, zone text, fire timestamptz, part smallint, PRIMARY KEY (name, zone, fire, part))""",
    'CREATE TABLE forgotten (user_id text COLLATE "C" PRIMARY KEY, at text NOT NULL)',
    "ALTER TABLE profiles ADD COLUMN part smallint",
    f"UPDATE profiles SET part = (('x' || substr(md5(user_id), 1, 8))::bit(32)::bigint % {PARTITIONS})",
    "CREATE INDEX profiles_part ON profiles (part, wake)",
)

# The daemon's side tables that SQLite files get at run time (engine.daemon.trail, engine.daemon.api): each
# user's trail, and the actions' payloads that forgetting a user erases (the rows stay, json NULL).
_V3 = (
    """CREATE TABLE trail (
        id bigserial PRIMARY KEY, user_id text COLLATE "C" NOT NULL, time timestamptz NOT NULL,
        n integer NOT NULL, json text NOT NULL)""",
    "CREATE INDEX trail_user ON trail (user_id, id)",
    "ALTER TABLE actions ALTER COLUMN json DROP NOT NULL",
)

# The outbox's claim reads an index of open entries only (engine.store.outbox.INDEXES), and the two
# queue tables are vacuumed after a fixed number of dead rows, not a share of the table: a queue
# whose dead versions pile up makes every claim walk them.
_QUEUE_VACUUM = ("autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000, "
                 "autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.02")
_V4 = (
    "DROP INDEX outbox_due",
    *INDEXES,
    f"ALTER TABLE outbox SET ({_QUEUE_VACUUM})",
    f"ALTER TABLE inbox SET ({_QUEUE_VACUUM})",
)

# Retention (engine.store.retention): the growing logs are pruned by time, through BRIN indexes (a few
# pages; these tables are appended in time order). The messageIds get the time each was taken
# (the dedupe window); those from before count as taken at the upgrade (a default that fills the
# existing rows without rewriting the table, dropped at once: the engine writes the time).
_V5 = (
    "ALTER TABLE messages ADD COLUMN seen_at timestamptz DEFAULT now()",
    "ALTER TABLE messages ALTER COLUMN seen_at DROP DEFAULT",
    "CREATE INDEX messages_seen ON messages USING brin (seen_at)",
    "CREATE INDEX actions_time ON actions USING brin (time)",
    "CREATE INDEX outbox_created ON outbox USING brin (created)",
)

# The outbox's claim reads each connector's due entries on their own (engine.store.outbox.BY_CONNECTOR),
# so the entries of a connector at its concurrency limit are not walked by every claim.
_V6 = (BY_CONNECTOR,)

# Erasure keeps no id in clear (engine.daemon.erasure): the tombstones hold keyed hashes of the ids
# (HMAC-SHA256 under the key the daemon keeps in `erasure`). The rows written in clear before are
# hashed by the first daemon that opens the store (`erasure.prepare`; `keyed` says which are).
_V7 = (
    "CREATE TABLE erasure (id integer PRIMARY KEY, key text NOT NULL)",
    "ALTER TABLE forgotten RENAME COLUMN user_id TO id_hash",
    "ALTER TABLE forgotten ADD COLUMN keyed boolean NOT NULL DEFAULT false",
)

# The models' trained versions (engine.daemon.training.Training): a daemon that restarts scores
# with the latest at once instead of waiting for a training.
_V8 = (
    "CREATE TABLE models (version text PRIMARY KEY, trained_at timestamptz NOT NULL, body bytea NOT NULL)",
)

# Who trains which moment of the schedule (`PostgresStore.claim_training`): several workers on one
# database train each moment once, the others take the version it left in `models`.
_V9 = (
    "CREATE TABLE model_claims (moment timestamptz PRIMARY KEY, owner text NOT NULL, expires timestamptz NOT NULL)",
)

# The emergency stop (engine.daemon.admin.pause_store): the journeys whose sends are held (`*`: every
# send), the log of every pause and resume with who and when, and the index of the held entries.
_V10 = (
    """CREATE TABLE pauses (
        journey text COLLATE "C" PRIMARY KEY, since timestamptz NOT NULL, paused_by text NOT NULL, reason text)""",
    """CREATE TABLE pause_log (
        id bigserial PRIMARY KEY, at timestamptz NOT NULL, journey text NOT NULL, event text NOT NULL,
        by_whom text NOT NULL, reason text, held text, released integer, dropped integer)""",
    HELD_INDEX,
)

POSTGRES: tuple[Migration, ...] = (
    Migration(1, "profiles, identities, messages, actions, instances and the outbox", _V1),
    Migration(2, "the partitioned inbox, partition leases, workers, schedule runs, tombstones", _V2),
    Migration(3, "the daemon's trail; forgotten users' action payloads", _V3),
    Migration(4, "the outbox indexes its open and parked entries only; queue tables vacuumed sooner", _V4),
    Migration(5, "the dedupe window and retention: when each messageId was taken; time indexes", _V5),
    Migration(6, "the outbox's open entries indexed by connector, for claims per connector", _V6),
    Migration(7, "keyed tombstones: forgotten users' ids as keyed hashes, the erasure key", _V7),
    Migration(8, "the models' trained versions", _V8),
    Migration(9, "who trains which moment of the models' schedule", _V9),
    Migration(10, "the emergency stop: paused journeys, the pause log, the held sends' index", _V10),
)


class SchemaTooNew(StoreError):
    """The store was migrated by a newer Journeys: this engine would misread it."""

    def __init__(self, where: str, found: int, known: int):
        super().__init__(f"{where}: the store's schema is at version {found}, but this Journeys knows versions "
                         f"up to {known}; upgrade Journeys (or use another schema)")
        self.found, self.known = found, known


def latest(migrations: tuple[Migration, ...] = POSTGRES) -> int:
    return migrations[-1].version if migrations else 0


def lock_key(schema: str) -> int:
    """The advisory lock of one schema's migrations: a signed 64-bit number from its name, the same
    in every process (Python's `hash` is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"journeys.migrate:{schema}".encode()).digest()[:8], "big", signed=True)


def current_version(conn, schema: str) -> int:
    """The schema's version: 0 when it (or its `schema_migrations`) does not exist yet."""
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_migrations',)).fetchone()
    if row is None or row[0] is None:
        return 0
    from psycopg import sql

    return conn.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(
        sql.Identifier(schema))).fetchone()[0]


def migrate(conn, schema: str, where: str | None = None,
            migrations: tuple[Migration, ...] = POSTGRES) -> tuple[int, int]:
    """Bring `schema` up to the last of `migrations`; returns (version before, version after).

    `conn` is a psycopg connection outside any transaction; `where` names the store in errors."""
    import psycopg
    from psycopg import sql

    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3 ... in order, not {versions}")
    known = latest(migrations)
    where = where or f"schema {schema}"
    ident = sql.Identifier(schema)
    step = 0
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            before = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
            if before > known:
                raise SchemaTooNew(where, before, known)
            for m in migrations:
                if m.version > before:
                    step = m.version
                    for statement in m.statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (m.version,))
    except psycopg.Error as e:  # no privilege to create the schema, a step that fails: nothing was changed
        what = f"migration {step}" if step else f"preparing schema {schema}"
        raise StoreError(f"{where}: {what} failed, nothing was changed: {' '.join(str(e).split())}") from e
    return before, max(before, known)
