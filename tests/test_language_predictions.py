"""Predictions in the language (issue 19, part 4): `predicted MODEL in HORIZON`, `send ... at best
time within W`, learned caps `cap CHANNEL auto per W max N [min N]`, and the templates' `recommended`
and `predicted`: parsed, checked (every diagnostic with its code, place and help), formatted,
compiled and evaluated, and summed up on the compiled project for the engine."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from journeys import ast as A
from journeys.checker import check_and_compile, check_project
from journeys.compiler import compile_project
from journeys.evaluation import Context
from journeys.expr import compile_expr
from journeys.fmt import format_text
from journeys.functions import parse_prediction_key, prediction_key
from journeys.graph import CapRule, SendNode
from journeys.parser import parse_text
from journeys.project import load_project
from journeys.unparse import unparse
from journeys.version import journey_version

from .conftest import TEMPLATES

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
ENTRY = 'entry when event "Product Viewed" as viewed'


def _expr(text: str) -> A.Node:
    result = parse_text(f'segment "s" = {text}\n', "x.journey")
    assert not result.diagnostics, result.diagnostics
    return result.file.items[0].condition


def _journey(body: str, name: str = "A") -> str:
    lines = "\n".join(f"  {line}" for line in body.strip().split("\n"))
    return f'journey "{name}" {{\n  {ENTRY}\n{lines}\n}}\n'


def _diagnostics(make_project, monkeypatch, source: str, templates: dict | None = None):
    root = make_project({"case.journey": source}, templates=templates)
    monkeypatch.chdir(root)
    return check_project(load_project(root)).sorted()


def _clean(make_project, monkeypatch, source: str, templates: dict | None = None, allow: tuple = ()):
    root = make_project({"case.journey": source}, templates=templates)
    monkeypatch.chdir(root)
    diags, compiled = check_and_compile(load_project(root))
    assert not [d for d in diags if d.code not in allow], [(d.code, str(d.span), d.message) for d in diags]
    return compiled


# ---------------------------------------------------------------------------------- parsing


def test_predicted_is_an_operand_of_its_own():
    e = _expr("predicted purchase in 30d > 0.6")
    assert isinstance(e, A.Binary) and e.op == ">"
    assert e.left == A.Predicted(A.Text("purchase"), A.Duration(30, "d"))
    assert (e.left.model.span.line, e.left.model.span.col) == (1, 25)
    assert (e.left.horizon.span.line, e.left.horizon.span.col) == (1, 37)
    # it binds tighter than any operator: arithmetic and `and` read it whole
    e = _expr("predicted churn in 60d * 100 >= 70 and predicted purchase in 7d < 0.1")
    assert e.op == "and" and e.left.left.op == "*" and isinstance(e.left.left.left, A.Predicted)


def test_predicted_stays_a_name_where_no_model_follows():
    """A property or a named event called `predicted` keeps working: the word is a keyword only
    when a model name follows it."""
    source = ('journey "A" {\n'
              '  entry when event "Scored" where predicted == true and predicted in [true] as predicted\n'
              '  set user.p = predicted.score\n'
              '}\n')
    result = parse_text(source, "x.journey")
    assert not result.diagnostics
    entry, set_trait = result.file.items[0].items
    assert entry.match.where.left.left == A.Name("predicted")
    assert entry.match.where.right.left == A.Name("predicted")
    assert set_trait.value == A.Attr(A.Name("predicted"), "score")
    # and `count(...)` of such events reads the property
    assert isinstance(_expr('count(event "X" where predicted > 1, last 7d) > 0').left, A.Call)


def test_send_at_best_time_and_learned_caps_parse():
    source = ('policy {\n  cap email 2 per 1d, push auto per 7d max 5\n  cap sms auto per 1d max 4 min 2\n}\n'
              + _journey('send email "welcome" with { a: 1 } via "smtp" at best time within 24h'))
    items = parse_text(source, "x.journey").file.items
    policy, journey = items
    fixed, push = policy.statements[0].rules
    assert not fixed.auto and fixed.count == 2
    assert push.auto and push.bound("max") == 5 and push.bound("min") is None
    sms = policy.statements[1].rules[0]
    assert [b.kind for b in sms.bounds] == ["min", "max"]  # canonical order whatever was written
    assert (sms.bound("min"), sms.bound("max")) == (2, 4)
    send = journey.steps[0]
    assert send.best_time == A.Duration(24, "h") and send.via.value == "smtp"


def test_words_of_the_new_clauses_stay_names_elsewhere():
    e = _expr('count(event "X" where auto == 1 and best > 2 and max < min, last 7d) > 0')
    assert {n.name for n in e.walk() if isinstance(n, A.Name)} == {"auto", "best", "max", "min"}


@pytest.mark.parametrize("source,col,expected", [
    ('segment "s" = predicted purchase > 0.6\n', 34, "expected `in`"),
    ('policy {\n  cap push auto 5 per 7d\n}\n', 17, "expected `per`"),
])
def test_syntax_errors_name_what_is_missing(source, col, expected):
    diags = parse_text(source, "x.journey").diagnostics
    assert diags and diags[0].code == "J001" and diags[0].span.col == col and expected in diags[0].help


# ---------------------------------------------------------------------------------- the checker


CASES = [
    # id, source, code, line, col, text in the message or help
    ("unknown model", 'segment "s" = predicted purchse in 30d > 0.5\n', "J080", 1, 25,
     "did you mean `purchase`? the models are `purchase`"),
    ("unknown model, nothing close", 'segment "s" = predicted ltv in 30d > 0.5\n', "J080", 1, 25,
     "`churn`: the probability that the user shows no activity"),
    ("horizon too short", 'segment "s" = predicted churn in 12h > 0.5\n', "J081", 1, 34, "at least 1d"),
    ("horizon too long", 'segment "s" = predicted churn in 3651d > 0.5\n', "J081", 1, 34, "write at most `3650d`"),
    ("horizon in minutes", 'segment "s" = predicted churn in 1501m > 0.5\n', "J081", 1, 34, "whole days or hours"),
    ("horizon without unit", 'segment "s" = predicted churn in 30 > 0.5\n', "J031", 1, 34, "`30d`"),
    ("horizon in months", 'segment "s" = predicted churn in 2mo > 0.5\n', "J043", 1, 34, "no fixed length"),
    ("probability above 1", 'segment "s" = predicted purchase in 30d > 60\n', "J084", 1, 15,
     "for 60 %, write `0.6`"),
    ("probability below 0", 'segment "s" = predicted purchase in 30d >= -1\n', "J084", 1, 15,
     "never below 0"),
    ("bare predicted", _journey('if predicted > 0.5 { exit }'), "J016", 3, 6, "`predicted purchase in 30d`"),
    ("best time too long", _journey('send email "welcome" at best time within 8d'), "J082", 3, 44,
     "up to `within 7d`"),
    ("best time too short", _journey('send email "welcome" at best time within 30m'), "J082", 3, 44,
     "leave `at best time` out"),
    ("best time without unit", _journey('send email "welcome" at best time within 24'), "J031", 3, 44, "`24h`"),
    ("learned cap without max", 'policy {\n  cap push auto per 7d min 2\n}\n', "J083", 2, 7,
     "write `push auto per 7d max 5`"),
    ("learned cap on all", 'policy {\n  cap all auto per 7d max 5\n}\n', "J083", 2, 7,
     "`email auto per 7d max 5`, `push auto per 7d max 5`"),
    ("learned cap on ads", 'policy {\n  cap ads auto per 7d max 5\n}\n', "J083", 2, 7,
     "give ads a fixed count (`ads 3 per 7d`)"),
    ("learned cap min above max", 'policy {\n  cap push auto per 7d min 6 max 5\n}\n', "J083", 2, 24,
     "write `min 5 max 6`"),
    ("learned cap max too large", 'policy {\n  cap push auto per 7d max 1001\n}\n', "J083", 2, 24, "1 to 1000"),
    ("learned cap max zero", _journey('cap push auto per 7d max 0\nexit'), "J083", 3, 24, "1 to 1000"),
    ("learned cap bound twice", 'policy {\n  cap push auto per 7d max 5 max 6\n}\n', "J024", 2, 30, "keep one"),
    ("misspelt predicted", 'segment "s" = predictd purchase in 30d > 0.5\n', "J003", 1, 15,
     "did you mean `predicted`? write `segment \"s\" = predicted purchase in 30d > 0.5`"),
    ("learned cap unknown channel", 'policy {\n  cap pushes auto per 7d max 5\n}\n', "J015", 2, 7,
     "did you mean `push`?"),
]


@pytest.mark.parametrize("source,code,line,col,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diagnostic(make_project, monkeypatch, source, code, line, col, text):
    diags = _diagnostics(make_project, monkeypatch, source)
    matching = [d for d in diags if d.code == code]
    assert matching, f"expected {code}, got {[(d.code, str(d.span), d.message) for d in diags]}"
    d = matching[0]
    assert (d.span.file, d.span.line, d.span.col) == ("journeys/case.journey", line, col), d
    assert text in f"{d.message}\n{d.help}", d


def test_every_new_code_is_explained():
    from journeys.codes import CODES

    for code in ("J080", "J081", "J082", "J083", "J084"):
        assert code in CODES and CODES[code].explanation
    assert CODES["J084"].explanation.startswith("Warning.")


def test_probability_warning_is_only_a_warning_and_in_range_is_silent(make_project, monkeypatch):
    source = ('segment "a" = predicted purchase in 30d > 60\n'
              'segment "b" = predicted purchase in 30d > 0.6 and predicted churn in 60d <= 1\n'
              'segment "c" = 0 < predicted churn in 36h\n')
    diags = _diagnostics(make_project, monkeypatch, source)
    assert [(d.code, d.span.line, d.is_error) for d in diags] == [("J084", 1, False)]


def test_a_project_with_every_construct_checks_clean(make_project, monkeypatch):
    source = ('policy {\n  cap email 2 per 1d, push auto per 7d max 5\n'
              '  cap sms auto per 1d min 1 max 3 when predicted churn in 60d >= 0.7\n}\n'
              'segment "at_risk" = predicted churn in 60d >= 0.7\n'
              + _journey('cap push auto per 1d min 2 max 4\n'
                         'if predicted purchase in 30d > 0.6 and user in segment "at_risk" {\n'
                         '  send email "welcome" at best time within 24h\n'
                         '}\n'
                         'send push "finish_checkout" with { total: predicted purchase in 36h } '
                         'at best time within 1h'))
    compiled = _clean(make_project, monkeypatch, source)
    assert compiled.predictions == {("purchase", 30 * 86400), ("churn", 60 * 86400), ("purchase", 36 * 3600)}
    assert compiled.auto_caps == {("push", 7 * 86400), ("sms", 86400), ("push", 86400)}
    assert compiled.auto_cap_channels == {"push", "sms"}
    assert compiled.best_time_channels == {"email", "push"}
    assert compiled.uses_models
    sends = [n for n in compiled.journeys["A"].nodes.values() if isinstance(n, SendNode)]
    assert [n.best_time for n in sends] == [86400, 3600]
    assert sends[0].describe() == 'send email "welcome" at best time within 1d'
    push = compiled.policy.caps[0].rules[1]
    assert push == CapRule("push", 5, 7 * 86400, auto=True, low=1, high=5)
    assert compiled.policy.caps[0].rules[0] == CapRule("email", 2, 86400)
    assert compiled.policy.caps[0].rules[0].low == compiled.policy.caps[0].rules[0].high == 2
    journey_cap = compiled.journeys["A"].caps[0].rules[0]
    assert (journey_cap.auto, journey_cap.low, journey_cap.high, journey_cap.count) == (True, 2, 4, 4)
    assert journey_cap.describe() == "push auto per 1d min 2 max 4"
    # the segment's prediction is the journey's too: it reads the segment
    assert ("churn", 60 * 86400) in compiled.journeys["A"].needs.predictions
    assert compiled.segments["at_risk"].needs.predictions == {("churn", 60 * 86400)}


def test_a_project_without_models_does_not_use_them(make_project, monkeypatch):
    compiled = _clean(make_project, monkeypatch, 'policy {\n  cap email 2 per 1d\n}\n'
                      + _journey('send email "welcome"'))
    assert not compiled.uses_models and compiled.predictions == frozenset()
    assert compiled.auto_caps == frozenset() and compiled.best_time_channels == frozenset()


# ---------------------------------------------------------------------------------- templates


def _with_template(body: str) -> dict:
    return {**TEMPLATES, "email/picks.j2": f"---\nsubject: Picks\nfrom: shop@example.com\n---\n{body}\n"}


def test_templates_may_read_recommended_and_predicted(make_project, monkeypatch):
    template = _with_template(
        "{% for p in recommended.products[:3] %}{{ p.product_id }} ({{ p.category }}){% endfor %}\n"
        "{{ recommended.categories | join(', ') }} {{ predicted.purchase_30d }} {{ predicted['churn_36h'] }}")
    compiled = _clean(make_project, monkeypatch, _journey('send email "picks"'), templates=template)
    assert compiled.template_predictions == {("purchase", 30 * 86400), ("churn", 36 * 3600)}
    assert compiled.predictions == compiled.template_predictions and compiled.uses_models


@pytest.mark.parametrize("key,code,text", [
    ("purchse_30d", "J080", "did you mean `purchase`?"),
    ("score", "J080", "write MODEL_HORIZON"),
    ("purchase_720h", "J081", "write `predicted.purchase_30d`"),
    ("churn_0d", "J081", "a horizon is 1d to 3650d"),
])
def test_template_predictions_are_checked(make_project, monkeypatch, key, code, text):
    template = _with_template(f"<p>line one</p>\n{{{{ predicted.{key} }}}}")
    diags = _diagnostics(make_project, monkeypatch, _journey('send email "picks"'), templates=template)
    d = next(d for d in diags if d.code == code)
    assert (d.span.line, d.span.col) == (3, 14) and text in f"{d.message}\n{d.help}"
    assert "templates/email/picks.j2:6:" in d.help  # where in the template


def test_prediction_keys_round_trip():
    assert prediction_key("purchase", 30 * 86400) == "purchase_30d"
    assert prediction_key("churn", 36 * 3600) == "churn_36h"
    assert parse_prediction_key("churn_36h") == ("churn", 36 * 3600)
    assert parse_prediction_key("next_best_7d") == ("next_best", 7 * 86400)
    assert parse_prediction_key("purchase") is None and parse_prediction_key("purchase_30") is None


# ---------------------------------------------------------------------------------- evaluation


def test_predicted_asks_the_context_with_model_and_horizon_seconds():
    asked = []

    def predict(model: str, horizon: int) -> float | None:
        asked.append((model, horizon))
        return {"purchase": 0.75, "churn": 0.2}[model]

    ctx = Context(now=NOW, predict=predict)
    assert compile_expr(_expr("predicted purchase in 30d"))(ctx) == 0.75
    assert compile_expr(_expr("predicted purchase in 30d > 0.6"))(ctx) is True
    assert compile_expr(_expr("predicted churn in 36h >= 0.7"))(ctx) is False
    assert compile_expr(_expr("predicted churn in 60d * 100"))(ctx) == pytest.approx(20.0)
    assert asked == [("purchase", 2592000), ("purchase", 2592000), ("churn", 129600), ("churn", 5184000)]
    # derived contexts keep the predictor
    assert compile_expr(_expr("predicted purchase in 30d"))(ctx.replace(now=NOW)) == 0.75
    assert compile_expr(_expr("predicted purchase in 30d"))(ctx.with_event(None, None)) == 0.75


def test_without_a_predictor_a_prediction_is_null_and_no_comparison_holds():
    ctx = Context(now=NOW)
    assert ctx.predict("purchase", 86400) is None
    assert compile_expr(_expr("predicted purchase in 30d"))(ctx) is None
    assert compile_expr(_expr("predicted purchase in 30d > 0.6"))(ctx) is None  # null: the condition fails
    assert compile_expr(_expr("predicted purchase in 30d <= 0.6"))(ctx) is None
    assert compile_expr(_expr("predicted purchase in 30d == null"))(ctx) is True
    assert compile_expr(_expr("coalesce(predicted churn in 60d, 0.5)"))(ctx) == 0.5


def test_a_segment_on_a_prediction_evaluates_through_the_context():
    files = [parse_text('segment "at_risk" = predicted churn in 60d >= 0.7\n', "x.journey").file]
    project = compile_project(files)
    predicate = project.segments["at_risk"].predicate
    assert predicate(Context(now=NOW, predict=lambda m, h: 0.9)) is True
    assert predicate(Context(now=NOW, predict=lambda m, h: 0.1)) is False
    assert Context(now=NOW, predict=lambda m, h: 0.9, segments=project.segments).in_segment("at_risk")


# ---------------------------------------------------------------------------------- text back


SOURCE = ('policy {\n'
          '  cap email 2 per 1d,   push auto per 7d max   5   # learned\n'
          '  cap sms auto per 1d max 4 min 2 when predicted churn in 60d>=0.7\n'
          '}\n'
          'segment "at_risk" = predicted   churn in 60d >= 0.7\n'
          'journey "A" {\n'
          '  entry when event "X" as x\n'
          '  if predicted purchase in 30d > 0.6 { send email "x" with {a:1} via "smtp"   at best   time within 24h }\n'
          '  send push "y" at best time within 2d\n'
          '}\n')
CANONICAL = ('policy {\n'
             '  cap email 2 per 1d, push auto per 7d max 5         # learned\n'
             '  cap sms auto per 1d min 2 max 4 when predicted churn in 60d >= 0.7\n'
             '}\n'
             '\n'
             'segment "at_risk" = predicted churn in 60d >= 0.7\n'
             '\n'
             'journey "A" {\n'
             '  entry when event "X" as x\n'
             '  if predicted purchase in 30d > 0.6 {\n'
             '    send email "x" with { a: 1 } via "smtp" at best time within 24h\n'
             '  }\n'
             '  send push "y" at best time within 2d\n'
             '}\n')


def test_fmt_prints_the_new_constructs_canonically_and_is_idempotent():
    out = format_text(SOURCE, "x.journey").output
    assert out == CANONICAL
    assert format_text(out, "x.journey").output == out
    assert parse_text(out, "x.journey").file.items == parse_text(SOURCE, "x.journey").file.items


def test_unparse_round_trips_a_prediction():
    for text in ("predicted purchase in 30d > 0.6", "predicted churn in 36h * 100 >= 70",
                 "not predicted churn in 60d >= 0.7", "-predicted purchase in 1d < 0"):
        e = _expr(text)
        assert unparse(e) == text
        assert _expr(unparse(e)) == e
    assert compile_expr(_expr("predicted churn in 60d >= 0.7")).source == "predicted churn in 60d >= 0.7"


def test_versions_of_journeys_without_the_new_clauses_are_unchanged_and_the_clauses_count():
    """A send without `at best time` and a fixed cap hash as they did before the fields existed
    (tests/test_version.py pins one such version); adding a clause changes the version."""
    def version(body: str) -> str:
        journey = parse_text(_journey(body), "x.journey").file.items[0]
        return journey_version(journey, {})

    plain = version('cap push 3 per 7d\nsend email "x"')
    assert plain != version('cap push 3 per 7d\nsend email "x" at best time within 24h')
    assert version('cap push auto per 7d max 3\nsend email "x"') not in (plain, version('cap push auto per 7d max 4\nsend email "x"'))
    assert version('send email "x" at best time within 24h') == version('send email "x" at best time within 1d')


def test_the_predictions_section_of_the_docs_checks_clean(make_project, monkeypatch):
    """The page's example project and its template example check clean, with the project summary
    the engine reads."""
    import re

    from .conftest import ROOT

    page = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    section = page[page.index("## Predictions"):page.index("## Time: durations")]
    (journey,) = re.findall(r"^```journey\n(.*?)^```", section, re.S | re.M)
    template_body = re.findall(r"^```text\n(.*?)^```", section, re.S | re.M)[0]
    front = "---\nsubject: Hi\nfrom: shop@example.com\n---\n"
    templates = {**TEMPLATES, "email/we_miss_you.j2": front + template_body,
                 "email/picked_for_you.j2": front + "{{ product }} {{ recommended.products[0].product_id }}\n"}
    # J061: two journeys under one cap without a declared order (a warning, journeys.toml's business)
    compiled = _clean(make_project, monkeypatch, journey, templates=templates, allow=("J061",))
    assert compiled.predictions == {("churn", 60 * 86400), ("purchase", 30 * 86400)}
    assert compiled.auto_cap_channels == {"push"} and compiled.best_time_channels == {"email"}


# ---------------------------------------------------------------------------------- pinned scores in scenarios

PINNING = 'journey "Win back" {\n  entry when event "Order Completed"\n  if predicted churn in 60d >= 0.7 {\n' \
          '    send email "welcome"\n  }\n}\n'


def _scenario(body: str) -> str:
    return 'test "pinned" {\n' + "".join(f"  {line}\n" for line in body.strip().split("\n")) + "}\n"


def _run(make_project, monkeypatch, body: str):
    from engine.core.program import Program
    from engine.dryrun.scenarios import run_scenario

    root = make_project({"case.journey": PINNING, "tests/case.test": _scenario(body)})
    monkeypatch.chdir(root)
    project = load_project(root)
    diags, compiled = check_and_compile(project)
    assert not [d for d in diags if d.severity == "error"], [(d.code, str(d.span), d.message) for d in diags]
    (scenario,) = [s for f in project.test_files for s in f.items]
    return run_scenario(Program.build(compiled), scenario, "tests/case.test")


ORDER = 'at 2026-03-02 12:00 event "Order Completed" user "u1" { revenue: 40 }'


@pytest.mark.parametrize("pin,sent", [("0.9", True), ("0.7", True), ("0.69", False), ("null", False), (None, False)])
def test_a_scenario_pins_a_users_score_and_the_journey_branches_on_it(make_project, monkeypatch, pin, sent):
    given = f'given user "u1" predicted churn in 60d = {pin}\n' if pin is not None else ""
    outcome = _run(make_project, monkeypatch, f'user "u1" {{ email: "u1@example.com" }}\n{given}{ORDER}\n'
                                              'expect email "welcome" to "u1" at 2026-03-02 12:00')
    assert outcome.passed is sent, outcome.failures


def test_a_pin_holds_for_its_user_model_and_horizon_only(make_project, monkeypatch):
    outcome = _run(make_project, monkeypatch, '\n'.join([
        'user "u1" { email: "u1@example.com" }', 'user "u2" { email: "u2@example.com" }',
        'given user "u2" predicted churn in 60d = 0.9',  # another user
        'given user "u1" predicted churn in 30d = 0.9',  # another horizon
        'given user "u1" predicted purchase in 60d = 0.9',  # another model
        ORDER, 'expect no email "welcome" to "u1"']))
    assert outcome.passed, outcome.failures


def test_given_prints_canonically_and_round_trips():
    source = _scenario('given   user "u1" predicted churn in 60d =  0.90\ngiven user "u2" predicted purchase in 2w = null')
    formatted = format_text(source, "tests/case.test").output
    assert 'given user "u1" predicted churn in 60d = 0.9\n' in formatted
    assert 'given user "u2" predicted purchase in 2w = null\n' in formatted
    assert format_text(formatted, "tests/case.test").output == formatted
    (st, nothing) = parse_text(formatted, "tests/case.test").file.items[0].statements
    assert (st.user.value, st.prediction.model.value, st.prediction.horizon.seconds, st.value) == (
        "u1", "churn", 60 * 86400, 0.9)
    assert nothing.value is None


@pytest.mark.parametrize("given,code,col,text", [
    ('given user "u1" predicted churm in 60d = 0.9', "J080", 29, "did you mean `churn`?"),
    ('given user "u1" predicted churn in 2h = 0.9', "J081", 38, "at least"),
    ('given user "u1" predicted churn in 60d = 1.5', "J041", 3, "between 0 and 1"),
])
def test_a_bad_pin_is_a_diagnostic_at_its_place(make_project, monkeypatch, given, code, col, text):
    root = make_project({"case.journey": PINNING, "tests/case.test": _scenario(given)})
    monkeypatch.chdir(root)
    diags = [d for d in check_project(load_project(root)).sorted() if d.code == code]
    assert diags, code
    d = diags[0]
    assert (d.span.file, d.span.line, d.span.col) == ("tests/case.test", 2, col), (d.span, d.message)
    assert text in f"{d.message}\n{d.help}"
