"""The connectors' HTTP client: aiohttp on one event loop of the process, for coroutines and threads alike.

Why not httpx, which the connectors used before (issue 21, item 4): the delivery process is bound by its
HTTP client's CPU. Measured on loopback with keep-alive and 16 requests in flight
(`benchmarks/delivery_client.py`, docs/performance.md), httpx cost about 0.6 ms of CPU per POST in threads
and 1.5 ms as `httpx.AsyncClient`, and 0.22 ms even over the barest transport that works, where a call may
cost 0.2 ms. aiohttp (a C parser, asyncio streams) costs about 0.1 ms.

One event loop runs on a daemon thread of the process (`io_loop`, started at first use, uvloop where it
is installed). A connector keeps one `Http`: its own pooled keep-alive connections on that loop. A
connector that delivers as a coroutine (`deliver_async`, the webhook) awaits `request_async` on the loop,
where the daemon's dispatcher starts it; one that delivers in the dispatcher's threads (rendering
emails, encrypting pushes) calls `request`, which runs the same coroutine on the loop and waits.

What stays as it was with httpx: the timeout (`timeout` seconds to get a connection, pooled or new, and
for each read; httpx also bounded each write, which aiohttp does not: the bodies are a few KB), no
redirects followed, TLS verified against the same roots (httpx's
`create_ssl_context`: certifi's, or SSL_CERT_FILE / SSL_CERT_DIR), proxies from HTTP_PROXY, HTTPS_PROXY
and NO_PROXY, JSON and form bodies encoded as httpx encodes them, and an answer with the `status_code`,
`headers`, `text` and `json()` the connectors read. Errors are two: `HttpTimeout` and `HttpUnreachable`
(refused, reset, closed, TLS, a malformed answer), which each connector maps to its `RetryableError`.

`transport`: an httpx transport to send through instead of the network (tests: `httpx.MockTransport`);
the requests then go through `httpx.AsyncClient` on the same loop, with the same answers and errors.
"""

from __future__ import annotations

import asyncio
import atexit
import json as jsonlib
import os
import threading
import weakref
from typing import Any, Coroutine, Mapping, TypeVar
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

T = TypeVar("T")

CLOSE_WAIT = 10.0  # seconds `close()` waits for the connections to close
EXIT_WAIT = 2.0  # seconds the process's exit waits for the clients nobody closed


class HttpTimeout(Exception):
    """The server did not answer in time (connecting, a pooled connection, or a read)."""


class HttpUnreachable(Exception):
    """The request did not get an answer: refused, reset, closed early, TLS refused, a malformed answer."""


class Answer:
    """A server's answer, read whole: what the connectors read of httpx's `Response`."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content  # headers: case-insensitive

    @property
    def text(self) -> str:
        kind = self.headers.get("Content-Type", "")
        charset = kind.partition("charset=")[2].split(";")[0].strip().strip('"') or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsonlib.loads(self.content)


# ---------------------------------------------------------------------------- the loop

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def io_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for the connectors' HTTP, on a daemon thread of its own, started at first
    use (again in a forked child, where the parent's thread does not run)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():
            try:
                import uvloop

                loop = uvloop.new_event_loop()
            except ImportError:  # Windows
                loop = asyncio.new_event_loop()
            started = threading.Event()
            loop.call_soon(started.set)
            threading.Thread(target=loop.run_forever, name="journeys-http", daemon=True).start()
            started.wait()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def wait(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the connectors' loop and wait for its result (or its exception), from a thread."""
    loop = io_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("connectors.http.wait() on the connectors' own loop would never return: await instead")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


# ---------------------------------------------------------------------------- the client

_ssl_context: Any = None


def ssl_context() -> Any:
    """The TLS context of every connection: httpx's, so the roots trusted are those they were."""
    global _ssl_context
    if _ssl_context is None:
        import httpx

        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def env_proxy(url: str) -> str | None:
    """The proxy HTTP_PROXY / HTTPS_PROXY name for `url`, unless NO_PROXY exempts its host (as httpx read them)."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class Http:
    """One connector's HTTP: keep-alive connections to its providers (at most `max_connections`), its
    timeout, and headers sent with every request (`headers`; a request's own win). `base_url` is put in
    front of a path that starts with "/"."""

    def __init__(self, *, timeout: float, headers: Mapping[str, str] | None = None, base_url: str = "",
                 max_connections: int = 20, transport: Any = None):
        self.timeout, self.base_url, self.max_connections = float(timeout), base_url.rstrip("/"), max_connections
        self.headers = dict(headers or {})
        self._transport = transport
        self._targets: dict[str, tuple[Any, str | None]] = {}  # url → (the URL aiohttp sends to, its proxy)
        self._session: list[Any] = []  # the aiohttp session (or httpx client), made on the loop at first use
        self._loop = io_loop()
        self._closer = weakref.finalize(self, _close_later, self._loop, self._session)
        self._closer.atexit = False
        _open_clients.add(self)

    # -- requests

    async def request_async(self, method: str, url: str, *, content: bytes | None = None, json: Any = None,
                            data: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Answer:
        """One request, on the connectors' loop: its answer, or HttpTimeout / HttpUnreachable."""
        if url.startswith("/"):
            url = self.base_url + url
        sent = {**self.headers, **(headers or {})}
        body = content
        if json is not None:
            body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = urlencode([(k, _form_value(v)) for k, v in data.items()], doseq=True).encode("utf-8")
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if self._transport is not None:
            return await self._through_httpx(method, url, body, sent)
        import aiohttp

        session = self._session[0] if self._session else self._open()
        try:
            target, proxy = self._target(url)
            async with session.request(method, target, data=body, headers=sent, allow_redirects=False,
                                       proxy=proxy) as response:
                return Answer(response.status, response.headers, await response.read())
        except asyncio.TimeoutError as e:
            raise HttpTimeout(f"{type(e).__name__}: no answer within {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as e:  # ValueError: a URL aiohttp cannot send to
            raise HttpUnreachable(str(e) or type(e).__name__) from None

    async def post_async(self, url: str, **kwargs: Any) -> Answer:
        return await self.request_async("POST", url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        """`request_async` from a thread (a connector's `deliver` in the dispatcher's pool): waits for it."""
        return wait(self.request_async(method, url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> Answer:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        """Close the connections (waits up to CLOSE_WAIT seconds). The client cannot be used after."""
        self._closer.detach()
        if self._session and not self._loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(_close(self._session), self._loop).result(CLOSE_WAIT)
            except Exception:  # noqa: BLE001 - closing is best effort: the process may be stopping
                pass

    # -- inside

    def _open(self) -> Any:
        """The aiohttp session, made on the loop at the first request."""
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ssl=ssl_context(),
                                         keepalive_timeout=5.0)  # httpx's keep-alive expiry
        session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout,
                                          sock_read=self.timeout))
        self._session.append(session)
        return session

    def _target(self, url: str) -> tuple[Any, str | None]:
        """The URL as aiohttp is to send it, and the environment's proxy for it, worked out once per URL.
        The URL is written as httpx writes it and then taken as it is: yarl would otherwise re-quote it
        (`%2F` sent as `/`, `%7E` as `~`), which breaks a receiver that checks a signature over its query."""
        known = self._targets.get(url)
        if known is None:
            import httpx
            import yarl

            if len(self._targets) > 1000:  # push endpoints come and go: working one out again is cheap
                self._targets.clear()
            try:
                exact = yarl.URL(str(httpx.URL(url)), encoded=True)
            except (httpx.InvalidURL, TypeError, ValueError) as e:
                raise HttpUnreachable(f"not a URL that can be requested: {url!r}: {e}") from None
            known = self._targets[url] = (exact, env_proxy(url))
        return known

    async def _through_httpx(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        import httpx

        if not self._session:
            self._session.append(httpx.AsyncClient(transport=self._transport, timeout=self.timeout,
                                                   follow_redirects=False))
        try:
            response = await self._session[0].request(method, url, content=body, headers=headers)
        except httpx.TimeoutException as e:
            raise HttpTimeout(type(e).__name__) from None
        except httpx.HTTPError as e:
            raise HttpUnreachable(str(e) or type(e).__name__) from None
        return Answer(response.status_code, response.headers, response.content)


def _form_value(value: Any) -> Any:
    """A form field as httpx writes it: true/false/empty for booleans and None, a list as repeated fields."""
    if isinstance(value, (list, tuple)):
        return [_form_value(v) for v in value]
    if value is True or value is False:
        return "true" if value else "false"
    return "" if value is None else str(value)


_open_clients: "weakref.WeakSet[Http]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, the clients still open (a test's connector, a tool's): closed, not reported as leaked."""
    holders = [client._session for client in list(_open_clients) if client._session]
    if holders and _loop is not None and _loop_pid == os.getpid() and not _loop.is_closed():
        future = asyncio.run_coroutine_threadsafe(_close_each(holders), _loop)
        try:
            future.result(EXIT_WAIT + 1)
        except Exception:  # noqa: BLE001 - the process is leaving either way
            pass


async def _close_each(holders: list[list[Any]]) -> None:
    await asyncio.wait([asyncio.ensure_future(_close(h)) for h in holders], timeout=EXIT_WAIT)


async def _close(holder: list[Any]) -> None:
    while holder:
        session = holder.pop()
        await (session.aclose() if hasattr(session, "aclose") else session.close())


def _close_later(loop: asyncio.AbstractEventLoop, holder: list[Any]) -> None:
    """A client dropped without `close()` (tests make many): its connections closed on the loop."""
    if holder and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(_close(holder)))
        except RuntimeError:  # the loop is gone
            pass
