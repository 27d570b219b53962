"""Signed per-user unsubscribe links: `{public_url}/u/{token}`, served by the daemon.

A token names a user and a channel and carries an HMAC-SHA256 over them, so a link can neither
be guessed nor edited into someone else's; it needs no database row and never expires (an
unsubscribe link must keep working long after the message was sent).

    token = base64url(payload) "." base64url(HMAC-SHA256(secret, "journeys-unsubscribe-v1" NUL payload))
    payload = compact JSON ["user id", "channel"]

The secret comes from the environment variable `JOURNEYS_UNSUBSCRIBE_SECRET` (at least 16 bytes;
`python -c "import secrets; print(secrets.token_urlsafe(32))"` makes one). Changing it invalidates
every link already sent, so keep it as long as those emails may be read. The base URL is
`[project] public_url` in journeys.toml: the address where the daemon is reachable from the
internet, https in production (RFC 8058 one-click unsubscribe requires an https link).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError

SECRET_ENV = "JOURNEYS_UNSUBSCRIBE_SECRET"
MIN_SECRET_BYTES = 16
_DOMAIN = b"journeys-unsubscribe-v1\x00"  # so this MAC can never be replayed as another signature
_MAX_TOKEN = 2048


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"the unsubscribe secret must be at least {MIN_SECRET_BYTES} bytes long "
                                 f"(set {SECRET_ENV})")
    return key


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def sign(user_id: str, channel: str, secret: str | bytes) -> str:
    """A token for this user and channel. Deterministic: the same inputs give the same token."""
    payload = json.dumps([str(user_id), str(channel)], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(_key(secret), payload))}"


def verify(token: str, secret: str | bytes) -> tuple[str, str] | None:
    """(user_id, channel) if the token was signed with this secret, else None. Never raises on a
    bad token (it comes from a URL anyone can type); a bad secret is a configuration error."""
    key = _key(secret)
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or token.count(".") != 1:
        return None
    body, _, sig = token.partition(".")
    try:
        payload, given = _unb64(body), _unb64(sig)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(_mac(key, payload), given):
        return None
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        return None
    return value[0], value[1]


def link(base_url: str, token: str) -> str:
    """The unsubscribe URL the daemon serves: `{base_url}/u/{token}`."""
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigurationError(f"`[project] public_url` must be an http(s) URL such as "
                                 f"https://journeys.example.com, not {base_url!r}")
    return f"{base_url.rstrip('/')}/u/{token}"


def secret_from(env: Mapping[str, str]) -> str:
    """The signing secret from the environment, or a ConfigurationError saying what to set."""
    secret = env.get(SECRET_ENV, "")
    if not secret:
        raise ConfigurationError(f"emails need an unsubscribe link: set the environment variable {SECRET_ENV} "
                                 "to a long random string")
    _key(secret)
    return secret


def url_for(user_id: str, channel: str, *, public_url: str | None, secret: str | bytes) -> str:
    """The signed unsubscribe URL of one user on one channel."""
    if not public_url:
        raise ConfigurationError("emails need an unsubscribe link: set `public_url` under [project] in "
                                 "journeys.toml to the address where the daemon is reachable")
    return link(public_url, sign(user_id, channel, secret))
