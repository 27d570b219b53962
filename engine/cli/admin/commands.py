"""`journeys admin ...`: the Typer group and its commands (see engine.cli.admin).

Every command takes `--url` (JOURNEYS_URL, default http://127.0.0.1:8080), `--token`
(JOURNEYS_ADMIN_TOKEN), `--timeout` and `--json` (the daemon's answer as it came, for scripts and
jq). Exit codes: 0 done, 1 the call failed (one line on stderr: the daemon unreachable or too
slow, the token refused, no such user, journey or entry) or `status` found the daemon not ready,
2 a usage error.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from .client import DEFAULT_URL, TIMEOUT, AdminError, Client, segment

admin_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                        help="Watch and steer a running daemon through its admin API (JOURNEYS_ADMIN_TOKEN).")

Url = Annotated[str, typer.Option("--url", envvar="JOURNEYS_URL", help="The daemon's address (its admin "
                                  "listener when it serves one: journeys serve --admin-port).")]
Token = Annotated[Optional[str], typer.Option("--token", envvar="JOURNEYS_ADMIN_TOKEN", show_default=False,
                                              help="The daemon's admin token.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.01, help="Seconds to wait for an answer.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the daemon's JSON answer as it came.")]
By = Annotated[Optional[str], typer.Option("--by", help="Who does it, for the pause log (default $USER@host).")]


def _out() -> Console:
    return Console(highlight=False)


def _failed(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True, highlight=False).print(Text(f"error: {message}", style="bold red"))
    return typer.Exit(1)


def _usage(message: str) -> typer.Exit:
    from .._common import usage_error

    return usage_error(message)


def _run(url: str, token: str | None, timeout: float, work: Callable[[Client], Any]) -> Any:
    try:
        return work(Client(url, token, timeout))
    except AdminError as e:
        raise _failed(str(e)) from None


def _print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False, sort_keys=False))


def _answer(body: Any, as_json: bool, render: Callable[[Console, Any], None]) -> None:
    """The daemon's answer: as it came (`--json`), or as `render` prints it for people."""
    if as_json:
        _print_json(body)
    else:
        render(_out(), body)


def _me() -> str:
    return f"{os.environ.get('USER') or os.environ.get('USERNAME') or 'unknown'}@{socket.gethostname()}"


def _journey(journey: Optional[str], every: bool) -> str:
    if every and journey:
        raise _usage("give a JOURNEY or --all, not both")
    if not every and not journey:
        raise _usage("which journey? give its name, or --all for every send")
    return "*" if every else journey  # type: ignore[return-value]


@admin_app.command("status")
def status_command(url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                   as_json: AsJson = False) -> None:
    """Whether the daemon is ready, and why (its loops, inbox lag, journeys, reloads), and its pauses.
    Exit 1 when it is not ready."""
    from . import show

    def work(client: Client) -> tuple[dict, list]:
        status, body = client.call("GET", "/admin/readyz", ok=(200, 503, 404))
        if status == 404:  # a daemon from before /admin/readyz: its /readyz, with the token
            _, body = client.call("GET", "/readyz", ok=(200, 503))
        return body, client.call("GET", "/admin/pauses")[1].get("pauses", [])

    body, paused = _run(url, token, timeout, work)
    if as_json:
        _print_json({"readiness": body, "pauses": paused})
    else:
        out = _out()
        show.readiness(out, body)
        show.pauses(out, paused)
    if not body.get("ready"):
        raise typer.Exit(1)


@admin_app.command("journeys")
def journeys_command(url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                     as_json: AsJson = False) -> None:
    """The journeys with users in flight, how many at each step, and which are paused."""
    from . import show

    def work(client: Client) -> tuple[dict, list]:
        return client.call("GET", "/admin/journeys")[1], client.call("GET", "/admin/pauses")[1].get("pauses", [])

    body, paused = _run(url, token, timeout, work)
    if as_json:
        _print_json(body)
    else:
        show.journeys(_out(), body, [p.get("journey") for p in paused])


@admin_app.command("user")
def user_command(user_id: str = typer.Argument(..., metavar="ID", help="A user id or an alias (anonymous id)."),
                 url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                 as_json: AsJson = False) -> None:
    """A user's profile, journeys in flight and recent actions with what became of each."""
    from . import show

    body = _run(url, token, timeout, lambda c: c.call("GET", f"/admin/users/{segment(user_id)}")[1])
    _answer(body, as_json, show.user)


@admin_app.command("trace")
def trace_command(user_id: str = typer.Argument(..., metavar="ID", help="A user id or an alias."),
                  limit: int = typer.Option(100, "--limit", min=1, max=1000, help="The newest N lines."),
                  url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                  as_json: AsJson = False) -> None:
    """A user's trail: what happened to them and why, as `journeys simulate --trace` tells it."""
    from . import show

    body = _run(url, token, timeout, lambda c: c.call("GET", "/admin/trace",
                                                       params={"user": user_id, "limit": limit})[1])
    _answer(body, as_json, show.trace)


@admin_app.command("dead-letters")
def dead_letters_command(state: Optional[str] = typer.Option(None, "--state",
                                                             help="failed (a permanent error) or dead (out of "
                                                                  "retries); default both."),
                         limit: int = typer.Option(100, "--limit", min=1, max=1000),
                         url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                         as_json: AsJson = False) -> None:
    """The deliveries that will not be retried, with the provider's answer."""
    from . import show

    if state is not None and state not in ("failed", "dead"):
        raise _usage(f"--state: failed or dead, not {state!r}")
    body = _run(url, token, timeout, lambda c: c.call("GET", "/admin/dead-letters",
                                                       params={"state": state, "limit": limit})[1])
    _answer(body, as_json, show.dead_letters)


@admin_app.command("retry")
def retry_command(entry_id: str = typer.Argument(..., metavar="ENTRY_ID", help="A dead letter's id (dead-letters)."),
                  url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                  as_json: AsJson = False) -> None:
    """Attempt a dead letter again, once its cause is fixed."""
    body = _run(url, token, timeout, lambda c: c.call("POST", f"/admin/dead-letters/{segment(entry_id)}/retry")[1])
    if as_json:
        _print_json(body)
    else:
        _out().print(Text(f"retried: {entry_id} is pending again"))


@admin_app.command("pause")
def pause_command(journey: Optional[str] = typer.Argument(None, metavar="JOURNEY", help="The journey's name."),
                  every: bool = typer.Option(False, "--all", help="Pause every send, of every journey."),
                  reason: Optional[str] = typer.Option(None, "--reason", help="Why, for the pause log."),
                  by: By = None, url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                  as_json: AsJson = False) -> None:
    """Stop a journey's sends (or every send) on every worker within a second. The journey runs on;
    its sends are held until `resume` releases or drops them."""
    name = _journey(journey, every)
    body = _run(url, token, timeout, lambda c: c.call("POST", "/admin/pauses", json={
        "journey": name, "by": by or _me(), "reason": reason})[1])
    if as_json:
        _print_json(body)
        return
    p = body.get("paused", {})
    what = "every send" if name == "*" else f"journey {name!r}"
    _out().print(Text(f"paused: {what} since {p.get('since')} by {p.get('by')}"
                      + (f" ({p['reason']})" if p.get("reason") else "") + f"; {p.get('held', 0)} sends held"))


@admin_app.command("resume")
def resume_command(journey: Optional[str] = typer.Argument(None, metavar="JOURNEY", help="The journey's name."),
                   every: bool = typer.Option(False, "--all", help="Resume the pause of every send (*)."),
                   held: Optional[str] = typer.Option(None, "--held", help="What becomes of the held sends: "
                                                      "release (sent, in their order) or drop; required when "
                                                      "some are held."),
                   by: By = None, url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                   as_json: AsJson = False) -> None:
    """Resume a paused journey's sends (or every send), releasing or dropping what was held."""
    name = _journey(journey, every)
    if held is not None and held not in ("release", "drop"):
        raise _usage(f"--held: release or drop, not {held!r}")
    body = _run(url, token, timeout, lambda c: c.call("DELETE", f"/admin/pauses/{segment(name)}",
                                                       params={"held": held, "by": by or _me()})[1])
    if as_json:
        _print_json(body)
        return
    what = "every send" if name == "*" else f"journey {name!r}"
    _out().print(Text(f"resumed: {what}; {body.get('released', 0)} held sends released, "
                      f"{body.get('dropped', 0)} dropped"))


@admin_app.command("pauses")
def pauses_command(log: bool = typer.Option(False, "--log", help="The pause log instead: every pause and resume, "
                                            "newest first, with who, when, why and what became of the held sends."),
                   journey: Optional[str] = typer.Option(None, "--journey", help="With --log: only this journey's "
                                                         "(* for the pauses of every send)."),
                   limit: int = typer.Option(100, "--limit", min=1, max=1000, help="With --log: the newest N."),
                   url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                   as_json: AsJson = False) -> None:
    """The paused journeys: since when, by whom, why, and how many sends each holds (--log: every
    pause and resume so far)."""
    from . import show

    if not log:
        if journey is not None:
            raise _usage("--journey goes with --log")
        body = _run(url, token, timeout, lambda c: c.call("GET", "/admin/pauses")[1])
        _answer(body, as_json, lambda out, b: show.pauses(out, b.get("pauses", [])))
        return
    body = _run(url, token, timeout, lambda c: c.call("GET", "/admin/pauses/log",
                                                       params={"journey": journey, "limit": limit})[1])
    _answer(body, as_json, lambda out, b: show.pause_log(out, b.get("log", [])))


@admin_app.command("forget")
def forget_command(user_id: str = typer.Argument(..., metavar="ID", help="The user id (or an alias) to erase."),
                   yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
                   url: Url = DEFAULT_URL, token: Token = None, timeout: Timeout = TIMEOUT,
                   as_json: AsJson = False) -> None:
    """Erase a user (GDPR): profile, journeys, pending sends, trail; later events naming them are dropped."""
    from . import show

    if not yes:
        try:
            sure = typer.confirm(f"Forget {user_id} for good? Their profile, journeys, sends and trail are erased")
        except typer.Abort:
            sure = False
        if not sure:
            raise _failed(f"not confirmed: {user_id} was not forgotten (--yes skips the question)")
    body = _run(url, token, timeout, lambda c: c.call("DELETE", f"/admin/users/{segment(user_id)}")[1])
    if as_json:
        _print_json(body)
    else:
        show.pairs(_out(), f"Forgotten: {body.get('userId', user_id)}",
                   {k: v for k, v in body.items() if k != "userId"})
