"""The shapes of the operator's and the health routes' answers, for /openapi.json.

They only document, as the ingest's models do (engine.daemon.ingest): each route builds its body
itself (engine.daemon.api, engine.daemon.worker.add_health). They are written to be true rather
than tight: every field a route always writes is required, the fields it writes only sometimes are
optional, and objects whose keys are data (traits, counts, a trail line's effect fields) are open.
tests/test_openapi_fuzz.py holds the running daemon's answers to them (schemathesis'
response_schema_conformance), so a route that changes its body without its model fails there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DaemonError(_Open):
    """Every JSON error of the daemon (engine.daemon.ingest.error_body); FastAPI's own (404, 405,
    422) also keep its `detail`."""

    error: str
    code: str = Field(description="What went wrong, for machines: unauthorized, forbidden, not_found, "
                                  "invalid_request, ...")
    message: str = Field(description="The same sentence as `error`.")
    field: str | None = Field(None, description="The parameter at fault, when one is.")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """The bare readiness a load balancer reads: nothing about the journeys."""

    ready: bool


class Readiness(_Open):
    """`GET /admin/readyz`: why the daemon is (not) ready, and what it runs."""

    ready: bool
    store: Literal["open", "closed"]
    loops: Literal["running", "stopped"]
    heartbeat_age_s: float = Field(description="Seconds since the processor finished a round.")
    delivery_heartbeat_age_s: float | None = Field(description="Seconds since the deliveries' last heartbeat.")
    stalled: str | None = Field(None, description="Why the processor counts as stuck.")
    last_seq: int | None = Field(None, description="The inbox's last message (PostgreSQL: rows waiting).")
    processed: int | None = None
    inbox_lag: int | None = Field(None, description="Messages accepted, not yet processed.")
    inbox_error: str | None = Field(None, description="Why the inbox could not be read.")
    partitions: dict[str, Any] | None = Field(None, description="A cluster's worker: the partitions it holds.")
    counts: dict[str, int] = Field(description="This process's counts by kind (received.track, action.email.sent, ...).")
    versions: dict[str, str] = Field(description="The version new entries of each journey take.")
    reload_errors: list[str] = Field(default_factory=list, description="The last failed reload's problems.")
    reloads: dict[str, int] | None = Field(None, description="Hot reloads: ok, failed.")


class Profile(BaseModel):
    """`GET /v1/profile/{user_id}`."""

    userId: str
    traits: dict[str, Any]


class UserView(_Open):
    userId: str
    traits: dict[str, Any]
    aliases: list[str]
    audiences: list[str]
    segments: dict[str, Any]
    journeys: list[dict[str, Any]] = Field(description="Journeys in flight: journey, version, path, wait, ...")
    next_wake: Any = Field(description="When the user's next timer fires, or null.")
    recent_actions: list[dict[str, Any]] = Field(description="The newest actions, each with what became of its delivery.")


class Trace(_Open):
    userId: str
    ids: list[str] = Field(description="The profile's id and its aliases, whose trail this is.")
    trail: list[dict[str, Any]] = Field(description="Oldest first: {time, line, effect, ...}.")


class StepCount(BaseModel):
    version: str
    path: str | None
    wait: str | None
    users: int


class JourneyCount(BaseModel):
    journey: str
    in_flight: int
    steps: list[StepCount]


class JourneyCounts(BaseModel):
    journeys: list[JourneyCount]


class OutboxEntry(_Open):
    id: str
    action_id: str
    connector: str
    user_id: str
    kind: str
    target: str
    state: str
    attempts: int
    last_error: str | None
    created: str
    next_at: str


class DeadLetters(BaseModel):
    entries: list[OutboxEntry]


class SetAside(BaseModel):
    seq: int
    error: str
    at: Any
    message: Any = Field(description="The message as stored (its text when it no longer parses).")


class FailedMessages(BaseModel):
    messages: list[SetAside]


class Retried(BaseModel):
    id: str
    state: Literal["pending"]


class Requeued(BaseModel):
    seq: int
    state: Literal["requeued"]


class Forgotten(_Open):
    userId: str
    forgotten: list[str] = Field(description="Every id erased (the user's and its aliases).")
    deleted: dict[str, int] = Field(description="Rows deleted (or pseudonymised) by table.")
    audiences_removed: list[dict[str, Any]]
    audiences_not_removed: list[str] = Field(description="Audiences no connector syncs to.")
