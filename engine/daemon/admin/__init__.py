"""The operator's side of the daemon: who may call what (`auth`), and what an operator can do and
see through it (the admin API's routes, pauses, the console)."""
