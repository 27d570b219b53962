"""Meta Custom Audiences against a real HTTP server on loopback that checks each request the way
the Marketing API documents `/{audience_id}/users`: method, path, bearer token, the form fields
`payload` (multi-key schema, SHA-256 rows) and `session`, and no email or phone in clear."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.base import Delivery, Result
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError, RetryableError
from connectors.meta_audiences import MetaCustomAudiences
from journeys.config import ProjectConfig

TOKEN = "EAAtest-token"
AUD = "23851234567890123"


def h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ a real server

class Server:
    """A threaded HTTP server on 127.0.0.1; `answer(request)` returns (status, headers, body)."""

    def __init__(self, answer):
        self.requests: list[dict] = []
        self.answer = answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else ""
                url = urlsplit(self.path)
                req = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                       "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                outer.requests.append(req)
                status, headers, payload = outer.answer(req)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def graph_ok(req):
    form = {k: v[0] for k, v in parse_qs(req["body"]).items()}
    payload = json.loads(form["payload"])
    session = json.loads(form["session"])
    return 200, {"Content-Type": "application/json"}, {
        "audience_id": req["path"].split("/")[2], "session_id": str(session["session_id"]),
        "num_received": len(payload["data"]), "num_invalid_entries": 0, "invalid_entry_samples": {}}


@pytest.fixture
def server():
    servers = []

    def make(answer=graph_ok):
        s = Server(answer)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def connector(url, **kw):
    kw.setdefault("access_token", TOKEN)
    kw.setdefault("audiences", {"hot_browsers": AUD})
    return MetaCustomAudiences("meta", base_url=url, **kw)


def delivery(i=0, kind="audience_add", target="hot_browsers", **profile):
    profile = profile or {"email": f"User{i}@Example.com", "phone": f"+1 650 253 {i % 10000:04d}"}
    return Delivery(action_id=f"a{i}", kind=kind, target=target, user_id=f"u{i}", profile=profile)


def form_of(req) -> tuple[dict, dict]:
    assert req["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in parse_qs(req["body"]).items()}
    return json.loads(form["payload"]), json.loads(form["session"])


# ------------------------------------------------------------------ the request

def test_add_posts_hashed_multi_key_rows_as_documented(server):
    srv = server()
    c = connector(srv.url)
    d = delivery(email="  John.Doe@Example.COM ", phone="(650) 253-1234", country="US",
                 first_name="John", last_name="O'Doe", zip="94025-1234")
    r = c.deliver(d)
    assert r.queued and not srv.requests            # queued, not sent
    results = dict(c.flush())
    assert isinstance(results["a0"], Result) and not results["a0"].queued

    (req,) = srv.requests
    assert req["method"] == "POST"
    assert req["path"] == f"/v25.0/{AUD}/users"
    assert req["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in req["body"] and not req["query"]
    payload, session = form_of(req)
    assert payload["schema"] == ["EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY"]
    assert payload["data"] == [[h("john.doe@example.com"), h("16502531234"), h("john"), h("odoe"),
                                h("94025"), h("us")]]
    assert session["batch_seq"] == 1 and session["last_batch_flag"] is True
    assert session["estimated_num_total"] == 1 and isinstance(session["session_id"], int)
    for raw in ("john.doe", "John.Doe", "6502531234", "650) 253", "253-1234", "94025"):
        assert raw not in req["body"]


def test_remove_is_delete_of_the_same_edge(server):
    srv = server()
    c = connector(srv.url)
    c.deliver(delivery(1, kind="audience_remove", email="x@example.com"))
    c.deliver(delivery(2, kind="audience_add", email="y@example.com"))
    results = dict(c.flush())
    assert all(isinstance(r, Result) for r in results.values())
    by_method = {r["method"]: r for r in srv.requests}
    assert set(by_method) == {"POST", "DELETE"}
    payload, _ = form_of(by_method["DELETE"])
    assert payload == {"schema": ["EMAIL"], "data": [[h("x@example.com")]]}
    assert by_method["DELETE"]["path"] == f"/v25.0/{AUD}/users"


def test_missing_values_are_empty_strings_in_the_shared_schema(server):
    srv = server()
    c = connector(srv.url)
    c.deliver(delivery(1, email="a@example.com"))
    c.deliver(delivery(2, phone="+44 20 7183 8750"))
    c.flush()
    payload, _ = form_of(srv.requests[0])
    assert payload["schema"] == ["EMAIL", "PHONE"]
    assert payload["data"] == [[h("a@example.com"), ""], ["", h("442071838750")]]


def test_appsecret_proof_when_an_app_secret_is_set(server):
    srv = server()
    c = connector(srv.url, app_secret="s3cret")
    c.deliver(delivery(1))
    c.flush()
    form = parse_qs(srv.requests[0]["body"])
    assert form["appsecret_proof"] == [hmac.new(b"s3cret", TOKEN.encode(), hashlib.sha256).hexdigest()]


def test_madid_only_when_asked_and_sent_as_meta_documents(server):
    srv = server()
    c = connector(srv.url, match_keys=["EMAIL", "MADID"])
    c.deliver(delivery(1, email="a@example.com", mobile_advertising_id="AECE52E7-03EE-455A-B3C4-E57283966239"))
    c.flush()
    payload, _ = form_of(srv.requests[0])
    assert payload["schema"] == ["EMAIL", "MADID"]
    assert payload["data"] == [[h("a@example.com"), "aece52e7-03ee-455a-b3c4-e57283966239"]]


def test_an_erasure_removal_sends_the_hashes_a_removal_of_the_profile_sends(server):
    """A removal queued when a user is forgotten carries only what `erasure_identifiers` took from
    the profile before it was deleted: Meta's hashes (and MADID, which Meta takes unhashed, only when
    `match_keys` names it). The connector sends exactly what a removal read from the profile sends."""
    from connectors.base import ERASED
    from connectors.meta_audiences import DEFAULT_KEYS, KEYS, erasure_identifiers

    profile = {"email": " Ann.Lee@Example.com ", "phone": "020 7946 0958", "country": "GB", "first_name": "Ann",
               "last_name": "Lee-Smith", "zip": "SW1A 1AA", "mobile_advertising_id": "AB-12-CD"}
    for keys in (DEFAULT_KEYS, KEYS):
        srv = server()
        c = connector(srv.url, match_keys=keys)
        carried = erasure_identifiers(profile, {"match_keys": list(keys)})
        text = json.dumps(carried).lower()
        assert not any(raw in text for raw in ("ann", "lee", "7946", "sw1a")), carried
        assert ("ab-12-cd" in text) == ("MADID" in keys)
        c.deliver(Delivery("a1", "audience_remove", "hot_browsers", "u1", profile=profile))
        c.flush()
        c.deliver(Delivery("a2", "audience_remove", "hot_browsers", "forgotten", data={ERASED: carried}))
        assert isinstance(dict(c.flush())["a2"], Result)
        normal, erased = (form_of(r)[0] for r in srv.requests)
        assert erased == normal and len(normal["schema"]) == len(keys)
        assert all(r["method"] == "DELETE" for r in srv.requests)
    # what is carried is sent only as the hashes it must be: a value in clear is never sent
    srv = server()
    c = connector(srv.url)
    with pytest.raises(InvalidRecipient):
        c.deliver(Delivery("a3", "audience_remove", "hot_browsers", "forgotten",
                           data={ERASED: {"meta": {"EMAIL": "ann.lee@example.com", "FN": h("ann")}}}))
    assert c.flush() == [] and srv.requests == []


# ------------------------------------------------------------------ batching and sessions

def test_25001_adds_are_three_requests_of_one_session(server):
    srv = server()
    c = connector(srv.url)
    for i in range(25_001):
        assert c.deliver(delivery(i, email=f"user{i}@example.com")).queued
    assert len(srv.requests) == 2                     # full batches go at once
    results = c.flush()
    assert len(srv.requests) == 3
    sessions = [form_of(r)[1] for r in srv.requests]
    sizes = [len(form_of(r)[0]["data"]) for r in srv.requests]
    assert sizes == [10_000, 10_000, 5_001]
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert [s["estimated_num_total"] for s in sessions] == [10_000, 20_000, 25_001]
    assert len({s["session_id"] for s in sessions}) == 1
    assert len(results) == 25_001 and all(isinstance(r, Result) for _, r in results)
    assert {a for a, _ in results} == {f"a{i}" for i in range(25_001)}
    # the next flush starts a new session
    c.deliver(delivery(0, email="again@example.com"))
    c.flush()
    last = form_of(srv.requests[-1])[1]
    assert last["batch_seq"] == 1 and last["session_id"] != sessions[0]["session_id"]


def test_audiences_are_batched_apart(server):
    srv = server()
    c = connector(srv.url, audiences={"hot_browsers": "111", "warm_browsers": "222"})
    c.deliver(delivery(1, target="hot_browsers", email="a@example.com"))
    c.deliver(delivery(2, target="warm_browsers", email="b@example.com"))
    c.deliver(delivery(3, target="hot_browsers", email="c@example.com"))
    c.flush()
    rows = {r["path"]: len(form_of(r)[0]["data"]) for r in srv.requests}
    assert rows == {"/v25.0/111/users": 2, "/v25.0/222/users": 1}


def test_partial_failure_is_reported_per_action(server):
    bad = h("bad@example.com")

    def answer(req):
        payload, session = form_of(req)
        return 200, {}, {"audience_id": AUD, "session_id": str(session["session_id"]),
                         "num_received": 3, "num_invalid_entries": 2,
                         "invalid_entry_samples": {bad: "Invalid entry"}}

    srv = server(answer)
    c = connector(srv.url)
    for i, email in enumerate(["a@example.com", "bad@example.com", "c@example.com"]):
        c.deliver(delivery(i, email=email))
    results = dict(c.flush())
    assert isinstance(results["a1"], InvalidRecipient) and "Invalid entry" in str(results["a1"])
    assert isinstance(results["a0"], Result) and isinstance(results["a2"], Result)
    assert "3 received, 2 invalid" in results["a0"].detail
    assert "1 invalid entries Meta did not identify" in results["a0"].detail


# ------------------------------------------------------------------ errors

def graph_error(status, code, subcode=None, headers=None, transient=False):
    body = {"error": {"message": "boom", "type": "OAuthException", "code": code, "fbtrace_id": "X"}}
    if subcode:
        body["error"]["error_subcode"] = subcode
    if transient:
        body["error"]["is_transient"] = True
    return lambda req: (status, headers or {}, body)


@pytest.mark.parametrize("answer, kind", [
    (graph_error(400, 190, 463), ConfigurationError),      # token expired
    (graph_error(403, 200), ConfigurationError),           # permissions
    (graph_error(400, 4), RetryableError),                 # app request limit
    (graph_error(400, 17), RetryableError),                # user request limit
    (graph_error(400, 613), RetryableError),               # rate limit
    (graph_error(400, 80003), RetryableError),             # custom audience throttling
    (graph_error(500, 2, transient=True), RetryableError),
    (graph_error(400, 100, 1713230), PermanentError),      # invalid parameter
    (lambda req: (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>"), RetryableError),
    (lambda req: (404, {}, b"not json"), PermanentError),
])
def test_graph_errors_map_to_the_error_tree(server, answer, kind):
    srv = server(answer)
    c = connector(srv.url)
    c.deliver(delivery(1))
    c.deliver(delivery(2))
    results = dict(c.flush())
    assert set(results) == {"a1", "a2"}
    for err in results.values():
        assert type(err) is kind
        assert err.status is not None and err.answer


def test_429_retry_after_and_business_usage(server):
    srv = server(lambda req: (429, {"Retry-After": "7"}, {"error": {"code": 4, "message": "slow down"}}))
    c = connector(srv.url)
    c.deliver(delivery(1))
    (_, err), = c.flush()
    assert isinstance(err, RetryableError) and err.retry_after == 7

    usage = json.dumps({"act_1": [{"type": "ads_management", "call_count": 100,
                                   "estimated_time_to_regain_access": 3}]})
    srv2 = server(lambda req: (400, {"X-Business-Use-Case-Usage": usage},
                               {"error": {"code": 80003, "message": "too many"}}))
    c2 = connector(srv2.url)
    c2.deliver(delivery(1))
    (_, err), = c2.flush()
    assert isinstance(err, RetryableError) and err.retry_after == 180


def test_a_hanging_server_is_a_retryable_timeout(server):
    srv = server(lambda req: (time.sleep(3), (200, {}, {}))[1])
    c = connector(srv.url, timeout=0.3)
    c.deliver(delivery(1))
    started = time.monotonic()
    (_, err), = c.flush()
    assert isinstance(err, RetryableError) and "in time" in str(err)
    assert time.monotonic() - started < 2


def test_connection_refused_is_retryable():
    c = connector("http://127.0.0.1:9")
    c.deliver(delivery(1))
    (_, err), = c.flush()
    assert isinstance(err, RetryableError)


# ------------------------------------------------------------------ configuration

def test_from_journeys_toml(server, monkeypatch):
    srv = server()
    cfg = ProjectConfig.model_validate(tomllib.loads(f"""
[connectors.meta]
channel = "ads"
type = "meta_custom_audiences"
ad_account_id = "act_123"
access_token_env = "META_ACCESS_TOKEN"
api_version = "v24.0"
base_url = "{srv.url}"
audiences = {{ hot_browsers = "{AUD}" }}
"""))
    c = MetaCustomAudiences.from_settings("meta", cfg.connectors["meta"].settings,
                                          env={"META_ACCESS_TOKEN": "tok"})
    c.deliver(delivery(1))
    c.flush()
    assert srv.requests[0]["path"] == f"/v24.0/{AUD}/users"
    assert srv.requests[0]["headers"]["authorization"] == "Bearer tok"


def test_configuration_mistakes(server):
    srv = server()
    no_token = MetaCustomAudiences.from_settings("meta", {"access_token_env": "NOPE", "audiences": {"x": "1"}}, env={})
    with pytest.raises(ConfigurationError, match="NOPE"):
        no_token.deliver(delivery(1, target="x"))
    c = connector(srv.url)
    with pytest.raises(ConfigurationError, match="no Meta audience id for audience 'cold'"):
        c.deliver(delivery(1, target="cold"))
    with pytest.raises(InvalidRecipient):
        c.deliver(delivery(1, first_name="Only", last_name="Names"))
    with pytest.raises(PermanentError):
        c.deliver(Delivery("a", "webhook", "x", "u"))
    with pytest.raises(ConfigurationError):
        connector(srv.url, batch_size=10_001)
    assert c.flush() == [] and not srv.requests


def test_unknown_settings_and_durations():
    with pytest.raises(ConfigurationError, match="audience_ids"):
        MetaCustomAudiences.from_settings("meta", {"access_token_env": "T", "audience_ids": {}}, env={"T": "t"})
    c = MetaCustomAudiences.from_settings("meta", {"access_token_env": "T", "timeout": "1500ms"}, env={"T": "t"})
    assert c._client.timeout.read == 1.5


def test_deliveries_from_many_threads_each_settle_once(server):
    srv = server()
    c = connector(srv.url, batch_size=1000)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        assert all(r.queued for r in pool.map(lambda i: c.deliver(delivery(i, email=f"u{i}@example.com")), range(5500)))
    results = c.flush()
    assert sorted(a for a, _ in results) == sorted(f"a{i}" for i in range(5500))
    sessions = [form_of(r)[1] for r in srv.requests]
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3, 4, 5, 6]
    assert [s["last_batch_flag"] for s in sessions] == [False] * 5 + [True]
    assert sum(len(form_of(r)[0]["data"]) for r in srv.requests) == 5500
