"""journeys.toml: connectors, audiences, webhooks, the store and ingest keys.

Validated with pydantic so that every mistake names its field; secrets never live in the file,
only the names of the environment variables that hold them (`*_env` fields).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .diagnostics import Diagnostics, Span
from .suggest import did_you_mean

SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "credentials", "private_key")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectMeta(_Strict):
    name: str = "journeys"
    public_url: str | None = None  # where the daemon is reachable: unsubscribe links (connectors.unsubscribe)


class StoreConfig(_Strict):
    url: str = "sqlite:///journeys.db"


Origin = Annotated[str, AfterValidator(lambda v: _origin(v))]  # `[ingest] cors_origins`: each checked alone

DEDUPE_DAYS = 7  # a repeated messageId is dropped when its first sighting is this recent


class IngestConfig(_Strict):
    write_keys_env: list[str] = Field(default_factory=list)
    profile_keys_env: list[str] = Field(default_factory=list)  # read keys of GET /v1/profile (engine.daemon.api)
    # days a messageId counts as taken: a repeat within them is dropped, a later one is a new event
    # (Segment's own window is about a day), in the daemon and the dry-run alike; the daemon's
    # retention deletes the messageIds after that (engine.store.retention)
    dedupe_days: int = Field(default=DEDUPE_DAYS, ge=1)
    # seconds a call's timestamp may be after its receipt: later, the daemon's ingest sets it to the
    # receipt time (Segment's rule for a time in the future; 0, the default, is that rule exactly).
    # The dry-run has no receipt time and does not use it (engine.daemon.ingest, docs/engine.md)
    future_tolerance_seconds: int = Field(default=0, ge=0, le=366 * 86400)
    # the web origins whose pages may send events from a browser (CORS, engine.daemon.ingest):
    # none by default; "*" for any site (the write key, shipped in the page, is the check either way)
    cors_origins: list[Origin] = Field(default_factory=list)


def _origin(value: str) -> str:
    """A web origin as browsers send it in `Origin` (scheme, host and port only; the host in lower
    case, the scheme's default port left out), or "*"."""
    from urllib.parse import urlsplit

    if value == "*":
        return value
    example = "e.g. \"https://shop.example\" or \"http://localhost:3000\""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{value!r} is not an origin ({e}); {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin: expected http(s)://host[:port], {example}")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} is not an origin: only scheme, host and port (no path, not even a "
                         f"trailing /), {example}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


class ServeConfig(_Strict):
    """`journeys serve`'s own settings."""

    trail_days: int = Field(default=30, ge=0)  # days a user's trail is kept (engine.daemon.trail); 0: none
    # days the growing logs are kept (engine.store.retention): the action log, settled outbox entries
    actions_days: int = Field(default=90, ge=1)
    outbox_days: int = Field(default=30, ge=1)
    # where the deliveries run (engine.daemon.deliveries.process): a process of their own, on another core,
    # or a thread of the daemon's process (one core for everything; same deliveries)
    deliveries: Literal["process", "thread"] = "process"


class JourneysConfig(_Strict):
    """`[journeys]`: the project's journeys as a whole."""

    # which journey acts first when several react to one event at one moment (and so which of their
    # sends a shared cap lets through); journeys not listed come after, in file order
    order: list[str] = Field(default_factory=list)


RETRAIN = "0 3 * * mon"  # the models' default training schedule: Mondays at 03:00 UTC


class ModelsConfig(_Strict):
    """`[models]`: the predictive models (docs/language.md#predictions)."""

    # when the models retrain (a 5-field cron expression, UTC): the daemon on this schedule, the
    # dry-run at the same moments of its virtual clock
    retrain: str = RETRAIN

    @field_validator("retrain")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger  # only a project that sets it pays for the import

        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a cron expression of 5 fields (minute hour day month weekday), "
                             f"e.g. {RETRAIN!r}")
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as e:
            raise ValueError(f"{value!r} is not a cron expression: {e}") from None
        return value


class ConnectorConfig(BaseModel):
    """A connector's own settings vary by type; the common fields are checked here."""

    model_config = ConfigDict(extra="allow")
    channel: Literal["email", "push", "sms", "ads", "webhook"]
    type: str
    default: bool = False

    @property
    def settings(self) -> dict:
        return dict(self.model_extra or {})


class AudienceConfig(_Strict):
    sync: list[str] = Field(default_factory=list)


class WebhookConfig(_Strict):
    url: str
    secret_env: str | None = None
    timeout: str = "10s"
    headers: dict[str, str] = Field(default_factory=dict)


class ProjectConfig(_Strict):
    project: ProjectMeta = Field(default_factory=ProjectMeta)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    journeys: JourneysConfig = Field(default_factory=JourneysConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    audiences: dict[str, AudienceConfig] = Field(default_factory=dict)
    webhooks: dict[str, WebhookConfig] = Field(default_factory=dict)

    def connectors_for(self, channel: str) -> list[str]:
        return [name for name, c in self.connectors.items() if c.channel == channel]

    def default_connector(self, channel: str) -> str | None:
        """The connector a `send` of `channel` without `via` uses: the one marked `default = true`,
        or the channel's only connector. The checker and the dispatcher share this one rule."""
        named = self.connectors_for(channel)
        marked = [n for n in named if self.connectors[n].default]
        return (marked or named)[0] if marked or len(named) == 1 else None

    def secrets(self) -> list[tuple[tuple[str, ...], str]]:
        """Every secret the configuration names: (the field's key path, the environment variable)."""
        out: list[tuple[tuple[str, ...], str]] = []
        for name, c in self.connectors.items():
            for key, value in sorted(c.settings.items()):
                if key.endswith("_env") and isinstance(value, str):
                    out.append((("connectors", name, key), value))
        for name, w in self.webhooks.items():
            if w.secret_env:
                out.append((("webhooks", name, "secret_env"), w.secret_env))
        for var in self.ingest.write_keys_env:
            out.append((("ingest", "write_keys_env"), var))
        return out


def load_config(path: Path, display: str, diags: Diagnostics) -> ProjectConfig:
    """The project's configuration; a broken file gives diagnostics and an empty configuration."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ProjectConfig()
    except (OSError, UnicodeDecodeError) as e:
        diags.error("J040", f"cannot read journeys.toml: {e}", Span.point(display, 1, 1))
        return ProjectConfig()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "invalid TOML"
        diags.error("J040", f"journeys.toml is not valid TOML: {msg}", Span.point(display, line, col))
        return ProjectConfig()
    lines = text.splitlines()
    secrets = set()
    for loc, key in _inline_secrets(data):
        secrets.add(loc)
        line, col = locate(lines, loc)
        diags.error("J040", f"`{'.'.join(loc)}` looks like a secret written into journeys.toml",
                    Span.point(display, line, col, len(key)),
                    f"put it in an environment variable and write `{key}_env = \"VAR_NAME\"`")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            if loc in secrets:
                continue
            line, col = locate(lines, loc)
            field = ".".join(loc)
            if err["type"] == "extra_forbidden":
                diags.error("J040", f"journeys.toml: unknown field `{field}`", Span.point(display, line, col, len(loc[-1])),
                            did_you_mean(loc[-1], _known_fields(loc[:-1])))
            else:
                diags.error("J040", f"journeys.toml: `{field}`: {err['msg'].lower()}", Span.point(display, line, col, len(loc[-1])))
        return _salvage(data)


def _known_fields(parent: tuple[str, ...]) -> list[str]:
    """Field names valid at a key path, for "did you mean"."""
    model: type[BaseModel] = ProjectConfig
    for part in parent:
        field = model.model_fields.get(part)
        if field is None:
            # a named entry: connectors.NAME, audiences.NAME, webhooks.NAME
            model = {"connectors": ConnectorConfig, "audiences": AudienceConfig, "webhooks": WebhookConfig}.get(parent[0], model)
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return list(model.model_fields)


def _inline_secrets(data: dict, prefix: tuple[str, ...] = ()):
    for key, value in data.items():
        loc = prefix + (key,)
        if isinstance(value, dict):
            yield from _inline_secrets(value, loc)
        elif isinstance(value, str) and not key.endswith("_env") and any(w in key.lower() for w in SECRET_WORDS):
            yield loc, key


def _salvage(data: dict) -> ProjectConfig:
    """Keep the entries that are valid, so that one bad connector does not hide the others."""
    cfg = ProjectConfig()
    for section, model in (("connectors", ConnectorConfig), ("audiences", AudienceConfig), ("webhooks", WebhookConfig)):
        raw = data.get(section)
        if not isinstance(raw, dict):
            continue
        good = {}
        for name, value in raw.items():
            try:
                good[name] = model.model_validate(value)
            except ValidationError:
                pass
        setattr(cfg, section, good)
    return cfg


def declared_names(path: Path) -> dict[str, set[str]]:
    """Names declared per section, valid or not: a reference to a broken entry is not "unknown"."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return {k: set(v) for k, v in data.items() if isinstance(v, dict)}


def locate(lines: list[str], loc: tuple[str, ...]) -> tuple[int, int]:
    """Line and column of a key path such as ("connectors", "smtp", "port"): the table header, then the key."""
    header_line = 0
    for depth in range(len(loc), 0, -1):
        table = ".".join(loc[:depth])
        pat = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
        for i, text in enumerate(lines):
            if pat.match(text):
                header_line = i + 1
                rest = loc[depth:]
                if not rest:
                    return header_line, text.index("[") + 1
                key_pat = re.compile(r"^\s*" + re.escape(rest[0]) + r"\s*=")
                for j in range(i + 1, len(lines)):
                    if lines[j].lstrip().startswith("["):
                        break
                    if key_pat.match(lines[j]):
                        return j + 1, len(lines[j]) - len(lines[j].lstrip()) + 1
                return header_line, 1
    key_pat = re.compile(r"^\s*" + re.escape(loc[-1]) + r"\s*=") if loc else None
    for i, text in enumerate(lines):
        if key_pat and key_pat.match(text):
            return i + 1, len(text) - len(text.lstrip()) + 1
    return 1, 1
