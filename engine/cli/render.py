"""`journeys render`: print what a user would receive from a template, rendered exactly as the
connectors render it (`connectors.render`)."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from pathlib import Path
from typing import Any

import typer

PREVIEW_URL = "https://journeys.invalid"
PREVIEW_SECRET = "journeys-render-preview-only!"  # a preview's link is never served


class Part(str, enum.Enum):
    all = "all"
    text = "text"
    html = "html"


class _Bad(Exception):
    """A usage error: the message names the file or the option."""


def _read_json(path: Path, option: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Bad(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _Bad(f"{option} {path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
    return _parse_json(text, f"{option} {path}")


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Bad(f"{where}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Bad(f"{where}: expected a JSON object ({{...}}), got {type(value).__name__}")
    return value


def _as_event(raw: dict, name: str | None = None) -> dict:
    """`{"event", "timestamp", "properties"}` from a track call, an event, or bare properties."""
    if "properties" in raw or "event" in raw:
        props = raw.get("properties") or {}
        if not isinstance(props, dict):
            raise _Bad("`properties` must be a JSON object")
        return {"event": raw.get("event") or name, "timestamp": raw.get("timestamp"), "properties": props}
    return {"event": name, "timestamp": None, "properties": raw}


def _walk(node: Any):
    yield node
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield from _walk(getattr(node, f.name))
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item)


def _aliases(project, channel: str, name: str) -> dict[str, tuple[str, str]]:
    """`as` names of the journeys that send this template: alias → (entry event, journey)."""
    from journeys import ast as A

    out: dict[str, tuple[str, str]] = {}
    for j in project.journeys:
        if not any(isinstance(n, A.Send) and n.channel.value == channel and n.template.value == name for n in _walk(j)):
            continue
        for d in j.declarations:
            if isinstance(d, A.EntryEvent) and d.alias is not None:
                out.setdefault(d.alias.value, (d.match.event.value, j.name.value))
    return out


def render_command(
    template: str = typer.Argument(..., help="The template as channel/name, e.g. email/browse_abandon."),
    path: Path = typer.Argument(Path("."), help="The project directory."),
    user: Path = typer.Option(None, "--user", help="JSON file: the user's traits (email, first_name...; "
                              "`id` for the user id). An identify call's `traits` work too."),
    event: Path = typer.Option(None, "--event", help="JSON file: the event that led to the send (a track "
                               "call, or {\"event\", \"timestamp\", \"properties\"}). It is also bound to the "
                               "`as` name of the journeys that send this template when the names match."),
    with_: str = typer.Option(None, "--with", help="JSON object: the send's `with {...}` values."),
    named: list[str] = typer.Option([], "--named", help="NAME=FILE: an event the journey bound with `as` "
                                    "(repeatable)."),
    part: Part = typer.Option(Part.all, "--part", help="email: all (headers, text and HTML), text or html."),
) -> None:
    """Render a template for one user and print what they would receive."""
    from rich.console import Console
    from rich.text import Text

    from connectors.base import Delivery
    from connectors.errors import DeliveryError
    from connectors.render import render_email, render_push, render_sms
    from journeys.project import load_project
    from journeys.suggest import did_you_mean
    from journeys.terminal import print_diagnostics

    from ._common import existing, usage_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    channel, _, name = template.partition("/")
    if not channel or not name or "/" in name:
        raise usage_error(f"TEMPLATE must be channel/name, such as email/browse_abandon, not {template!r}")
    existing(path)
    project = load_project(path)
    tpl = project.templates.get((channel, name))
    if tpl is None:
        known = [f"{c}/{n}" for (c, n) in sorted(project.templates)]
        hint = did_you_mean(template, known, otherwise="templates: " + (", ".join(known) or "none"))
        raise usage_error(f"no template {template} in {project.root / 'templates'}; {hint}")
    broken = [d for d in project.diagnostics.sorted() if d.is_error and d.span and d.span.file == tpl.path]
    if broken:
        print_diagnostics(project, broken, err)
        raise typer.Exit(1)

    try:
        profile: dict = {}
        user_id = "preview-user"
        if user is not None:
            profile = _object(_read_json(user, "--user"), f"--user {user}")
            if isinstance(profile.get("traits"), dict):
                user_id = str(profile.get("userId") or profile.get("user_id") or profile.get("id") or user_id)
                profile = dict(profile["traits"])
            else:
                user_id = str(profile.get("id") or profile.get("user_id") or profile.get("userId") or user_id)
        data = _object(_parse_json(with_, "--with"), "--with") if with_ is not None else {}
        trigger = None
        if event is not None:
            raw = _object(_read_json(event, "--event"), f"--event {event}")
            try:
                trigger = _as_event(raw)
            except _Bad as e:
                raise _Bad(f"--event {event}: {e}") from None
        bound: dict[str, dict] = {}
        for item in named:
            alias, sep, file = item.partition("=")
            if not sep or not alias.isidentifier() or not file:
                raise _Bad(f"--named {item!r}: expected NAME=FILE, such as viewed=viewed.json")
            try:
                bound[alias] = _as_event(_object(_read_json(Path(file), f"--named {alias}="), f"--named {alias}={file}"))
            except _Bad as e:
                raise _Bad(str(e) if str(e).startswith("--named") else f"--named {alias}={file}: {e}") from None
    except _Bad as e:
        raise usage_error(str(e)) from None

    if trigger is not None:
        for alias, (event_name, journey) in _aliases(project, channel, name).items():
            if alias in bound or alias in data or alias not in tpl.variables:
                continue
            if trigger["event"] in (None, event_name):
                bound[alias] = {**trigger, "event": trigger["event"] or event_name}
                err.print(Text(f"note: --event is `{alias}` (the entry event of \"{journey}\")", style="dim"))

    delivery = Delivery(action_id="preview", kind=channel, target=name, user_id=user_id, profile=profile,
                        data=data, named=bound, event=trigger, journey="preview", step="preview")
    try:
        if channel == "email":
            from connectors import unsubscribe

            secret = os.environ.get(unsubscribe.SECRET_ENV) or PREVIEW_SECRET
            if len(secret.encode()) < unsubscribe.MIN_SECRET_BYTES:
                secret = PREVIEW_SECRET
            url = unsubscribe.url_for(user_id, "email", public_url=project.config.project.public_url or PREVIEW_URL,
                                      secret=secret)
            mail = render_email(tpl, delivery, unsubscribe_url=url)
            out = _email_text(mail, profile.get("email"), part)
        elif channel == "push":
            push = render_push(tpl, delivery)
            out = "".join(f"{k}: {v}\n" for k, v in (("Title", push.title), ("Body", push.body), ("URL", push.url),
                                                       ("Image", push.image)) if v)
            out += "".join(f"Data {k}: {v}\n" for k, v in push.data.items())
        elif channel == "sms":
            out = render_sms(tpl, delivery).body + "\n"
        else:
            raise usage_error(f"cannot render {channel} templates; channels: email, push, sms")
    except DeliveryError as e:
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1) from None
    typer.echo(out, nl=False)


def _email_text(mail, to: Any, part: Part) -> str:
    if part is Part.text:
        return mail.text
    if part is Part.html:
        return mail.html if mail.html.endswith("\n") else mail.html + "\n"
    head = [("From", mail.sender), ("To", to if isinstance(to, str) and to else "(no email in the user's traits)"),
            ("Reply-To", mail.reply_to), ("Subject", mail.subject), ("Preheader", mail.preheader)]
    head += list(mail.headers.items())
    lines = "".join(f"{k}: {v}\n" for k, v in head if v)
    html = mail.html if mail.html.endswith("\n") else mail.html + "\n"
    return f"{lines}\n--- text/plain ---\n{mail.text}\n--- text/html ---\n{html}"
