"""The HTML report (`journeys simulate --html`) and `journeys graph --format html`.

Structure, escaping and determinism are checked on the text; then a real headless Chromium opens
the shop's report, offline, and the page must load with no console error, show every journey and
its counts, and keep every box's text inside its box. The browser is Debian's `chromium` driven by
the `playwright` package (no browser download). Without either the browser test is skipped, except
in CI (CI=true), where it fails: CI installs Chromium (.ci/run) so the check really runs.

`python -m tests.test_html_report docs/report.png` retakes the screenshot of the docs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.dryrun.html_report import render_journey, render_report
from engine.dryrun.simulate import load_program
from journeys.compiler import compile_project
from journeys.parser import parse_text

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
SAMPLE = SHOP / "events" / "sample.jsonl"
SHOP_JOURNEYS = ("Browse abandonment", "Checkout abandonment", "First purchase", "Homepage banner", "Monday picks",
                 "Payment failure", "Retarget by engagement", "Churn win-back")


def journeys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The shop's run, as the command writes it: (report dict from --json, the --html file, the program)."""
    out = tmp_path_factory.mktemp("html")
    r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--json", str(out / "report.json"),
                 "--html", str(out / "report.html"), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report, out / "report.html", load_program(SHOP)


def svgs(html: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML: a stray `<` or `&` in user text would make this fail."""
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, re.S)]


def svg_texts(svg: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]


# ------------------------------------------------------------------------------ structure


def test_every_journey_step_and_count_is_in_the_page(shop):
    report, html_file, _ = shop
    html = html_file.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert set(report["journeys"]) == set(SHOP_JOURNEYS)
    diagrams = [s for s in svgs(html) if s.get("class") == "diagram"]
    assert len(diagrams) == len(SHOP_JOURNEYS)
    program = load_program(SHOP)
    for name, svg in zip(SHOP_JOURNEYS, diagrams):  # the diagrams come in the project's order
        j = report["journeys"][name]
        texts = svg_texts(svg)
        assert name in texts
        for path in program.journeys[name].nodes:  # every step, with its count
            assert path in texts, (name, path)
            box = texts[texts.index(path):]
            assert any(t.startswith(f"reached {j['reached'].get(path, 0):,}") for t in box[:6]), (name, path)
        assert f"entered {j['entered']:,}" in texts
        assert f"completed {j['completed']:,}" in texts
        assert f"<h2>{name}</h2>" in html
    # counts elsewhere: sends, suppressions by reason, conversions, split arms
    bro = report["journeys"]["Browse abandonment"]
    assert f"reached {bro['reached']['browse_abandonment/1/timeout/1']:,} · sent {bro['sent']['email']:,}" in html
    assert f"consent: <b>{bro['suppressed']['consent']}</b>" in html
    assert "converted: purchase" in html and f">{bro['conversions']['purchase']:,}<" in html
    arms = report["journeys"]["First purchase"]["splits"]["first_purchase/1"]
    assert f"discount 45% · {arms['discount']['users']}" in html
    assert f"control 10% · {arms['control']['users']}" in html
    assert "−9.1%" in html and "baseline" in html  # the discount arm's uplift over control
    # sends per day: one bar segment per day and kind, with its number
    chart = next(s for s in svgs(html) if s.get("class") == "chart")
    titles = ["".join(t.itertext()) for t in chart.iter("{http://www.w3.org/2000/svg}title")]
    expected = [f"{day} {kind}: {n:,}" for day, kinds in report["sends_per_day"].items()
                for kind, n in sorted(kinds.items()) if n]
    assert titles == expected
    audiences = [s for s in svgs(html) if s.get("class") == "chart"][1]
    titles = ["".join(t.itertext()) for t in audiences.iter("{http://www.w3.org/2000/svg}title")]
    assert titles == [f"{day} {kind}: {n:,}" for day, kinds in report["audience_updates_per_day"].items()
                      for kind, n in sorted(kinds.items()) if n] and titles
    assert f"{report['parameters']['messages']:,}" in html


def test_boxes_of_a_layer_never_overlap_and_stay_inside(shop):
    _, html_file, _ = shop
    for svg in svgs(html_file.read_text(encoding="utf-8")):
        if svg.get("class") != "diagram":
            continue
        width, height = float(svg.get("width")), float(svg.get("height"))
        rects = [g.find("{http://www.w3.org/2000/svg}rect") for g in svg.iter("{http://www.w3.org/2000/svg}g")
                 if (g.get("class") or "").startswith("box")]
        boxes = [tuple(float(r.get(k)) for k in ("x", "y", "width", "height")) for r in rects]
        for x, y, w, h in boxes:
            assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        for i, (x1, y1, w1, h1) in enumerate(boxes):
            for x2, y2, w2, h2 in boxes[i + 1:]:
                assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1, (svg.get("aria-label"))


def test_same_report_gives_the_same_bytes_whatever_the_dict_order(shop):
    report, html_file, program = shop
    first = render_report(report, program)
    assert render_report(report, program) == first

    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    assert render_report(reverse(report), program) == first
    # the command renders the report it holds in memory (insertion order); the file is the same
    assert html_file.read_text(encoding="utf-8") == first


def test_without_the_program_the_counts_still_show(shop):
    report, _, _ = shop
    html = render_report(report, None)
    assert "<svg" in html  # the sends chart
    for name in SHOP_JOURNEYS:
        assert f"<h2>{name}</h2>" in html
    assert "browse_abandonment/1/timeout/1" in html and "email browse_abandon" in html


# ------------------------------------------------------------------------------ escaping

NASTY_NAME = '<script>alert("x")</script> & <b>co</b>'
NASTY_SOURCE = r'''
journey "<script>alert(\"x\")</script> & <b>co</b>" {
  entry when event "A<b>" where x == "</svg><script>1</script>"
  goal "<i>goal</i>" = event "Order & <Done>" within 7d
  if user.a == "<x>" { send email "t<&>" } else { exit }
  split { 50% "<arm>" { wait 1h } 50% control }
}
'''


def nasty():
    result = parse_text(NASTY_SOURCE, "t.journey")
    assert not result.diagnostics, result.diagnostics
    return compile_project([result.file])


def nasty_report(journey) -> dict:
    paths = list(journey.nodes)
    split = next(p for p, n in journey.nodes.items() if n.kind == "split")
    return {
        "parameters": {"project": "<proj>", "events": ["a&b.jsonl"], "skipped": 1,
                       "skipped_lines": ['x.jsonl:3: bad "<json>"']},
        "inputs": {"track": 3}, "users": 2,
        "journeys": {journey.name: {
            "version": journey.version, "entered": 2, "still_in": 0, "completed": 1,
            "exited": {"exit when event \"<E>\"": 1}, "reached": {p: 1 for p in paths} | {f"{split}/<arm>": 1},
            "sent": {"email": 1}, "templates": {"email t<&>": 1}, "suppressed": {"<why>": 1},
            "capped_by_rule": {"policy: <email> 1 per 1d": 1}, "deferred_by_quiet_hours": {},
            "conversions": {"<i>goal</i>": 1},
            "splits": {split: {"<arm>": {"users": 1, "conversions": {"<i>goal</i>": 1}, "rate": {"<i>goal</i>": 1.0},
                                         "uplift": {"<i>goal</i>": None}},
                               "control": {"users": 1, "conversions": {"<i>goal</i>": 0},
                                           "rate": {"<i>goal</i>": 0.0}}}},
        }},
        "sends_per_day": {"2026-01-01": {"<kind>": 1}},
    }


@pytest.mark.parametrize("which", ["report", "journey"])
def test_user_text_is_escaped(which):
    compiled = nasty()
    (journey,) = compiled.journeys.values()
    assert journey.name == NASTY_NAME
    html = render_report(nasty_report(journey), compiled) if which == "report" else render_journey(journey)
    assert "<script" not in html and "<b>co</b>" not in html and "<i>goal" not in html and "<arm>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;co&lt;/b&gt;" in html
    for svg in svgs(html):  # still well-formed, and the name reads back as written
        if svg.get("class") == "diagram":
            assert NASTY_NAME in svg_texts(svg)
    if which == "report":
        assert "&lt;arm&gt;" in html and "&lt;i&gt;goal&lt;/i&gt;" in html and "&lt;kind&gt;" in html
        assert "x.jsonl:3: bad &quot;&lt;json&gt;&quot;" in html
        assert "control has no conversions" in html


def test_a_journey_with_no_steps_still_draws():
    result = parse_text('journey "Only" {\n  entry when event "A"\n}\n', "t.journey")
    (journey,) = compile_project([result.file]).journeys.values()
    html = render_journey(journey)
    (svg,) = svgs(html)
    assert svg_texts(svg)[:2] == ["Only", 'entry when event "A"'] and "end" in svg_texts(svg)


def test_graph_command_html_has_every_step_and_no_counts():
    r = journeys("graph", "First purchase", str(SHOP), "--format", "html")
    assert r.returncode == 0, r.stderr
    (svg,) = svgs(r.stdout)
    texts = svg_texts(svg)
    for path in load_program(SHOP).journeys["First purchase"].nodes:
        assert path in texts
    assert "discount 45%" in texts and "control 10%" in texts
    assert not any(t.startswith(("reached", "entered")) for t in texts)
    assert r.stdout == journeys("graph", "first_purchase", str(SHOP), "--format", "html").stdout


# ------------------------------------------------------------------------------ the browser

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium")


def chromium() -> str:
    """Debian's Chromium and the playwright package, or a skip; in CI (CI=true) a failure instead."""
    in_ci = os.environ.get("CI") == "true"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        message = "the playwright package is not installed (pip install -e '.[test]')"
        pytest.fail(message) if in_ci else pytest.skip(message)
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    message = "Chromium is not installed (apt-get install -y chromium); the browser check needs it"
    pytest.fail(message) if in_ci else pytest.skip(message)
    raise AssertionError  # unreachable


def open_page(html_file: Path, executable: str, check):
    """Open the file offline in headless Chromium; `check(page, problems)` runs on the loaded page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: None if r.url == html_file.as_uri() else problems.append(f"request: {r.url}"))
            page.goto(html_file.as_uri(), wait_until="load")
            return check(page, problems)
        finally:
            browser.close()


def test_chromium_renders_the_shop_report_without_errors(shop):
    report, html_file, _ = shop
    executable = chromium()

    def check(page, problems):
        body = page.inner_text("body")
        svg_text = page.eval_on_selector_all("svg.diagram text", "els => els.map(e => e.textContent)")
        # every box's text fits inside its box, measured with the browser's own font
        overflow = page.eval_on_selector_all("svg.diagram g.box", """gs => gs.flatMap(g => {
            const r = g.querySelector('rect').getBBox();
            return [...g.querySelectorAll('text')].map(t => t.getBBox())
              .filter(b => b.x < r.x - 0.5 || b.x + b.width > r.x + r.width + 0.5)
              .map(b => g.querySelector('title').textContent);
        })""")
        sizes = page.eval_on_selector_all("svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                                                 "e.getBoundingClientRect().height])")
        sections = dict(page.eval_on_selector_all("section", "els => els.map(e => [e.querySelector('h2').textContent, "
                                                             "[e.innerText, [...e.querySelectorAll('svg.diagram text')]"
                                                             ".map(t => t.textContent)]])"))
        return problems, body, svg_text, overflow, sizes, sections

    problems, body, svg_text, overflow, sizes, sections = open_page(html_file, executable, check)
    assert problems == []
    assert overflow == []
    assert len(sizes) == len(SHOP_JOURNEYS) + 2 and all(w > 100 and h > 50 for w, h in sizes)  # and two charts
    # audience updates are shown as such, never as sends: cards, diagram, a chart of their own
    assert "Sends per day" in body and "Audience updates per day" in body
    retarget = report["journeys"]["Retarget by engagement"]
    text, diagram = sections["Retarget by engagement"]
    cards = dict((label, number) for number, label in re.findall(r"^([\d,]+)\n(.+)$", text, re.M))
    assert cards["sent"] == "0" and cards["audience updates"] == f"{sum(retarget['audience_updates'].values()):,}"
    hot = "retarget_by_engagement/1/then/1"
    assert (f"reached {retarget['reached'][hot]:,} · updated {retarget['actions_by_step'][hot]['updated']:,}"
            in diagram)
    assert not any("sent" in line for line in diagram), diagram
    assert re.search(r"reached\s+[\d,]+ updated", text) and not re.search(r"reached\s+[\d,]+ sent", text)
    assert "audience updates" in sections["Monday picks"][0] and "· updated" not in " ".join(sections["Monday picks"][1])
    for name in SHOP_JOURNEYS:
        j = report["journeys"][name]
        assert name in body
        assert name in svg_text
        assert f"entered {j['entered']:,}" in svg_text
    assert "Sends per day" in body
    fp = report["journeys"]["First purchase"]
    assert f"reached {fp['reached']['first_purchase/1']:,}" in svg_text
    assert re.search(rf"converted: second order\s+{fp['conversions']['second order']}", body)
    discount = fp["splits"]["first_purchase/1"]["discount"]
    assert re.search(rf"discount\s+45%\s+{discount['users']}\s+{discount['conversions']['second order']}\s+"
                     rf"{discount['rate']['second order'] * 100:.1f}%", body)


def screenshot(target: Path) -> None:
    """The docs' screenshot: the first screen of the shop's report, 1280 wide."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "report.html"
        r = journeys("simulate", str(SHOP.relative_to(ROOT)), "--events", str(SAMPLE.relative_to(ROOT)),
                     "--html", str(page_file), "--quiet")
        assert r.returncode == 0, r.stderr
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox"])
            page = browser.new_context(offline=True, viewport={"width": 1280, "height": 1900}).new_page()
            page.goto(page_file.as_uri(), wait_until="load")
            page.screenshot(path=str(target))
            browser.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report.png")
