"""What happens first on one event, and who decides (issue 17, points 2-4).

- Entries take their turns in the journeys' order whatever their kind: an event entry and a segment
  entry caused by the same event are one sequence, not "events first".
- A trait written while an input is processed (a consent event, a `set` step) moves the user into
  or out of the segments that read it at once, not at their next identify.
- The order is declared in journeys.toml (`[journeys] order`), file order only as the fallback;
  the check warns where undeclared journeys compete for a cap, and `journeys diff` shows an order
  change.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from engine.core.program import Program
from engine.dryrun.diff import compare_journeys
from journeys.checker import check_and_compile
from journeys.diagnostics import render
from journeys.project import load_project

from .engine_helpers import CONFIG, Harness, t

ROOT = Path(__file__).resolve().parent.parent

EMAIL = "---\nsubject: Hi\nfrom: shop@example.com\n---\nHello {{ user.id }}\n"


def project(root: Path, files: dict[str, str], config: str = CONFIG) -> Path:
    (root / "journeys").mkdir(parents=True, exist_ok=True)
    (root / "journeys.toml").write_text(textwrap.dedent(config))
    for name in ("a", "b", "welcome"):
        p = root / "templates" / "email" / f"{name}.j2"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(EMAIL)
    for name, text in files.items():
        (root / "journeys" / name).write_text(textwrap.dedent(text))
    return root


def harness(root: Path) -> Harness:
    diags, compiled = check_and_compile(load_project(root))
    assert compiled is not None, "\n".join(str(d) for d in diags if d.is_error)
    return Harness(Program.build(compiled), t("2026-03-01 00:00"))


POLICY = '''
    policy {
      cap email 1 per 1d
    }
'''


def test_a_segment_entry_and_an_event_entry_on_one_event_go_in_journey_order(tmp_path):
    """Journey A (first in order) enters when the event makes the user a viewer; journey B enters
    on the event itself. A acts first, so A's email takes the cap; before, B's always did."""
    root = project(tmp_path, {
        "policy.journey": POLICY + '''
            segment "viewers" = happened(event "Product Viewed", last 7d)
        ''',
        "a.journey": '''
            journey "A" {
              entry when user enters segment "viewers"
              send email "a"
            }
        ''',
        "b.journey": '''
            journey "B" {
              entry when event "Product Viewed"
              send email "b"
            }
        ''',
    })
    h = harness(root).feed([("2026-03-02 10:00", "u1", "Product Viewed", {})])
    assert [(a.target, a.outcome) for a in h.actions()] == [("a", "sent"), ("b", "suppressed")]


def test_a_consent_event_moves_the_user_into_a_segment_at_once(tmp_path):
    root = project(tmp_path, {
        "main.journey": '''
            segment "gone" = user.unsubscribed == true

            journey "Farewell" {
              entry when user enters segment "gone"
              webhook "ping"
            }
        ''',
    })
    h = harness(root).feed([("2026-03-02 10:00", "u1", "identify", {"email": "u1@example.com"}),
                            ("2026-03-02 12:00", "u1", "Unsubscribed", {})])
    [entry] = h.entries()
    assert entry.time == t("2026-03-02 12:00")  # not at the user's next identify
    [call] = h.actions(kind="webhook")
    assert call.time == t("2026-03-02 12:00") and call.outcome == "sent"


def test_a_set_step_moves_the_user_into_a_segment_at_once_even_after_a_wait(tmp_path):
    root = project(tmp_path, {
        "main.journey": '''
            segment "vips" = user.vip == true

            journey "Promote" {
              entry when event "Order Completed"
              wait 1d
              set user.vip = true
            }

            journey "VIP welcome" {
              entry when user enters segment "vips"
              webhook "ping"
            }
        ''',
    })
    h = harness(root).feed([("2026-03-02 10:00", "u1", "Order Completed", {})], until="2026-03-05 00:00")
    [call] = h.actions(kind="webhook")
    assert call.time == t("2026-03-03 10:00") and call.journey == "VIP welcome"


RIVALS = {
    "a.journey": '''
        journey "Zeta" {
          entry when event "Signed Up"
          send email "a"
        }
    ''',
    "b.journey": '''
        journey "Alpha" {
          entry when event "Signed Up"
          send email "b"
        }
    ''',
}


def _winner(root: Path) -> str:
    h = harness(root).feed([("2026-03-02 10:00", "u1", "Signed Up", {})])
    [sent] = h.actions(outcome="sent")
    assert len(h.actions(outcome="suppressed")) == 1
    return sent.journey


def test_the_declared_order_decides_which_send_a_cap_lets_through_whatever_the_file_names(tmp_path):
    ordered = CONFIG + '\n[journeys]\norder = ["Alpha", "Zeta"]\n'
    assert _winner(project(tmp_path / "1", {"policy.journey": POLICY, **RIVALS}, ordered)) == "Alpha"
    swapped = {"b.journey": RIVALS["a.journey"], "a.journey": RIVALS["b.journey"]}
    assert _winner(project(tmp_path / "2", {"policy.journey": POLICY, **swapped}, ordered)) == "Alpha"
    # without a declaration the file order decides (and the check says so: below)
    assert _winner(project(tmp_path / "3", {"policy.journey": POLICY, **RIVALS})) == "Zeta"


def _check(root: Path) -> list[str]:
    project_ = load_project(root)
    diags, _ = check_and_compile(project_)
    out = []
    for d in diags.sorted():
        lines = project_.lines.get(d.span.file, []) if d.span else []
        out.append(render(d, lines[d.span.line - 1] if d.span and d.span.line <= len(lines) else None))
    return out


def test_the_check_warns_where_undeclared_journeys_compete_for_a_cap(tmp_path):
    [warning] = _check(project(tmp_path / "1", {"policy.journey": POLICY, **RIVALS}))
    assert warning.startswith('warning[J061]: journeys "Zeta", "Alpha" send under this cap')
    assert "policy.journey:3:3" in warning and 'order = ["Zeta", "Alpha"]' in warning
    declared = CONFIG + '\n[journeys]\norder = ["Alpha", "Zeta"]\n'
    assert _check(project(tmp_path / "2", {"policy.journey": POLICY, **RIVALS}, declared)) == []


def test_an_unknown_journey_in_the_order_is_a_warning_at_its_line(tmp_path):
    config = CONFIG + '\n[journeys]\norder = ["Alpha", "Zetta"]\n'
    root = project(tmp_path, {"policy.journey": POLICY, **RIVALS}, config)
    [warning] = _check(root)
    line = config.splitlines().index('order = ["Alpha", "Zetta"]') + 1
    assert warning.startswith('warning[J060]: `journeys.order` names "Zetta", which is not a journey: it is ignored')
    assert f"journeys.toml:{line}:1" in warning and 'did you mean "Zeta"' in warning
    assert _winner(root) == "Alpha"  # the rest of the order holds


def test_diff_shows_an_order_change(tmp_path):
    before = check_and_compile(load_project(project(tmp_path / "old", RIVALS)))[1]
    after = check_and_compile(load_project(project(tmp_path / "new", RIVALS,
                                                   CONFIG + '\n[journeys]\norder = ["Alpha"]\n')))[1]
    changes = {c.name: c for c in compare_journeys(dict(before.journeys), dict(after.journeys))}
    assert changes["Alpha"].status == "unchanged" and changes["Alpha"].declarations == [("order", "2 of 2", "1 of 2")]
    assert changes["Zeta"].declarations == [("order", "1 of 2", "2 of 2")]


def test_journeys_diff_in_a_pull_request_lists_an_order_change(tmp_path):
    repo = project(tmp_path, RIVALS)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (repo / "journeys.toml").write_text(CONFIG + '\n[journeys]\norder = ["Alpha", "Zeta"]\n')
    r = subprocess.run([sys.executable, "-m", "engine.cli", "diff", str(repo), "--base", "HEAD", "--format",
                        "markdown"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "- **Alpha**: unchanged" in r.stdout and "  - changed order: 2 of 2 → 1 of 2" in r.stdout
