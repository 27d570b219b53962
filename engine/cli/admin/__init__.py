"""`journeys admin`: an operator's commands against a running daemon, over its admin API.

A sub-room of the command line (engine/cli is full at 15 modules): `client` speaks HTTP and turns
every way a call can fail into one line, `show` prints the daemon's answers as tables, `commands`
is the Typer group. It imports nothing of the engine: what it knows of the daemon is the
admin API's JSON (docs/deployment.md). httpx is imported when a command runs.
"""

from .commands import admin_app

__all__ = ["admin_app"]
