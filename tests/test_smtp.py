"""SmtpConnector against a real SMTP server on loopback (aiosmtpd): what arrives, connection reuse,
STARTTLS and implicit TLS with a self-signed certificate, AUTH, and every error mapping."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import socket
import ssl
import subprocess

import pytest

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

from connectors import unsubscribe  # noqa: E402
from connectors.base import Delivery  # noqa: E402
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError, RetryableError  # noqa: E402
from connectors.smtp import SmtpConnector  # noqa: E402

from .conftest import SHOP  # noqa: E402

SECRET = "unsubscribe-secret-for-tests-0123456789"
ENV = {unsubscribe.SECRET_ENV: SECRET, "SMTP_USER": "journeys", "SMTP_PASSWORD": "hunter2-but-longer"}
PUBLIC = "https://journeys.example.com"
VIEWED = {"event": "Product Viewed", "timestamp": "2026-03-02T04:31:20Z",
          "properties": {"name": "Vintage Face Cream", "category": "beauty", "url": "https://shop.example.com/p/1109"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Handler:
    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes, tuple]] = []
        self.replies: dict[str, str] = {}  # recipient → RCPT reply
        self.data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.peer))
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"journeys" and auth_data.password == b"hunter2-but-longer"
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself


class Server:
    def __init__(self, **params):
        self.handler = Handler()
        self.port = free_port()
        self.params = params
        self.controller = None

    def start(self):
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **self.params)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture()
def server():
    s = Server().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def server_tls(cert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def connector(port: int, **settings) -> SmtpConnector:
    base = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": "5s"}
    base.update(settings)
    return SmtpConnector("smtp", base, ENV, templates=SHOP, public_url=PUBLIC)


def delivery(action_id="act-0001", email_address="ann@example.com", **kw) -> Delivery:
    return Delivery(action_id=action_id, kind="email", target="browse_abandon", user_id="user_42",
                    profile={"email": email_address, "first_name": "Ann"},
                    data={"product": "Vintage Face Cream", "category": "beauty"}, named={"viewed": VIEWED},
                    journey="Browse abandonment", step="s1", **kw)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_delivers_the_rendered_shop_email(server):
    c = connector(server.port)
    result = c.deliver(delivery())
    c.close()
    [(mail_from, rcpts, raw, _)] = server.handler.messages
    assert mail_from == "hello@shop.example.com" and rcpts == ["ann@example.com"]
    msg = parse(raw)
    assert msg["From"] == "Shop <hello@shop.example.com>"
    assert msg["To"] == "ann@example.com"
    assert msg["Subject"] == "Still thinking it over?"
    assert msg["Reply-To"] == "support@shop.example.com"
    assert msg["Message-ID"] == "<act-0001@shop.example.com>" == result.provider_id
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "You were looking at Vintage Face Cream in our beauty collection." in text
    assert "<strong>Vintage Face Cream</strong>" in html
    assert "Take another look (https://shop.example.com/p/1109)" in text
    m = re.fullmatch(r"<https://journeys\.example\.com/u/([A-Za-z0-9_.-]+)>", msg["List-Unsubscribe"])
    assert m, msg["List-Unsubscribe"]
    assert unsubscribe.verify(m.group(1), SECRET) == ("user_42", "email")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"Unsubscribe ({PUBLIC}/u/{m.group(1)})" in text and m.group(1) in html


def test_the_same_action_has_the_same_message_id(server):
    c = connector(server.port)
    c.deliver(delivery("same"))
    c.deliver(delivery("same"))
    c.deliver(delivery("other"))
    c.close()
    ids = [parse(raw)["Message-ID"] for *_, raw, _peer in server.handler.messages]
    assert ids[0] == ids[1] != ids[2]


def test_one_connection_for_many_deliveries(server):
    c = connector(server.port)
    c.deliver(delivery("a1"))
    c.deliver(delivery("a2", "bob@example.com"))
    c.close()
    peers = {peer for *_, peer in server.handler.messages}
    assert len(server.handler.messages) == 2 and len(peers) == 1


def test_reconnects_once_when_the_server_dropped_the_connection(server):
    c = connector(server.port)
    c.deliver(delivery("a1"))
    server.stop()  # drops every connection, as a server closing idle clients does
    server.start()
    c.deliver(delivery("a2"))
    c.close()
    peers = [peer for *_, peer in server.handler.messages]
    assert len(peers) == 2 and peers[0] != peers[1]  # both delivered, the second over a new connection


def test_server_down_is_retryable():
    c = connector(free_port())
    with pytest.raises(RetryableError):
        c.deliver(delivery())


def test_unknown_recipient_is_invalid_recipient(server):
    server.handler.replies["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    c = connector(server.port)
    with pytest.raises(InvalidRecipient) as e:
        c.deliver(delivery(email_address="gone@example.com"))
    assert e.value.stale == "gone@example.com" and e.value.status == 550 and "no such user" in e.value.answer
    # the connection stays usable for the next delivery
    c.deliver(delivery("next"))
    c.close()
    assert len(server.handler.messages) == 1


@pytest.mark.parametrize("reply, error", [
    ("451 4.3.0 try again later", RetryableError),
    ("452 4.2.2 mailbox full", RetryableError),
    ("554 5.7.1 relay denied", PermanentError),
    # a 550 that says the sender or the message is refused, not the address: no bounce of the address
    ("550 5.7.1 Relaying denied", PermanentError),
    ("550 5.2.2 mailbox full", PermanentError),
    ("550 5.1.1 no such user", InvalidRecipient),
    ("553 5.1.3 bad address syntax", InvalidRecipient),
    ("550 mailbox unavailable", InvalidRecipient),  # no enhanced code: the reply code says it
])
def test_recipient_replies_map_to_errors(server, reply, error):
    server.handler.replies["x@example.com"] = reply
    c = connector(server.port)
    with pytest.raises(error) as e:
        c.deliver(delivery(email_address="x@example.com"))
    assert type(e.value) is error and e.value.status == int(reply[:3])
    c.close()


@pytest.mark.parametrize("reply, error", [("554 5.7.1 message rejected as spam", PermanentError),
                                          ("451 4.7.1 greylisted", RetryableError)])
def test_data_replies_map_to_errors(server, reply, error):
    server.handler.data_reply = reply
    c = connector(server.port)
    with pytest.raises(error):
        c.deliver(delivery())
    c.close()


def test_missing_address_is_invalid_recipient_before_any_connection():
    c = connector(free_port())  # nothing listens: the check must come first
    with pytest.raises(InvalidRecipient):
        c.deliver(Delivery("a", "email", "browse_abandon", "u", profile={}))


def test_settings_are_checked():
    with pytest.raises(ConfigurationError, match="host"):
        SmtpConnector("smtp", {}, ENV)
    with pytest.raises(ConfigurationError, match="security"):
        SmtpConnector("smtp", {"host": "h", "security": "ssl"}, ENV)
    with pytest.raises(ConfigurationError, match="in\\s+clear"):
        SmtpConnector("smtp", {"host": "smtp.example.com", "security": "none", "username_env": "SMTP_USER",
                               "password_env": "SMTP_PASSWORD"}, ENV)
    with pytest.raises(ConfigurationError, match="timeout"):
        SmtpConnector("smtp", {"host": "h", "timeout": "soon"}, ENV)
    with pytest.raises(ConfigurationError, match="unknown settings hots"):
        SmtpConnector("smtp", {"hots": "h", "host": "h", "channel": "email", "type": "smtp"}, ENV)


def test_missing_unsubscribe_secret_is_a_configuration_error(server):
    c = SmtpConnector("smtp", {"host": "127.0.0.1", "port": server.port, "security": "none"}, {},
                      templates=SHOP, public_url=PUBLIC)
    with pytest.raises(ConfigurationError, match="JOURNEYS_UNSUBSCRIBE_SECRET"):
        c.deliver(delivery())


# ---------------------------------------------------------------------------------- TLS and AUTH

def test_starttls_with_auth(cert):
    s = Server(tls_context=server_tls(cert), require_starttls=True, authenticator=authenticator,
               auth_required=True, auth_require_tls=True).start()
    try:
        c = connector(s.port, security="starttls", ca_file=str(cert[0]), username_env="SMTP_USER",
                      password_env="SMTP_PASSWORD")
        c.deliver(delivery("t1"))
        c.deliver(delivery("t2"))
        c.close()
        assert len(s.handler.messages) == 2 and len({p for *_, p in s.handler.messages}) == 1
        assert parse(s.handler.messages[0][2])["Subject"] == "Still thinking it over?"
    finally:
        s.stop()


def test_wrong_password_is_a_configuration_error(cert):
    s = Server(tls_context=server_tls(cert), require_starttls=True, authenticator=authenticator,
               auth_required=True, auth_require_tls=True).start()
    try:
        env = {**ENV, "SMTP_PASSWORD": "wrong"}
        c = SmtpConnector("smtp", {"host": "127.0.0.1", "port": s.port, "security": "starttls",
                                   "ca_file": str(cert[0]), "username_env": "SMTP_USER",
                                   "password_env": "SMTP_PASSWORD"}, env, templates=SHOP, public_url=PUBLIC)
        with pytest.raises(ConfigurationError, match="refused the login"):
            c.deliver(delivery())
        env.pop("SMTP_PASSWORD")
        with pytest.raises(ConfigurationError, match="SMTP_PASSWORD"):
            c.deliver(delivery())
        assert s.handler.messages == []
    finally:
        s.stop()


def test_untrusted_certificate_is_a_configuration_error(cert):
    s = Server(tls_context=server_tls(cert), require_starttls=True).start()
    try:
        c = connector(s.port, security="starttls")  # the system's CAs do not know the self-signed cert
        with pytest.raises(ConfigurationError, match="does not verify"):
            c.deliver(delivery())
    finally:
        s.stop()


def test_starttls_required_but_not_offered_is_a_configuration_error(server):
    c = connector(server.port, security="starttls")
    with pytest.raises(ConfigurationError, match="STARTTLS"):
        c.deliver(delivery())


def test_implicit_tls(cert):
    s = Server(ssl_context=server_tls(cert)).start()
    try:
        c = connector(s.port, security="tls", ca_file=str(cert[0]))
        c.deliver(delivery())
        c.close()
        assert len(s.handler.messages) == 1
    finally:
        s.stop()


# ---------------------------------------------------------------------------------- List-Unsubscribe on the wire
# RFC 8058 one-click clients (Gmail, Yahoo) read the raw header: an RFC 2047 encoded word
# (`=?utf-8?q?...?=`) is not a link to them. So these tests look at the bytes the server got,
# never at what Python's email parser decodes from them.

def raw_header_lines(raw: bytes, name: bytes) -> list[bytes]:
    """The physical lines of the header field `name` (its first line and its folded ones), as sent."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    for i, line in enumerate(head):
        if line.lower().startswith(name.lower() + b":"):
            lines = [line]
            for more in head[i + 1:]:
                if not more[:1] in (b" ", b"\t"):
                    break
                lines.append(more)
            return lines
    raise AssertionError(f"no {name!r} header in {raw[:2000]!r}")


def assert_one_click_headers(raw: bytes, urls: list[str]) -> None:
    """List-Unsubscribe carries exactly `urls`, plain ASCII, folded only between the `<...>` items,
    and List-Unsubscribe-Post is the RFC 8058 value, on one unencoded line."""
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")), "a line over 998 octets"
    lines = raw_header_lines(raw, b"List-Unsubscribe")
    assert b"=?" not in b"".join(lines), lines
    assert lines[0].startswith(b"List-Unsubscribe: <"), lines
    for line in lines[1:]:  # a fold comes right after an item's comma, never inside a URL
        assert re.fullmatch(rb" <[\x21-\x7e]+>,?", line), lines
    for line in lines[:-1]:
        assert line.endswith(b">,"), lines
    assert b"".join(lines).decode("ascii") == "List-Unsubscribe: " + ", ".join(f"<{u}>" for u in urls)
    assert raw_header_lines(raw, b"List-Unsubscribe-Post") == [b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"]


def test_list_unsubscribe_is_plain_ascii_on_the_wire(server):
    c = connector(server.port)
    c.deliver(delivery())
    c.close()
    [(*_, raw, _)] = server.handler.messages
    lines = raw_header_lines(raw, b"List-Unsubscribe")
    assert len(lines) == 1, lines  # it fits in one line: nothing to fold
    m = re.fullmatch(rb"List-Unsubscribe: <(https://journeys\.example\.com/u/([A-Za-z0-9_.-]+))>", lines[0])
    assert m, lines
    assert unsubscribe.verify(m.group(2).decode(), SECRET) == ("user_42", "email")
    assert_one_click_headers(raw, [m.group(1).decode()])


def test_a_long_unsubscribe_link_is_not_encoded_nor_broken(server):
    """A long user id makes a link of 250+ characters, longer than a 78-character line: the header
    goes over 78 characters rather than be encoded or folded inside the URL."""
    user_id = "customer-" + "0123456789abcdef" * 8
    c = connector(server.port)
    c.deliver(Delivery(action_id="long", kind="email", target="browse_abandon", user_id=user_id,
                       profile={"email": "ann@example.com", "first_name": "Ann"},
                       data={"product": "Vintage Face Cream", "category": "beauty"}, named={"viewed": VIEWED},
                       journey="Browse abandonment", step="s1"))
    c.close()
    [(*_, raw, _)] = server.handler.messages
    url = unsubscribe.url_for(user_id, "email", public_url=PUBLIC, secret=SECRET)
    assert len(url) > 150
    assert f"<{url}>".encode() in raw
    assert_one_click_headers(raw, [url])


def test_a_mailto_and_an_https_link_fold_between_the_items(server):
    """With both a mailto: and an https: link (RFC 2369 allows a list), the header folds after the
    comma between them, sent as the connector sends (build_message, then smtplib's send_message)."""
    import smtplib

    from connectors.render import RenderedEmail
    from connectors.smtp import build_message

    url = unsubscribe.url_for("customer-" + "x" * 120, "email", public_url=PUBLIC, secret=SECRET)
    mailto = "mailto:unsubscribe@shop.example.com?subject=unsubscribe-customer-" + "x" * 60
    rendered = RenderedEmail(subject="Hi", sender="Shop <hello@shop.example.com>", reply_to=None, preheader=None,
                             html="<p>Hi</p>", text="Hi",
                             headers={"List-Unsubscribe": f"<{mailto}>, <{url}>",
                                      "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as conn:
        conn.send_message(build_message(rendered, "ann@example.com", message_id="<m@shop.example.com>"))
    [(*_, raw, _)] = server.handler.messages
    assert len(raw_header_lines(raw, b"List-Unsubscribe")) == 2
    assert_one_click_headers(raw, [mailto, url])


def test_a_link_too_long_for_one_line_is_a_permanent_error(server):
    """RFC 5322 caps a line at 998 octets and a URL cannot be folded: such a user id cannot get a
    valid email, so the delivery fails instead of sending a broken header."""
    c = connector(server.port)
    with pytest.raises(PermanentError, match="998"):
        c.deliver(Delivery(action_id="huge", kind="email", target="browse_abandon", user_id="u" * 900,
                           profile={"email": "ann@example.com", "first_name": "Ann"},
                           data={"product": "Vintage Face Cream", "category": "beauty"}, named={"viewed": VIEWED},
                           journey="Browse abandonment", step="s1"))
    c.close()
    assert server.handler.messages == []


def test_a_non_ascii_public_url_is_a_configuration_error(server):
    """A link with non-ASCII characters could only go out as an encoded word, which one-click
    clients do not read: the operator must write `public_url` in ASCII (punycode, %-escapes)."""
    c = SmtpConnector("smtp", {"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": "5s"}, ENV,
                      templates=SHOP, public_url="https://désabonnement.example.com")
    with pytest.raises(ConfigurationError, match="public_url"):
        c.deliver(delivery())
    c.close()
    assert server.handler.messages == []
