"""Email over SMTP: any relay (Postfix, Amazon SES, Mailgun, Postmark, a corporate server).

    [connectors.smtp]
    channel = "email"
    type = "smtp"
    host = "smtp.example.com"
    port = 587                      # default: 587 for starttls, 465 for tls, 25 for none
    security = "starttls"           # starttls (default) | tls (implicit TLS) | none
    username_env = "SMTP_USER"      # both or neither; AUTH is never sent over a plain connection
    password_env = "SMTP_PASSWORD"  # to anything but this machine
    from = "Shop <hello@shop.example.com>"   # when a template has no `from`
    timeout = "30s"                 # connect and each command
    ca_file = "/etc/ssl/private-ca.pem"      # optional: trust a private CA (the system's otherwise)

One connection is kept and reused across deliveries (deliveries on one connector are serialized
over it); when the server has dropped it meanwhile, the connector reconnects once and sends
again. The Message-ID is derived from the action id, so a message that is sent twice after an
ambiguous failure is still one message for threading and for receivers that deduplicate.

Errors: a 4xx reply, a connection error or a timeout is RetryableError; a 5xx reply is
PermanentError, and for the recipient one that says the address cannot receive (`connectors.dsn.hard`:
enhanced status 5.1.x, 5.2.1, 5.4.4, or without one 550/551/553; not `550 5.7.1 relaying denied`)
InvalidRecipient whose `stale` is the dead address: the daemon records it as a hard bounce
(`Email Bounced`), which suppresses the next email to it; a refused login, a refused sender or a TLS certificate that does
not verify is ConfigurationError. A profile without an email address is InvalidRecipient.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import smtplib
import socket
import ssl
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Mapping

from .base import Delivery, Result, check_settings
from .dsn import enhanced_status, hard
from .errors import ConfigurationError, DeliveryError, InvalidRecipient, PermanentError, RetryableError
from .render import EmailRenderer, RenderedEmail, TemplateStore, recipient

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
SETTINGS = {"host", "port", "security", "username_env", "password_env", "from", "timeout", "ca_file", "local_hostname"}


def parse_seconds(value: Any, field: str) -> float:
    """A duration setting: a number of seconds, or "30s", "500ms", "2m"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", str(value))
    if not m or float(m.group(1)) <= 0:
        raise ConfigurationError(f"`{field}` must be a duration such as \"30s\", not {value!r}")
    n = float(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60}[m.group(2)]


# Headers mail clients act on by reading the raw field (RFC 2369 / RFC 8058 one-click): sent as we
# fold them, never as the email package would. Its folder turns a line it cannot break at 78
# characters (any unsubscribe URL with its token) into RFC 2047 encoded words, which Gmail and
# Yahoo do not decode in these fields: the message then has no one-click link.
RAW_HEADERS = {"list-unsubscribe", "list-unsubscribe-post"}
# `refold_source="none"`: a header stored with `set_raw` is written exactly as given; every other
# header is a header object and is folded (and encoded when not ASCII) as usual.
_POLICY = email.policy.default.clone(refold_source="none")
_MAX_LINE = 998  # RFC 5322 2.1.1, in octets, without the CRLF
_SOFT_LINE = 78
_URL_LIST = re.compile(r"\s*<[^<>]*>(?:\s*,\s*<[^<>]*>)*\s*")


def fold_url_list(name: str, value: str) -> str:
    """`value` (`<url>, <url>`, RFC 2369) folded for the header `name`: on one line when it fits
    in 78 characters, else one item per line, each fold right after an item's comma (a fold is
    whitespace the client drops; inside a URL it would break it). A URL cannot be folded, so one
    that leaves its line over RFC 5322's 998 octets fails the delivery rather than send a header
    that relays may cut or reject; a value that is not ASCII is a configuration error (the link
    comes from `[project] public_url`, which must be written in ASCII: punycode, %-escapes)."""
    if not value.isascii() or "\r" in value or "\n" in value:
        raise ConfigurationError(f"the {name} header must be one line of ASCII (is `[project] public_url` "
                                 f"an ASCII URL?): {value!r}")
    items = re.findall(r"<[^<>]*>", value) if _URL_LIST.fullmatch(value) else [value.strip()]
    one_line = ", ".join(items)
    if len(name) + 2 + len(one_line) <= _SOFT_LINE:
        return one_line
    lines = [f"{item}," for item in items[:-1]] + [items[-1]]
    longest = max([len(name) + 2 + len(lines[0])] + [1 + len(line) for line in lines[1:]])
    if longest > _MAX_LINE:
        raise PermanentError(f"the {name} header would have a line of {longest} octets, over the 998 RFC 5322 "
                             "allows, and a URL cannot be folded (is the user id that long?)")
    return "\n ".join(lines)


def build_message(rendered: RenderedEmail, to: str, *, message_id: str) -> EmailMessage:
    """multipart/alternative: the text part first, then the HTML (clients show the last they can).
    The headers of RAW_HEADERS are folded by `fold_url_list` and stored raw: see RAW_HEADERS."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = rendered.sender
    msg["To"] = to
    msg["Subject"] = rendered.subject
    if rendered.reply_to:
        msg["Reply-To"] = rendered.reply_to
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id
    for name, value in rendered.headers.items():
        if name.lower() in RAW_HEADERS:
            msg.set_raw(name, fold_url_list(name, value))
        else:
            msg[name] = value
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg


def message_id(action_id: str, sender: str) -> str:
    """`<action id@sender's domain>`: the same action always gets the same Message-ID."""
    addr = email.utils.parseaddr(sender)[1]
    domain = addr.rpartition("@")[2] or "journeys.invalid"
    safe = re.sub(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]", "-", action_id)
    return f"<{safe}@{domain}>"


class SmtpConnector:
    channel = "email"

    def __init__(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str], *,
                 templates: TemplateStore | Path | str = ".", public_url: str | None = None):
        self.name = name
        self.env = env
        check_settings(name, "smtp", settings, SETTINGS)
        self.host = settings.get("host")
        if not self.host or not isinstance(self.host, str):
            raise ConfigurationError(f"connector `{name}`: `host` is required")
        self.security = settings.get("security", "starttls")
        if self.security not in DEFAULT_PORTS:
            raise ConfigurationError(f"connector `{name}`: `security` must be starttls, tls or none, "
                                     f"not {self.security!r}")
        port = settings.get("port", DEFAULT_PORTS[self.security])
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigurationError(f"connector `{name}`: `port` must be a port number, not {port!r}")
        self.port = port
        self.timeout = parse_seconds(settings.get("timeout", 30), "timeout")
        self.username_env = settings.get("username_env")
        self.password_env = settings.get("password_env")
        if bool(self.username_env) != bool(self.password_env):
            raise ConfigurationError(f"connector `{name}`: give both `username_env` and `password_env`, or neither")
        if self.username_env and self.security == "none" and self.host not in _LOOPBACK:
            raise ConfigurationError(f"connector `{name}`: `security = \"none\"` would send the password in "
                                     "clear; use starttls or tls")
        self.ca_file = settings.get("ca_file")
        self.local_hostname = settings.get("local_hostname")
        self.renderer = EmailRenderer(templates, public_url=public_url, env=env, default_sender=settings.get("from"))
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connection

    def _tls_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigurationError(f"connector `{self.name}`: cannot load `ca_file` {self.ca_file}: {e}") from None

    def _credentials(self) -> tuple[str, str] | None:
        if not self.username_env:
            return None
        values = []
        for var in (self.username_env, self.password_env):
            value = self.env.get(var)
            if not value:
                raise ConfigurationError(f"connector `{self.name}`: the environment variable {var} is not set")
            values.append(value)
        return values[0], values[1]

    def _connect(self) -> smtplib.SMTP:
        creds = self._credentials()
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                        timeout=self.timeout, context=self._tls_context())
            else:
                conn = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
            conn.ehlo()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ConfigurationError(f"connector `{self.name}`: {self.host} does not offer STARTTLS "
                                             "(set `security` to match the server)")
                conn.starttls(context=self._tls_context())
                conn.ehlo()
            if creds:
                _login(conn, *creds)
            return conn
        except BaseException as e:
            if conn is not None:
                _close(conn)
            raise _map_connect_error(e, self) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    _close(conn)

    # ------------------------------------------------------------------ delivery

    def deliver(self, delivery: Delivery) -> Result:
        to = recipient(delivery)
        rendered = self.renderer.render(delivery)
        msg = build_message(rendered, to, message_id=message_id(delivery.action_id, rendered.sender))
        envelope_from = email.utils.parseaddr(rendered.sender)[1]
        if not envelope_from:
            raise ConfigurationError(f"the sender {rendered.sender!r} is not an email address")
        with self._lock:
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._send(msg, envelope_from, to)
            except (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout, TimeoutError, OSError) as e:
                self._drop()
                if not reused or isinstance(e, (socket.timeout, TimeoutError)):
                    raise RetryableError(f"the SMTP connection failed: {e or type(e).__name__}") from None
                # the server closed the idle connection we kept: connect again, once
                self._conn = self._connect()
                try:
                    self._send(msg, envelope_from, to)
                except (smtplib.SMTPServerDisconnected, OSError) as e2:
                    self._drop()
                    raise RetryableError(f"the SMTP connection failed: {e2 or type(e2).__name__}") from None
        return Result(provider_id=msg["Message-ID"], detail=f"accepted by {self.host}")

    def _drop(self) -> None:
        if self._conn is not None:
            _close(self._conn)
            self._conn = None

    def _send(self, msg: EmailMessage, envelope_from: str, to: str) -> None:
        assert self._conn is not None
        try:
            refused = self._conn.send_message(msg, from_addr=envelope_from, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as e:
            code, answer = next(iter(e.recipients.values()), (None, b""))
            raise _reply_error(code, answer, recipient=to) from None
        except smtplib.SMTPSenderRefused as e:
            if 400 <= e.smtp_code < 500:
                raise RetryableError("the SMTP server deferred the sender", status=e.smtp_code,
                                     answer=_text(e.smtp_error)) from None
            raise ConfigurationError(f"the SMTP server refused the sender {envelope_from}", status=e.smtp_code,
                                     answer=_text(e.smtp_error)) from None
        except smtplib.SMTPResponseException as e:
            if e.smtp_code == -1:
                raise smtplib.SMTPServerDisconnected(_text(e.smtp_error)) from None
            raise _reply_error(e.smtp_code, e.smtp_error) from None
        if refused:
            code, answer = next(iter(refused.values()))
            raise _reply_error(code, answer, recipient=to)


def _login(conn: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with one mechanism (PLAIN, else LOGIN, else CRAM-MD5): a refusal is final, unlike
    smtplib's `login`, which tries the next mechanism after a wrong password."""
    if not conn.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH (the server offers no login)")
    offered = conn.esmtp_features["auth"].upper().split()
    for mechanism, method in (("PLAIN", conn.auth_plain), ("LOGIN", conn.auth_login),
                              ("CRAM-MD5", conn.auth_cram_md5)):
        if mechanism in offered:
            conn.user, conn.password = user, password
            conn.auth(mechanism, method, initial_response_ok=True)
            return
    raise smtplib.SMTPNotSupportedError(f"any AUTH mechanism we know (it offers {' '.join(offered)})")


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except Exception:
        pass


def _text(answer: Any) -> str:
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)


def _reply_error(code: int | None, answer: Any, *, recipient: str | None = None) -> DeliveryError:
    """A refusal as the error tree says; `recipient`: the address, when RCPT TO was refused."""
    text = _text(answer)
    if code is None or 400 <= code < 500:
        return RetryableError("the SMTP server deferred the message", status=code, answer=text)
    if recipient is not None and hard(enhanced_status(text), code):
        return InvalidRecipient(f"the SMTP server says {recipient} does not exist", status=code, answer=text,
                                stale=recipient)
    return PermanentError("the SMTP server refused the message", status=code, answer=text)


def _map_connect_error(e: BaseException, c: SmtpConnector) -> BaseException:
    where = f"{c.host}:{c.port}"
    if isinstance(e, DeliveryError):
        return e
    if isinstance(e, smtplib.SMTPAuthenticationError):
        return ConfigurationError(f"connector `{c.name}`: {where} refused the login", status=e.smtp_code,
                                  answer=_text(e.smtp_error))
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return ConfigurationError(f"connector `{c.name}`: {where} does not support {e}")
    if isinstance(e, ssl.SSLCertVerificationError):
        return ConfigurationError(f"connector `{c.name}`: the TLS certificate of {where} does not verify: "
                                  f"{e.verify_message}")
    if isinstance(e, smtplib.SMTPResponseException) and e.smtp_code >= 500:
        return PermanentError(f"{where} refused the connection", status=e.smtp_code, answer=_text(e.smtp_error))
    if isinstance(e, smtplib.SMTPResponseException):
        return RetryableError(f"{where} is not accepting mail now", status=e.smtp_code if e.smtp_code > 0 else None,
                              answer=_text(e.smtp_error))
    if isinstance(e, (OSError, smtplib.SMTPException, ssl.SSLError)):
        return RetryableError(f"cannot connect to {where}: {e or type(e).__name__}")
    return e
