"""The delivery preflight (connectors/preflight.py): what `journeys check --env` and `journeys serve`
say, before any event arrives, about the settings and secrets the channels the journeys use will
need. Each problem is a diagnostic at the setting in journeys.toml (or at its table when the setting
is missing) with a `help:` saying what to set; serve refuses to start on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .test_daemon import daemons  # noqa: F401 - the fixture
from .test_smtp import free_port

SECRET = "unsubscribe-secret-for-tests-0123456789"

JOURNEY = """\
journey "Everything" {
  entry when event "Signed Up"
  send email "hello"
  send push "ping"
  send push "ping" via "browsers"
  add user to audience "hot"
  webhook "crm" with { plan: "pro" }
}
"""

# every connector a journey above sends through, each with one thing wrong or missing, and one
# connector no journey uses (its missing host is nobody's problem)
CONFIG = """\
[project]
name = "preflight"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

[connectors.mail]
channel = "email"
type = "resend"
api_key_env = "RESEND_KEY"
default = true

[connectors.phones]
channel = "push"
type = "fcm"
credentials_env = "FCM_FILE"
default = true

[connectors.browsers]
channel = "push"
type = "webpush"
vapid_private_key_env = "VAPID_KEY"
vapid_subject = "mailto:push@example.com"

[connectors.meta]
channel = "ads"
type = "meta_custom_audiences"
access_token_env = "META_TOKEN"
audiences = { warm = "23851234567890456" }

[connectors.google]
channel = "ads"
type = "google_customer_match"
developer_token_env = "G_DEV"
client_id_env = "G_ID"
client_secret_env = "G_SECRET"
refresh_token_env = "G_REFRESH"
user_lists = { hot = "4567890123" }

[connectors.spare]
channel = "email"
type = "smtp"

[audiences.hot]
sync = ["meta", "google"]

[audiences.warm]
sync = ["meta"]

[webhooks.crm]
url = "crm.example.com/hooks/nudge"
secret_env = "CRM_SECRET"
"""

ENV = {"JOURNEYS_WRITE_KEY": "k", "RESEND_KEY": "re_123", "VAPID_KEY": "not-a-key", "META_TOKEN": "t",
       "G_DEV": "d", "G_ID": "i", "G_SECRET": "s", "G_REFRESH": "r"}


def project(root: Path, config: str = CONFIG, journey: str = JOURNEY) -> Path:
    (root / "journeys").mkdir(parents=True)
    (root / "templates" / "email").mkdir(parents=True)
    (root / "templates" / "push").mkdir(parents=True)
    (root / "journeys.toml").write_text(config)
    (root / "journeys" / "everything.journey").write_text(journey)
    (root / "templates" / "email" / "hello.j2").write_text(
        '---\nsubject: "Hello"\nfrom: "Shop <hello@shop.example.com>"\n---\n'
        '<p>Hello.</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n')
    (root / "templates" / "push" / "ping.j2").write_text("---\ntitle: Ping\n---\nPing.\n")
    return root


def at(config: str, text: str) -> tuple[int, int]:
    """Line and column (1-based) of the first line of journeys.toml that starts with `text`."""
    for n, line in enumerate(config.splitlines(), 1):
        if line.lstrip().startswith(text):
            return n, len(line) - len(line.lstrip()) + 1
    raise AssertionError(f"no line starts with {text!r}")


def clean_env(**extra: str) -> dict[str, str]:
    names = set(ENV) | {"FCM_FILE", "CRM_SECRET", "JOURNEYS_UNSUBSCRIBE_SECRET", "RESEND_API_KEY"}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


def check_env(root: Path, env: dict[str, str]) -> tuple[int, list[dict]]:
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(root), "--env", "--format", "json"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines()]


def serve(root: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`journeys serve` with its diagnostics for people (the text log format: a JSON log has them as
    records, tests/test_serve_errors.py)."""
    return subprocess.run([sys.executable, "-m", "engine.cli", "serve", str(root), "--port", str(free_port()),
                           "--store", f"sqlite:///{root / 'store.db'}"], cwd=root,
                          env={**env, "JOURNEYS_LOG_FORMAT": "text"}, capture_output=True, text=True, timeout=timeout)


def expected() -> list[tuple[str, int, int, str]]:
    """(code, line, column, words of the message or help) of every problem of CONFIG under ENV."""
    return [
        ("J047", *at(CONFIG, "[project]"), 'public_url = "https://'),
        ("J048", *at(CONFIG, "[connectors.mail]"), "JOURNEYS_UNSUBSCRIBE_SECRET"),
        ("J046", *at(CONFIG, 'credentials_env = "FCM_FILE"'), "FCM_FILE"),
        ("J048", *at(CONFIG, 'vapid_private_key_env'), "VAPID_KEY is not a VAPID (P-256) private key"),
        ("J047", *at(CONFIG, "audiences = { warm"), 'hot = "<the Custom Audience id>"'),
        ("J047", *at(CONFIG, "[connectors.google]"), "customer_id"),
        ("J047", *at(CONFIG, 'url = "crm'), "https://"),
        ("J046", *at(CONFIG, 'secret_env = "CRM_SECRET"'), "CRM_SECRET"),
    ]


def found(diags: list[dict]) -> list[tuple[str, int, int, str]]:
    return [(d["code"], d["line"], d["column"], f"{d['message']}\n{d['help']}") for d in diags
            if d["path"] == "journeys.toml"]


def test_check_env_names_every_setting_and_secret_the_used_channels_need(tmp_path):
    root = project(tmp_path / "p")
    code, diags = check_env(root, clean_env(**ENV))
    assert code == 1
    got = found(diags)
    for want_code, line, col, words in expected():
        assert any(c == want_code and (l, k) == (line, col) and words in text for c, l, k, text in got), \
            f"expected {want_code} at {line}:{col} with {words!r}; got:\n" + "\n".join(map(str, got))
    assert all(d["severity"] == "error" and d["help"] for d in diags), diags
    # the smtp connector no journey sends through has no host, and nobody needs one
    assert not any("spare" in text for *_, text in got), got
    assert len(got) == len(expected()), "\n".join(map(str, got))


def service_account(path: Path) -> Path:
    """A file an FCM connector takes: a service account JSON key (of no real project)."""
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path.write_text(json.dumps({"type": "service_account", "project_id": "shop", "private_key": pem,
                                "client_email": "push@shop.iam.gserviceaccount.com"}))
    return path


def test_each_problem_is_fixed_by_what_its_help_says(tmp_path):
    account = service_account(tmp_path / "fcm.json")
    vapid = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    fixed = (CONFIG.replace('name = "preflight"', 'name = "preflight"\npublic_url = "https://journeys.example.com"')
             .replace('audiences = { warm = "23851234567890456" }',
                      'audiences = { warm = "23851234567890456", hot = "23851234567890123" }')
             .replace('user_lists = { hot', 'customer_id = "1234567890"\nuser_lists = { hot')
             .replace('url = "crm.example.com', 'url = "https://crm.example.com'))
    root = project(tmp_path / "p", fixed)
    env = clean_env(**{**ENV, "VAPID_KEY": vapid, "FCM_FILE": str(account), "CRM_SECRET": "c",
                       "JOURNEYS_UNSUBSCRIBE_SECRET": SECRET})
    code, diags = check_env(root, env)
    assert (code, diags) == (0, [])


def test_a_file_that_cannot_be_read_or_is_no_service_account_is_named(tmp_path):
    root = project(tmp_path / "p")
    line, col = at(CONFIG, 'credentials_env = "FCM_FILE"')
    _, diags = check_env(root, clean_env(**ENV, FCM_FILE=str(tmp_path / "nowhere.json")))
    (d,) = [d for d in diags if d["line"] == line]
    assert (d["code"], d["column"]) == ("J048", col) and "cannot be read" in d["message"], d
    (tmp_path / "bad.json").write_text('{"type": "service_account", "project_id": "shop"}')
    _, diags = check_env(root, clean_env(**ENV, FCM_FILE=str(tmp_path / "bad.json")))
    (d,) = [d for d in diags if d["line"] == line]
    assert d["code"] == "J048" and "client_email" in d["message"] and "FCM_FILE" in d["help"], d


def test_a_short_unsubscribe_secret_and_a_missing_default_api_key(tmp_path):
    config = CONFIG.replace('api_key_env = "RESEND_KEY"\n', "")
    root = project(tmp_path / "p", config)
    _, diags = check_env(root, clean_env(**ENV, JOURNEYS_UNSUBSCRIBE_SECRET="short"))
    line, col = at(config, "[connectors.mail]")
    at_mail = {(d["code"], d["message"]) for d in diags if (d["line"], d["column"]) == (line, col)}
    assert any(c == "J048" and "at least 16 bytes" in m for c, m in at_mail), at_mail
    assert any(c == "J046" and "RESEND_API_KEY" in m for c, m in at_mail), at_mail


def test_a_used_smtp_connector_without_a_host_and_an_email_without_project_table(tmp_path):
    config = '[connectors.mail]\nchannel = "email"\ntype = "smtp"\nport = 2525\n'
    root = project(tmp_path / "p", config, 'journey "Hello" {\n  entry when event "Signed Up"\n'
                                           '  send email "hello"\n}\n')
    code, diags = check_env(root, clean_env(JOURNEYS_UNSUBSCRIBE_SECRET=SECRET))
    assert code == 1
    got = {(d["code"], d["line"], d["column"], "public_url" in d["message"], "host" in d["message"]) for d in diags}
    # no [project] table: the missing public_url is shown at the connector that needs it
    assert got == {("J047", 1, 1, True, False), ("J047", 1, 1, False, True)}, diags


def test_serve_refuses_to_start_and_prints_each_problem_at_its_line(tmp_path):
    root = project(tmp_path / "p")
    r = serve(root, clean_env(**ENV))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    for want_code, line, col, _ in expected():
        if want_code != "J046":
            assert f"error[{want_code}]" in r.stderr and f"--> journeys.toml:{line}:{col}" in r.stderr, r.stderr
    # a provider's secret that is not set: the daemon could start with that connector failing its
    # deliveries (recorded), so serve warns; the errors above are what stops it
    assert "warning[J046]: the environment variable `CRM_SECRET` is not set" in r.stderr, r.stderr
    assert "journeys check --env" in r.stderr.splitlines()[-1]
    assert not (root / "store.db").exists()  # refused before the store was opened


@pytest.mark.parametrize("missing", ["JOURNEYS_UNSUBSCRIBE_SECRET", "public_url"])
def test_serve_names_the_one_thing_missing_for_emails(tmp_path, missing):
    config = ('[project]\nname = "tiny"\npublic_url = "http://127.0.0.1:8080"\n\n[ingest]\n'
              'write_keys_env = ["JOURNEYS_WRITE_KEY"]\n\n[connectors.smtp]\nchannel = "email"\ntype = "smtp"\n'
              'host = "127.0.0.1"\nport = 1025\nsecurity = "none"\n')
    env = clean_env(JOURNEYS_WRITE_KEY="k", JOURNEYS_UNSUBSCRIBE_SECRET=SECRET)
    if missing == "public_url":
        config = config.replace('public_url = "http://127.0.0.1:8080"\n', "")
    else:
        del env[missing]
    root = project(tmp_path / "p", config, 'journey "Hello" {\n  entry when event "Signed Up"\n'
                                           '  send email "hello"\n}\n')
    r = serve(root, env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("error[") == 1, r.stderr
    line, col = at(config, "[project]" if missing == "public_url" else "[connectors.smtp]")
    assert f"--> journeys.toml:{line}:{col}" in r.stderr and missing in r.stderr, r.stderr


def test_a_project_that_sends_no_email_serves_without_the_unsubscribe_secret(tmp_path, daemons):
    """Only what the journeys use is needed: an email connector no journey sends through, without
    even a host, stops nothing; and without a secret no unsubscribe link verifies."""
    import httpx

    from connectors.unsubscribe import sign

    config = ('[project]\nname = "hooks"\n\n[ingest]\nwrite_keys_env = ["JOURNEYS_WRITE_KEY"]\n\n'
              '[connectors.smtp]\nchannel = "email"\ntype = "smtp"\n\n'
              '[webhooks.crm]\nurl = "http://127.0.0.1:9/hook"\n')
    root = project(tmp_path / "p", config, 'journey "Hook" {\n  entry when event "Signed Up"\n'
                                           '  webhook "crm" with { plan: "pro" }\n}\n')
    d = daemons(root, f"sqlite:///{tmp_path / 'store.db'}", JOURNEYS_UNSUBSCRIBE_SECRET="")
    assert httpx.get(f"{d.url}/u/{sign('u1', 'email', SECRET)}").status_code == 404
    assert "error[" not in d.log.read_text()
    assert d.stop() == 0
