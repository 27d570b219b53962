"""Firebase Cloud Messaging, HTTP v1 API: push to Android, iOS and web apps registered with FCM.

    [connectors.fcm]
    channel = "push"
    type = "fcm"
    project_id = "shop-prod"              # optional: defaults to the service account's project
    credentials_env = "FCM_CREDENTIALS"   # the service account JSON, or the path to its file
    # ttl = 86400                         # optional: seconds FCM keeps an undelivered message
    # timeout = 10                        # optional: seconds per HTTP request
    # base_url = "https://fcm.googleapis.com"   # optional: another endpoint (tests, proxies)

Sending: `POST {base_url}/v1/projects/{project_id}/messages:send` with `Authorization: Bearer
<access token>` and `{"message": {"token", "notification": {title, body, image}, "data": {str:
str}, "webpush": {"fcm_options": {"link"}}, ...}}`; FCM answers `{"name": "projects/.../messages/
..."}`, which is the result's provider id. The url of the push goes to web apps as the
notification's link (HTTPS only, as FCM requires) and to every app as `data["url"]`; an image also
sets APNs' `mutable-content` so that an iOS notification service extension can fetch it.

Access tokens: the OAuth 2.0 JWT-bearer grant of a Google service account. A JWT (RS256, `kid` =
the key's id) with iss = client_email, scope = firebase.messaging, aud = the account's token_uri,
iat and exp one hour apart, is posted to `token_uri`; the access token it returns is cached and
fetched again five minutes before it expires (under a lock: threads share one token).

Recipients: the profile traits `push_tokens` (a list) and `push_token`; one send per token (see
`connectors._push` for how a delivery to several devices turns out, and for where the rendered
message is read from the delivery).

Errors, as FCM documents them (the FcmError `errorCode` in the answer's details, else its status):
UNREGISTERED or 404 → `InvalidRecipient(stale=<the token>)`; INVALID_ARGUMENT (400) and
SENDER_ID_MISMATCH (403) → `PermanentError`; 401 → the access token is fetched again once, then
`ConfigurationError` (as for THIRD_PARTY_AUTH_ERROR, the app's APNs or web push credentials in
Firebase, and PERMISSION_DENIED); QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500) and any
5xx → `RetryableError` with the Retry-After FCM sent; timeouts and connection errors →
`RetryableError`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ._push import DeliveredMemo, PushMessage, PushResult, fan_out, profile_list, push_message
from .base import Delivery, check_settings
from .errors import (ConfigurationError, DeliveryError, InvalidRecipient, PermanentError, RetryableError,
                     from_http_status, parse_retry_after)
from .http import Answer, Http, HttpTimeout, HttpUnreachable

__all__ = ["FcmConnector", "PushMessage", "PushResult", "ServiceAccountTokens", "fcm_message"]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME = 3600  # Google accepts at most one hour between iat and exp
REFRESH_EARLY = 300        # fetch a new access token this many seconds before the old one expires
RESERVED_DATA_KEYS = ("from", "notification", "message_type")  # and "gcm"/"google" prefixes

SETTINGS = {"project_id", "credentials_env", "base_url", "ttl", "timeout"}


class ServiceAccountTokens:
    """OAuth 2.0 access tokens for a Google service account (JWT-bearer grant), cached and
    refreshed before they expire. Thread-safe: one fetch at a time, shared by all senders."""

    def __init__(self, account: Mapping[str, Any], client: Http, *, scope: str = SCOPE,
                 clock: Callable[[], float] = time.time):
        try:
            self.email = account["client_email"]
            key_pem = account["private_key"]
        except KeyError as e:
            raise ConfigurationError(f"the service account has no `{e.args[0]}`") from None
        try:
            self._key = load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError) as e:
            raise ConfigurationError(f"the service account's private_key is not a PEM private key: {e}") from None
        self.token_uri = account.get("token_uri") or DEFAULT_TOKEN_URI
        self._kid = account.get("private_key_id")
        self._client, self._scope, self._clock = client, scope, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` (the provider refused it); a token fetched meanwhile by another thread stays."""
        with self._lock:
            if self._token == token:
                self._token = None

    def assertion(self, now: float) -> str:
        claims = {"iss": self.email, "scope": self._scope, "aud": self.token_uri,
                  "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME}
        headers = {"kid": self._kid} if self._kid else None
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)

    def _fetch(self) -> None:
        now = self._clock()
        try:
            r = self._client.post(self.token_uri, data={"grant_type": GRANT_TYPE, "assertion": self.assertion(now)},
                                  headers={"Accept": "application/json"})
        except HttpTimeout as e:
            raise RetryableError(f"the OAuth token endpoint timed out: {e}") from None
        except HttpUnreachable as e:
            raise RetryableError(f"cannot reach the OAuth token endpoint: {e}") from None
        if r.status_code != 200:
            retry_after = parse_retry_after(r.headers.get("Retry-After"))
            if r.status_code in (400, 401, 403):  # invalid_grant, invalid_client...: the account is wrong
                raise ConfigurationError("the OAuth token endpoint refused the service account",
                                         status=r.status_code, answer=r.text[:2000])
            err = from_http_status(r.status_code, r.text[:2000], retry_after)
            err.message = f"the OAuth token endpoint: {err.message}"
            raise err
        try:
            answer = r.json()
            token = answer["access_token"]
            lifetime = float(answer.get("expires_in", ASSERTION_LIFETIME))
        except (ValueError, KeyError, TypeError):
            raise RetryableError("the OAuth token endpoint sent no access token",
                                 status=r.status_code, answer=r.text[:2000]) from None
        self._token = token
        # refresh five minutes early; a token living less than ten minutes is refreshed at half-life
        self._refresh_at = now + lifetime - min(REFRESH_EARLY, lifetime / 2)


def load_service_account(env_name: str, env: Mapping[str, str] | None = None) -> dict:
    """The service account JSON from the environment variable `env_name`: the JSON itself or a path."""
    env = os.environ if env is None else env
    raw = env.get(env_name)
    if not raw or not raw.strip():
        raise ConfigurationError(f"the environment variable {env_name} (credentials_env) is not set")
    raw = raw.strip()
    if not raw.startswith("{"):
        try:
            raw = Path(raw).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigurationError(f"{env_name} names a service account file that cannot be read: {e.strerror}") from None
    try:
        account = json.loads(raw)
    except ValueError as e:
        raise ConfigurationError(f"the service account in {env_name} is not valid JSON: {e}") from None
    if not isinstance(account, dict):
        raise ConfigurationError(f"the service account in {env_name} is not a JSON object")
    return account


def fcm_message(token: str, msg: PushMessage, *, ttl: int | None = None) -> dict:
    """The body of projects.messages.send for one registration token."""
    message: dict[str, Any] = {"token": token}
    notification = {k: v for k, v in (("title", msg.title), ("body", msg.body), ("image", msg.image)) if v}
    if notification:
        message["notification"] = notification
    data = data_strings(msg.data)
    if msg.url and "url" not in data:
        data["url"] = msg.url
    if data:
        message["data"] = data
    webpush: dict[str, Any] = {}
    if msg.url and msg.url.lower().startswith("https://"):
        webpush["fcm_options"] = {"link": msg.url}
    if msg.image:
        message["apns"] = {"payload": {"aps": {"mutable-content": 1}}, "fcm_options": {"image": msg.image}}
    if ttl is not None:
        message["android"] = {"ttl": f"{int(ttl)}s"}
        webpush["headers"] = {"TTL": str(int(ttl))}
        message.setdefault("apns", {})["headers"] = {"apns-expiration": str(int(time.time()) + int(ttl))}
    if webpush:
        message["webpush"] = webpush
    return {"message": message}


def data_strings(data: Mapping[str, Any]) -> dict[str, str]:
    """FCM's data payload is string to string: other values are sent as JSON; reserved keys refused."""
    out: dict[str, str] = {}
    for key, value in data.items():
        key = str(key)
        low = key.lower()
        if low in RESERVED_DATA_KEYS or low.startswith(("gcm", "google")):
            raise PermanentError(f"the push's data key `{key}` is reserved by FCM")
        if value is None:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return out


class FcmConnector:
    channel = "push"

    def __init__(self, name: str = "fcm", *, credentials_env: str, project_id: str | None = None,
                 base_url: str = DEFAULT_BASE_URL, ttl: int | None = None, timeout: float = 10.0,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 transport: Any = None):
        """`transport`: an httpx transport to send through instead of the network (tests)."""
        self.name = name
        account = load_service_account(credentials_env, env)
        self.project_id = project_id or account.get("project_id")
        if not self.project_id:
            raise ConfigurationError("no project_id: set it on the connector (the service account names none)")
        self.url = f"{base_url.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        self.ttl = ttl
        self._http = Http(timeout=timeout, max_connections=100, transport=transport)
        self.tokens = ServiceAccountTokens(account, self._http, clock=clock)
        self._memo = DeliveredMemo()

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], env: Mapping[str, str] | None = None,
                      **kwargs: Any) -> "FcmConnector":
        """From a journeys.toml connector's settings (`ConnectorConfig.settings`)."""
        check_settings(name, "fcm", settings, SETTINGS)
        if not settings.get("credentials_env"):
            raise ConfigurationError(f"connector {name!r} (fcm) needs credentials_env")
        opts = {k: settings[k] for k in ("project_id", "base_url", "ttl", "timeout") if k in settings}
        return cls(name, credentials_env=settings["credentials_env"], env=env, **opts, **kwargs)

    def deliver(self, delivery: Delivery) -> PushResult:
        msg = push_message(delivery)
        tokens = [str(t) for t in profile_list(delivery.profile, "push_tokens", "push_token") if isinstance(t, str)]
        if not tokens:
            raise InvalidRecipient("the profile has no push token (push_tokens or push_token)")
        bodies = {t: fcm_message(t, msg, ttl=self.ttl) for t in tokens}
        return fan_out(delivery.action_id, tokens, lambda t: self._send(t, bodies[t]), self._memo, trait="push_tokens")

    def close(self) -> None:
        self._http.close()

    def _send(self, token: str, body: dict) -> str | None:
        for attempt in range(2):
            access = self.tokens.get()
            try:
                r = self._http.post(self.url, json=body, headers={"Authorization": f"Bearer {access}"})
            except HttpTimeout as e:
                raise RetryableError(f"FCM timed out: {e}") from None
            except HttpUnreachable as e:
                raise RetryableError(f"cannot reach FCM: {e}") from None
            if r.status_code == 200:
                try:
                    return r.json().get("name")
                except ValueError:
                    return None
            code, message = fcm_error(r)
            if r.status_code == 401 and code != "THIRD_PARTY_AUTH_ERROR" and attempt == 0:
                self.tokens.invalidate(access)  # revoked or expired early: fetch a new one, once
                continue
            raise error_for(r, code, message, token)
        raise AssertionError("unreachable")


def fcm_error(r: Answer) -> tuple[str, str]:
    """FCM's error code (the FcmError detail's errorCode, else the status) and message."""
    try:
        error = r.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", str(error)
    code = ""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
            break
    return code or str(error.get("status") or ""), str(error.get("message") or "")


def error_for(r: Answer, code: str, message: str, token: str) -> DeliveryError:
    status, answer = r.status_code, r.text[:2000]
    said = f"{code}: {message}" if code or message else f"HTTP {status}"
    if code == "UNREGISTERED" or status == 404:
        return InvalidRecipient(f"FCM: the registration token is no longer valid ({said})",
                                status=status, answer=answer, stale=token)
    if code == "SENDER_ID_MISMATCH":
        return PermanentError(f"FCM: the token belongs to another sender ({said})", status=status, answer=answer)
    if code == "INVALID_ARGUMENT" or status == 400:
        return PermanentError(f"FCM refused the message ({said})", status=status, answer=answer)
    if code == "THIRD_PARTY_AUTH_ERROR":
        return ConfigurationError(f"FCM: the app's APNs or web push credentials are invalid ({said})",
                                  status=status, answer=answer)
    if status in (401, 403):
        return ConfigurationError(f"FCM refused the service account's credentials ({said})",
                                  status=status, answer=answer)
    retry_after = parse_retry_after(r.headers.get("Retry-After"))
    if code in ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL") or status == 429 or status >= 500:
        return RetryableError(f"FCM asked to retry ({said})", status=status, answer=answer, retry_after=retry_after)
    err = from_http_status(status, answer, retry_after)
    err.message = f"FCM: {err.message} ({said})"
    return err
