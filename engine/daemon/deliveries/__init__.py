"""The daemon's deliveries: what leaves the outbox for the connectors, and what providers say back.

`dispatch` (routing, the dispatcher with its circuits, leases and retries, the outbox sink the
engine writes into), `attempts` (where an attempt runs: a connector's threads, or the connectors'
event loop for one that delivers as a coroutine), `loop` (the delivery loop on a thread of the
daemon), `process` (the same loop in a process of its own, on another core), `feedback` (bounces,
complaints and dead push tokens as events on the user, written into the inbox), `webhooks` (the
routes by which providers report them after the fact: DSNs, Resend's webhooks).

Imports store/, core/ and connectors, and the daemon's `logs`; `webhooks` also the daemon's
`ingest` (bodies, the group commit's errors), `admin.auth` (tokens) and `admin.schemas` (the
error body's description); never the worker.
"""
