"""The connectors' HTTP client (connectors/http.py) and the dispatcher's attempts on its event loop
(engine/daemon/deliveries/attempts.py), against real servers on loopback: what httpx did for the
connectors stays so (TLS verified, proxies from the environment, bodies encoded alike), and a connector
that delivers as a coroutine runs on the loop, at most its concurrency at once, waited for at close."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from datetime import datetime, timezone

import httpx
import pytest

from connectors.base import Delivery, Result
from connectors.errors import RetryableError
from connectors.http import Http, HttpUnreachable, io_loop, wait
from connectors.webhook import WebhookConnector
from engine.core.effects import Action
from engine.daemon.deliveries.dispatch import Dispatcher, OutboxSink, Routes
from engine.store.outbox import DELIVERED, PENDING, MemoryOutbox
from tests import test_webhook

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
receiver = test_webhook.receiver  # the fixture: a real HTTP server on loopback that records each request
ROUTES = Routes({}, {}, frozenset({"crm"}))


class InFlight:
    """A receiver's answer that counts the requests in flight and holds each until a second is in flight
    beside it (up to 2 s: then it goes alone), so a limit of 2 is reached and one above it would show."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, request: dict) -> tuple[int, dict, dict]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            for _ in range(200):
                with self.lock:
                    if self.now >= 2:
                        break
                threading.Event().wait(0.01)
        finally:
            with self.lock:
                self.now -= 1
        return 200, {"Content-Type": "application/json"}, {"id": "r1"}


def webhook_actions(n: int) -> list[Action]:
    return [Action(id=f"a{i}", time=T0, user=f"u{i}", journey="J", version="v1", entry=1, path="j/1", kind="webhook",
                   channel="webhook", target="crm", outcome="sent", data={"n": i}) for i in range(n)]


def drive(dispatcher: Dispatcher, n: int) -> None:
    """The delivery loop's rounds, until `n` attempts are settled."""
    finished = threading.Event()
    settled = 0
    while settled < n:
        dispatcher.start_due(T0, on_done=finished.set)
        finished.wait(10)
        finished.clear()
        settled += dispatcher.settle_done(T0)


# ---------------------------------------------------------------------------- attempts on the loop

def test_a_coroutine_connector_runs_on_the_loop_at_most_its_concurrency_at_once(receiver):
    in_flight = InFlight()
    rcv = receiver(in_flight)
    hook = WebhookConnector("webhook:crm", url=rcv.url)
    box = MemoryOutbox()
    OutboxSink(box, ROUTES).emit(webhook_actions(6))
    dispatcher = Dispatcher(box, {"webhook:crm": hook}, profiles=lambda uid: {}, workers=4,
                            concurrency={"webhook:crm": 2})
    drive(dispatcher, 6)
    dispatcher.close()
    hook.close()
    assert [box.get(f"a{i}:webhook:crm").state for i in range(6)] == [DELIVERED] * 6
    assert len(rcv.requests) == 6
    assert in_flight.most == 2  # the connector's concurrency, not the dispatcher's room (4) nor 6
    assert dispatcher.attempts._pools == {}  # no thread of its own for a connector that delivers as a coroutine


class OnLoop:
    """A connector that delivers as a coroutine and notes the thread it ran on (or breaks)."""

    channel = "webhook"
    uses_profile = False

    def __init__(self, name: str, error: Exception | None = None, gate: threading.Event | None = None):
        self.name, self.error, self.gate = name, error, gate
        self.threads: list[str] = []

    def deliver(self, delivery: Delivery) -> Result:
        return wait(self.deliver_async(delivery))

    async def deliver_async(self, delivery: Delivery) -> Result:
        import asyncio

        self.threads.append(threading.current_thread().name)
        while self.gate is not None and not self.gate.is_set():
            await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return Result(provider_id=delivery.action_id)


def test_close_waits_for_the_attempts_on_the_loop():
    gate = threading.Event()
    hook = OnLoop("webhook:crm", gate=gate)
    box = MemoryOutbox()
    OutboxSink(box, ROUTES).emit(webhook_actions(3))
    dispatcher = Dispatcher(box, {"webhook:crm": hook}, profiles=lambda uid: {}, workers=4)
    assert dispatcher.start_due(T0) == 3
    threading.Timer(0.2, gate.set).start()
    dispatcher.close()  # returns once the three are done
    assert dispatcher.settle_done(T0) == 3
    assert [box.get(f"a{i}:webhook:crm").state for i in range(3)] == [DELIVERED] * 3
    assert set(hook.threads) == {"journeys-http"}


def test_a_coroutine_connector_has_eight_times_its_concurrency_leased_the_rest_wait_on_the_loop():
    """Its attempts wait on the loop for a free slot, so a slot that frees is used at once, not at the
    delivery loop's next round (the round, with its SQLite commit, set the pace with twice)."""
    import asyncio

    gate = threading.Event()
    hook = OnLoop("webhook:crm", gate=gate)
    box = MemoryOutbox()
    OutboxSink(box, ROUTES).emit(webhook_actions(10))
    dispatcher = Dispatcher(box, {"webhook:crm": hook}, profiles=lambda uid: {}, workers=4,
                            concurrency={"webhook:crm": 1})
    assert dispatcher.start_due(T0) == 8  # 8 x 1 leased; a thread connector: 2 x 1
    for _ in range(3):
        wait(asyncio.sleep(0))  # the loop's turns: every task started has reached the connector or its slot
    assert len(hook.threads) == 1  # one in flight: its concurrency
    gate.set()
    dispatcher.close()
    assert dispatcher.settle_done(T0) == 8 and len(hook.threads) == 8
    assert dispatcher.start_due(T0) == 2
    dispatcher.close()


def test_a_coroutine_connector_that_breaks_is_retried_like_a_failure():
    hook = OnLoop("webhook:crm", error=ValueError("a bug"))
    box = MemoryOutbox()
    OutboxSink(box, ROUTES).emit(webhook_actions(1))
    dispatcher = Dispatcher(box, {"webhook:crm": hook}, profiles=lambda uid: {}, workers=4)
    drive(dispatcher, 1)
    dispatcher.close()
    entry = box.get("a0:webhook:crm")
    assert entry.state == PENDING and entry.attempts == 1 and entry.last_error == "connector error: ValueError: a bug"


def test_waiting_on_the_loop_from_the_loop_is_refused_not_a_hang():
    async def inside():
        async def nothing():
            return 1
        with pytest.raises(RuntimeError, match="await instead"):
            wait(nothing())
        return "refused"

    assert wait(inside()) == "refused"
    assert io_loop().is_running()


# ---------------------------------------------------------------------------- as httpx did it

def test_bodies_are_encoded_as_httpx_encodes_them(receiver):
    rcv = receiver()
    http = Http(timeout=5)
    form = {"grant_type": "urn:x", "flag": True, "none": None, "many": [1, "ä b"]}
    document = {"name": "Ä", "n": 1.5, "list": [1, None]}
    http.post(rcv.url, data=form)
    http.post(rcv.url, json=document)
    http.close()
    sent_form, sent_json = rcv.requests
    assert sent_form["raw"] == httpx.Request("POST", rcv.url, data=form).read()
    assert sent_form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert sent_json["raw"] == httpx.Request("POST", rcv.url, json=document).read()
    assert sent_json["headers"]["content-type"] == "application/json"


def test_the_url_is_sent_as_written_its_escapes_kept(receiver):
    """A receiver that signs its URL (a token in the query) must get it as configured: `%2F` stays `%2F`."""
    rcv = receiver()
    hook = WebhookConnector("webhook:crm", url=rcv.url + "?sig=a%2Fb%3D&x=%7E&q=ä", timeout="5s")
    hook.deliver(Delivery(action_id="a1", kind="webhook", target="crm", user_id="u1"))
    hook.close()
    assert rcv.requests[0]["target"] == "/hooks/nudge?sig=a%2Fb%3D&x=%7E&q=%C3%A4"  # as httpx sent it


def self_signed(tmp_path) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 that no authority signed."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def test_tls_is_verified_a_certificate_no_authority_signed_is_refused(tmp_path):
    context = self_signed(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    handshakes: list[str] = []

    def serve() -> None:  # TLS and nothing more: the handshake is where the client must refuse
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
            handshakes.append("completed")
        except (ssl.SSLError, OSError) as e:
            handshakes.append(type(e).__name__)

    threading.Thread(target=serve, daemon=True).start()
    hook = WebhookConnector("webhook:crm", url=f"https://127.0.0.1:{listener.getsockname()[1]}/hook", timeout="5s")
    with pytest.raises(RetryableError, match="could not reach the webhook: .*certificate"):
        hook.deliver(Delivery(action_id="a1", kind="webhook", target="crm", user_id="u1"))
    hook.close()
    listener.close()


def test_proxies_come_from_the_environment_and_no_proxy_exempts(receiver, monkeypatch):
    proxy = receiver()  # stands for a proxy: it receives the request for a host that does not exist
    monkeypatch.setenv("HTTP_PROXY", proxy.url.split("/hooks")[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    http = Http(timeout=5)
    answer = http.post("http://provider.invalid/v1/send", content=b"{}")
    http.close()
    assert answer.status_code == 200 and answer.json() == {"id": "evt_1"}
    assert proxy.requests[0]["headers"]["host"] == "provider.invalid" and proxy.requests[0]["path"] == "/v1/send"

    monkeypatch.setenv("NO_PROXY", "provider.invalid")
    exempt = Http(timeout=5)
    with pytest.raises(HttpUnreachable):  # straight to a host that does not exist
        exempt.post("http://provider.invalid/v1/send", content=b"{}")
    exempt.close()
    assert len(proxy.requests) == 1


def test_a_connection_refused_is_unreachable_and_a_silent_server_a_timeout():
    from connectors.http import HttpTimeout

    http = Http(timeout=0.3)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(HttpUnreachable):
        http.post(f"http://127.0.0.1:{port}/hook", content=b"{}")
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with pytest.raises(HttpTimeout):
            http.post(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", content=b"{}")
    http.close()
