"""Where state lives: the `Store` protocol and the in-memory store (`base`), SQLite (`sqlite_store`)
and PostgreSQL (`pg_store`, `migrations`), store URLs (`urls`, `open`), the durable inbox and outbox
of each, retention, and the SQL and serialisation they share.

Imports core/ only; the drivers are imported when a store of their kind is opened.
"""
