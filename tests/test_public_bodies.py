"""Every route a stranger can reach bounds a request's body before reading it (issue 18, point 8).

A real daemon (`journeys serve` on loopback, tests/test_daemon.py's fixture) gets 300 MB bodies,
streamed from a generator over a plain socket, chunked and with a Content-Length, at each public
route: the unsubscribe link (`/u/{token}`, a few hundred bytes at most), the ingest's single calls
and batches (32 KB and 500 KB), and a gzip body that inflates to 300 MB (a zip bomb). Each is
answered 413 with `code` and `message` (or, for a route that takes no body, its usual answer),
and the daemon's memory stays flat: its peak resident set (VmHWM in /proc/PID/status, reset before
the posts through /proc/PID/clear_refs) grows by less than 50 MB. Before the fix, the unsubscribe
route read the whole body first: three such posts took the daemon from 75 MB to over 1 GB.

The client sends the whole body whatever the daemon answers early (as an attacker would), reading
the answer once it is done, so the daemon has to take in and drop every byte without keeping them.
"""

from __future__ import annotations

import base64
import gzip
import json
import select
import socket
import zlib
from pathlib import Path
from typing import Iterator

import pytest

from .test_daemon import KEY, daemons, shop  # noqa: F401 - fixtures

MB = 1024 * 1024
TOTAL = 300 * MB
CHUNK = 1 * MB
GROWTH_LIMIT = 50 * MB
BASIC = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


def zeros(total: int) -> Iterator[bytes]:
    block = b"0" * CHUNK
    sent = 0
    while sent < total:
        part = block[: min(CHUNK, total - sent)]
        sent += len(part)
        yield part


def send(port: int, method: str, path: str, body: Iterator[bytes], *, length: int | None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a plain socket: the body from `body`, chunked when `length` is
    None. Every byte is sent even when the answer comes early (what comes in meanwhile is kept,
    so sending never stalls on it); then the rest of the answer is read."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    answer = _Answer()
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for part in body:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if length is None else part)
                while select.select([sock], [], [], 0)[0] and answer.feed(sock.recv(65536)):
                    pass
            if length is None:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon closed the connection after answering: the answer is what counts
        while not answer.complete:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not answer.feed(data):
                break
    finally:
        sock.close()
    assert answer.complete, answer.data[:300]
    return answer.status, answer.fields, answer.body


class _Answer:
    """An HTTP/1.1 answer read in pieces (Content-Length bodies: what the daemon sends)."""

    def __init__(self) -> None:
        self.data = b""
        self.status, self.fields, self.body, self.complete = 0, {}, b"", False

    def feed(self, data: bytes) -> bool:
        """Take what was read; False once the connection is closed (nothing was read)."""
        if not data:
            return False
        self.data += data
        head, sep, rest = self.data.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            size = int(self.fields.get("content-length", "-1"))
            if 0 <= size <= len(rest):
                self.body, self.complete = rest[:size], True
        return True


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of JSON-ish zeros that inflates to `inflated` bytes (300 KB for 300 MB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(b'{"batch": "')]
    out.extend(z.compress(part) for part in zeros(inflated))
    out.append(z.flush())
    return b"".join(out)


ROUTES = [  # (method, path, headers, the answer expected)
    ("POST", "/u/not-a-real-token", {"Content-Type": "application/x-www-form-urlencoded"}, 413),
    ("POST", "/v1/track", {"Authorization": BASIC, "Content-Type": "application/json"}, 413),
    ("POST", "/v1/batch", {"Authorization": BASIC, "Content-Type": "application/json"}, 413),
    ("POST", "/v1/b", {"Content-Type": "application/json"}, 413),  # no key: the size is checked first
    ("GET", "/u/not-a-real-token", {}, 404),  # takes no body: answered without reading it
]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_300_mb_at_every_public_route_leaves_the_daemon_flat(shop, tmp_path, daemons, chunked):  # noqa: F811
    d = daemons(shop, f"sqlite:///{tmp_path / 'store.db'}")
    pid = d.proc.pid
    for method, path, headers, _ in ROUTES:  # warm up: every route's code is loaded and has run once
        send(d.port, method, path, iter([b"x"]), length=None if chunked else 1, headers=headers)
    before = status_field(pid, "VmRSS")
    reset_peak(pid)
    answers = []
    for method, path, headers, expected in ROUTES:
        status, _, body = send(d.port, method, path, zeros(TOTAL), length=None if chunked else TOTAL,
                               headers=headers)
        answers.append((method, path, expected, status, body))
    # a zip bomb: 300 KB on the wire, 300 MB inflated
    bomb = gzip_bomb(TOTAL)
    assert len(bomb) < 500 * 1024
    status, _, body = send(d.port, "POST", "/v1/batch", iter([bomb]), length=None if chunked else len(bomb),
                           headers={"Authorization": BASIC, "Content-Encoding": "gzip"})
    answers.append(("POST", "/v1/batch (gzip bomb)", 413, status, body))
    peak, after = status_field(pid, "VmHWM"), status_field(pid, "VmRSS")
    print(f"RSS {before / MB:.0f} MB before, peak {peak / MB:.0f} MB, {after / MB:.0f} MB after")
    assert peak - before < GROWTH_LIMIT, (
        f"peak RSS grew by {(peak - before) / MB:.0f} MB (from {before / MB:.0f} MB to {peak / MB:.0f} MB; "
        f"now {after / MB:.0f} MB) over {[a[:4] for a in answers]}")
    for method, path, expected, status, body in answers:
        assert status == expected, (method, path, status, body[:300])
        if status == 413:
            error = json.loads(body)
            assert error["code"] == "payload_too_large" and error["message"], error
    # and the daemon still takes events
    status, _, _ = send(d.port, "POST", "/v1/track", iter([json.dumps(
        {"userId": "u1", "event": "Product Viewed", "messageId": "after-the-flood"}).encode()]),
        length=None, headers={"Authorization": BASIC, "Content-Type": "application/json"})
    assert status == 200
    assert d.stop() == 0


def test_an_unsubscribe_post_names_what_it_takes(shop, tmp_path, daemons):  # noqa: F811
    """The unsubscribe route's limit is documented in its 413: a real One-Click body passes it."""
    d = daemons(shop, f"sqlite:///{tmp_path / 'store.db'}")
    status, _, body = send(d.port, "POST", "/u/not-a-real-token", iter([b"List-Unsubscribe=One-Click"]),
                           length=26, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 404  # the body was fine; the token is not
    status, _, body = send(d.port, "POST", "/u/not-a-real-token", iter([b"List-Unsubscribe=One-Click&" * 400]),
                           length=27 * 400, headers={"Content-Type": "application/x-www-form-urlencoded"})
    error = json.loads(body)
    assert status == 413 and error["code"] == "payload_too_large" and "bytes" in error["message"], error
    assert d.stop() == 0


def test_the_bomb_inflates_to_what_it_says():
    """The bomb above really is one: a check of the helper, not of the daemon."""
    assert len(gzip.decompress(gzip_bomb(2 * MB))) == len(b'{"batch": "') + 2 * MB
