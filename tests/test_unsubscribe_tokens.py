"""Opaque unsubscribe tokens (connectors.unsubscribe): a token tells nothing about its user in any
decoding (the token, the rendered link, the bytes an SMTP server on loopback received), cannot be
edited into another user's, survives a rotation of the secret, links of the earlier format keep
working until turned off, and a wrong token is a clean 4xx page from a real `journeys serve`."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import hmac
import json
import re
from urllib.parse import unquote

import httpx
import pytest

from connectors import unsubscribe
from connectors.errors import ConfigurationError
from connectors.unsubscribe import Keys
from engine.store.serialize import state_from_bytes

from .test_daemon import daemons, eventually, rows, tiny_project  # noqa: F401 - fixtures
from .test_smtp import Server

NEW = "the-newest-unsubscribe-secret-0123456789"
OLD = "an-older-unsubscribe-secret-9876543210"
PUBLIC = "https://journeys.example.com"
USERS = ["user_000734", "cust-7Qx9", "u1", "ann@example.com", "usér/😀?&", "0123456789abcdef" * 4]
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def legacy_token(user_id: str, channel: str, secret: str) -> str:
    """A link's token as Journeys minted them before (and as old emails still carry them):
    base64url(["user id","channel"]) "." base64url(HMAC-SHA256(secret, "journeys-unsubscribe-v1" NUL payload))."""
    payload = json.dumps([user_id, channel], separators=(",", ":"), ensure_ascii=False).encode()
    mac = hmac.new(secret.encode(), b"journeys-unsubscribe-v1\x00" + payload, hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(payload)}.{b64(mac)}"


def decodings(text: str) -> list[bytes]:
    """What one could read out of a token or a link: itself, URL-unquoted, and every segment (split
    on anything outside base64url) decoded as base64url and standard base64 at every alignment, and
    as hex."""
    out = [text.encode(), unquote(text).encode()]
    for seg in re.split(r"[^A-Za-z0-9_+/=-]+", unquote(text)):
        seg = seg.rstrip("=")
        for skip in range(4):
            part = seg[skip:]
            part = part[: len(part) - len(part) % 4] if len(part) % 4 == 1 else part
            for decode in (base64.urlsafe_b64decode, base64.b64decode):
                try:
                    out.append(decode(part + "=" * (-len(part) % 4)))
                except (binascii.Error, ValueError):
                    pass
        if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", seg):
            out.append(bytes.fromhex(seg))
    return out


def reveals(text: str, user_id: str) -> bool:
    uid = user_id.encode()
    return any(uid in d for d in decodings(text)) or uid.hex() in text.lower()


def test_the_helper_would_see_the_user_in_a_token_of_the_earlier_format():
    assert all(reveals(legacy_token(u, "email", NEW), u) for u in USERS)


def test_a_token_reveals_nothing_about_its_user_in_any_decoding():
    for user in USERS:
        for channel in ("email", "push", "sms"):
            token = unsubscribe.sign(user, channel, NEW)
            assert not reveals(token, user), (user, token)
            url = unsubscribe.url_for(user, channel, public_url=PUBLIC, secret=NEW)
            assert not reveals(url, user) and channel not in url.removeprefix(PUBLIC), url
            assert unsubscribe.verify(token, NEW) == (user, channel)
    # the length tells the id's length only to within 32 bytes
    assert len(unsubscribe.sign("a", "email", NEW)) == len(unsubscribe.sign("abcdefghijklmnopq", "email", NEW))


def test_a_token_of_one_user_cannot_be_altered_into_another_users():
    a, b = unsubscribe.sign("alice", "email", NEW), unsubscribe.sign("bob", "email", NEW)
    assert unsubscribe.verify(a, NEW) == ("alice", "email") and unsubscribe.verify(b, NEW) == ("bob", "email")
    sealed = base64.urlsafe_b64decode(a + "=" * (-len(a) % 4))
    for i in range(len(sealed)):  # every bit flip anywhere is refused
        for bit in (1, 0x80):
            bent = bytearray(sealed)
            bent[i] ^= bit
            assert unsubscribe.verify(base64.urlsafe_b64encode(bytes(bent)).rstrip(b"=").decode(), NEW) is None
    half = len(a) // 2  # nor do pieces of two tokens glue into one
    assert unsubscribe.verify(a[:half] + b[half:], NEW) is None and unsubscribe.verify(b[:half] + a[half:], NEW) is None
    # nor a link of the earlier format with the other's payload under the first's signature
    body_b, _ = legacy_token("bob", "email", NEW).split(".")
    _, sig_a = legacy_token("alice", "email", NEW).split(".")
    assert unsubscribe.verify(f"{body_b}.{sig_a}", NEW) is None
    # nor a token made without the secret
    assert unsubscribe.verify(unsubscribe.sign("bob", "email", "someone-elses-secret-0123456"), NEW) is None


def test_a_rotated_secret_still_accepts_the_links_minted_under_the_older_one():
    old_link = Keys(OLD).sign("u1", "email")
    rotated = Keys.from_env({unsubscribe.SECRET_ENV: NEW, unsubscribe.PREVIOUS_ENV: f"{OLD}, another-even-older-secret-000"})
    assert rotated.verify(old_link) == ("u1", "email")
    assert rotated.sign("u1", "email") == Keys(NEW).sign("u1", "email") != old_link  # the newest mints
    assert Keys(NEW).verify(old_link) is None  # dropped from the list: the older links stop working
    assert Keys([NEW, OLD]).verify(legacy_token("u9", "push", OLD)) == ("u9", "push")
    with pytest.raises(ConfigurationError, match=unsubscribe.PREVIOUS_ENV):
        Keys.from_env({unsubscribe.SECRET_ENV: NEW, unsubscribe.PREVIOUS_ENV: "short"})


def test_links_of_the_earlier_format_work_until_turned_off():
    old = legacy_token("user_000734", "email", NEW)
    assert unsubscribe.verify(old, NEW) == ("user_000734", "email")
    assert Keys.from_env({unsubscribe.SECRET_ENV: NEW}).verify(old) == ("user_000734", "email")
    off = Keys.from_env({unsubscribe.SECRET_ENV: NEW, unsubscribe.LEGACY_ENV: "off"})
    assert off.verify(old) is None and off.verify(off.sign("user_000734", "email")) == ("user_000734", "email")
    assert unsubscribe.verify(legacy_token("user_000734", "email", OLD), NEW) is None


def traits(db, uid):
    found = rows(db, "SELECT state FROM profiles WHERE user_id = ?", uid)
    return state_from_bytes(found[0][0]).traits if found else {}


def test_served_links_are_opaque_rotate_keep_old_ones_and_refuse_bad_ones_cleanly(tmp_path, daemons):  # noqa: F811
    smtp = Server().start()
    try:
        project = tiny_project(tmp_path / "tiny", smtp.port)
        d = daemons(project, None, JOURNEYS_UNSUBSCRIBE_SECRET=NEW, JOURNEYS_UNSUBSCRIBE_PREVIOUS_SECRETS=OLD)
        db = project / "data" / "tiny.db"
        user = "cust-7Qx9"  # not in the email address: what the mail shows of it is the link's doing
        for uid, address in ((user, "ann@example.com"), ("old-format", "bo@example.com"),
                             ("old-secret", "cy@example.com")):
            assert d.post("identify", {"userId": uid, "traits": {"email": address}}).status_code == 200
        assert d.post("track", {"userId": user, "event": "Signed Up"}).status_code == 200
        eventually(lambda: smtp.handler.messages, timeout=8)
        ((_, recipients, raw, _),) = smtp.handler.messages
        assert recipients == ["ann@example.com"]

        # what the SMTP server received: the raw bytes and every decoded part name nobody
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = [p.get_content() for p in msg.walk() if not p.is_multipart()]
        assert not reveals(raw.decode("ascii", "replace"), user)
        assert not any(reveals(p, user) for p in parts)
        (link,) = re.findall(r"<(https://journeys\.example\.com/u/[^>]+)>", msg["List-Unsubscribe"])
        assert not reveals(link, user) and any(link in p for p in parts)
        local = d.url + link.removeprefix(PUBLIC)

        page = httpx.get(local)
        assert page.status_code == 200 and ">Unsubscribe</button>" in page.text and "email messages" in page.text
        # RFC 8058 One-Click, as a mail client sends it
        done = httpx.post(local, content="List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        eventually(lambda: traits(db, user).get("email_unsubscribed") is True)

        # a link of an email sent before the upgrade, and one minted under the secret before the rotation
        for uid, token in (("old-format", legacy_token("old-format", "email", OLD)),
                           ("old-secret", Keys(OLD).sign("old-secret", "email"))):
            r = httpx.post(f"{d.url}/u/{token}", data=ONE_CLICK)
            assert r.status_code == 200 and "You are unsubscribed" in r.text, (uid, r.text)
            eventually(lambda uid=uid: traits(db, uid).get("email_unsubscribed") is True)

        # wrong tokens: a clean 4xx page, never a traceback
        token = link.rsplit("/", 1)[1]
        bent = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
        bad = [bent, token[:-1], token + "A", token + "==", "!" + token, "garbage", "a.b", "a.b.c", "...", "%00",
               "%C3%A9", "x" * 3000, Keys("a-secret-nobody-configured-0").sign(user, "email"),
               legacy_token(user, "email", "a-secret-nobody-configured-0"), "gAAAAABk" + "A" * 100]
        for t in bad:
            for r in (httpx.get(f"{d.url}/u/{t}"), httpx.post(f"{d.url}/u/{t}", data=ONE_CLICK)):
                assert 400 <= r.status_code < 500, (t, r.status_code, r.text)
                assert r.headers["content-type"].startswith("text/html") and "not valid" in r.text, (t, r.text)
                assert "Traceback" not in r.text
        assert d.stop() == 0
        assert "Traceback" not in d.log.read_text()
    finally:
        smtp.stop()


def test_old_format_links_can_be_turned_off(tmp_path, daemons):  # noqa: F811
    project = tiny_project(tmp_path / "tiny", 9)  # nothing is sent here
    d = daemons(project, None, JOURNEYS_UNSUBSCRIBE_SECRET=NEW, JOURNEYS_UNSUBSCRIBE_LEGACY_LINKS="off")
    assert d.post("identify", {"userId": "u1", "traits": {"email": "u1@example.com"}}).status_code == 200
    assert httpx.get(f"{d.url}/u/{legacy_token('u1', 'email', NEW)}").status_code == 404
    assert httpx.get(f"{d.url}/u/{unsubscribe.sign('u1', 'email', NEW)}").status_code == 200
    assert d.stop() == 0
