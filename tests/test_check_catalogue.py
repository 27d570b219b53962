"""A catalogue of broken inputs: each asserts the code, the line, the column and the help text."""

from __future__ import annotations

import pytest

from journeys.checker import check_project
from journeys.project import load_project

OK_ENTRY = 'entry when event "Product Viewed" as viewed'

CASES = [
    # id, source, code, line, col, text expected in message or help
    ("misspelt keyword", f'journey "A" {{\n  {OK_ENTRY}\n  sned email "welcome"\n}}\n', "J003", 3, 3, "did you mean `send`?"),
    ("misspelt wait", f'journey "A" {{\n  {OK_ENTRY}\n  wiat 1h\n}}\n', "J003", 3, 3, "did you mean `wait`?"),
    ("misspelt entry", 'journey "A" {\n  entyr when event "X"\n}\n', "J003", 2, 3, "did you mean `entry`?"),
    ("unterminated string", 'journey "A {\n  entry when event "X"\n}\n', "J002", 1, 9, "close it"),
    ("missing brace", f'journey "A" {{\n  {OK_ENTRY}\n  send email "welcome"\n', "J001", 3, 23, "`}` is missing"),
    ("dangling and", f'journey "A" {{\n  {OK_ENTRY}\n  if viewed.price > 10 and {{ exit }}\n}}\n', "J001", 3, 28, "expected an expression after `and`"),
    ("unclosed block", f'journey "A" {{\n  {OK_ENTRY}\n  if viewed.price > 10 {{\n    exit\n}}\n', "J001", 5, 2, "the block opened at line 3 (`if viewed.price > 10 {`) is never closed"),
    ("lost brace, next journey", f'journey "A" {{\n  {OK_ENTRY}\n  if viewed.price > 10 {{\n    exit\n}}\njourney "B" {{\n  {OK_ENTRY}\n  sned email "welcome"\n}}\n', "J003", 8, 3, "did you mean `send`?"),
    ("brace missing before else", f'journey "A" {{\n  {OK_ENTRY}\n  if viewed.price > 10 {{\n    exit\n  else {{ exit }}\n}}\n', "J001", 5, 3, "a `}` is missing before it"),
    ("stray character", f'journey "A" {{\n  {OK_ENTRY}\n  wait 1h @\n}}\n', "J001", 3, 11, "unexpected character `@`"),
    ("duration without unit", f'journey "A" {{\n  {OK_ENTRY}\n  wait 20\n}}\n', "J031", 3, 8, "`20m`"),
    ("duration in months", f'journey "A" {{\n  {OK_ENTRY}\n  wait 1mo\n}}\n', "J043", 3, 8, "no fixed length"),
    ("duration spelled out", f'journey "A" {{\n  {OK_ENTRY}\n  wait 5min\n}}\n', "J043", 3, 8, "write `5m`"),
    ("time out of range", f'journey "A" {{\n  {OK_ENTRY}\n  wait until 24:30 user time\n}}\n', "J032", 3, 14, "hours are 0-23"),
    ("minutes out of range", 'policy {\n  quiet hours 21:00-08:75 user time\n}\n', "J032", 2, 21, "minutes 0-59"),
    ("unknown timezone", f'journey "A" {{\n  {OK_ENTRY}\n  wait until 10:00 in "Europe/Istambul"\n}}\n', "J019", 3, 23, 'did you mean "Europe/Istanbul"?'),
    ("unknown policy timezone", 'policy {\n  timezone "Mars/Olympus"\n}\n', "J019", 2, 12, "IANA"),
    ("invalid cron", 'segment "s" = happened(event "A", last 7d)\njourney "A" {\n  entry on cron "0 10 * *" for segment "s"\n  send email "welcome"\n}\n', "J033", 3, 17, "five fields"),
    ("unknown every day", 'journey "A" {\n  entry every mondey at 10:00 user time\n  send email "welcome"\n}\n', "J033", 2, 15, "did you mean `monday`?"),
    ("unknown segment", f'journey "A" {{\n  {OK_ENTRY}\n  if user in segment "vip" {{ exit }}\n}}\nsegment "vips" = user.tier == "gold"\n', "J010", 3, 22, 'did you mean "vips"?'),
    ("unknown template", f'journey "A" {{\n  {OK_ENTRY}\n  send email "browse_abandn" with {{ product: viewed.name }}\n}}\n', "J011", 3, 14, 'did you mean "browse_abandon"?'),
    ("template of another channel", f'journey "A" {{\n  {OK_ENTRY}\n  send push "welcome"\n}}\n', "J011", 3, 13, "templates/push/welcome.j2"),
    ("unknown audience", f'journey "A" {{\n  {OK_ENTRY}\n  add user to audience "hot_browser"\n}}\n', "J012", 3, 24, 'did you mean "hot_browsers"?'),
    ("unknown webhook", f'journey "A" {{\n  {OK_ENTRY}\n  webhook "crm_nudg"\n}}\n', "J013", 3, 11, 'did you mean "crm_nudge"?'),
    ("unknown connector", f'journey "A" {{\n  {OK_ENTRY}\n  send email "welcome" via "smpt"\n}}\n', "J014", 3, 28, 'did you mean "smtp"?'),
    ("connector of another channel", f'journey "A" {{\n  {OK_ENTRY}\n  send email "welcome" via "fcm"\n}}\n', "J014", 3, 28, "delivers push"),
    ("unknown channel", f'journey "A" {{\n  {OK_ENTRY}\n  send emial "welcome"\n}}\n', "J015", 3, 8, "did you mean `email`?"),
    ("unknown cap channel", 'policy {\n  cap emails 2 per 1d\n}\n', "J015", 2, 7, "did you mean `email`?"),
    ("bare name outside where", f'journey "A" {{\n  {OK_ENTRY}\n  send email "browse_abandon" with {{ product: name }}\n}}\n', "J016", 3, 47, "`viewed.name`"),
    ("unknown alias", f'journey "A" {{\n  {OK_ENTRY}\n  send email "browse_abandon" with {{ product: viewd.name }}\n}}\n', "J016", 3, 47, "did you mean `viewed`?"),
    ("alias in its own entry's where", 'journey "A" {\n  entry when event "Product Viewed" where viewed.price > 10 as viewed\n}\n', "J016", 2, 43, "not `viewed.price`"),
    ("unknown function", f'journey "A" {{\n  {OK_ENTRY}\n  if happend(event "X", last 1d) {{ exit }}\n}}\n', "J017", 3, 6, "did you mean `happened`?"),
    ("wrong arity", f'journey "A" {{\n  {OK_ENTRY}\n  if count(event "X") > 2 {{ exit }}\n}}\n', "J018", 3, 6, 'count(event "Name", last 7d)'),
    ("wrong argument kind", f'journey "A" {{\n  {OK_ENTRY}\n  if count(last 7d, event "X") > 2 {{ exit }}\n}}\n', "J018", 3, 12, "must be an event match"),
    ("string compared with number", 'segment "big" = count(event "Product Added" where price >= 200, last 7d) >= "2"\n', "J034", 1, 17, "remove the quotes"),
    ("days compared with duration", 'segment "lapsed" = days_since(event "Order Completed") > 30d\n', "J034", 1, 20, "not `3d`"),
    ("ordering with null", 'segment "s" = count(event "A", last 1d) > null\n', "J034", 1, 15, "`== null`"),
    ("bad weekday", 'segment "w" = count(event "A" where local_weekday in ["saturday", "sun"], last 7d) >= 1\n', "J034", 1, 55, 'did you mean "sat"?'),
    ("segment refers to itself", 'segment "a" = user in segment "a"\n', "J020", 1, 31, "refers to itself"),
    ("segment cycle", 'segment "a" = user in segment "b"\nsegment "b" = user in segment "a"\n', "J020", 1, 9, '"a" → "b" → "a"'),
    ("duplicate journey", f'journey "A" {{\n  {OK_ENTRY}\n}}\njourney "A" {{\n  {OK_ENTRY}\n}}\n', "J021", 4, 9, "the first one is at"),
    ("journeys with the same paths", f'journey "Big sale" {{\n  {OK_ENTRY}\n}}\njourney "big-sale" {{\n  {OK_ENTRY}\n}}\n', "J021", 4, 9, "rename one"),
    ("duplicate segment", 'segment "s" = user.a == 1\nsegment "s" = user.a == 2\n', "J022", 2, 9, "the first one is at"),
    ("two policies", 'policy {\n  timezone "UTC"\n}\npolicy {\n  timezone "UTC"\n}\n', "J023", 4, 1, "merge it"),
    ("two entries", f'journey "A" {{\n  {OK_ENTRY}\n  entry when event "Y"\n}}\n', "J024", 3, 3, "keep the entry at"),
    ("no entry", 'journey "A" {\n  send email "welcome"\n}\n', "J025", 1, 9, "add one"),
    ("declaration after a step", f'journey "A" {{\n  {OK_ENTRY}\n  wait 1h\n  exit when event "Order Completed"\n}}\n', "J026", 4, 3, "move this above"),
    ("wait in on exit", f'journey "A" {{\n  {OK_ENTRY}\n  on exit {{ wait 1h }}\n  send email "welcome"\n}}\n', "J027", 3, 13, "keep only send"),
    ("split not 100", f'journey "A" {{\n  {OK_ENTRY}\n  split {{\n    45% "a" {{ send email "welcome" }}\n    45% "b" {{ }}\n  }}\n}}\n', "J030", 3, 3, "`10% control`"),
    ("split over 100", f'journey "A" {{\n  {OK_ENTRY}\n  split {{\n    60% "a" {{ }}\n    50% control\n  }}\n}}\n', "J030", 3, 3, "remove 10 %"),
    ("split share without percent", f'journey "A" {{\n  {OK_ENTRY}\n  split {{\n    50 "a" {{ }}\n    50% control\n  }}\n}}\n', "J038", 4, 5, "`50%`"),
    ("duplicate split arm", f'journey "A" {{\n  {OK_ENTRY}\n  split {{\n    50% "a" {{ }}\n    50% "a" {{ }}\n  }}\n}}\n', "J037", 5, 9, "rename one"),
    ("split arms with the same paths", f'journey "A" {{\n  {OK_ENTRY}\n  split {{\n    50% "Big one" {{ }}\n    50% "big-one" {{ }}\n  }}\n}}\n', "J037", 5, 9, "same step paths as `Big one`"),
    ("split arm named control", f'journey "A" {{\n  {OK_ENTRY}\n  split {{\n    50% "Control" {{ }}\n    50% control\n  }}\n}}\n', "J037", 4, 9, "the control group"),
    ("journey name without letters", f'journey "!!!" {{\n  {OK_ENTRY}\n}}\n', "J044", 1, 9, "no letter or digit"),
    ("duplicate with key", f'journey "A" {{\n  {OK_ENTRY}\n  send email "browse_abandon" with {{ product: 1, product: 2 }}\n}}\n', "J024", 3, 50, "given twice"),
    ("reenter after without duration", f'journey "A" {{\n  {OK_ENTRY}\n  reenter after\n  exit\n}}\n', "J039", 3, 3, "`reenter after 7d`"),
    ("template variable not provided", f'journey "A" {{\n  {OK_ENTRY}\n  send email "browse_abandon"\n}}\n', "J035", 3, 14, "`with { product: ... }`"),
    ("push template variable", f'journey "A" {{\n  {OK_ENTRY}\n  send push "finish_checkout" with {{ amount: 3 }}\n}}\n', "J035", 3, 13, "uses `total`"),
    ("wait for the exit event", f'journey "A" {{\n  {OK_ENTRY}\n  exit when event "Order Completed"\n  wait for event "Order Completed" up to 1d {{ on event {{ exit }} }}\n}}\n', "J050", 4, 12, "ends the journey first"),
    ("step after exit", f'journey "A" {{\n  {OK_ENTRY}\n  exit\n  send email "welcome"\n}}\n', "J051", 4, 3, "move the `exit`"),
    ("empty file", "", "J007", 1, 1, "add a journey"),
    ("no connector for the channel", f'journey "A" {{\n  {OK_ENTRY}\n  send sms "welcome"\n}}\n', "J045", 3, 8,
     'declare one in journeys.toml: [connectors.NAME] with channel = "sms"'),
    # what newcomers write first (tests/test_newcomer_mistakes.py has them all)
    ("duration in words", f'journey "A" {{\n  {OK_ENTRY}\n  wait 2 days\n}}\n', "J070", 3, 8, "write `wait 2d`"),
    ("operator from JavaScript", f'journey "A" {{\n  {OK_ENTRY}\n  if viewed.a > 1 && viewed.b {{ exit }}\n}}\n', "J071", 3, 19,
     "write `and`"),
    ("text in single quotes", f'journey "A" {{\n  {OK_ENTRY}\n  send email \'welcome\'\n}}\n', "J072", 3, 14,
     'write `send email "welcome"`'),
    ("missing comma", f'journey "A" {{\n  {OK_ENTRY}\n  if count(event "X" last 7d) > 2 {{ exit }}\n}}\n', "J073", 3, 22,
     'write `if count(event "X", last 7d) > 2 { exit }`'),
    ("two events joined with or", f'journey "A" {{\n  {OK_ENTRY}\n  exit when event "X" or event "Y"\n}}\n', "J074", 3, 23,
     'on a line of its own `exit when event "Y"`'),
    ("holdout", f'journey "A" {{\n  {OK_ENTRY}\n  holdout 10%\n  send email "welcome"\n}}\n', "J075", 3, 3,
     "10% control"),
    ("entry on event", 'journey "A" {\n  entry on event "X"\n}\n', "J076", 2, 9, 'write `entry when event "X"`'),
    ("wait for within", f'journey "A" {{\n  {OK_ENTRY}\n  wait for event "X" within 1h\n}}\n', "J077", 3, 22,
     'write `wait for event "X" up to 1h`'),
    ("elif", f'journey "A" {{\n  {OK_ENTRY}\n  if viewed.a > 1 {{ exit }} elif viewed.a > 0 {{ exit }}\n}}\n', "J078", 3, 28,
     "`else if`"),
    ("time with am", f'journey "A" {{\n  {OK_ENTRY}\n  wait until 10am\n}}\n', "J079", 3, 14, "write `wait until 10:00`"),
]


@pytest.mark.parametrize("source,code,line,col,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_input(make_project, monkeypatch, source, code, line, col, text):
    root = make_project({"case.journey": source})
    monkeypatch.chdir(root)
    diags = check_project(load_project(root)).sorted()
    matching = [d for d in diags if d.code == code]
    assert matching, f"expected {code}, got {[(d.code, str(d.span), d.message) for d in diags]}"
    d = matching[0]
    assert (d.span.file, d.span.line, d.span.col) == ("journeys/case.journey", line, col), d
    assert text in f"{d.message}\n{d.help}", d


def test_every_case_code_is_in_the_catalogue():
    from journeys.codes import CODES

    assert {c[2] for c in CASES} <= set(CODES)


def test_all_problems_of_all_files_are_reported(make_project, monkeypatch):
    root = make_project({
        "a.journey": f'journey "A" {{\n  {OK_ENTRY}\n  sned email "welcome"\n}}\njourney "B" {{\n  {OK_ENTRY}\n  wait 20\n}}\n',
        "b.journey": 'segment "s" = user in segment "nope"\njourney "C" {\n  entry when event "X"\n  wait 5min\n  send emial "w"\n}\n',
    })
    monkeypatch.chdir(root)
    got = sorted((d.span.file, d.span.line, d.code) for d in check_project(load_project(root)))
    assert got == [
        ("journeys/a.journey", 3, "J003"),  # a syntax error in one journey...
        ("journeys/a.journey", 7, "J031"),  # ...does not hide the next journey of the same file
        ("journeys/b.journey", 1, "J010"),
        ("journeys/b.journey", 4, "J043"),
        ("journeys/b.journey", 5, "J015"),
    ]


def test_journeys_toml_errors_name_the_field(make_project, monkeypatch):
    root = make_project({"a.journey": f'journey "A" {{\n  {OK_ENTRY}\n}}\n'},
                        config='[connectors.smtp]\nchannel = "mail"\ntype = "smtp"\n\n[webhooks.x]\nurl = "https://x"\nsecret = "hunter2"\n')
    monkeypatch.chdir(root)
    diags = [d for d in check_project(load_project(root)) if d.code == "J040"]
    by_line = {d.span.line: d for d in diags}
    assert "connectors.smtp.channel" in by_line[2].message
    assert "secret" in by_line[7].message and "secret_env" in by_line[7].help


def test_journeys_toml_syntax_error_has_position(make_project, monkeypatch):
    root = make_project({"a.journey": f'journey "A" {{\n  {OK_ENTRY}\n}}\n'}, config='[project]\nname = "x\n')
    monkeypatch.chdir(root)
    d = next(d for d in check_project(load_project(root)) if d.code == "J040")
    assert (d.span.file, d.span.line) == ("journeys.toml", 2)


def test_audience_syncing_to_unknown_connector(make_project, monkeypatch):
    root = make_project({"a.journey": f'journey "A" {{\n  {OK_ENTRY}\n}}\n'},
                        config='[connectors.smtp]\nchannel = "email"\ntype = "smtp"\n\n[audiences.hot]\nsync = ["meta", "smtp"]\n')
    monkeypatch.chdir(root)
    diags = [d for d in check_project(load_project(root)) if d.code == "J014"]
    assert [(d.span.line, "meta" in d.message, "email connector" in d.message) for d in diags] == [(6, True, False), (6, False, True)]


def test_scenario_checks(make_project, monkeypatch):
    root = make_project({
        "a.journey": f'journey "A" {{\n  {OK_ENTRY}\n  send email "welcome"\n}}\n',
        "tests/a.test": (
            'test "t" {\n'
            '  at 2026-02-30 10:00 event "Product Viewed" user "u1"\n'
            '  expect email "welcom" to "u1" at 2026-03-02 11:00\n'
            '  expect user "u1" in journey "B"\n'
            '  expect email "welcome" to "u1" suppressed by capping\n'
            '  event "X" user "u1"\n'
            '}\n'),
    })
    monkeypatch.chdir(root)
    got = sorted((d.span.line, d.code) for d in check_project(load_project(root)))
    assert got == [(2, "J041"), (3, "J011"), (4, "J042"), (5, "J041"), (6, "J041")]


def test_several_steps_after_exit_warn_once(make_project, monkeypatch):
    root = make_project({"a.journey": f'journey "A" {{\n  {OK_ENTRY}\n  exit\n  wait 1h\n  send email "welcome"\n}}\n'})
    monkeypatch.chdir(root)
    assert [(d.code, d.span.line) for d in check_project(load_project(root))] == [("J051", 4)]


def test_several_connectors_of_a_channel_need_a_default(make_project, monkeypatch):
    from tests.conftest import CONFIG

    two = CONFIG.replace('[connectors.fcm]', '[connectors.ses]\nchannel = "email"\ntype = "ses"\n\n[connectors.fcm]')
    root = make_project({"a.journey": f'journey "A" {{\n  {OK_ENTRY}\n  send email "welcome"\n'
                                      f'  send email "welcome" via "ses"\n}}\n'}, config=two)
    monkeypatch.chdir(root)
    (d,) = [d for d in check_project(load_project(root)) if d.code == "J045"]
    assert d.span.line == 3 and "mark one of smtp, ses with `default = true`" in d.help


def test_check_env_reports_every_secret_that_is_not_set(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shop = root / "examples" / "shop"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_PASSWORD", "_TOKEN", "_SECRET", "_USER"))}
    plain = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(shop)], env=env, cwd=root,
                           capture_output=True, text=True)
    assert plain.returncode == 0 and "J046" not in plain.stdout  # the files alone: the same answer everywhere
    missing = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(shop), "--env", "--format", "json"],
                             env=env, cwd=root, capture_output=True, text=True)
    assert missing.returncode == 1
    import json

    found = [json.loads(line) for line in missing.stdout.splitlines()]
    assert {d["code"] for d in found} == {"J046", "J048"}  # J048: the emails' unsubscribe secret
    assert any("META_ACCESS_TOKEN" in d["message"] and d["line"] > 1 for d in found)
    assert any(d["code"] == "J048" and "JOURNEYS_UNSUBSCRIBE_SECRET" in d["message"] for d in found)
    from .test_preflight import service_account

    secrets = {"FCM_CREDENTIALS": str(service_account(tmp_path / "fcm.json")), "META_ACCESS_TOKEN": "t",
               "GOOGLE_ADS_DEVELOPER_TOKEN": "t", "GOOGLE_ADS_CLIENT_ID": "i", "GOOGLE_ADS_CLIENT_SECRET": "s",
               "GOOGLE_ADS_REFRESH_TOKEN": "r", "CRM_WEBHOOK_SECRET": "s", "JOURNEYS_WRITE_KEY": "k",
               "JOURNEYS_UNSUBSCRIBE_SECRET": "unsubscribe-secret-for-tests-0123456789"}
    ok = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(shop), "--env"], env={**env, **secrets},
                        cwd=root, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout


def test_a_viewed_entry_provides_last_viewed_to_templates(make_project, monkeypatch):
    tpl = {"email/picks.j2": "---\nsubject: Picks\nfrom: shop@example.com\n---\n{{ last_viewed.name }}\n"}
    ok = make_project({"a.journey": 'journey "A" {\n  entry when event "Product Viewed" as viewed\n'
                                    '  send email "picks"\n}\n'}, templates=tpl)
    monkeypatch.chdir(ok)
    assert [d.code for d in check_project(load_project(ok))] == []
    bad = make_project({"a.journey": 'journey "A" {\n  entry when event "Order Completed" as order\n'
                                     '  send email "picks"\n}\n'}, templates=tpl)
    monkeypatch.chdir(bad)
    assert [d.code for d in check_project(load_project(bad))] == ["J035"]
