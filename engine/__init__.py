"""The runtime of Journeys: the language's compiled journeys, run for real users.

Rooms, with the arrows pointing one way (a room imports only the rooms below it, and the language):

    cli/        the `journeys` command line, one module per command; nothing else imports it
    daemon/     `journeys serve`: ingest, the worker, deliveries, the HTTP API, reload, metrics
    dryrun/     `journeys simulate`, `test`, `diff`: event logs, reports, traces, scenarios
    runtime/    the loop the daemon and the dry-run share, and the clock and sinks they plug in
    store/      where state lives: the Store protocol, SQLite and PostgreSQL, inbox and outbox
    core/       the pure step and its values: no I/O, no clock, no other engine room
    (journeys/  the language: grammar, AST, checker, compiler)

The daemon and the dry-run are siblings: neither imports the other, so whatever they must agree on
lives in runtime/ or below. tests/test_architecture.py holds every import to these arrows.
"""
