"""The dry-run and what is built on it: recorded event logs (`eventlog`), `simulate` on a virtual
clock, its report, summary, HTML page and traces, the scenarios of `journeys test`, `journeys diff`
on events, and the synthetic log generator.

Imports runtime/, store/ and core/; never the daemon (the daemon's own code runs the dry-run's
loop) or the command line.
"""
