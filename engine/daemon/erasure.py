"""Forgetting a user takes them out of every ad audience they are in.

Deleting a profile from the store leaves its email and phone in the ad platforms' customer lists:
an erasure request must also reach Meta and Google. `removals` turns the user's audiences
(`state.audiences`) into `audience_remove` outbox entries, one per connector each audience syncs to
(`Routes`, as a journey's `remove user from audience` would), queued in the transaction that
deletes the profile, so the daemon either forgets the user and queues the removals, or neither.

The removal must be self-contained: the dispatcher normally reads the profile at delivery time,
and by then it is gone. So each entry carries, in its payload's `data` under
`connectors.base.ERASED`, the few traits the audience connectors match on (`IDENTIFIER_TRAITS`,
captured before the profile is deleted), and nothing else of the profile; the connectors take them
through `connectors.base.audience_profile`, normalise and hash them as for any audience change.

Those traits must not outlive the removal: `scrub` (run periodically by the admin API) drops them
from the entries that are settled (delivered, or failed for good). Dead entries keep them, since an
operator may retry those. Removal entries are found by their id prefix (`forget-`), a range of the
outbox's primary key, so scrubbing never scans the outbox.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Mapping

from connectors.base import ERASED

from ..store import sql
from ..store.outbox import DELIVERED, FAILED, Entry

# What Meta (EMAIL, PHONE, FN, LN, ZIP, COUNTRY, MADID) and Google (email, phone, address) match on
IDENTIFIER_TRAITS = ("email", "phone", "first_name", "last_name", "zip", "country", "mobile_advertising_id")
PREFIX = "forget-"


def removal_id(user_id: str, audience: str) -> str:
    """Deterministic, so forgetting twice (or a retried transaction) never queues a second removal."""
    return PREFIX + hashlib.sha256(f"{user_id}\x1f{audience}".encode()).hexdigest()[:24]


def identifiers(traits: Mapping[str, Any]) -> dict[str, Any]:
    return {k: traits[k] for k in IDENTIFIER_TRAITS if traits.get(k) not in (None, "")}


def removals(user_id: str, traits: Mapping[str, Any], audiences: Any, routes: Any, now: datetime
             ) -> tuple[list[Entry], list[str]]:
    """The removal entries for a user about to be forgotten, and the audiences that sync to no
    connector (nothing to remove them from)."""
    carried = identifiers(traits)
    entries: list[Entry] = []
    unrouted: list[str] = []
    for audience in sorted(audiences):
        names = list(routes.audiences.get(audience, ()))
        if not names:
            unrouted.append(audience)
            continue
        aid = removal_id(user_id, audience)
        payload = json.dumps({"id": aid, "user": user_id, "kind": "audience_remove", "target": audience,
                              "journey": "", "path": "", "reason": "forget-user", "data": {ERASED: carried}},
                             sort_keys=True)
        entries += [Entry(aid, name, user_id, "audience_remove", audience, payload, now, now) for name in names]
    return entries, unrouted


def id_range() -> tuple[str, str]:
    """[low, high): the outbox ids of removal entries (their prefix)."""
    return PREFIX, PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)


def scrub(conn: Any) -> int:
    """Drop the carried identifiers from settled removal entries; returns how many were scrubbed.
    `conn` is the store's, SQLite or PostgreSQL (engine.store.sql)."""
    rows = sql.execute(conn, "SELECT id, payload FROM outbox WHERE id >= ? AND id < ? AND state IN (?, ?) "
                        "AND payload LIKE ?", (*id_range(), DELIVERED, FAILED, f'%"{ERASED}"%')).fetchall()
    updates = []
    for entry_id, payload in rows:
        body = json.loads(payload)
        body.get("data", {}).pop(ERASED, None)
        updates.append((json.dumps(body, sort_keys=True), entry_id))
    sql.executemany(conn, "UPDATE outbox SET payload = ? WHERE id = ?", updates)
    return len(updates)
