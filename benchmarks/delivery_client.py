"""Benchmark: the delivery's HTTP client, client CPU per call (issue 21, item 4).

    python benchmarks/delivery_client.py [--calls 4000] [--rounds 3] [--in-flight 16] [--only NAME,...]

A webhook receiver runs in a process of its own (latency.py's: a bare asyncio HTTP/1.1 server on loopback,
keep-alive, answering `200 {}` at once), so its CPU is not counted. This process posts a 555-byte JSON document
(a webhook's, as `connectors.webhook` builds it) `--calls` times with keep-alive and `--in-flight` requests
in flight, through each candidate:

- `httpx-threads`: `httpx.Client` shared by `--in-flight` threads, each posting in turn (what the
  connectors did before: the dispatcher's pool threads call `deliver`);
- `httpx-bare`: the same `httpx.Client` in threads over `BareTransport`, the barest transport that works
  (keep-alive sockets and httptools' C parser, no timeouts, no TLS, no error handling): the best any leaner
  transport under httpx could do;
- `httpx-async`: `httpx.AsyncClient` (httpcore's asyncio path) with `--in-flight` tasks;
- `aiohttp`: one `aiohttp.ClientSession` with `--in-flight` tasks;
- `raw-asyncio`: a hand-written request and answer on asyncio streams, the floor of Python I/O
  (not a client: no pool, no parser worth the name);
- `webhook-connector`: the webhook connector's own hot path, `WebhookConnector.deliver_async` with
  `--in-flight` tasks on the connectors' loop: the document's JSON, the HMAC signature and the answer's
  classification included;
- `webhook-dispatcher`: the same connector as the daemon's dispatcher drives it (`Dispatcher.start_due`,
  `settle_done`, `--in-flight` attempts at once, an outbox in memory): what the delivery process spends
  per call beside its store.

Reported per candidate: client CPU µs per call (this process's CPU time, every thread, over the calls) and
calls/s, the median of `--rounds` rounds; the candidates are interleaved in each round (round 1: each
candidate once, round 2: each again...), so a machine that slows down meanwhile slows them all. A warm-up
of 300 calls each comes first (imports, connections). Not a test: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import latency as L  # noqa: E402 - its webhook receiver, ports and start-up waits

def start_receiver() -> tuple[subprocess.Popen, str]:
    """latency.py's webhook receiver (bare asyncio on uvloop, keep-alive, `200 {}` at once, GET /count), in a
    process of its own."""
    port = L.free_port()
    proc = subprocess.Popen([sys.executable, L.__file__, "--receive", str(port)])
    url = f"http://127.0.0.1:{port}"
    L.wait_up(url + "/count", proc, "the receiver")
    return proc, url


# ---------------------------------------------------------------------------- what is posted

def document() -> tuple[bytes, dict[str, str]]:
    """A webhook's body and headers as `connectors.webhook` sends them (555 bytes of JSON)."""
    from connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

    doc = {"id": "8c1f0a4e2b9d4c7e9a51f3d2b6e0c4a7", "webhook": "crm_nudge", "user_id": "user-48213",
           "journey": "browse_abandonment", "step": "nudge",
           "data": {"product": "Trail Runner 2 - Waterproof", "category": "shoes", "price": "129.90",
                    "url": "https://shop.example.com/p/trail-runner-2?utm_source=journeys&utm_campaign=browse",
                    "image": "https://cdn.shop.example.com/img/trail-runner-2/800x800.jpg",
                    "viewed_at": "2026-03-02T10:00:00Z", "coupon": "COMEBACK10", "segment": "high_value",
                    "note": "x" * 55},
           "sent_at": "2026-03-02T11:00:00Z"}
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": doc["id"], TIMESTAMP_HEADER: "1772449200",
               SIGNATURE_HEADER: sign("secret", "1772449200", body)}
    return body, headers


# ---------------------------------------------------------------------------- the candidates

Run = Callable[[], None]


def httpx_threads(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int,
                  transport: Any = None) -> Run:
    import httpx

    client = httpx.Client(timeout=10, follow_redirects=False, transport=transport,
                          limits=httpx.Limits(max_connections=20, max_keepalive_connections=10))
    left = iter(range(calls))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            r = client.post(url, content=body, headers=headers)
            r.json()

    def run() -> None:
        threads = [threading.Thread(target=worker) for _ in range(in_flight)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
    return run


class BareTransport:
    """The barest httpx transport that works here: keep-alive sockets, httptools' C parser; no timeouts,
    no TLS, no errors handled. Not for use: the floor of any transport under httpx."""

    def __init__(self) -> None:
        self.idle: list = []
        self.lock = threading.Lock()

    def handle_request(self, request):  # httpx.BaseTransport's one method
        import socket

        import httptools
        import httpx

        with self.lock:
            sock = self.idle.pop() if self.idle else None
        if sock is None:
            sock = socket.create_connection((request.url.host, request.url.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
        head += [k + b": " + v + b"\r\n" for k, v in request.headers.raw]
        sock.sendall(b"".join(head) + b"\r\n" + request.read())
        answer: dict = {"headers": [], "body": [], "done": False}

        class Events:
            def on_header(self, name: bytes, value: bytes) -> None:
                answer["headers"].append((name, value))

            def on_body(self, chunk: bytes) -> None:
                answer["body"].append(chunk)

            def on_message_complete(self) -> None:
                answer["done"] = True

        parser = httptools.HttpResponseParser(Events())
        while not answer["done"]:
            parser.feed_data(sock.recv(65536))
        with self.lock:
            self.idle.append(sock)
        return httpx.Response(parser.get_status_code(), headers=answer["headers"], content=b"".join(answer["body"]))

    def close(self) -> None:
        for sock in self.idle:
            sock.close()


def httpx_bare(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int) -> Run:
    """`httpx-threads` with `BareTransport` under the same `httpx.Client`."""
    return httpx_threads(url, body, headers, calls, in_flight, transport=BareTransport())


def _tasks(post: Callable, calls: int, in_flight: int) -> Callable:
    """`in_flight` tasks posting until `calls` are made."""
    async def run() -> None:
        left = iter(range(calls))

        async def worker() -> None:
            while next(left, None) is not None:
                await post()

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return run


def httpx_async(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int) -> Run:
    import httpx

    async def main() -> None:
        async with httpx.AsyncClient(timeout=10, follow_redirects=False,
                                     limits=httpx.Limits(max_connections=20, max_keepalive_connections=20)) as client:
            async def post() -> None:
                r = await client.post(url, content=body, headers=headers)
                r.json()
            await _tasks(post, calls, in_flight)()

    return lambda: asyncio.run(main())


def aiohttp_session(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int) -> Run:
    import aiohttp

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async def post() -> None:
                async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                    json.loads(await r.read())
            await _tasks(post, calls, in_flight)()

    return lambda: asyncio.run(main())


def raw_streams(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int) -> Run:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body

    async def main() -> None:
        left = iter(range(calls))

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(host, int(port))
            while next(left, None) is not None:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"content-length:")
                json.loads(await reader.readexactly(int(head[at + 15:head.find(b"\r\n", at)])))
            writer.close()

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    return lambda: asyncio.run(main())


def webhook_connector(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int) -> Run:
    """The connector alone: `deliver_async` on the connectors' loop, `in_flight` at once."""
    from connectors.base import Delivery
    from connectors.http import wait
    from connectors.webhook import WebhookConnector

    doc = json.loads(body)
    hook = WebhookConnector("webhook:bench", url=url, secret="secret")
    deliveries = [Delivery(action_id=f"{doc['id']}-{i}", kind="webhook", target="bench", user_id=doc["user_id"],
                           data=doc["data"], journey=doc["journey"], step=doc["step"]) for i in range(calls)]

    async def main() -> None:
        left = iter(deliveries)

        async def worker() -> None:
            for delivery in left:
                await hook.deliver_async(delivery)

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    def run() -> None:
        wait(main())
        hook.close()
    return run


def webhook_dispatcher(url: str, body: bytes, headers: dict[str, str], calls: int, in_flight: int) -> Run:
    """The connector as the daemon's dispatcher drives it, an outbox in memory (the actions written before)."""
    from datetime import datetime, timezone

    from connectors.registry import Routes
    from connectors.webhook import WebhookConnector
    from engine.core.effects import SENT, Action
    from engine.daemon.deliveries.dispatch import Dispatcher, OutboxSink
    from engine.store.outbox import DELIVERED, MemoryOutbox

    doc = json.loads(body)
    hook = WebhookConnector("webhook:bench", url=url, secret="secret")
    box = MemoryOutbox()
    t0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
    actions = [Action(id=f"{doc['id']}-{i}", time=t0, user=doc["user_id"], journey=doc["journey"], version="v1",
                      entry=1, path=doc["step"], kind="webhook", channel="webhook", target="bench", outcome=SENT,
                      data=doc["data"]) for i in range(calls)]
    OutboxSink(box, Routes({}, {}, frozenset({"bench"}))).emit(actions)
    dispatcher = Dispatcher(box, {"webhook:bench": hook}, profiles=lambda uid: {}, workers=in_flight,
                            concurrency={"webhook:bench": in_flight})
    done = threading.Event()

    def run() -> None:
        left = calls
        while left:
            started = dispatcher.start_due(t0, limit=2 * in_flight, on_done=done.set)
            done.wait(1)
            done.clear()
            left -= dispatcher.settle_done(t0)
            if not started and not dispatcher.in_flight and left:
                raise SystemExit("the dispatcher stopped starting deliveries")
        dispatcher.close()
        hook.close()
        bad = [e for e in box.entries.values() if e.state != DELIVERED]
        if bad:
            raise SystemExit(f"{len(bad)} deliveries failed: {bad[0].last_error}")
    return run


CANDIDATES: dict[str, Callable[[str, bytes, dict[str, str], int, int], Run]] = {
    "httpx-threads": httpx_threads,
    "httpx-bare": httpx_bare,
    "httpx-async": httpx_async,
    "aiohttp": aiohttp_session,
    "raw-asyncio": raw_streams,
    "webhook-connector": webhook_connector,
    "webhook-dispatcher": webhook_dispatcher,
}


def measure(candidate: Callable, url: str, body: bytes, headers: dict[str, str], calls: int,
            in_flight: int) -> tuple[float, float]:
    """(client CPU µs per call, calls/s) of one run; what a candidate prepares before it (clients, the
    outbox's entries) is not counted."""
    run = candidate(url, body, headers, calls, in_flight)
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / calls * 1e6, calls / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=4000, help="calls per candidate per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--only", help="comma-separated candidate names (default: all)")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--only: no candidate named {unknown[0]!r}; the candidates: {', '.join(CANDIDATES)}")
    body, headers = document()
    proc, url = start_receiver()
    try:
        print(f"{len(body)}-byte JSON body, keep-alive, {args.in_flight} in flight, {args.calls:,} calls per "
              f"candidate per round, {args.rounds} rounds (candidates interleaved)")
        for name in names:  # warm-up
            CANDIDATES[name](url + "/hook", body, headers, 300, args.in_flight)()
        results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names:
                results[name].append(measure(CANDIDATES[name], url + "/hook", body, headers, args.calls,
                                             args.in_flight))
            print(f"  round {r + 1}: " + ", ".join(f"{n} {results[n][-1][0]:,.0f} µs" for n in names), flush=True)
        expected = (300 + args.calls * args.rounds) * len(names)
        received = int(urllib.request.urlopen(url + "/count", timeout=10).read())
        print(f"\n{'candidate':20} {'client CPU per call':>20} {'calls/s':>10}   (median of {args.rounds})")
        for name in names:
            cpu = statistics.median(c for c, _ in results[name])
            rate = statistics.median(r for _, r in results[name])
            print(f"{name:20} {cpu:17,.0f} µs {rate:10,.0f}")
        if received != expected:
            print(f"the receiver counted {received:,} calls, {expected:,} expected")
        print("reproduce: python benchmarks/delivery_client.py " + " ".join(sys.argv[1:]))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
