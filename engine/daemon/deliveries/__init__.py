"""The daemon's deliveries: what leaves the outbox for the connectors.

`dispatch` (routing, the dispatcher with its circuits, leases and retries, the outbox sink the
engine writes into), `loop` (the delivery loop on a thread of the daemon), `process` (the same
loop in a process of its own, on another core).

Imports store/, core/ and connectors, and the daemon's `logs`; never the worker.
"""
