"""The delivery preflight: before the daemon takes its first event, what the channels the journeys
use will need in order to deliver, read from journeys.toml and this environment.

Without it a missing setting showed only at delivery, once per message: the example shop's emails
all failed (no `[project] public_url`, so no unsubscribe link), each recorded in the outbox, and
nothing said so at start. `journeys check --env` runs it where the daemon will run, and `journeys
serve` before it opens the store, refusing to start on an error.

"Used" is what the compiled journeys send through: every send, audience change and webhook step,
routed as the dispatcher routes its action (`connectors.registry.route`). Only those connectors are
checked; one no journey uses may lack anything. For each used one:

- email, of any type: `[project] public_url`, an http(s) URL in ASCII where the daemon is reachable,
  which every unsubscribe link starts with (J047); and JOURNEYS_UNSUBSCRIBE_SECRET, which signs the
  links, set and long enough (J048);
- the connector built from its settings as the daemon builds it (`connectors.registry.build`), so
  every setting its type checks is checked here too: an SMTP host and port, a Web Push VAPID key, an
  FCM service account that can be read and is one (J047 for a setting, J048 for a secret's value);
- what a type needs only at delivery: SMTP's `ca_file`, Resend's API key under its default
  variable (J046), an ad connector's account and token settings and an id for every audience the
  journeys sync to it, a webhook's url (J047).

A secret journeys.toml names that this environment lacks is J046 (`journeys.checker.check_environment`):
an error for `check --env`; a warning for `serve`, where that connector starts unusable and fails
its deliveries with the reason, recorded, while the other channels deliver (connectors.registry).
Every diagnostic points into journeys.toml, at the setting or, when it is missing, at its table,
with a note naming a step that sends through the connector.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from journeys.checker import check_environment
from journeys.config import ProjectConfig, locate
from journeys.diagnostics import Diagnostic, Diagnostics, Severity, Span
from journeys.graph import AudienceNode, CompiledProject, SendNode, WebhookNode
from journeys.project import CONFIG_FILE, Project, display_path

from . import unsubscribe
from .errors import ConfigurationError
from .google_audiences import SECRETS as GOOGLE_SECRETS
from .registry import EMAIL_TYPES, Routes, RoutingError, Unusable, build, route
from .resend import DEFAULT_KEY_ENV as RESEND_KEY_ENV

LOOPBACK = {"127.0.0.1", "::1", "localhost"}

# ad connector type → (settings it cannot work without, the setting mapping each journeys audience
# to the platform's own id, what that id is)
ADS = {
    "meta_custom_audiences": (("access_token_env",), "audiences", "Custom Audience id"),
    "google_customer_match": (("customer_id", *GOOGLE_SECRETS.values()), "user_lists", "user list id"),
}
# the setting a type's build error is about when the message names none of its settings
BLAME = {"fcm": "credentials_env", "webpush": "vapid_private_key_env"}
# what to write for a setting that is missing or wrong ({var}: the variable a `*_env` setting names)
HELP = {
    "host": 'set host = "smtp.example.com", the SMTP server (a mail catcher on this machine: host = "127.0.0.1", '
            'port = 1025, security = "none")',
    "customer_id": 'set customer_id = "1234567890", the Google Ads account the user lists belong to',
    "credentials_env": "set {var} to the Firebase service account's JSON key (Firebase console, Project settings, "
                       "Service accounts, Generate new private key), or to the path of that file",
    "vapid_private_key_env": "set {var} to the VAPID private key the site's push subscriptions were made with: "
                             "base64url of the raw P-256 key, or PEM",
    "ca_file": "ca_file is the PEM file of the CA that signed the SMTP server's certificate; without it the "
               "system's CAs are trusted",
}


@dataclass(frozen=True)
class Use:
    """A step that sends through a connector, as the dispatcher sees its action (kind, target, via)."""

    kind: str
    target: str
    via: str | None
    journey: str
    span: Span | None

    def note(self) -> str:
        """Why the connector is needed: `journey "A" sends email "hello" at journeys/a.journey:3:3`."""
        does = {"audience_add": f'adds users to audience "{self.target}"',
                "audience_remove": f'removes users from audience "{self.target}"',
                "webhook": f'calls webhook "{self.target}"'}.get(
            self.kind, f'sends {self.kind} "{self.target}"' + (f' via "{self.via}"' if self.via else ""))
        return f'journey "{self.journey}" {does}' + (f" at {self.span}" if self.span else "")


def uses(compiled: CompiledProject) -> Iterator[Use]:
    """Every step of the journeys that makes an action for delivery."""
    for j in compiled.journeys.values():
        for node in j.nodes.values():
            if isinstance(node, SendNode):
                yield Use(node.channel, node.template, node.via, j.name, node.span)
            elif isinstance(node, AudienceNode):
                yield Use(f"audience_{node.op}", node.audience, None, j.name, node.span)
            elif isinstance(node, WebhookNode):
                yield Use("webhook", node.name, None, j.name, node.span)


def used_connectors(compiled: CompiledProject, config: ProjectConfig) -> dict[str, list[Use]]:
    """Each connector the journeys send through (a webhook as `webhook:NAME`), with its steps."""
    routes = Routes.from_config(config)
    used: dict[str, list[Use]] = {}
    for use in uses(compiled):
        try:
            names = route(use, routes)
        except RoutingError:  # no connector at all: the checker's J045, J012 or J013
            continue
        for name in names:
            used.setdefault(name, []).append(use)
    return used


def preflight(project: Project, compiled: CompiledProject | None, environ: Mapping[str, str], *,
              serving: bool = False) -> Diagnostics:
    """The diagnostics of the delivery preflight (see the module docstring). `compiled`: None when the
    files have errors (the check reports those), and then only the secrets are looked at. `serving`:
    for `journeys serve`, where a secret that is not set is a warning."""
    report = _Report(project)
    missing = Severity.WARNING if serving else Severity.ERROR
    report.diags.extend(replace(d, severity=missing) for d in check_environment(project, environ))
    if compiled is None:
        return report.diags
    config = project.config
    used = used_connectors(compiled, config)
    unset = {var for var in (*(v for _, v in config.secrets()), RESEND_KEY_ENV) if not environ.get(var)}
    only = config.model_copy(update={
        "connectors": {n: c for n, c in config.connectors.items() if n in used},
        "webhooks": {n: w for n, w in config.webhooks.items() if f"webhook:{n}" in used}})
    built = build(only, project.root, env=environ)
    try:
        emails = [n for n in used if n in config.connectors and config.connectors[n].type in EMAIL_TYPES]
        if emails:
            _email(report, config, environ, emails[0], used[emails[0]][0])
        for name, steps in used.items():
            if name.startswith("webhook:"):
                webhook = name.partition(":")[2]
                if webhook in config.webhooks:
                    settings = config.webhooks[webhook].model_dump()
                    _built(report, ("webhooks", webhook), "webhook", settings, built.get(name), unset, steps[0])
                    _webhook_url(report, webhook, settings["url"], steps[0])
                continue
            c = config.connectors.get(name)
            if c is None:
                continue
            _built(report, ("connectors", name), c.type, c.settings, built.get(name), unset, steps[0])
            if c.type == "smtp" and c.settings.get("ca_file"):
                _ca_file(report, name, str(c.settings["ca_file"]), steps[0])
            if c.type == "resend" and "api_key_env" not in c.settings and not environ.get(RESEND_KEY_ENV):
                report.add(missing, "J046", f"the environment variable `{RESEND_KEY_ENV}` is not set (the API key of "
                           f"connector `{name}`, whose api_key_env names no other)", ("connectors", name),
                           f"set {RESEND_KEY_ENV} where the daemon runs, or name the variable that holds the key "
                           "with api_key_env", steps[0])
            if c.type in ADS:
                _ads(report, name, c.type, c.settings, steps)
    finally:
        for connector in built.values():
            _close(connector)
    return report.diags


class _Report:
    """The diagnostics, each at a key path of journeys.toml."""

    def __init__(self, project: Project):
        self.file = display_path(project.root / CONFIG_FILE)
        self.lines = project.lines.get(self.file, [])
        self.tables = set(project.declared)  # the top-level tables journeys.toml has
        self.diags = Diagnostics()

    def span(self, loc: tuple[str, ...]) -> Span:
        """The setting at `loc`; its table when the setting is not written."""
        line, col = locate(self.lines, loc)
        text = self.lines[line - 1][col - 1:] if 0 < line <= len(self.lines) else ""
        return Span.point(self.file, line, col, len(loc[-1]) if text.startswith(loc[-1]) else len(text.rstrip()))

    def add(self, severity: Severity, code: str, message: str, loc: tuple[str, ...], help: str,
            use: Use | None = None) -> None:
        notes = (use.note(),) if use is not None else ()
        self.diags.items.append(Diagnostic(code, severity, message, self.span(loc), help, notes))

    def error(self, code: str, message: str, loc: tuple[str, ...], help: str, use: Use | None = None) -> None:
        self.add(Severity.ERROR, code, message, loc, help, use)


def _email(report: _Report, config: ProjectConfig, environ: Mapping[str, str], name: str, use: Use) -> None:
    """What every email needs, whatever its connector: the unsubscribe link's address and secret."""
    url = config.project.public_url
    if not url:
        report.error("J047", "emails need an unsubscribe link, which starts with `[project] public_url`, and it is "
                     "not set", ("project", "public_url") if "project" in report.tables else ("connectors", name),
                     'set public_url = "https://journeys.example.com" under [project]: the address where this '
                     'daemon is reachable ("http://127.0.0.1:8080" for a run on this machine)', use)
    else:
        try:
            unsubscribe.link(url, "token")
            problem = None if url.isascii() else f"`[project] public_url` must be written in ASCII, not {url!r}"
        except ConfigurationError as e:
            problem = str(e)
        parts = urlsplit(url)
        if problem is not None:
            report.error("J047", problem, ("project", "public_url"), 'write the address where this daemon is reachable, '
                         'such as "https://journeys.example.com" (punycode and %-escapes for other characters)', use)
        elif parts.scheme == "http" and parts.hostname not in LOOPBACK:
            report.add(Severity.WARNING, "J047", "unsubscribe links over http: mail clients offer one-click unsubscribe "
                       "(RFC 8058) only for an https link", ("project", "public_url"),
                       "serve the daemon behind TLS and write its https address", use)
    secret = environ.get(unsubscribe.SECRET_ENV)
    try:
        unsubscribe.secret_from(environ)
    except ConfigurationError:
        report.error("J048", f"emails need an unsubscribe link, and {unsubscribe.SECRET_ENV}, which signs it, is not set"
                     if not secret else f"{unsubscribe.SECRET_ENV} is too short: the unsubscribe secret must be at "
                     f"least {unsubscribe.MIN_SECRET_BYTES} bytes long", ("connectors", name),
                     f"set {unsubscribe.SECRET_ENV} where the daemon runs to a long random string, made with "
                     "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`; to replace it later, keep the "
                     f"old one in {unsubscribe.PREVIOUS_ENV} so the links already sent keep working", use)
    if any(len(s.encode("utf-8")) < unsubscribe.MIN_SECRET_BYTES for s in unsubscribe.previous_secrets(environ)):
        report.error("J048", f"{unsubscribe.PREVIOUS_ENV} holds a secret shorter than {unsubscribe.MIN_SECRET_BYTES} "
                     "bytes", ("connectors", name), f"list the earlier values of {unsubscribe.SECRET_ENV}, newest "
                     "first, separated by commas or spaces", use)


def _built(report: _Report, table: tuple[str, str], kind: str, settings: Mapping[str, Any], connector: Any,
           unset: set[str], use: Use) -> None:
    """The reason a used connector could not be built, at the setting it is about."""
    if not isinstance(connector, Unusable):
        return
    text = str(connector.error)
    if any(re.search(rf"\b{re.escape(var)}\b", text) for var in unset):
        return  # a secret that is not set: J046 says so
    key = _blamed(settings, text, table[1], BLAME.get(kind))
    var = settings.get(key) if key and key.endswith("_env") else None
    where = f"[{'.'.join(table)}]"
    help = (HELP[key].format(var=var) if key in HELP else f"fix `{key}` under {where}" if key else f"fix {where}")
    if key not in HELP:
        help += ": docs/connectors.md lists the settings of each type"
    label = f"{'webhook' if table[0] == 'webhooks' else 'connector'} `{table[1]}`"
    report.error("J048" if var else "J047", text if table[1] in text else f"{label}: {text}",
                 table + ((key,) if key else ()), help, use)


def _blamed(settings: Mapping[str, Any], text: str, name: str, fallback: str | None) -> str | None:
    """The setting an error message is about: the first of the connector's settings it names (a `*_env`
    one also by its variable); else `fallback`, the setting its type's other errors are about; else
    the first `word` in backticks other than the connector's name (a required setting not written)."""
    at: dict[str, int] = {}
    for key, value in settings.items():
        for word in (key, value if key.endswith("_env") and isinstance(value, str) else None):
            m = re.search(rf"(?<![\w.]){re.escape(word)}(?!\w)", text) if word else None
            if m:
                at[key] = min(at.get(key, m.start()), m.start())
    if at:
        return min(at, key=at.__getitem__)
    if fallback in settings:
        return fallback
    return next((m.group(1) for m in re.finditer(r"`(\w+)`", text) if m.group(1) != name), None)


def _webhook_url(report: _Report, webhook: str, url: str, use: Use) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        report.error("J047", f"webhook `{webhook}`: url {url!r} is not an http(s) URL", ("webhooks", webhook, "url"),
                     'write the whole address, such as url = "https://crm.example.com/hooks/nudge"', use)


def _ca_file(report: _Report, name: str, path: str, use: Use) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as e:
        report.error("J047", f"connector `{name}`: cannot load ca_file {path}: {e}", ("connectors", name, "ca_file"),
                     HELP["ca_file"], use)


def _ads(report: _Report, name: str, kind: str, settings: Mapping[str, Any], steps: list[Use]) -> None:
    """An ad connector's account and token settings, and an id for each audience synced to it."""
    needs, ids_key, what = ADS[kind]
    for key in needs:
        if not settings.get(key):
            variable = f"{name}_{key.removesuffix('_env')}".upper()
            report.error("J047", f"connector `{name}` needs `{key}`", ("connectors", name),
                         HELP.get(key) or f'set {key} = "{variable}", the environment variable that holds it', steps[0])
    ids = settings.get(ids_key)
    ids = ids if isinstance(ids, Mapping) else {}
    firsts: dict[str, Use] = {}
    for use in steps:
        if use.kind.startswith("audience_"):
            firsts.setdefault(use.target, use)
    for audience, use in sorted(firsts.items()):
        if not ids.get(audience):
            report.error("J047", f"audience `{audience}` syncs to connector `{name}`, which has no {what} for it",
                         ("connectors", name, ids_key),
                         f'add it: {ids_key} = {{ ..., {audience} = "<the {what}>" }}', use)


def _close(connector: Any) -> None:
    for c in (connector, getattr(connector, "inner", None)):  # RenderingPush wraps its push connector
        close = getattr(c, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # a preflight must not fail on closing what it only built
                pass
            return
