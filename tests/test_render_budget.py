"""A template cannot render for seconds or build megabytes: each message has a render budget, the
same in the daemon, the dry-run and `journeys render` (connectors.render; issue 18, point 7).

Each hostile template here would take several seconds of CPU (or build megabytes) without the
budget; the tests lower the time budget to half a second and assert the budget error, never how
fast it came, so a loaded machine makes them slower, not flaky."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest

from connectors import render
from connectors.errors import PermanentError
from connectors.render import render_email, render_push, render_sms
from engine.core.effects import SENT, Action
from engine.dryrun.render_check import RenderCheck

from .conftest import SHOP
from .test_render import URL, delivery, make, run

FRONT = {"subject": "Hi", "from": "shop@example.com"}

# several seconds of CPU each without a budget, by different routes past the checks
HOSTILE = {
    # the template: two nested ranges, nothing printed
    "nested ranges": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}done",
    # the same loops over a range made once: no call inside them
    "loops over a made range": "{% set r = range(15000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}done",
    # exponential recursion, no loop at all
    "macro recursion": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(21) }}done",
    # quadratic work inside filters: `select` applies a test per item
    "filters": "{% set r = range(40000) | list %}{{ r | select('in', r) | list | length }}",
}


@pytest.fixture()
def half_a_second(monkeypatch):
    monkeypatch.setattr(render, "RENDER_SECONDS", 0.5, raising=False)


@pytest.mark.parametrize("source", HOSTILE.values(), ids=list(HOSTILE))
def test_a_template_past_its_time_budget_fails_the_message(source, half_a_second):
    with pytest.raises(PermanentError) as e:
        render_email(make(FRONT, source), delivery(), unsubscribe_url=URL)
    assert "template email/t" in str(e.value) and "render budget of 0.5 s" in str(e.value)


def test_the_budget_error_says_where_it_stopped(half_a_second):
    source = "Hello\n\n{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    with pytest.raises(PermanentError, match=r"stopped at line \d+") as e:
        render_sms(make({}, source, "sms"), delivery(kind="sms"))
    assert str(e.value).startswith("template sms/t went over its render budget of 0.5 s")


def test_the_time_budget_is_per_message_not_per_field(monkeypatch):
    """Each field renders well within the budget; together they do not."""
    monkeypatch.setattr(render, "RENDER_SECONDS", 0.5, raising=False)
    slow = "{% for i in range(1500) %}{% for j in range(1500) %}{% endfor %}{% endfor %}x"  # ~0.1 s each
    alone = make(FRONT, slow)
    render_email(alone, delivery(), unsubscribe_url=URL)  # one field: fine
    many = make({**FRONT, **{k: slow for k in ("reply_to", "preheader", "text")},
                 "headers": {f"X-{n}": slow for n in range(40)}}, slow)
    with pytest.raises(PermanentError, match="render budget"):
        render_email(many, delivery(), unsubscribe_url=URL)


def test_output_past_its_size_budget_fails_the_message():
    source = "{% for i in range(20000) %}{{ 'x' * 100 }}{% endfor %}"  # 2,000,000 characters
    with pytest.raises(PermanentError, match="template email/t went over its render budget of 1,000,000 characters"):
        render_email(make(FRONT, source), delivery(), unsubscribe_url=URL)
    # per message: two parts of 600,000 characters each are too much together
    half = "{% for i in range(6000) %}{{ 'x' * 100 }}{% endfor %}"
    render_email(make(FRONT, half), delivery(), unsubscribe_url=URL)
    with pytest.raises(PermanentError, match="1,000,000 characters"):
        render_email(make({**FRONT, "text": half}, half), delivery(), unsubscribe_url=URL)


def test_push_fields_and_text_captured_in_a_block_are_bounded_too(half_a_second):
    with pytest.raises(PermanentError, match="render budget of 0.5 s"):
        render_push(make({"title": HOSTILE["nested ranges"]}, "body", "push"), delivery(kind="push"))
    captured = "{% set x %}{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}.{% endfor %}{% endset %}"
    with pytest.raises(PermanentError, match="template sms/t"):
        render_sms(make({}, captured + "{{ x | length }}", "sms"), delivery(kind="sms"))


def test_a_template_within_its_budget_renders_as_before(half_a_second):
    source = "{% for i in range(100) %}{% for j in range(100) %}{{ i * j }} {% endfor %}{% endfor %}"
    assert len(render_sms(make({}, source, "sms"), delivery(kind="sms")).body) > 10_000
    for _ in range(3):  # the budget is each message's own: renders in a row do not add up
        render_email(make(FRONT, "{% for i in range(2000) %}{% for j in range(500) %}{% endfor %}{% endfor %}ok"),
                     delivery(), unsubscribe_url=URL)


def test_the_dry_run_reports_the_budget_error_as_a_failed_message(tmp_path, half_a_second):
    (tmp_path / "templates" / "email").mkdir(parents=True)
    (tmp_path / "templates" / "email" / "slow.j2").write_text(
        "---\nsubject: Hi\nfrom: shop@example.com\n---\n" + HOSTILE["nested ranges"])
    check = RenderCheck(inner=None, root=tmp_path, profile=lambda uid: {"email": f"{uid}@example.com"})
    action = Action(id="a1", time=datetime(2026, 3, 2, tzinfo=timezone.utc), user="u1", journey="J", version="v",
                    entry=1, path="0", kind="email", channel="email", target="slow", outcome=SENT)
    error = check.error(action)
    assert error is not None and error.startswith("template email/slow went over its render budget of 0.5 s")


def test_journeys_render_reports_the_budget_error(tmp_path, half_a_second):
    project = tmp_path / "shop"
    shutil.copytree(SHOP, project)
    (project / "templates" / "sms" / "slow.j2").parent.mkdir(parents=True, exist_ok=True)
    (project / "templates" / "sms" / "slow.j2").write_text(HOSTILE["nested ranges"])
    r = run("sms/slow", project)
    assert r.exit_code == 1, r.output
    assert "template sms/slow went over its render budget of 0.5 s" in r.output


def test_jinja_s_range_limit_is_kept():
    """Jinja's sandbox refuses a range of more than MAX_RANGE items outright."""
    with pytest.raises(PermanentError, match="Range too big"):
        render_sms(make({}, "{% for i in range(10**7) %}{% endfor %}x", "sms"), delivery(kind="sms"))
