"""The console: the daemon's live view for an operator, at /console, behind the admin token.

Every journey as the dry-run report's diagram with live counts per step, recent actions with what
became of them, dead letters and inbox failures with a retry button, the outbox, timers and
models, pauses with their buttons, and a user page found by id. Server-rendered (jinja2) pages
whose panels htmx (vendored in `static/`, no build, no CDN) refreshes every 2 s.

`routes` (the pages, sign-in and the cookie), `panels` (what each panel reads, and on which
thread), `diagrams` (a journey's diagram with live notes, journeys.graph_svg), `tally` (the last
hour's and day's counts, read from the trail).
"""

from .routes import add_console_routes

__all__ = ["add_console_routes"]
