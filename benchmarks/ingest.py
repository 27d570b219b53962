"""Benchmark: the HTTP ingest (`engine/daemon/ingest.py`) on loopback, events/s acknowledged as durable.

    python benchmarks/ingest.py [--seconds 10] [--connections 64] [--batch-connections 16]
                                [--batch-size 100] [--synchronous FULL] [--client wrk|asyncio]

Starts a real uvicorn server (httptools, uvloop, one process) in a subprocess on a free loopback
port with a fresh SQLite inbox, then loads it twice:
- single: `POST /v1/track`, one event per request, `--connections` concurrent connections;
- batched: `POST /v1/batch` with `--batch-size` events per request, `--batch-connections`.
Every 200 means the events were committed to the inbox (group commit, `synchronous` FULL by
default: fsynced). The load comes from `wrk` (apt install wrk) when it is installed, else from
an asyncio loop doing what wrk does (in Python, on the same cores: lower figures).
Prints requests/s and events/s for each, and checks that the inbox holds at least every
acknowledged event. Not a test: the figures are reported in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "bench-key"
AUTH = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()


def event(i: int) -> dict:
    return {"type": "track", "userId": f"user-{i % 1000}", "event": "Product Viewed",
            "messageId": f"m-{i}", "timestamp": "2026-03-02T10:00:00.000Z",
            "properties": {"product_id": f"p-{i % 97}", "price": 19.9, "category": "shoes"},
            "context": {"library": {"name": "analytics-python", "version": "2.3.0"}}}


def serve(db: str, fd: int, synchronous: str, fast_path: bool = True) -> None:
    import uvicorn

    from engine.daemon.ingest import create_app
    from journeys.config import ProjectConfig

    app = create_app(ProjectConfig(), db, {KEY}, synchronous=synchronous, fast_path=fast_path)
    config = uvicorn.Config(app, log_level="warning", access_log=False, http="httptools", loop="uvloop")
    # The inherited listening socket as what it is (TCP): uvicorn's own `fd=` takes it for a Unix
    # socket, and asyncio then leaves Nagle's algorithm on (40 ms delayed-ACK stalls).
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def start_server(db: str, synchronous: str, fast_path: bool = True) -> tuple[subprocess.Popen, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", db, "--fd", str(sock.fileno()),
                             "--synchronous", synchronous] + ([] if fast_path else ["--no-fast-path"]),
                            pass_fds=[sock.fileno()])
    sock.close()
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/openapi.json", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def run_wrk(url: str, path: str, body: str, connections: int, seconds: float) -> tuple[int, int, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.path = "{path}"\nwrk.body = {json.dumps(body)}\n'
                f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "{AUTH}"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", f.name, url],
                         capture_output=True, text=True, check=True).stdout
    Path(f.name).unlink()
    total = int(re.search(r"(\d+) requests in ([\d.]+)(m?s)", out).group(1))
    took = re.search(r"requests in ([\d.]+)(m?s)", out)
    secs = float(took.group(1)) / (1000 if took.group(2) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    return total - errors, errors, secs


def run_asyncio(url: str, path: str, body: str, connections: int, seconds: float) -> tuple[int, int, float]:
    """wrk's loop in Python: keep-alive connections, each sending one prebuilt request (one write)
    and reading its answer. Slower than wrk (the client shares the 2 cores in Python)."""
    host, port = url.rsplit("/", 1)[1].split(":")
    data = body.encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTH}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data

    async def main() -> tuple[int, int, float]:
        ok = bad = 0
        began = time.perf_counter()
        end = began + seconds

        async def worker() -> None:
            nonlocal ok, bad
            reader, writer = await asyncio.open_connection(host, int(port))
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while time.perf_counter() < end:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    bad += 1
            writer.close()

        await asyncio.gather(*(worker() for _ in range(connections)))
        return ok, bad, time.perf_counter() - began

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--batch-connections", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    ap.add_argument("--client", choices=["wrk", "asyncio"], default="wrk" if shutil.which("wrk") else "asyncio")
    ap.add_argument("--no-fast-path", action="store_true", help="route the calls through FastAPI (create_app(fast_path=False))")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.fd, args.synchronous, not args.no_fast_path)
        return

    single = {k: v for k, v in event(0).items() if k != "type"}
    batch = {"batch": [event(i) for i in range(args.batch_size)], "sentAt": "2026-03-02T10:00:01.000Z"}
    load = run_wrk if args.client == "wrk" else run_asyncio
    print(f"ingest on loopback, client {args.client}, synchronous={args.synchronous}, "
          f"{'FastAPI routing' if args.no_fast_path else 'fast path'}, {args.seconds:g}s each")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "journeys.db")
        proc, url = start_server(db, args.synchronous, not args.no_fast_path)
        acknowledged = 0
        try:
            for name, path, body, conns, per in (
                ("single", "/v1/track", single, args.connections, 1),
                ("batched", "/v1/batch", batch, args.batch_connections, args.batch_size),
            ):
                ok, errors, secs = load(url, path, json.dumps(body), conns, args.seconds)
                acknowledged += ok * per
                print(f"  {name:8} {conns:3} connections, {per:3} events/request: "
                      f"{ok / secs:9,.0f} requests/s {ok * per / secs:10,.0f} events/s"
                      + (f"  ({errors} non-200 answers!)" if errors else ""))
        finally:
            proc.terminate()
            proc.wait(30)
        stored = sqlite3.connect(db).execute("SELECT count(*) FROM inbox").fetchone()[0]
        print(f"  inbox: {stored:,} events stored, {acknowledged:,} acknowledged"
              + ("" if stored >= acknowledged else "  LOST EVENTS!"))


if __name__ == "__main__":
    main()
