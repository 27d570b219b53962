"""Rows a transaction writes, held and written once just before it commits.

The daemon writes, for every event and every timer, a row of the user's trail, the actions the
step decided, their outbox entries and (on PostgreSQL) the user's profile. A store can hold them
until the commit and write each table's rows in one statement: on PostgreSQL a few round trips
per batch of 200 events instead of a few per event, on SQLite one `executemany` per table. Rows
nothing reads back in the transaction (the trail, the action log) just wait; for rows something
does read (profiles), the store answers from what it holds and calls `flush(writer)` before a
query of that table.

A store keeps one `WriteBehind` and calls `flush()` right before its outermost COMMIT (a failing
flush rolls the transaction back like any statement), `mark()` when a block opens and `undo(mark)`
when it rolls back (a savepoint's rows go with it, the outer block's stay). Outside a transaction
a store writes at once: there is no commit to wait for.
"""

from __future__ import annotations

from typing import Any, Callable

Writer = Callable[[list[Any]], None]


class WriteBehind:
    def __init__(self) -> None:
        self._rows: dict[Writer, list[Any]] = {}  # by the function that writes them, in order

    def defer(self, in_transaction: bool, write: Writer, rows: list[Any]) -> None:
        """`write(rows)` at the commit, with every row added for it in this transaction; at once
        outside one. For rows nothing reads back before the commit: the trail, the action log."""
        if in_transaction:
            self._rows.setdefault(write, []).extend(rows)
        else:
            write(rows)

    def mark(self) -> dict[Writer, int]:
        return {write: len(rows) for write, rows in self._rows.items()}

    def undo(self, mark: dict[Writer, int]) -> None:
        """Forget the rows added since `mark` (their block rolled back)."""
        for write, rows in self._rows.items():
            del rows[mark.get(write, 0):]

    def flush(self, only: Writer | None = None) -> None:
        """Write the rows held (`only`: those of one writer, before a query that reads its table)."""
        if only is not None:
            rows = self._rows.pop(only, None)
            if rows:
                only(rows)
            return
        pending, self._rows = self._rows, {}
        for write, rows in pending.items():
            if rows:
                write(rows)

