"""Per-user unsubscribe links: `{public_url}/u/{token}`, served by the daemon.

A token carries a user and a channel, encrypted and authenticated with AES-SIV (RFC 5297, the
`cryptography` library's AESSIV: AES-256 in SIV mode, a key derived from the secret with HKDF-SHA256),
so a link reveals nothing about the user, in any decoding, and cannot be edited into someone
else's or made without the secret. It needs no database row and never expires: an unsubscribe link
must keep working long after the message was sent.

    token = base64url(AES-SIV(key, ["user id","channel"] padded with spaces to a multiple of 32 bytes))

SIV is deterministic authenticated encryption: the same user and channel give the same token, so a
retried email is the same email. An HTTP email provider refuses a retry under the same
Idempotency-Key whose body changed (Resend's `invalid_idempotent_request`), which a random-IV
scheme such as Fernet would cause; the price, that two links of one user are alike, tells nothing
about who the user is. 64 characters for a short user id; the padding lets the length tell the id's
length only to within 32 bytes.

Secrets (the environment of the daemon, journeys.toml never holds them):
- `JOURNEYS_UNSUBSCRIBE_SECRET`: the secret that mints new links (at least 16 bytes;
  `python -c "import secrets; print(secrets.token_urlsafe(32))"` makes one). Any long random
  string is a secret: the key is derived from it (the variable is the same as before these tokens).
- `JOURNEYS_UNSUBSCRIBE_PREVIOUS_SECRETS`: older secrets, separated by commas or spaces, newest
  first. They mint nothing; links minted under them keep working (the newest key encrypts, a token
  is tried under every listed key). Rotation: put the current secret first in this list, set a new
  current one, and drop an old secret only when no email carrying its links may still be read.

Links of the earlier format (`base64url(["user id","channel"]) "." base64url(HMAC-SHA256)`, which
showed the user id to whoever held one) keep working, verified against every configured secret,
until `JOURNEYS_UNSUBSCRIBE_LEGACY_LINKS=off`: turn them off once the emails sent before the
upgrade are old enough to be unread (a year is generous; CAN-SPAM asks 30 days at least). Nothing
mints them any more.

The base URL is `[project] public_url` in journeys.toml: the address where the daemon is reachable
from the internet, https in production (RFC 8058 one-click unsubscribe requires an https link).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from .errors import ConfigurationError

SECRET_ENV = "JOURNEYS_UNSUBSCRIBE_SECRET"
PREVIOUS_ENV = "JOURNEYS_UNSUBSCRIBE_PREVIOUS_SECRETS"
LEGACY_ENV = "JOURNEYS_UNSUBSCRIBE_LEGACY_LINKS"
MIN_SECRET_BYTES = 16
_INFO = b"journeys-unsubscribe-v2"  # HKDF's context: this key is for these links only
_LEGACY_DOMAIN = b"journeys-unsubscribe-v1\x00"  # the earlier format's MAC prefix
_PAD = 32  # the payload's length, rounded up to this
_MAX_TOKEN = 2048
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_LEGACY = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

Secrets = str | bytes | Sequence[str | bytes]


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"the unsubscribe secret must be at least {MIN_SECRET_BYTES} bytes long "
                                 f"(set {SECRET_ENV}; every one of {PREVIOUS_ENV} too)")
    return key


def _keys(secrets: Secrets) -> list[bytes]:
    """The secrets as keys, newest first: one secret, or a sequence of them."""
    listed = [secrets] if isinstance(secrets, (str, bytes, bytearray)) else list(secrets)
    if not listed:
        raise ConfigurationError(f"no unsubscribe secret: set {SECRET_ENV}")
    return [_key(s) for s in listed]


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keys:
    """The unsubscribe links' secrets: the first (newest) mints, every one verifies."""

    def __init__(self, secrets: Secrets, *, legacy: bool = True):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        self._raw = _keys(secrets)
        self.legacy = legacy
        self._siv = [AESSIV(HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_INFO).derive(k))
                     for k in self._raw]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Keys:
        """The secrets of the environment (module docstring), or a ConfigurationError saying what to set."""
        return cls([secret_from(env), *previous_secrets(env)], legacy=legacy_links(env))

    def sign(self, user_id: str, channel: str) -> str:
        """The token of this user and channel, under the newest secret."""
        payload = json.dumps([str(user_id), str(channel)], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        payload += b" " * (-len(payload) % _PAD)  # JSON allows trailing spaces
        return base64.urlsafe_b64encode(self._siv[0].encrypt(payload, [_INFO])).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> tuple[str, str] | None:
        """(user_id, channel) if the token was minted under one of the secrets (or, while legacy
        links are on, is an earlier link signed with one), else None. Never raises on a bad token:
        it comes from a URL anyone can type."""
        from cryptography.exceptions import InvalidTag

        if not isinstance(token, str) or len(token) > _MAX_TOKEN:
            return None
        if _TOKEN.fullmatch(token):
            try:
                sealed = _unb64(token)
            except (binascii.Error, ValueError):
                return None
            for siv in self._siv:
                try:
                    return _pair(siv.decrypt(sealed, [_INFO]))
                except InvalidTag:
                    continue
            return None
        if self.legacy and _LEGACY.fullmatch(token):
            return self._verify_legacy(token)
        return None

    def _verify_legacy(self, token: str) -> tuple[str, str] | None:
        """A link of the earlier format, against every secret (module docstring)."""
        body, _, sig = token.partition(".")
        try:
            payload, given = _unb64(body), _unb64(sig)
        except (binascii.Error, ValueError):
            return None
        if not any(hmac.compare_digest(hmac.new(k, _LEGACY_DOMAIN + payload, hashlib.sha256).digest(), given)
                   for k in self._raw):
            return None
        return _pair(payload)


def _pair(payload: bytes) -> tuple[str, str] | None:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        return None
    return value[0], value[1]


def sign(user_id: str, channel: str, secret: Secrets) -> str:
    """The token of this user and channel, under `secret` (the first, if several)."""
    return Keys(secret).sign(user_id, channel)


def verify(token: str, secret: Secrets, *, legacy: bool = True) -> tuple[str, str] | None:
    """(user_id, channel) if the token verifies under `secret` (any, if several), else None.
    A bad token gives None; a bad secret is a configuration error."""
    return Keys(secret, legacy=legacy).verify(token)


def link(base_url: str, token: str) -> str:
    """The unsubscribe URL the daemon serves: `{base_url}/u/{token}`."""
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigurationError(f"`[project] public_url` must be an http(s) URL such as "
                                 f"https://journeys.example.com, not {base_url!r}")
    return f"{base_url.rstrip('/')}/u/{token}"


def secret_from(env: Mapping[str, str]) -> str:
    """The secret that mints links, from the environment, or a ConfigurationError saying what to set."""
    secret = env.get(SECRET_ENV, "")
    if not secret:
        raise ConfigurationError(f"emails need an unsubscribe link: set the environment variable {SECRET_ENV} "
                                 "to a long random string")
    _key(secret)
    return secret


def previous_secrets(env: Mapping[str, str]) -> list[str]:
    """The older secrets, newest first (`JOURNEYS_UNSUBSCRIBE_PREVIOUS_SECRETS`, commas or spaces)."""
    return [s for s in re.split(r"[\s,]+", env.get(PREVIOUS_ENV, "")) if s]


def legacy_links(env: Mapping[str, str]) -> bool:
    """Whether links of the earlier format still work: yes unless `JOURNEYS_UNSUBSCRIBE_LEGACY_LINKS`
    is off (or 0, false, no)."""
    return env.get(LEGACY_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def url_for(user_id: str, channel: str, *, public_url: str | None, secret: Secrets | Keys) -> str:
    """The unsubscribe URL of one user on one channel."""
    if not public_url:
        raise ConfigurationError("emails need an unsubscribe link: set `public_url` under [project] in "
                                 "journeys.toml to the address where the daemon is reachable")
    keys = secret if isinstance(secret, Keys) else Keys(secret)
    return link(public_url, keys.sign(user_id, channel))
