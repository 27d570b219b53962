"""Mermaid and Graphviz renderings: structure, escaping, validity, determinism.

Both outputs are parsed back here (a small DOT tokenizer, a line grammar for the Mermaid subset we
emit) so the tests check what a reader of the file would see. Where Graphviz's `dot` is installed
it must accept the file too; where `MERMAID_NODE_MODULES` names a node_modules folder holding
`mermaid` and `jsdom`, Mermaid's own parser must accept it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from journeys.compiler import compile_project
from journeys.graph_render import layout, render_dot, render_mermaid
from journeys.parser import parse_text

from tests.lang_examples import project


def compile_one(src: str):
    result = parse_text(src, "t.journey")
    assert not result.diagnostics, result.diagnostics
    (journey,) = compile_project([result.file]).journeys.values()
    return journey


NASTY_NAME = 'He said "hi" #1 <b>|x| \\n {end} ; -->'
NASTY = compile_one(r'''
journey "He said \"hi\" #1 <b>|x| \\n {end} ; -->" {
  entry when event "A\\B" where x == "]\"; --> end"
  if user.a == "x|y" { send email "t\"q#quot;" via "c|d" } else if user.b < 1 { exit }
  split { 50% "<arm> \"1\"" { wait 1h } 50% control }
}
''')


# ------------------------------------------------------------------------------ Mermaid


_M_NODE = re.compile(r'^    ([A-Za-z_][A-Za-z0-9_]*)(\["([^"]*)"\]|\(\["([^"]*)"\]\))$')
_M_EDGE = re.compile(r'^    ([A-Za-z_][A-Za-z0-9_]*) -->(?:\|"([^"]*)"\|)? ([A-Za-z_][A-Za-z0-9_]*)$')
_M_ENTITY = re.compile(r"#(\w+);")
_M_NAMED = {"quot": '"', "lt": "<", "gt": ">", "amp": "&"}


def _mermaid_decode(text: str) -> str:
    def entity(m: re.Match) -> str:
        name = m.group(1)
        return chr(int(name)) if name.isdigit() else _M_NAMED[name]
    return _M_ENTITY.sub(entity, text)


def parse_mermaid(text: str):
    """(nodes: id → (lines, rounded), edges: [(source, label, target)]); fails on any other line."""
    lines = text.split("\n")
    assert lines[0] == "flowchart TD" and lines[-1] == ""
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := _M_NODE.match(line):
            raw = m.group(3) if m.group(3) is not None else m.group(4)
            assert m.group(1) not in nodes, f"node declared twice: {line}"
            assert m.group(1) != "end", "`end` is a Mermaid keyword"
            nodes[m.group(1)] = ([_mermaid_decode(part) for part in raw.split("<br/>")], m.group(4) is not None)
        elif m := _M_EDGE.match(line):
            label = _mermaid_decode(m.group(2)) if m.group(2) is not None else ""
            edges.append((m.group(1), label, m.group(3)))
        else:
            raise AssertionError(f"not a Mermaid line we emit: {line!r}")
    for source, _, target in edges:
        assert source in nodes and target in nodes, (source, target)
    return nodes, edges


# ------------------------------------------------------------------------------ DOT


_D_TOKEN = re.compile(r'\s+|(?P<str>"(?:[^"\\]|\\.)*")|(?P<arrow>->)|(?P<punct>[{}\[\];,=])|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>.)', re.S)


def _dot_tokens(text: str):
    for m in _D_TOKEN.finditer(text):
        if m.lastgroup == "bad":
            raise AssertionError(f"unexpected character {m.group()!r} in DOT")
        if m.lastgroup == "str":
            yield ("str", m.group()[1:-1].replace('\\"', '"'))  # DOT unescapes only \" in strings
        elif m.lastgroup:
            yield (m.lastgroup, m.group())


def _dot_display(value: str) -> list[str]:
    """A label as Graphviz shows it: `\\n` breaks lines, `\\\\` is one backslash."""
    lines, cur, i = [], "", 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt in "nlr":
                lines.append(cur)
                cur = ""
            else:
                cur += nxt
            i += 2
            continue
        cur += c
        i += 1
    return lines + [cur]


def parse_dot(text: str):
    """(graph name, nodes: id → attrs, edges: [(source, attrs, target)]) of the DOT subset we emit."""
    toks = list(_dot_tokens(text))
    pos = 0

    def take(kind=None, value=None):
        nonlocal pos
        k, v = toks[pos]
        assert (kind is None or k == kind) and (value is None or v == value), (toks[pos], kind, value)
        pos += 1
        return v

    def attrs():
        out = {}
        if toks[pos] == ("punct", "["):
            take()
            while toks[pos] != ("punct", "]"):
                key = take("id")
                take("punct", "=")
                out[key] = take()
                if toks[pos] == ("punct", ","):
                    take()
            take("punct", "]")
        return out

    take("id", "digraph")
    name = take("str")
    take("punct", "{")
    nodes, edges = {}, []
    while toks[pos] != ("punct", "}"):
        first = take("id")
        if toks[pos] == ("arrow", "->"):
            take()
            target = take("id")
            edges.append((first, attrs(), target))
        elif toks[pos] == ("punct", "="):
            take()
            take()
        else:
            a = attrs()
            if first not in ("node", "edge", "graph"):
                assert first not in nodes, f"node declared twice: {first}"
                nodes[first] = a
        take("punct", ";")
    take("punct", "}")
    assert pos == len(toks)
    for s, _, t in edges:
        assert s in nodes and t in nodes, (s, t)
    return name, nodes, edges


def dot_check(text: str) -> dict | None:
    """Graphviz's own verdict and its JSON view of the graph, where `dot` is installed."""
    if shutil.which("dot") is None:
        return None
    r = subprocess.run(["dot", "-Tjson"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return json.loads(r.stdout)


def mermaid_check(texts: list[str], tmp_path: Path) -> None:
    modules = os.environ.get("MERMAID_NODE_MODULES")
    if not modules or shutil.which("node") is None:
        return
    script = tmp_path / "check.mjs"
    script.write_text('''
import { JSDOM } from "jsdom";
import fs from "fs";
const dom = new JSDOM("<!doctype html><html><body></body></html>");
Object.assign(globalThis, { window: dom.window, document: dom.window.document, DOMParser: dom.window.DOMParser,
                            Element: dom.window.Element });
const mermaid = (await import("mermaid")).default;
mermaid.initialize({ startOnLoad: false });
for (const f of process.argv.slice(2)) await mermaid.parse(fs.readFileSync(f, "utf8"));
''')
    files = []
    for i, t in enumerate(texts):
        p = tmp_path / f"g{i}.mmd"
        p.write_text(t)
        files.append(str(p))
    (tmp_path / "node_modules").symlink_to(Path(modules).resolve())
    r = subprocess.run(["node", str(script), *files], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------------------ structure


def labelled(nodes, edges):
    """Edges by the first label line (the step path, or entry/end/on exit) of their ends."""
    name = {nid: lines[0] for nid, (lines, _) in nodes.items()}
    return sorted((name[s], label, name[t]) for s, label, t in edges)


def test_browse_abandonment_mermaid():
    j = project().journeys["Browse abandonment"]
    nodes, edges = parse_mermaid(render_mermaid(j))
    boxes = {lines[0]: lines[1:] for lines, _ in nodes.values()}
    assert boxes == {
        "Browse abandonment": ['entry when event "Product Viewed" as viewed'],
        "browse_abandonment/1": ['wait for event "Product Added" up to 1h'],
        "browse_abandonment/1/event/1": ["exit"],
        "browse_abandonment/1/timeout/1": ['send email "browse_abandon"'],
        "end": [],
    }
    assert labelled(nodes, edges) == sorted([
        ("Browse abandonment", "", "browse_abandonment/1"),
        ("browse_abandonment/1", "event", "browse_abandonment/1/event/1"),
        ("browse_abandonment/1", "timeout", "browse_abandonment/1/timeout/1"),
        ("browse_abandonment/1/event/1", "exit", "end"),
        ("browse_abandonment/1/timeout/1", "", "end"),
    ])
    rounded = {lines[0] for lines, r in nodes.values() if r}
    assert rounded == {"Browse abandonment", "end"}


def test_checkout_abandonment_dot():
    j = project().journeys["Checkout abandonment"]
    text = render_dot(j)
    name, nodes, edges = parse_dot(text)
    assert name == "checkout_abandonment"
    shown = {nid: _dot_display(a["label"]) for nid, a in nodes.items()}
    by_first = {lines[0]: lines[1:] for lines in shown.values()}
    assert by_first["checkout_abandonment/1"] == ["wait 20m"]
    assert by_first["checkout_abandonment/3"] == ["wait until 10:00 user time"]
    assert by_first["checkout_abandonment/4"] == [
        'if checkout.revenue >= 200 and user in segment "promo_dependent"']
    assert by_first["checkout_abandonment/4/else/1"] == ['send email "checkout_reminder"']
    first = {nid: lines[0] for nid, lines in shown.items()}
    assert sorted((first[s], a.get("label", ""), first[t]) for s, a, t in edges) == sorted([
        ("Checkout abandonment", "", "checkout_abandonment/1"),
        ("checkout_abandonment/1", "", "checkout_abandonment/2"),
        ("checkout_abandonment/2", "", "checkout_abandonment/3"),
        ("checkout_abandonment/3", "", "checkout_abandonment/4"),
        ("checkout_abandonment/4", "then", "checkout_abandonment/4/then/1"),
        ("checkout_abandonment/4", "else", "checkout_abandonment/4/else/1"),
        ("checkout_abandonment/4/then/1", "", "end"),
        ("checkout_abandonment/4/else/1", "", "end"),
    ])
    graph = dot_check(text)
    if graph is not None:
        assert len(graph["objects"]) == len(nodes) and len(graph["edges"]) == len(edges)


def test_split_and_on_exit_edges():
    p = project()
    nodes, edges = parse_mermaid(render_mermaid(p.journeys["First purchase"]))
    got = labelled(nodes, edges)
    assert ("first_purchase/1", "discount 45%", "first_purchase/1/discount/1") in got
    assert ("first_purchase/1", "thanks 45%", "first_purchase/1/thanks/1") in got
    assert ("first_purchase/1", "control 10%", "first_purchase/2") in got
    assert ("first_purchase/4", "else", "end") in got

    nodes, edges = parse_mermaid(render_mermaid(p.journeys["Retarget by engagement"]))
    got = labelled(nodes, edges)
    assert ("on exit", "", "retarget_by_engagement/on_exit/1") in got
    assert ("retarget_by_engagement/on_exit/1", "", "retarget_by_engagement/on_exit/2") in got
    assert ("retarget_by_engagement/on_exit/2", "", "end") in got
    assert ("retarget_by_engagement/1/then/1", "", "retarget_by_engagement/2") in got


def test_every_example_renders_validly(tmp_path):
    mermaids = []
    for j in project().journeys.values():
        m, d = render_mermaid(j), render_dot(j)
        nodes, edges = parse_mermaid(m)
        _, dnodes, dedges = parse_dot(d)
        assert len(nodes) == len(dnodes) == len(j.nodes) + 2 + (1 if j.on_exit else 0)
        assert len(edges) == len(dedges) == sum(len(n.targets()) for n in j.nodes.values()) + 1 + bool(j.on_exit)
        dot_check(d)
        mermaids.append(m)
    mermaid_check(mermaids, tmp_path)


def test_journey_without_steps():
    j = compile_one('journey "Idle" { entry when event "A" }')
    nodes, edges = parse_mermaid(render_mermaid(j))
    assert labelled(nodes, edges) == [("Idle", "", "end")]
    dot_check(render_dot(j))


# ------------------------------------------------------------------------------ escaping


def test_mermaid_escapes_every_label(tmp_path):
    text = render_mermaid(NASTY)
    nodes, edges = parse_mermaid(text)  # the line grammar accepts it: no stray quote or pipe
    entry_lines = next(lines for lines, _ in nodes.values() if lines[0] == NASTY_NAME)
    assert entry_lines[1] == 'entry when event "A\\\\B" where x == "]\\"; --> end"'
    shown = [line for lines, _ in nodes.values() for line in lines]
    assert 'send email "t\\"q#quot;" via "c|d"' in shown
    assert 'if user.a == "x|y"' in shown and "else if user.b < 1" in shown
    assert any(label.startswith('<arm> "1" 50%') for _, label, _ in edges)
    assert "<b>" not in text and "#35;1 " in text  # raw HTML and `#` never reach Mermaid
    mermaid_check([text], tmp_path)


def test_dot_escapes_every_label():
    text = render_dot(NASTY)
    name, nodes, edges = parse_dot(text)
    assert name == NASTY.slug == "he_said_hi_1_b_x_n_end"
    shown = [_dot_display(a["label"]) for a in nodes.values()]
    assert [NASTY_NAME, 'entry when event "A\\\\B" where x == "]\\"; --> end"'] in shown
    assert any('send email "t\\"q#quot;" via "c|d"' in lines for lines in shown)
    assert sorted(_dot_display(a["label"])[0] for _, a, _ in edges if "label" in a) == [
        '<arm> "1" 50%', "control 50%", "elif1", "else", "exit", "then"]
    graph = dot_check(text)
    if graph is not None:
        labels = {o["label"] for o in graph["objects"]}
        assert any(_dot_display(lbl)[0] == NASTY_NAME for lbl in labels)


def test_long_conditions_are_shortened():
    cond = " and ".join(f"user.trait_{i} == {i}" for i in range(10))
    j = compile_one(f'journey "L" {{ entry when event "A" if {cond} {{ exit }} }}')
    boxes, _ = layout(j)
    line = next(b.lines[1] for b in boxes if b.lines[0] == "l/1")
    assert line.startswith("if user.trait_0 == 0 and") and line.endswith("…") and len(line) <= 80


# ------------------------------------------------------------------------------ determinism


def test_output_is_deterministic():
    a = compile_project([parse_text('journey "D" { entry when event "A" split { 50% "x" { wait 1h } 50% "y" { exit } } }').file])
    b = compile_project([parse_text("journey \"D\" {\n entry when event \"A\"\n split {\n 50% \"x\" { wait 1h }\n"
                                    " 50% \"y\" { exit }\n }\n}").file])
    ja, jb = a.journeys["D"], b.journeys["D"]
    assert render_mermaid(ja) == render_mermaid(jb) == render_mermaid(ja)
    assert render_dot(ja) == render_dot(jb)
    ids = [line.split("[")[0].strip(" (") for line in render_mermaid(ja).splitlines()[1:] if "[" in line]
    assert ids == ["entry", "n1", "n2", "n3", "done"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dot_rejects_what_our_checks_reject():
    """The validator itself must be able to fail: a broken label is caught."""
    with pytest.raises(AssertionError):
        dot_check('digraph "x" { a [label="unterminated]; }')
