"""Several `journeys serve` workers on one PostgreSQL database: who processes whom.

The work is split in `PARTITIONS` (64) partitions by a hash of the sender's id (the userId, else
the anonymousId: `engine.store.pg_store.partition_of`, a property of the store's layout). Each
partition is leased to one worker at a time, so each user's messages are taken in order by one
worker; the ingest of any worker appends to the shared inbox. Leases rather than one advisory
lock per user: a worker takes its share of the inbox in one indexed query (`part = ANY(owned)`),
and a dead worker's share moves as a whole.

    partitions(part, owner, expires)     a lease: `owner` holds `part` until `expires`
    workers(id, host, pid, started, seen) heartbeats: how many workers share the partitions

`Partitions.heartbeat()` (the worker calls it about every second, between transactions): renew
our leases, count the live workers (seen within `ttl`), give back what is above our fair share
(ceil(partitions / live workers)), and take expired or free partitions up to it, with `FOR UPDATE
SKIP LOCKED` so two workers never wait on each other. A worker killed with SIGKILL stops renewing:
after `ttl` seconds its partitions are free and the others take them; a worker that joins is
counted at once, and the others give back partitions on their next heartbeat.

Fencing: a lease can expire while its holder still runs (a long pause). `Partitions.fence()`,
inside each processing transaction, reads the partitions we still hold `FOR SHARE`: a worker
taking one of them over must update that row, so it waits until our transaction ends, and a
lease that expired before our transaction began is not in the set. Work outside the set is left
for its new owner.

Two workers can still touch one profile when identities are stitched across partitions (an
anonymous id's events go to its partition, its profile may be a known user's in another): the
store's advisory locks per profile id (`PostgresStore.lock`) serialise those.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from typing import Any

TTL = 10.0  # seconds a lease and a heartbeat last without renewal


class Partitions:
    """This worker's leases (see the module docstring). Runs on the worker's own connection."""

    def __init__(self, conn: Any, worker_id: str | None = None, ttl: float = TTL):
        self.conn = conn
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ttl = ttl
        self.owned: frozenset[int] = frozenset()
        self.total = conn.execute("SELECT count(*) FROM partitions").fetchone()[0]
        conn.execute("INSERT INTO workers (id, host, pid, started, seen) VALUES (%s, %s, %s, now(), now()) "
                     "ON CONFLICT (id) DO UPDATE SET seen = now()", (self.id, socket.gethostname(), os.getpid()))

    def heartbeat(self) -> frozenset[int]:
        """Renew, rebalance; returns the partitions held now."""
        ttl = f"{self.ttl} seconds"
        with self.conn.transaction():
            self.conn.execute("UPDATE workers SET seen = now() WHERE id = %s", (self.id,))
            live = self.conn.execute("SELECT count(*) FROM workers WHERE seen > now() - %s::interval",
                                     (ttl,)).fetchone()[0]
            share = math.ceil(self.total / max(1, live))
            mine = [r[0] for r in self.conn.execute(
                "UPDATE partitions SET expires = now() + %s::interval WHERE owner = %s RETURNING part",
                (ttl, self.id))]
            mine.sort()
            if len(mine) > share:
                extra = mine[share:]
                self.conn.execute("UPDATE partitions SET owner = NULL, expires = NULL WHERE part = ANY(%b::smallint[]) "
                                  "AND owner = %s", (extra, self.id))
                mine = mine[:share]
            elif len(mine) < share:
                mine += [r[0] for r in self.conn.execute(
                    "UPDATE partitions SET owner = %s, expires = now() + %s::interval WHERE part IN ("
                    " SELECT part FROM partitions WHERE owner IS NULL OR expires < now()"
                    " ORDER BY part LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING part",
                    (self.id, ttl, share - len(mine)))]
            self.conn.execute("DELETE FROM workers WHERE seen < now() - %s::interval * 60", (ttl,))
        self.owned = frozenset(mine)
        return self.owned

    def fence(self) -> frozenset[int]:
        """Inside a transaction: the partitions still held, locked against a takeover until it ends."""
        rows = self.conn.execute("SELECT part FROM partitions WHERE owner = %s AND expires > now() FOR SHARE",
                                 (self.id,)).fetchall()
        return frozenset(r[0] for r in rows)

    def leave(self) -> None:
        """A clean stop: give every partition back at once instead of after `ttl`."""
        with self.conn.transaction():
            self.conn.execute("UPDATE partitions SET owner = NULL, expires = NULL WHERE owner = %s", (self.id,))
            self.conn.execute("DELETE FROM workers WHERE id = %s", (self.id,))
        self.owned = frozenset()
