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
