"""Google Ads Customer Match against a real HTTP server on loopback playing both Google's OAuth2
token endpoint and the Google Ads REST API: each request is checked as the OfflineUserDataJobService
reference documents it (paths, developer-token / Authorization / login-customer-id headers, the
job's type and userList, one identifier per UserIdentifier, hashes recomputed, no raw PII)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.base import Delivery, Result
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError, RetryableError
from connectors.google_audiences import GoogleCustomerMatch
from journeys.config import ProjectConfig

CID = "1234567890"
LIST = f"customers/{CID}/userLists/4567"
JOB = f"customers/{CID}/offlineUserDataJobs/777"


def h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Server:
    """A threaded HTTP server on 127.0.0.1; `answer(request)` returns (status, headers, body)."""

    def __init__(self, answer):
        self.requests: list[dict] = []
        self.answer = answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else ""
                req = {"method": self.command, "path": urlsplit(self.path).path,
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

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def ads(self):
        return [r for r in self.requests if r["path"] != "/token"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Google:
    """Google's documented answers; `fail` maps a path suffix to an answer that replaces it."""

    def __init__(self):
        self.fail: dict[str, object] = {}
        self.tokens = 0
        self.jobs = 0

    def __call__(self, req):
        path = req["path"]
        for suffix, answer in self.fail.items():
            if path.endswith(suffix):
                return answer(req) if callable(answer) else answer
        if path == "/token":
            form = {k: v[0] for k, v in parse_qs(req["body"]).items()}
            assert form == {"grant_type": "refresh_token", "client_id": "cid.apps.googleusercontent.com",
                            "client_secret": "csecret", "refresh_token": "1//refresh"}
            self.tokens += 1
            return 200, {}, {"access_token": f"ya29.token{self.tokens}", "expires_in": 3599, "token_type": "Bearer"}
        assert req["headers"]["developer-token"] == "devtoken"
        assert req["headers"]["authorization"] == f"Bearer ya29.token{self.tokens}"
        assert req["headers"]["content-type"] == "application/json"
        body = json.loads(req["body"])
        if path.endswith("/offlineUserDataJobs:create"):
            self.jobs += 1
            assert path == f"/v26/customers/{CID}/offlineUserDataJobs:create"
            assert body["job"]["type"] == "CUSTOMER_MATCH_USER_LIST"
            return 200, {}, {"resourceName": f"customers/{CID}/offlineUserDataJobs/{776 + self.jobs}"}
        if path.endswith(":addOperations"):
            assert body["enablePartialFailure"] is True
            for op in body["operations"]:
                (kind, data), = op.items()
                assert kind in ("create", "remove")
                for ident in data["userIdentifiers"]:
                    assert len(ident) == 1          # one identifier per UserIdentifier
            return 200, {}, {}
        if path.endswith(":run"):
            assert body == {}
            return 200, {}, {"name": f"customers/{CID}/operations/run-1"}
        return 404, {}, {"error": {"code": 404, "message": "no such path", "status": "NOT_FOUND"}}


@pytest.fixture
def google():
    servers = []

    def make():
        g = Google()
        s = Server(g)
        servers.append(s)
        return g, s

    yield make
    for s in servers:
        s.close()


def connector(url, **kw):
    kw = {"customer_id": "123-456-7890", "developer_token": "devtoken", "client_id": "cid.apps.googleusercontent.com",
          "client_secret": "csecret", "refresh_token": "1//refresh", "user_lists": {"hot_browsers": "4567"},
          "base_url": url, "oauth_url": f"{url}/token", **kw}
    return GoogleCustomerMatch("google_ads", **kw)


def delivery(i=0, kind="audience_add", target="hot_browsers", **profile):
    profile = profile or {"email": f"user{i}@example.com"}
    return Delivery(action_id=f"a{i}", kind=kind, target=target, user_id=f"u{i}", profile=profile)


def ops_of(req):
    return json.loads(req["body"])["operations"]


def test_create_add_run_as_documented(google):
    g, srv = google()
    c = connector(srv.url, login_customer_id="111-222-3333", ad_user_data_consent="GRANTED",
                  ad_personalization_consent="GRANTED")
    d = delivery(email="  John.Doe@GMAIL.com ", phone="(650) 253-1234", country="US",
                 first_name=" John ", last_name="Doe", zip="94025")
    assert c.deliver(d).queued and not srv.requests
    results = dict(c.flush())
    assert isinstance(results["a0"], Result) and results["a0"].provider_id == JOB

    token, create, add, run = srv.requests
    assert token["path"] == "/token"
    assert create["path"] == f"/v26/customers/{CID}/offlineUserDataJobs:create"
    assert json.loads(create["body"]) == {"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": {
        "userList": LIST, "consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}}}}
    assert add["path"] == f"/v26/{JOB}:addOperations"
    assert ops_of(add) == [{"create": {"userIdentifiers": [
        {"hashedEmail": h("john.doe@gmail.com")},                # gmail dots kept for Customer Match
        {"hashedPhoneNumber": h("+16502531234")},                # E.164 with '+'
        {"addressInfo": {"hashedFirstName": h("john"), "hashedLastName": h("doe"),
                         "countryCode": "US", "postalCode": "94025"}}]}}]
    assert run["path"] == f"/v26/{JOB}:run"
    for req in srv.ads():
        assert req["headers"]["login-customer-id"] == "1112223333"
        for raw in ("john.doe", "John.Doe", "6502531234", "253-1234"):
            assert raw not in req["body"]


def test_remove_is_a_remove_operation_in_its_own_job(google):
    g, srv = google()
    c = connector(srv.url)
    c.deliver(delivery(1, kind="audience_add", email="a@example.com"))
    c.deliver(delivery(2, kind="audience_remove", phone="+44 20 7183 8750"))
    results = dict(c.flush())
    assert all(isinstance(r, Result) for r in results.values())
    adds = [r for r in srv.requests if r["path"].endswith(":addOperations")]
    ops = {next(iter(ops_of(r)[0])): (r["path"], ops_of(r)) for r in adds}
    assert ops["create"][1] == [{"create": {"userIdentifiers": [{"hashedEmail": h("a@example.com")}]}}]
    assert ops["remove"][1] == [{"remove": {"userIdentifiers": [{"hashedPhoneNumber": h("+442071838750")}]}}]
    assert ops["create"][0] != ops["remove"][0]          # two jobs
    assert len([r for r in srv.requests if r["path"].endswith(":run")]) == 2
    assert "login-customer-id" not in srv.ads()[0]["headers"]
    assert g.tokens == 1                                 # the token is kept between calls


def test_an_erasure_removal_sends_the_hashes_a_removal_of_the_profile_sends(google):
    """A removal queued when a user is forgotten carries only what `erasure_identifiers` took from
    the profile before it was deleted: the hashed UserIdentifiers (country and postal code in clear,
    as Google takes them). The connector sends exactly what a removal read from the profile sends."""
    from connectors.base import ERASED
    from connectors.google_audiences import erasure_identifiers

    profile = {"email": " Ann.Lee@Example.com ", "phone": "020 7946 0958", "country": "GB", "first_name": "Ann",
               "last_name": "Lee-Smith", "zip": "SW1A 1AA", "plan": "gold"}
    g, srv = google()
    c = connector(srv.url)
    carried = erasure_identifiers(profile, {})
    text = json.dumps(carried).lower()
    assert not any(raw in text for raw in ("ann", "lee", "7946", "gold")), carried
    c.deliver(Delivery("a1", "audience_remove", "hot_browsers", "u1", profile=profile))
    c.flush()
    c.deliver(Delivery("a2", "audience_remove", "hot_browsers", "forgotten", data={ERASED: carried}))
    assert isinstance(dict(c.flush())["a2"], Result)
    normal, erased = (ops_of(r) for r in srv.requests if r["path"].endswith(":addOperations"))
    assert erased == normal and len(normal[0]["remove"]["userIdentifiers"]) == 3
    # what is carried is sent only as the hashes it must be: a value in clear is never sent
    with pytest.raises(InvalidRecipient):
        c.deliver(Delivery("a3", "audience_remove", "hot_browsers", "forgotten",
                           data={ERASED: {"google": [{"hashedEmail": "ann.lee@example.com"}]}}))
    assert c.flush() == [] and "ann.lee@example.com" not in json.dumps(srv.requests)


def test_full_batches_are_added_at_once_and_run_on_flush(google):
    g, srv = google()
    c = connector(srv.url, batch_size=1000)
    for i in range(2500):
        c.deliver(delivery(i))
    adds = lambda: [r for r in srv.requests if r["path"].endswith(":addOperations")]
    assert [len(ops_of(r)) for r in adds()] == [1000, 1000]
    assert not [r for r in srv.requests if r["path"].endswith(":run")]
    results = c.flush()
    assert [len(ops_of(r)) for r in adds()] == [1000, 1000, 500]
    assert len({r["path"] for r in adds()}) == 1         # one job
    assert g.jobs == 1 and len(results) == 2500
    assert all(isinstance(r, Result) for _, r in results)


def test_partial_failure_is_reported_per_action(google):
    g, srv = google()
    g.fail[":addOperations"] = (200, {}, {"partialFailureError": {
        "code": 3, "message": "Multiple errors in 'details'.",
        "details": [{"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                     "errors": [{"errorCode": {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"},
                                 "message": "The SHA256 encoded value is malformed.",
                                 "location": {"fieldPathElements": [
                                     {"fieldName": "operations", "index": 1}, {"fieldName": "create"},
                                     {"fieldName": "user_identifiers", "index": 0}]}}]}]}})
    c = connector(srv.url)
    for i in range(3):
        c.deliver(delivery(i))
    results = dict(c.flush())
    assert isinstance(results["a1"], InvalidRecipient) and "INVALID_SHA256_FORMAT" in str(results["a1"])
    assert isinstance(results["a0"], Result) and isinstance(results["a2"], Result)


def ads_failure(status, http_status, code, retry_delay=None):
    error = {"errorCode": code, "message": "m"}
    if retry_delay:
        error["details"] = {"quotaErrorDetails": {"rateScope": "DEVELOPER", "retryDelay": retry_delay}}
    return (http_status, {}, {"error": {"code": http_status, "message": "failed", "status": status, "details": [
        {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure", "errors": [error]}]}})


@pytest.mark.parametrize("step, answer, kind", [
    (":create", ads_failure("PERMISSION_DENIED", 403, {"authorizationError": "DEVELOPER_TOKEN_NOT_APPROVED"}), ConfigurationError),
    (":create", ads_failure("INVALID_ARGUMENT", 400, {"userListError": "USER_LIST_NOT_FOUND"}), PermanentError),
    (":addOperations", ads_failure("RESOURCE_EXHAUSTED", 429, {"quotaError": "RESOURCE_EXHAUSTED"}, "30s"), RetryableError),
    (":addOperations", ads_failure("INVALID_ARGUMENT", 400, {"databaseError": "CONCURRENT_MODIFICATION"}), RetryableError),
    (":addOperations", (503, {"Content-Type": "text/html"}, b"<html>unavailable</html>"), RetryableError),
    (":run", ads_failure("INTERNAL", 500, {"internalError": "INTERNAL_ERROR"}), RetryableError),
    ("/token", (400, {}, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}), ConfigurationError),
    ("/token", (503, {"Retry-After": "5"}, b"busy"), RetryableError),
])
def test_errors_map_to_the_error_tree(google, step, answer, kind):
    g, srv = google()
    g.fail[step] = answer
    c = connector(srv.url)
    c.deliver(delivery(1))
    c.deliver(delivery(2))
    results = dict(c.flush())
    assert set(results) == {"a1", "a2"}
    for err in results.values():
        assert type(err) is kind, err
    if step == ":addOperations" and answer[0] == 429:
        assert results["a1"].retry_after == 30
    if step == "/token" and answer[0] == 503:
        assert results["a1"].retry_after == 5


def test_a_401_fetches_a_new_token_once(google):
    g, srv = google()
    seen = []

    def once(req):
        seen.append(req["headers"]["authorization"])
        if len(seen) == 1:
            return 401, {}, {"error": {"code": 401, "message": "expired", "status": "UNAUTHENTICATED"}}
        g.fail.pop(":create")
        return g(req)

    g.fail[":create"] = once
    c = connector(srv.url)
    c.deliver(delivery(1))
    (_, result), = c.flush()
    assert isinstance(result, Result)
    assert seen == ["Bearer ya29.token1", "Bearer ya29.token2"] and g.tokens == 2


def test_a_hanging_server_is_a_retryable_timeout(google):
    g, srv = google()
    g.fail[":create"] = lambda req: (time.sleep(3), (200, {}, {}))[1]
    c = connector(srv.url, timeout=0.3)
    c.deliver(delivery(1))
    started = time.monotonic()
    (_, err), = c.flush()
    assert isinstance(err, RetryableError) and "in time" in str(err)
    assert time.monotonic() - started < 2


def test_a_failed_job_is_created_again_at_the_next_flush(google):
    g, srv = google()
    g.fail[":create"] = (503, {}, b"down")
    c = connector(srv.url)
    c.deliver(delivery(1))
    (_, err), = c.flush()
    assert isinstance(err, RetryableError)
    del g.fail[":create"]
    c.deliver(delivery(1))
    (_, ok), = c.flush()
    assert isinstance(ok, Result)


def test_from_journeys_toml(google):
    g, srv = google()
    cfg = ProjectConfig.model_validate(tomllib.loads(f"""
[connectors.google_ads]
channel = "ads"
type = "google_customer_match"
customer_id = "123-456-7890"
developer_token_env = "GOOGLE_ADS_DEVELOPER_TOKEN"
client_id_env = "GOOGLE_ADS_CLIENT_ID"
client_secret_env = "GOOGLE_ADS_CLIENT_SECRET"
refresh_token_env = "GOOGLE_ADS_REFRESH_TOKEN"
user_lists = {{ hot_browsers = "{LIST}" }}
base_url = "{srv.url}"
oauth_url = "{srv.url}/token"
"""))
    env = {"GOOGLE_ADS_DEVELOPER_TOKEN": "devtoken", "GOOGLE_ADS_CLIENT_ID": "cid.apps.googleusercontent.com",
           "GOOGLE_ADS_CLIENT_SECRET": "csecret", "GOOGLE_ADS_REFRESH_TOKEN": "1//refresh"}
    c = GoogleCustomerMatch.from_settings("google_ads", cfg.connectors["google_ads"].settings, env=env)
    c.deliver(delivery(1))
    (_, result), = c.flush()
    assert isinstance(result, Result)
    create = next(r for r in srv.requests if r["path"].endswith(":create"))
    assert json.loads(create["body"])["job"]["customerMatchUserListMetadata"] == {"userList": LIST}


def test_configuration_mistakes(google):
    g, srv = google()
    incomplete = GoogleCustomerMatch.from_settings("google_ads", {"customer_id": "1", "developer_token_env": "DEV",
                                                                  "user_lists": {"x": "1"}}, env={})
    with pytest.raises(ConfigurationError, match="DEV") as e:
        incomplete.deliver(delivery(1, target="x"))
    assert "client_id_env" in str(e.value) and "refresh_token_env" in str(e.value)
    c = connector(srv.url)
    with pytest.raises(ConfigurationError, match="no Customer Match list for audience 'cold'"):
        c.deliver(delivery(1, target="cold"))
    with pytest.raises(InvalidRecipient):
        c.deliver(delivery(1, first_name="Only"))        # a name without the rest of an address
    with pytest.raises(PermanentError):
        c.deliver(Delivery("a", "email", "x", "u"))
    with pytest.raises(ConfigurationError):
        connector(srv.url, batch_size=100_001)
    assert c.flush() == [] and not srv.requests


def test_unknown_settings_and_durations():
    with pytest.raises(ConfigurationError, match="token_url"):
        GoogleCustomerMatch.from_settings("g", {"customer_id": "1", "token_url": "x"}, env={})
    c = GoogleCustomerMatch.from_settings("g", {"customer_id": "1", "timeout": "2s"}, env={})
    assert c._client.timeout.read == 2
