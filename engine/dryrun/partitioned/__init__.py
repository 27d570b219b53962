"""The dry-run split by user over several processes, on this machine or on a Dask cluster
(`journeys simulate --workers N [--executor dask://host:8786]`), with the output of one process.

Users meet only through identities (an identify with both ids, an alias, a repeated messageId) and
through the models, which train on everyone. So the log is split into groups of messages whose ids
are connected (`identity`), each partition runs its groups through its own engine (`partition`),
all partitions stop together at each training moment while the coordinator trains the models once
on all their rows and hands the version back (`coordinator`), and their outputs are merged into
what one process writes (`Report.absorb`, `merge`). The partitions run in processes of this machine
(`local`) or as actors on a Dask cluster (`cluster`): the same `Partition` object behind either.

Imports: the dry-run room's (runtime, store, core, models, the language); `distributed` only when
a cluster is asked for (the `cluster` extra).
"""
