"""`journeys serve`: the HTTP ingest, the worker that runs the engine on the store (`worker`), the
deliveries (the `deliveries` room), the models' training (`training`), several workers' leases
(`partitions`), the HTTP API beyond the ingest (`api`, `trail`, `erasure`), hot reload, metrics,
logs, housekeeping, and `replay` (the daemon fed a log on the dry-run's clock).

Imports runtime/, store/, core/ and connectors; never the dry-run or the command line.
"""
