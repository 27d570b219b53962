"""Meta Custom Audiences: `add user to audience` / `remove user from audience` as the Marketing API
documents them (Custom Audience Users, `/{custom_audience_id}/users`).

    [connectors.meta]
    channel = "ads"
    type = "meta_custom_audiences"
    ad_account_id = "act_123"                  # for logs; the audience ids below belong to it
    access_token_env = "META_ACCESS_TOKEN"     # a system-user token with ads_management
    app_secret_env = "META_APP_SECRET"         # optional: adds appsecret_proof to every call
    api_version = "v25.0"                      # optional
    audiences = { hot_browsers = "23851234567890123", warm_browsers = "23851234567890456" }
    # match_keys = ["EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY"]   # the default; add "MADID"
    # batch_size = 10000                       # rows per request; Meta takes at most 10,000
    # timeout = "60s"

`audiences` maps each journeys audience name to the id of a customer-file Custom Audience created
in Ads Manager (or with `POST act_<id>/customaudiences`); an audience synced to this connector
without an id here fails with ConfigurationError.

The request. Adding is `POST https://graph.facebook.com/{version}/{audience_id}/users`, removing is
`DELETE` of the same path, both with the form fields Meta's example shows:

    payload = {"schema": ["EMAIL", "PHONE", "FN", ...], "data": [["<sha256>", "<sha256>", ""], ...]}
    session = {"session_id": <int64>, "batch_seq": 1, "last_batch_flag": false,
               "estimated_num_total": <rows so far>}

The schema is Meta's multi-key schema: every row lists the same keys, a missing value is "". Each
value is normalised by Meta's rules (`connectors.identifiers`) and hashed with SHA-256; no email
address or phone number is ever sent in clear. MADID is off by default: Meta documents it as sent
unhashed (lower-cased), so it is only sent when `match_keys` names it. The access token travels in
the `Authorization: Bearer` header, not in the URL or the body.

Erasure. The removal queued when a user is forgotten (engine.daemon.erasure) must not keep the
user's traits in the store while Meta is unreachable: it carries `erasure_identifiers`, the row
above (each value hashed, MADID only when `match_keys` names it) under `PLATFORM`, taken from the
profile before it was deleted, and `deliver` sends that row as it is, the same bytes a removal read
from the profile sends. A carried value that should be a hash and is not SHA-256 hex is left out.

Batching. `deliver` queues a delivery into its audience's add or remove batch and returns
`Result(queued=True)`; a batch reaching `batch_size` (at most 10,000 rows, Meta's limit per request)
is sent at once; `flush` sends what is left and returns, per action id, its Result or error,
including those of batches sent earlier by `deliver`. The batches of one audience and direction
between two flushes are one upload session: one session_id, batch_seq 1, 2, 3..., and the batch sent
by `flush` carries last_batch_flag = true. (If the last batch was sent full by `deliver`, nothing
is left for `flush` and Meta closes the open session itself after its inactivity timeout.)

Errors, from Graph API's error `code` (Handling Errors; Custom Audience Users' error codes):
190 and 102 (token expired or invalid), 10, 200-299 and 294 (permissions) -> ConfigurationError;
1, 2 (service down), 4, 17, 32, 341, 613, 80003 (rate limits) and 368 (temporarily blocked), an error
marked `is_transient`, HTTP 5xx, timeouts and connection errors -> RetryableError, with the wait
taken from Retry-After or from X-Business-Use-Case-Usage's estimated_time_to_regain_access;
100 (invalid parameter), 105, 2650 and anything else -> PermanentError. A request that fails gives
its error to every action in it. When Meta accepts a request but reports `num_invalid_entries`,
the rows whose hashes appear in `invalid_entry_samples` fail with InvalidRecipient and the others
succeed with the counts in their Result's detail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import httpx

from . import identifiers as ids
from .base import Delivery, Result, audience_profile, check_settings
from .errors import (
    ConfigurationError,
    DeliveryError,
    InvalidRecipient,
    PermanentError,
    RetryableError,
    parse_retry_after,
)
from .webhook import parse_duration

GRAPH_URL = "https://graph.facebook.com"
API_VERSION = "v25.0"
MAX_ROWS = 10_000  # Meta: "only up to 10000 at a time"

KEYS = ("EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY", "MADID")
DEFAULT_KEYS = ("EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY")
MATCHING_KEYS = ("EMAIL", "PHONE", "MADID")  # a row needs one of these to be matchable
UNHASHED_KEYS = ("MADID",)
SETTINGS = {"ad_account_id", "access_token_env", "app_secret_env", "api_version", "audiences", "match_keys",
            "batch_size", "timeout", "base_url"}

PLATFORM = "meta"  # the key of Meta's row in what an erasure removal carries

_CONFIG_CODES = {10, 102, 190, 294} | set(range(200, 300))
_RETRY_CODES = {1, 2, 4, 17, 32, 341, 368, 613, 80003}


def meta_row(profile: Mapping[str, Any], keys: tuple[str, ...] = DEFAULT_KEYS) -> dict[str, str]:
    """The normalised, hashed values of a profile, by Meta schema key (absent keys left out)."""
    country = profile.get("country")
    raw = {
        "EMAIL": ids.meta_email(profile.get("email")),
        "PHONE": ids.meta_phone(profile.get("phone"), country),
        "FN": ids.meta_name(profile.get("first_name")),
        "LN": ids.meta_name(profile.get("last_name")),
        "ZIP": ids.meta_zip(profile.get("zip"), country),
        "COUNTRY": ids.meta_country(country),
        "MADID": ids.meta_madid(profile.get("mobile_advertising_id")),
    }
    return {k: (v if k in UNHASHED_KEYS else ids.sha256_hex(v))
            for k, v in raw.items() if v and k in keys}


def erasure_identifiers(profile: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the removal of a forgotten user carries for a connector of this type with `settings`
    (its `[connectors.NAME]` table): the row `deliver` sends for that profile, under `PLATFORM`."""
    return {PLATFORM: meta_row(profile, tuple(settings.get("match_keys", DEFAULT_KEYS)))}


def _carried_row(carried: Any, keys: tuple[str, ...]) -> dict[str, str]:
    """The row an erasure removal carries, as `meta_row` gives it: the connector's keys, each a
    SHA-256 hex digest (MADID as it is)."""
    if not isinstance(carried, Mapping):
        return {}
    return {k: v for k, v in carried.items() if k in keys and isinstance(v, str)
            and (k in UNHASHED_KEYS or ids.is_sha256_hex(v))}


@dataclass
class _Session:
    session_id: int = field(default_factory=lambda: secrets.randbits(63) or 1)
    seq: int = 0
    sent: int = 0


class MetaCustomAudiences:
    channel = "ads"

    def __init__(self, name: str, *, access_token: str | None, audiences: Mapping[str, str],
                 ad_account_id: str | None = None, app_secret: str | None = None,
                 api_version: str = API_VERSION, base_url: str = GRAPH_URL,
                 match_keys: tuple[str, ...] | list[str] = DEFAULT_KEYS, batch_size: int = MAX_ROWS,
                 timeout: float = 60.0, missing: str | None = None):
        self.name = name
        self.ad_account_id = ad_account_id
        self._token = access_token
        self._missing = missing  # why there is no token, for the ConfigurationError
        self._app_secret = app_secret
        self.audiences = dict(audiences)
        self.api_version = api_version
        self.base_url = base_url.rstrip("/")
        unknown = [k for k in match_keys if k not in KEYS]
        if unknown:
            raise ConfigurationError(f"{name}: unknown match_keys {unknown}; Meta's keys here are {list(KEYS)}")
        self.match_keys = tuple(k for k in KEYS if k in match_keys)
        if not 1 <= batch_size <= MAX_ROWS:
            raise ConfigurationError(f"{name}: batch_size must be 1..{MAX_ROWS} (Meta's limit per request)")
        self.batch_size = batch_size
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=10, max_keepalive_connections=5))
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {}
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._done: list[tuple[str, Result | Exception]] = []

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], env: Mapping[str, str] | None = None,
                      **overrides: Any) -> "MetaCustomAudiences":
        """From a `[connectors.NAME]` table's settings (`ConnectorConfig.settings`)."""
        env = os.environ if env is None else env
        check_settings(name, "meta_custom_audiences", settings, SETTINGS)
        token_env = settings.get("access_token_env")
        token = env.get(token_env) if token_env else None
        missing = None
        if not token:
            missing = (f"the environment variable {token_env} (access_token_env) is not set" if token_env
                       else "access_token_env is not set")
        secret_env = settings.get("app_secret_env")
        kwargs: dict[str, Any] = dict(
            access_token=token, missing=missing, audiences=settings.get("audiences") or {},
            ad_account_id=settings.get("ad_account_id"),
            app_secret=env.get(secret_env) if secret_env else None,
            api_version=settings.get("api_version", API_VERSION),
            match_keys=tuple(settings.get("match_keys", DEFAULT_KEYS)),
            batch_size=int(settings.get("batch_size", MAX_ROWS)),
        )
        if "base_url" in settings:
            kwargs["base_url"] = settings["base_url"]
        if "timeout" in settings:
            kwargs["timeout"] = parse_duration(settings["timeout"])
        kwargs.update(overrides)
        return cls(name, **kwargs)

    # ------------------------------------------------------------------ protocol

    def deliver(self, delivery: Delivery) -> Result:
        if delivery.kind not in ("audience_add", "audience_remove"):
            raise PermanentError(f"{self.name} syncs audiences; it cannot deliver a {delivery.kind}")
        if not self._token:
            raise ConfigurationError(f"{self.name}: {self._missing}")
        audience_id = self.audiences.get(delivery.target)
        if not audience_id:
            raise ConfigurationError(
                f"{self.name}: no Meta audience id for audience {delivery.target!r}; add it to "
                f"[connectors.{self.name}] audiences = {{ {delivery.target} = \"<custom audience id>\" }}")
        carried = ids.prehashed(delivery.data, PLATFORM)
        row = (meta_row(audience_profile(delivery), self.match_keys) if carried is None
               else _carried_row(carried, self.match_keys))
        if not any(k in row for k in MATCHING_KEYS):
            raise InvalidRecipient(f"the profile has no {', '.join(k for k in MATCHING_KEYS if k in self.match_keys)} "
                                   "Meta can match on (or none in a valid form)")
        op = "add" if delivery.kind == "audience_add" else "remove"
        key = (str(audience_id), op)
        with self._lock:
            batch = self._batches.setdefault(key, [])
            batch.append((delivery.action_id, row))
            if len(batch) >= self.batch_size:
                del self._batches[key]
                self._done.extend(self._send(key, batch, last=False))
        return Result(queued=True, detail=f"queued for Meta audience {audience_id} ({op})")

    def flush(self) -> list[tuple[str, Result | Exception]]:
        with self._lock:
            batches, self._batches = self._batches, {}
            for key, batch in batches.items():
                self._done.extend(self._send(key, batch, last=True))
            self._sessions.clear()  # a session ends with its flush (the last batch, or Meta's timeout)
            done, self._done = self._done, []
        return done

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ one request

    def _send(self, key: tuple[str, str], batch: list[tuple[str, dict[str, str]]], *, last: bool
              ) -> list[tuple[str, Result | Exception]]:
        audience_id, op = key
        session = self._sessions.setdefault(key, _Session())
        session.seq += 1
        session.sent += len(batch)
        schema = [k for k in self.match_keys if any(k in row for _, row in batch)]
        payload = {"schema": schema, "data": [[row.get(k, "") for k in schema] for _, row in batch]}
        sess = {"session_id": session.session_id, "batch_seq": session.seq, "last_batch_flag": last,
                "estimated_num_total": session.sent}
        form = {"payload": json.dumps(payload, separators=(",", ":")),
                "session": json.dumps(sess, separators=(",", ":"))}
        if self._app_secret:
            form["appsecret_proof"] = hmac.new(self._app_secret.encode(), self._token.encode(),
                                               hashlib.sha256).hexdigest()
        url = f"{self.base_url}/{self.api_version}/{audience_id}/users"
        try:
            response = self._client.request("POST" if op == "add" else "DELETE", url, data=form,
                                            headers={"Authorization": f"Bearer {self._token}"})
        except httpx.TimeoutException as e:
            return _all(batch, RetryableError(f"Meta did not answer in time: {e}"))
        except httpx.HTTPError as e:
            return _all(batch, RetryableError(f"could not reach Meta: {e}"))
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400 or not isinstance(answer, dict) or "error" in answer:
            return _all(batch, graph_error(response, answer))
        return self._outcomes(batch, answer, audience_id, session, op)

    def _outcomes(self, batch, answer: dict, audience_id: str, session: _Session, op: str):
        received = answer.get("num_received", len(batch))
        invalid = int(answer.get("num_invalid_entries") or 0)
        samples = answer.get("invalid_entry_samples") or {}
        if isinstance(samples, dict):
            reasons = {str(k): str(v) for k, v in samples.items()}
        else:
            reasons = {str(s if not isinstance(s, list) else s[0]): "invalid entry" for s in samples}
        provider_id = f"{audience_id}/sessions/{answer.get('session_id', session.session_id)}#{session.seq}"
        summary = f"Meta {op} batch {session.seq}: {received} received, {invalid} invalid"
        out: list[tuple[str, Result | Exception]] = []
        blamed = 0
        for action_id, row in batch:
            hit = next((reasons[v] for v in row.values() if v in reasons), None)
            if hit is not None:
                blamed += 1
                out.append((action_id, InvalidRecipient(f"Meta rejected this entry: {hit}", status=200,
                                                        answer=json.dumps(answer)[:2000])))
            else:
                out.append((action_id, Result(provider_id=provider_id, detail=summary)))
        if invalid > blamed:
            note = f"; {invalid - blamed} invalid entries Meta did not identify"
            out = [(a, Result(r.provider_id, r.detail + note)) if isinstance(r, Result) else (a, r) for a, r in out]
        return out


def _all(batch, error: Exception) -> list[tuple[str, Result | Exception]]:
    return [(action_id, error) for action_id, _ in batch]


def graph_error(response: httpx.Response, answer: Any) -> DeliveryError:
    """The error a Graph API answer means, by its error code first and its HTTP status second."""
    status = response.status_code
    text = response.text[:2000]
    err = answer.get("error") if isinstance(answer, dict) else None
    wait = parse_retry_after(response.headers.get("Retry-After")) or _regain_access(response)
    if not isinstance(err, dict):
        if status == 429 or status >= 500 or status == 408:
            return RetryableError("Meta failed" if status >= 500 else "Meta asked to retry",
                                  status=status, answer=text, retry_after=wait)
        if status in (401, 403):
            return ConfigurationError("Meta refused the credentials", status=status, answer=text)
        return PermanentError("Meta refused the request", status=status, answer=text)
    code = err.get("code")
    message = f"Meta error {code}" + (f"/{err['error_subcode']}" if err.get("error_subcode") else "") \
        + f": {err.get('error_user_msg') or err.get('message') or 'no message'}"
    if code in _CONFIG_CODES:
        return ConfigurationError(message, status=status, answer=text)
    if code in _RETRY_CODES or err.get("is_transient") or status >= 500 or status == 429:
        return RetryableError(message, status=status, answer=text, retry_after=wait)
    return PermanentError(message, status=status, answer=text)


def _regain_access(response: httpx.Response) -> float | None:
    """Seconds until a throttled app may call again, from X-Business-Use-Case-Usage (minutes)."""
    header = response.headers.get("X-Business-Use-Case-Usage")
    if not header:
        return None
    try:
        usage = json.loads(header)
        minutes = [entry.get("estimated_time_to_regain_access") or 0
                   for entries in usage.values() for entry in entries]
    except (ValueError, AttributeError, TypeError):
        return None
    longest = max(minutes, default=0)
    return float(longest) * 60 if longest else None
