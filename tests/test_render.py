"""Rendering a delivery with its template (connectors.render), unsubscribe tokens, `journeys render`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors import unsubscribe
from connectors.base import Delivery
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError
from connectors.render import html_to_text, recipient, render_email, render_push, render_sms
from journeys.diagnostics import Diagnostics
from journeys.templates import Template, load_template

from .conftest import SHOP

URL = "https://journeys.example.com/u/token"
VIEWED = {"event": "Product Viewed", "timestamp": "2026-03-02T04:31:20Z",
          "properties": {"name": "Vintage Face Cream", "category": "beauty", "url": "https://shop.example.com/p/1109"}}


def shop(channel: str, name: str) -> Template:
    diags = Diagnostics()
    tpl = load_template(SHOP / "templates" / channel / f"{name}.j2", channel, name, diags)
    assert not diags.has_errors
    return tpl


def make(front: dict, body: str, channel: str = "email") -> Template:
    return Template(channel, "t", "t.j2", front=front, body=body, body_line=len(front) + 3)


def delivery(**kw) -> Delivery:
    base = dict(action_id="a1", kind="email", target="t", user_id="u1",
                profile={"email": "ann@example.com", "first_name": "Ann"}, journey="J", step="s")
    base.update(kw)
    return Delivery(**base)


# ---------------------------------------------------------------------------------- email

def test_shop_browse_abandon_renders_product_and_unsubscribe():
    d = delivery(data={"product": "Vintage Face Cream", "category": "beauty"}, named={"viewed": VIEWED})
    mail = render_email(shop("email", "browse_abandon"), d, unsubscribe_url=URL)
    assert mail.subject == "Still thinking it over?"
    assert mail.sender == "Shop <hello@shop.example.com>"
    assert mail.reply_to == "support@shop.example.com"
    assert mail.preheader == "The product you looked at is waiting for you."
    assert "Vintage Face Cream" in mail.html and "beauty collection" in mail.html
    assert "Hi Ann," in mail.text
    assert "Take another look (https://shop.example.com/p/1109)" in mail.text
    assert f"Unsubscribe ({URL})" in mail.text
    assert "<" not in mail.text  # no markup in the text part
    assert mail.headers["List-Unsubscribe"] == f"<{URL}>"
    assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # the preheader is the hidden first text of the body, and not in the text part twice
    assert mail.html.index("waiting for you") < mail.html.index("SHOP")
    assert "waiting for you" not in mail.text


def test_helpers_fill_product_and_category_from_the_last_viewed_event():
    older = {**VIEWED, "timestamp": "2026-03-01T00:00:00Z", "properties": {"name": "Old Lamp", "category": "home"}}
    d = delivery(named={"viewed": VIEWED, "first": older})
    mail = render_email(shop("email", "browse_abandon"), d, unsubscribe_url=URL)
    assert "Vintage Face Cream" in mail.text and "beauty" in mail.text


def test_front_matter_fields_are_templates_and_cannot_inject_headers():
    tpl = make({"subject": "About {{ product }}", "from": "{{ brand }} <hi@shop.example.com>",
                "preheader": "Only {{ product }}"}, "<p>{{ product }}</p>")
    mail = render_email(tpl, delivery(data={"product": "Lamp\r\nBcc: evil@example.com", "brand": "Shop"}),
                        unsubscribe_url=URL)
    assert mail.subject == "About Lamp Bcc: evil@example.com"
    assert "\n" not in mail.subject and "\r" not in mail.subject
    assert mail.sender == "Shop <hi@shop.example.com>"


def test_html_body_is_autoescaped_but_subject_and_text_are_plain():
    tpl = make({"subject": "{{ product }}", "from": "a@example.com"}, "<p>{{ product }}</p>")
    mail = render_email(tpl, delivery(data={"product": "<b>Tom & Jerry</b>"}), unsubscribe_url=URL)
    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in mail.html
    assert mail.subject == "<b>Tom & Jerry</b>"
    assert "<b>Tom & Jerry</b>" in mail.text


def test_template_text_alternative_wins_over_the_derived_one():
    tpl = make({"subject": "s", "from": "a@example.com", "text": "Hello {{ user.first_name }}\nBye"}, "<p>HTML</p>")
    mail = render_email(tpl, delivery(), unsubscribe_url=URL)
    assert mail.text == "Hello Ann\nBye\n"


def test_missing_variable_is_a_permanent_error_naming_it():
    with pytest.raises(PermanentError) as e:
        render_email(shop("email", "browse_abandon"), delivery(data={"product": "Lamp"}), unsubscribe_url=URL)
    assert "`category` is undefined" in str(e.value) and "line 16" in str(e.value)
    tpl = make({"subject": "Hi {{ nickname }}", "from": "a@example.com"}, "<p>x</p>")
    with pytest.raises(PermanentError, match=r"\(subject\): `nickname` is undefined"):
        render_email(tpl, delivery(), unsubscribe_url=URL)


def test_absent_trait_or_property_is_false_in_if_but_never_printed():
    tpl = make({"subject": "s", "from": "a@example.com"},
               "{% if user.vip %}VIP{% else %}regular{% endif %} {{ user.nickname | default('friend') }}")
    assert "regular friend" in render_email(tpl, delivery(), unsubscribe_url=URL).html
    tpl = make({"subject": "s", "from": "a@example.com"}, "<p>{{ user.nickname }}</p>")
    with pytest.raises(PermanentError, match="`user.nickname` is undefined"):
        render_email(tpl, delivery(), unsubscribe_url=URL)
    tpl = make({"subject": "s", "from": "a@example.com"}, "<p>{{ viewed.color }}</p>")
    with pytest.raises(PermanentError, match="`viewed.color` is undefined"):
        render_email(tpl, delivery(named={"viewed": VIEWED}), unsubscribe_url=URL)


def test_a_null_value_is_never_printed_as_a_hole():
    tpl = make({"subject": "s", "from": "a@example.com"}, "<p>{{ category }}</p>")
    with pytest.raises(PermanentError, match="null"):
        render_email(tpl, delivery(data={"category": None}), unsubscribe_url=URL)
    tpl = make({"subject": "s", "from": "a@example.com"}, "<p>{{ category | default('all', true) }}</p>")
    assert "<p>all</p>" in render_email(tpl, delivery(data={"category": None}), unsubscribe_url=URL).html


def test_event_properties_and_special_fields():
    tpl = make({"subject": "s", "from": "a@example.com"},
               "{{ event.event }}|{{ event.order_id }}|{{ event.timestamp }}|{{ user.id }}|{{ journey }}|"
               "{{ viewed.name }}|{{ viewed.properties.category }}")
    d = delivery(event={"event": "Payment Failed", "timestamp": "2026-03-02T10:00:00Z", "properties": {"order_id": 42}},
                 named={"viewed": VIEWED})
    html = render_email(tpl, d, unsubscribe_url=URL).html
    assert html.startswith("Payment Failed|42|2026-03-02T10:00:00Z|u1|J|Vintage Face Cream|beauty")


def test_templates_cannot_set_reserved_headers_but_can_add_their_own():
    tpl = make({"subject": "s", "from": "a@example.com", "headers": {"X-Campaign": "{{ journey }}"}}, "x")
    assert render_email(tpl, delivery(), unsubscribe_url=URL).headers["X-Campaign"] == "J"
    tpl = make({"subject": "s", "from": "a@example.com", "headers": {"Bcc": "x@example.com"}}, "x")
    with pytest.raises(PermanentError, match="Bcc"):
        render_email(tpl, delivery(), unsubscribe_url=URL)


def test_no_sender_anywhere_is_a_configuration_error():
    tpl = make({"subject": "s"}, "x")
    with pytest.raises(ConfigurationError):
        render_email(tpl, delivery(), unsubscribe_url=URL)
    assert render_email(tpl, delivery(), unsubscribe_url=URL, default_sender="d@example.com").sender == "d@example.com"


def test_recipient_from_the_profile():
    assert recipient(delivery()) == "ann@example.com"
    with pytest.raises(InvalidRecipient) as e:
        recipient(delivery(profile={}))
    assert e.value.stale is None
    with pytest.raises(InvalidRecipient) as e:
        recipient(delivery(profile={"email": "not an address"}))
    assert e.value.stale == "not an address"  # the dead value itself, for the outbox to remove
    with pytest.raises(InvalidRecipient):
        recipient(delivery(profile={"email": "a@example.com\r\nBcc: b@example.com"}))


# ---------------------------------------------------------------------------------- sandbox

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{{ config.__class__.__init__.__globals__['os'] }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ ''|attr('__class__') }}",
    "{{ user.__class__ }}",
    "{{ user._values }}",
    "{{ user.__getattr__.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format(user) }}",
    "{{ 'x' * 1000000000 }}",
    "{{ 2 ** 100000 }}",
    "{{ range(1000000000) | list }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_fail_as_permanent_errors(source):
    tpl = make({"subject": "s", "from": "a@example.com"}, source)
    with pytest.raises(PermanentError) as e:
        render_email(tpl, delivery(), unsubscribe_url=URL)
    assert "Traceback" not in str(e.value)


@pytest.mark.parametrize("source", ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}"])
def test_sandbox_escapes_in_front_matter_and_push_too(source):
    with pytest.raises(PermanentError, match="sandbox forbids"):
        render_email(make({"subject": source, "from": "a@example.com"}, "x"), delivery(), unsubscribe_url=URL)
    with pytest.raises(PermanentError, match="sandbox forbids"):
        render_push(make({"title": "t"}, source, "push"), delivery(kind="push"))


def test_sandbox_escape_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    source = ("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
              "{{ lipsum.__globals__['os'].system('touch " + str(marker) + "') }}")
    with pytest.raises(PermanentError):
        render_email(make({"subject": "s", "from": "a@example.com"}, source), delivery(), unsubscribe_url=URL)
    assert not marker.exists()


# ---------------------------------------------------------------------------------- text from HTML

def test_html_to_text():
    html = """<html><head><title>T</title><style>p { color: red }</style></head><body>
      <script>alert(1)</script>
      <h1>Hello&nbsp;there</h1><p>First   line<br>second line</p>
      <ul><li>one</li><li>two</li></ul>
      <p><a href="https://shop.example.com/p/1?a=1&amp;b=2">See the <b>lamp</b></a>
         <a href="https://shop.example.com">https://shop.example.com</a>
         <a href="mailto:help@shop.example.com">help@shop.example.com</a>
         <a href="#top">top</a></p>
      <table><tr><td>A</td><td>B</td></tr></table><img src="x.png" alt="Logo">
    </body></html>"""
    text = html_to_text(html)
    assert "alert" not in text and "color" not in text and "T\n" not in text
    assert "Hello\xa0there" in text
    assert "First line\nsecond line" in text
    assert "- one\n- two" in text
    assert "See the lamp (https://shop.example.com/p/1?a=1&b=2)" in text
    assert "https://shop.example.com\n" in text or "https://shop.example.com " in text
    assert "(https://shop.example.com)" not in text  # a link whose text is its URL is not repeated
    assert "help@shop.example.com" in text and "mailto:" not in text
    assert "top" in text and "#top" not in text
    assert "A B" in text and "Logo" in text
    assert "\n\n\n" not in text


# ---------------------------------------------------------------------------------- push, sms

def test_push_renders_title_body_url_image_and_data():
    tpl = shop("push", "finish_checkout")
    checkout = {"event": "Checkout Started", "timestamp": "t", "properties": {"revenue": 42, "currency": "EUR"}}
    push = render_push(tpl, delivery(kind="push", data={"total": 42}, named={"checkout": checkout}))
    assert push.title == "Your cart is waiting"
    assert push.body == "Your order of 42 EUR is one tap away. We saved everything for you."
    assert push.url == "https://shop.example.com/cart" and push.image.endswith("cart.png")
    tpl = make({"title": "Hi {{ user.first_name }}", "url": "https://x.example.com/{{ code }}",
                "data": {"code": "{{ code }}"}}, "Code {{ code }}", "push")
    push = render_push(tpl, delivery(kind="push", data={"code": "C10"}))
    assert (push.title, push.body, push.url, push.data) == ("Hi Ann", "Code C10", "https://x.example.com/C10",
                                                            {"code": "C10"})
    with pytest.raises(PermanentError, match="`total` is undefined"):
        render_push(shop("push", "finish_checkout"), delivery(kind="push", named={"checkout": checkout}))


def test_sms():
    assert render_sms(make({}, "Hi {{ user.first_name }}!\n", "sms"), delivery(kind="sms")).body == "Hi Ann!"
    with pytest.raises(PermanentError):
        render_sms(make({}, "{% if false %}x{% endif %}\n", "sms"), delivery(kind="sms"))


# ---------------------------------------------------------------------------------- unsubscribe

SECRET = "s" * 32


def test_unsubscribe_tokens_round_trip_and_resist_tampering():
    token = unsubscribe.sign("user_000734", "email", SECRET)
    assert unsubscribe.verify(token, SECRET) == ("user_000734", "email")
    assert unsubscribe.sign("user_000734", "email", SECRET) == token  # deterministic: a retry is the same email
    assert unsubscribe.sign("user_000734", "push", SECRET) != token
    assert unsubscribe.verify(token, "t" * 32) is None
    assert unsubscribe.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), SECRET) is None
    for bad in ["", ".", "abc", "a.b.c", "!!!.???", "x" * 5000, token + ".", "!" + token, token + "=="]:
        assert unsubscribe.verify(bad, SECRET) is None
    unicode = unsubscribe.sign("usér/😀?&", "push", SECRET)
    assert unsubscribe.verify(unicode, SECRET) == ("usér/😀?&", "push")
    assert all(c.isalnum() or c in "-_" for c in unicode)


def test_unsubscribe_link_and_configuration():
    assert unsubscribe.link("https://j.example.com/", "abc") == "https://j.example.com/u/abc"
    with pytest.raises(ConfigurationError):
        unsubscribe.link("j.example.com", "abc")
    with pytest.raises(ConfigurationError):
        unsubscribe.sign("u", "email", "short")
    with pytest.raises(ConfigurationError, match="JOURNEYS_UNSUBSCRIBE_SECRET"):
        unsubscribe.secret_from({})
    with pytest.raises(ConfigurationError, match="public_url"):
        unsubscribe.url_for("u", "email", public_url=None, secret=SECRET)
    url = unsubscribe.url_for("u", "email", public_url="https://j.example.com", secret=SECRET)
    assert unsubscribe.verify(url.rsplit("/", 1)[1], SECRET) == ("u", "email")


def test_public_url_is_a_project_setting(tmp_path):
    from journeys.config import load_config

    (tmp_path / "journeys.toml").write_text('[project]\nname = "x"\npublic_url = "https://j.example.com"\n')
    diags = Diagnostics()
    cfg = load_config(tmp_path / "journeys.toml", "journeys.toml", diags)
    assert not diags.has_errors and cfg.project.public_url == "https://j.example.com"


# ---------------------------------------------------------------------------------- journeys render

def run(*args):
    from engine.cli.app import app

    return CliRunner().invoke(app, ["render", *map(str, args)])


@pytest.fixture()
def files(tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"id": "user_1", "email": "ann@example.com", "first_name": "Ann"}))
    event = tmp_path / "viewed.json"
    event.write_text(json.dumps({"type": "track", "event": "Product Viewed", "timestamp": "2026-03-02T04:31:20Z",
                                 "properties": {"name": "Vintage Face Cream", "category": "beauty"}}))
    return tmp_path


def test_cli_renders_the_shop_email(files, monkeypatch):
    monkeypatch.delenv(unsubscribe.SECRET_ENV, raising=False)
    r = run("email/browse_abandon", SHOP, "--user", files / "user.json", "--event", files / "viewed.json")
    assert r.exit_code == 0, r.output
    assert "Subject: Still thinking it over?" in r.stdout
    assert "To: ann@example.com" in r.stdout
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in r.stdout
    assert "You were looking at Vintage Face Cream in our beauty collection." in r.stdout
    assert "--- text/html ---" in r.stdout and "<strong>Vintage Face Cream</strong>" in r.stdout
    r = run("email/browse_abandon", SHOP, "--user", files / "user.json", "--event", files / "viewed.json",
            "--with", '{"product": "Lamp", "category": "home"}', "--part", "text")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("SHOP\n") and "Lamp in our home collection" in r.stdout


def test_cli_push_with_named_event(files):
    (files / "checkout.json").write_text(json.dumps({"event": "Checkout Started", "properties": {"currency": "EUR"}}))
    r = run("push/finish_checkout", SHOP, "--with", '{"total": 30}', "--named", f"checkout={files / 'checkout.json'}")
    assert r.exit_code == 0, r.output
    assert "Title: Your cart is waiting" in r.stdout and "Your order of 30 EUR" in r.stdout


@pytest.mark.parametrize("args, code, message", [
    (["browse_abandon"], 2, "channel/name"),
    (["email/browse_abandn"], 2, "did you mean `email/browse_abandon`"),
    (["email/browse_abandon", "--user", "missing.json"], 2, "--user missing.json: no such file"),
    (["email/browse_abandon", "--with", "{bad"], 2, "--with: not valid JSON"),
    (["email/browse_abandon", "--with", "[1]"], 2, "--with: expected a JSON object"),
    (["email/browse_abandon", "--named", "viewed"], 2, "expected NAME=FILE"),
    (["email/browse_abandon", "--with", '{"product": "x"}'], 1, "`category` is undefined at line 16"),
])
def test_cli_bad_input_is_a_clear_error(args, code, message):
    r = run(args[0], SHOP, *args[1:])
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output


def test_cli_bad_user_file(files):
    (files / "bad.json").write_text("{\"id\": 1,}")
    r = run("email/browse_abandon", SHOP, "--user", files / "bad.json")
    assert r.exit_code == 2 and "bad.json: not valid JSON" in r.stderr and "line 1" in r.stderr
