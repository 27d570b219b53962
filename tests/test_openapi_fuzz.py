"""Schemathesis against the ingest's own OpenAPI description (/openapi.json), on a real uvicorn.

Every operation the description lists gets generated requests (schemathesis' Python API:
`as_strategy`, positive and negative data; its pytest `from_fixture` breaks on pytest 9),
sent over HTTP to a real server on loopback (tests/test_ingest.py's `Server`):

- with the write key as the HTTP Basic user name: no 5xx, and every status code is one the
  description documents (200, 400, 401, 413, 415, 503), with a JSON body of its documented shape;
- without it (the header removed, whatever the case generated): 401, the key being checked before
  the calls are validated. A body refused before it is read (413 over the size limit, 415 for an
  unsupported Content-Encoding) is the one exception, documented as such in engine/daemon/ingest.py.

Runtime: at most 50 generated examples per operation and mode, derandomized (Hypothesis derives
the examples from the test, not from a random seed), no database of past failures: the same
requests on every run, no shrinking (the failing request is reported as sent), so CI stays fast.
"""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")  # the test extra installs it (pyproject.toml)

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode  # noqa: E402

from .test_ingest import KEY, Server, auth  # noqa: E402

SETTINGS = settings(max_examples=50, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = {"/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/alias", "/v1/group", "/v1/batch"}


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("fuzz") / "journeys.db")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api_schema(ingest):
    return schemathesis.openapi.from_url(ingest.url + "/openapi.json")


MODES = ["positive", "negative"]


def _run(api_schema, path: str, mode: str, check) -> None:
    """`check(case)` on up to 50 generated requests of one operation (derandomized)."""
    strategy = api_schema[path]["POST"].as_strategy(generation_mode=GenerationMode(mode))

    @SETTINGS
    @given(case=strategy)
    def run(case):
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        check(case)

    run()


def test_the_description_lists_every_operation(api_schema):
    listed = {op.ok().path for op in api_schema.get_all_operations()}
    assert listed == OPERATIONS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", sorted(OPERATIONS))
def test_with_the_write_key_no_server_error_and_only_documented_answers(api_schema, path, mode):
    def check(case):
        if isinstance(case.body, dict):
            case.body.pop("writeKey", None)  # the header carries the key: the calls themselves get validated
        response = case.call(headers=auth(KEY), timeout=10)
        case.validate_response(response, checks=CHECKS)
        if "authorization" not in {k.lower() for k in response.request.headers}:
            # a negative case of schemathesis' own: "missing Authorization" (it drops the header)
            assert response.status_code in (401, 413, 415), (response.status_code, response.text)
        else:
            assert response.status_code in (200, 400, 413, 415), (response.status_code, response.text,
                                                                  response.request.body)

    _run(api_schema, path, mode, check)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", sorted(OPERATIONS))
def test_without_a_write_key_every_call_is_a_401(api_schema, path, mode):
    def check(case):
        if isinstance(case.body, dict):
            case.body.pop("writeKey", None)  # a key in the body counts too (a generated one: 401 anyway)
        response = case.call(timeout=10)
        assert "authorization" not in {k.lower() for k in response.request.headers}
        case.validate_response(response, checks=CHECKS)
        assert response.status_code in (401, 413, 415), (response.status_code, response.text)
        if response.status_code == 401:
            assert response.json()["field"] == "writeKey"
            assert {k.lower(): v for k, v in response.headers.items()}["www-authenticate"] == ['Basic realm="journeys"']

    _run(api_schema, path, mode, check)


# ---------------------------------------------------------------------- the whole daemon
# `journeys serve` as a real process (tests/test_daemon.py's Daemon): its /openapi.json, read with
# the admin token, describes every route of the API, each with its credential; every operation
# gets generated requests carrying that credential (the admin token, the write key, the profile
# key, ...), and every answer must be documented, conform to its schema and not be a 5xx.

# the DSN route's body is a raw RFC 822 message: schemathesis sends what it generates for it as bytes
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")

DAEMON_EXAMPLES = 25  # per operation and mode: about 1,500 requests in all
OPERATOR_OPERATIONS = {  # besides the ingest's: what must be described (others may add more)
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/admin/readyz"), ("GET", "/metrics"),
    ("GET", "/v1/profile/{user_id}"), ("GET", "/admin/trace"), ("GET", "/admin/users/{user_id}/trace"),
    ("GET", "/admin/users/{user_id}"), ("DELETE", "/admin/users/{user_id}"), ("GET", "/admin/journeys"),
    ("GET", "/admin/dead-letters"), ("POST", "/admin/dead-letters/{entry_id}/retry"), ("GET", "/admin/inbox/failed"),
    ("POST", "/admin/inbox/failed/{seq}/retry"), ("GET", "/admin/pauses/log")}
DAEMON_PROFILE_KEY = "profile-key-for-tests"
FEEDBACK_TOKEN = "feedback-token-for-tests"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from .test_daemon import Daemon, tiny_project
    from .test_smtp import free_port

    tmp = tmp_path_factory.mktemp("daemon-fuzz")
    root = tiny_project(tmp / "tiny", free_port())
    toml = root / "journeys.toml"
    toml.write_text(toml.read_text().replace('write_keys_env = ["JOURNEYS_WRITE_KEY"]',
                                             'write_keys_env = ["JOURNEYS_WRITE_KEY"]\n'
                                             'profile_keys_env = ["JOURNEYS_PROFILE_KEY"]'))
    d = Daemon(root, None, tmp / "daemon.log", JOURNEYS_PROFILE_KEY=DAEMON_PROFILE_KEY,
               JOURNEYS_FEEDBACK_TOKEN=FEEDBACK_TOKEN)
    assert d.post("identify", {"userId": "u1", "traits": {"email": "u1@example.com"}}).status_code == 200
    yield d
    d.stop()


@pytest.fixture(scope="module")
def daemon_schema(daemon):
    return schemathesis.openapi.from_url(daemon.url + "/openapi.json", headers=daemon.operator)


def carried(daemon, security: list[dict]) -> dict[str, str]:
    """The header of the operation's credential (its first security requirement), as the daemon's
    clients send it."""
    scheme = next(iter(security[0]), None) if security else None
    return {"adminToken": daemon.operator, "writeKey": auth(KEY), "profileKey": {"Authorization": f"Bearer {DAEMON_PROFILE_KEY}"},
            "feedbackToken": {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}, None: {}}.get(scheme, {})


def daemon_operations(schema) -> list[tuple[str, str, list[dict]]]:
    return sorted((op.ok().method.upper(), op.ok().path, op.ok().definition.raw.get("security", []))
                  for op in schema.get_all_operations())


def test_openapi_json_is_the_operators(daemon):
    assert httpx.get(daemon.url + "/openapi.json", timeout=5).status_code == 401
    assert httpx.get(daemon.url + "/openapi.json", headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401


def test_the_daemons_description_lists_every_api_route_with_its_credential(daemon_schema):
    raw = daemon_schema.raw_schema
    listed = {(m, p) for m, p, _ in daemon_operations(daemon_schema)}
    assert OPERATOR_OPERATIONS | {("POST", p) for p in OPERATIONS} <= listed
    assert not any(p.startswith(("/u/", "/console")) for _, p in listed)  # pages for people, not the API
    security = {(m, p): s for m, p, s in daemon_operations(daemon_schema)}
    assert "security" not in raw  # none by default: /healthz and /readyz take none
    for (method, path), required in security.items():
        tags = raw["paths"][path][method.lower()].get("tags", [])
        if "admin" in tags:
            assert required == [{"adminToken": []}], (method, path)
            assert {"401", "403"} <= set(raw["paths"][path][method.lower()]["responses"]), (method, path)
    assert security[("POST", "/v1/track")] == [{"writeKey": []}]
    assert security[("GET", "/v1/profile/{user_id}")] == [{"profileKey": []}]
    assert security[("GET", "/healthz")] == security[("GET", "/readyz")] == []
    # the delivery feedback: the feedback token or the admin token; Resend's webhook signs with Svix
    assert security[("POST", "/v1/feedback/dsn")] == [{"feedbackToken": []}, {"adminToken": []}]
    assert security[("POST", "/v1/feedback/resend")] == [{"svixSignature": []}]
    schemes = raw["components"]["securitySchemes"]
    assert schemes["adminToken"] == {**schemes["adminToken"], "type": "http", "scheme": "bearer"}
    assert schemes["writeKey"]["scheme"] == "basic"
    names = {name for required in security.values() for r in required for name in r}
    assert names <= set(schemes), names - set(schemes)  # every scheme an operation names is defined


@pytest.mark.parametrize("mode", MODES)
def test_every_operation_of_the_daemon_answers_as_documented(daemon, daemon_schema, mode):
    """Each operation with its credential: documented status codes and bodies, never a 5xx (a 503
    of a route that documents it aside). One test per mode, the operations in turn: the failures
    of all are collected, each with the request that caused it."""
    from hypothesis.errors import Unsatisfiable
    from schemathesis.core.failures import FailureGroup  # a BaseExceptionGroup: schemathesis' failures

    failures = []
    for operation in daemon_schema.get_all_operations():
        op = operation.ok()
        headers = carried(daemon, op.definition.raw.get("security", []))
        strategy = op.as_strategy(generation_mode=GenerationMode(mode))

        @settings(SETTINGS, max_examples=DAEMON_EXAMPLES)
        @given(case=strategy)
        def run(case):
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            if isinstance(case.body, dict):
                case.body.pop("writeKey", None)
            case.validate_response(case.call(headers=headers, timeout=30), checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            continue  # nothing to make invalid (no parameters, no body): the positive mode covers it
        except (FailureGroup, Exception) as exc:  # noqa: BLE001 - gathered, each with its operation
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
