"""Bounces of email sent over SMTP: the synchronous refusal's meaning, and RFC 3464 delivery status
notifications (DSNs) read with the standard library's `email` package.

A relay that accepts a message and fails to deliver it later sends a DSN to the envelope sender: a
`multipart/report; report-type=delivery-status` message whose `message/delivery-status` part has
one block of per-message fields, then one block per recipient (`Final-Recipient: rfc822; ann@x`,
`Action: failed | delayed | delivered | relayed | expanded`, `Status: 5.1.1`, `Diagnostic-Code:
smtp; 550 5.1.1 ...`), and whose third part gives back the original message or its headers
(`message/rfc822`, `text/rfc822-headers`). The daemon's `POST /v1/feedback/dsn` takes one (an
MTA pipe or an inbound-mail webhook posts it) and `parse` says what it reports.

Which user: the original Message-ID, which `connectors.smtp` derives from the action id
(`<action id@sender's domain>`): an opaque hash that names no user; the daemon finds the action's
user in the outbox. A DSN without the original headers cannot be traced and is answered so.

Hard or soft (`hard`): a bounce is hard only when it says the address itself cannot receive mail:
enhanced status 5.1.x (no such mailbox, no such domain), 5.2.1 (mailbox disabled) or 5.4.4 (the
domain cannot be routed to); without an enhanced code, the SMTP replies 550, 551 and 553. Any other
permanent failure (5.7.1 a policy or spam block, 5.2.2 a full mailbox, 5.3.4 a message too big) is
about this message or this sender, not the address: a soft bounce, which suppresses nothing.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import re
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from typing import Any

from .base import Feedback, MalformedReport

NO_SUCH_USER = {550, 551, 553}  # RFC 5321 4.2.3: mailbox unavailable, user not local, name not allowed
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"^\s*(\d{3})\b")
_DEAD_ADDRESS = {("1", None), ("2", "1"), ("4", "4")}  # (subject, detail): 5.1.x, 5.2.1, 5.4.4


def enhanced_status(text: str | None) -> str | None:
    """The RFC 3463 enhanced status code in a reply or a Status field (`5.1.1`), if any."""
    m = _ENHANCED.search(text or "")
    return m.group(0) if m else None


def hard(status: str | None, reply: int | None = None) -> bool:
    """Whether a permanent failure says the address can never receive (see the module docstring).
    `status`: the enhanced code; `reply`: the SMTP reply code, read when there is no enhanced one."""
    m = _ENHANCED.fullmatch(status or "")
    if m is not None:
        klass, subject, detail = m.groups()
        return klass == "5" and ((subject, None) in _DEAD_ADDRESS or (subject, detail) in _DEAD_ADDRESS)
    return reply in NO_SUCH_USER


def parse(raw: bytes, provider: str = "dsn") -> list[Feedback]:
    """The bounces a DSN reports (one per failed or delayed recipient; delivered, relayed and
    expanded ones report none), each with the action id of the original Message-ID (None when
    the DSN does not give the original headers back). Raises `MalformedReport` naming the field
    when `raw` is not a delivery status notification, whatever the bytes: the standard library's
    header parser raises IndexError on some malformed addresses, which is a malformed body too."""
    try:
        return _parse(raw, provider)
    except MalformedReport:
        raise
    except (IndexError, ValueError, TypeError, LookupError, email.errors.MessageError) as e:
        raise MalformedReport("body", f"cannot be read as an RFC 822 message ({type(e).__name__}: {e})") from None


def _parse(raw: bytes, provider: str) -> list[Feedback]:
    if not raw.strip():
        raise MalformedReport("body", "empty: expected a DSN, the raw RFC 822 message (multipart/report)")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if msg.get_content_type() != "multipart/report":
        raise MalformedReport("Content-Type", f"expected multipart/report (RFC 6522), not {msg.get_content_type()}")
    if str(msg.get_param("report-type", "")).lower() != "delivery-status":
        raise MalformedReport("report-type", "expected report-type=delivery-status (RFC 3464), not "
                                             f"{msg.get_param('report-type')!r}")
    parts = list(msg.iter_parts()) if msg.is_multipart() else []
    status = next((p for p in parts if p.get_content_type() == "message/delivery-status"), None)
    if status is None:
        raise MalformedReport("message/delivery-status", "the report has no delivery-status part")
    blocks = status.get_payload()
    blocks = [b for b in blocks if len(b.keys())] if isinstance(blocks, list) else []  # (blank lines at the end)
    if len(blocks) < 2:
        raise MalformedReport("message/delivery-status", "expected per-message fields, then a block per recipient")
    action_id = _action_id(_original_headers(parts))
    report_id = str(msg.get("Message-ID") or "").strip() or None
    out = []
    for n, block in enumerate(blocks[1:], 1):
        action = str(block.get("Action") or "").strip().lower()
        if not action:
            raise MalformedReport(f"recipient {n}: Action", "missing (failed, delayed, delivered, relayed, expanded)")
        if action not in ("failed", "delayed"):
            continue
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        if recipient is None:
            raise MalformedReport(f"recipient {n}: Final-Recipient", "missing or not `rfc822; address`")
        code = str(block.get("Status") or "").strip()
        if not _ENHANCED.fullmatch(code):
            raise MalformedReport(f"recipient {n}: Status", f"expected an enhanced status code such as 5.1.1, "
                                                           f"not {code!r}")
        diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split())
        reply = _REPLY.match(diagnostic.partition(";")[2])
        bounce = "hard" if action == "failed" and hard(code, int(reply.group(1)) if reply else None) else "soft"
        out.append(Feedback("bounce", provider, reason=f"{action} {code}" + (f": {diagnostic}" if diagnostic else ""),
                            address=recipient, bounce=bounce, action_id=action_id, report_id=report_id))
    return out


def _original_headers(parts: list[Any]) -> Message | None:
    """The original message's headers, as the DSN's third part gives them back."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message):
                return inner
        if kind == "text/rfc822-headers":
            content = part.get_payload(decode=True) or b""
            return BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    return None


def _action_id(original: Message | EmailMessage | None) -> str | None:
    """The action id in a Message-ID `connectors.smtp.message_id` made: `<id@domain>`."""
    if original is None:
        return None
    value = str(original.get("Message-ID") or "").strip()
    m = re.fullmatch(r"<([^<>@\s]+)@[^<>\s]+>", value)
    return m.group(1) if m else None


def _address(field: Any) -> str | None:
    """`rfc822; ann@example.com` → ann@example.com (RFC 3464 2.3.2)."""
    kind, _, address = str(field or "").partition(";")
    address = address.strip().strip("<>").strip()
    return address if kind.strip().lower() == "rfc822" and "@" in address else None
