"""The runtime the daemon and the dry-run share: `loop.Engine` takes messages and due timers, runs
the core's step per user, writes states to a store and effects to sinks. What the two plug in
differently is here too: the clock (`clock`: system or virtual) and the sinks (`sinks`).

Imports core/ and the Store protocol of store/; never the daemon, the dry-run or the command line.
"""
