"""Templates' `event` is the event that started the run, in every action of it; `current_event` is
the event the step ran on (issue 17, point 1). Both are kept with the run in the store, so a send
released from quiet hours, an action after a wait and an `on exit` action render as documented,
and the daemon renders them from exactly what the engine decided (`connectors.base.delivery_of`)."""

from __future__ import annotations

from types import MappingProxyType

from connectors.render import TemplateStore, render_email
from engine.core.state import Instance, new_user
from engine.store.serialize import state_from_bytes, state_to_bytes
from journeys.evaluation import Event

from .engine_helpers import t


def _event(a) -> str | None:
    return a.event["event"] if a.event else None


def _current(a) -> str | None:
    return a.current_event["event"] if a.current_event else None


def test_event_is_the_starting_event_after_a_wait_without_as(make):
    h = make('''
        journey "Browse" {
          entry when event "Product Viewed"
          wait 1h
          send email "nudge"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"})], until="2026-03-02 12:00")
    [a] = h.sent()
    assert a.event == {"event": "Product Viewed", "timestamp": "2026-03-02T10:00:00Z", "properties": {"name": "Lamp"}}
    assert a.current_event is None  # after a timer


def test_on_exit_actions_get_the_starting_event_and_the_exit_event_as_current(make):
    h = make('''
        journey "Browse" {
          entry when event "Product Viewed" as viewed
          exit when event "Order Completed"
          on exit { send email "bye" }
          wait 1d
          send email "nudge"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"}),
            ("2026-03-02 11:00", "u1", "Order Completed", {"order_id": "o1"})])
    [a] = h.sent()
    assert a.target == "bye" and _event(a) == "Product Viewed" and _current(a) == "Order Completed"
    assert a.current_event["properties"] == {"order_id": "o1"}


def test_a_send_released_from_quiet_hours_keeps_both_events(make):
    h = make('''
        policy { quiet hours 21:00-08:00 }
        journey "Payment" {
          entry when event "Payment Failed"
          send email "retry"
        }
    ''')
    h.feed([("2026-03-02 23:00", "u1", "Payment Failed", {"reason": "card"})], until="2026-03-03 09:00")
    deferred, sent = h.actions(template="retry")
    assert deferred.outcome == "deferred" and sent.outcome == "sent" and sent.time == t("2026-03-03 08:00")
    assert _event(sent) == _current(sent) == "Payment Failed"  # before: event null once released
    assert sent.event["properties"] == {"reason": "card"}


def test_a_wait_for_resumed_by_its_event_gives_it_as_current(make):
    h = make('''
        journey "Checkout" {
          entry when event "Checkout Started"
          wait for event "Payment Info Entered" up to 1h {
            on event   { send email "almost" }
            on timeout { send email "forgot" }
          }
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Checkout Started", {"cart": 3}),
            ("2026-03-02 10:10", "u1", "Payment Info Entered", {"card": "visa"}),
            ("2026-03-02 12:00", "u2", "Checkout Started", {"cart": 1})], until="2026-03-02 14:00")
    almost, forgot = sorted(h.sent(), key=lambda a: a.user)
    assert _event(almost) == "Checkout Started" and _current(almost) == "Payment Info Entered"
    assert _event(forgot) == "Checkout Started" and forgot.current_event is None


def test_a_segment_entry_an_event_caused_starts_with_that_event(make):
    h = make('''
        segment "browsers" = count(event "Product Viewed", last 7d) >= 2
        journey "Browsers" {
          entry when user enters segment "browsers"
          wait 1h
          send email "picks"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"}),
            ("2026-03-02 10:05", "u1", "Product Viewed", {"name": "Sofa"})], until="2026-03-02 12:00")
    [a] = h.sent()
    assert _event(a) == "Product Viewed" and a.event["properties"] == {"name": "Sofa"}


def test_the_daemon_renders_a_released_send_with_the_starting_event(make, tmp_path):
    """`{{ event.event }}` rendered from the action as the outbox keeps it (its JSON), the way the
    dispatcher builds every delivery: before, a send released from quiet hours had no event and
    failed to render in the daemon while the dry-run said "sent"."""
    template = "---\nsubject: About {{ event.event }}\nfrom: shop@example.com\n---\n<p>{{ event.reason }}</p>\n"
    h = make('''
        policy { quiet hours 21:00-08:00 }
        journey "Payment" {
          entry when event "Payment Failed"
          send email "retry"
        }
    ''', templates={"email/retry.j2": template})
    h.feed([("2026-03-02 23:00", "u1", "Payment Failed", {"reason": "card declined"})], until="2026-03-03 09:00")
    [sent] = h.actions(template="retry", outcome="sent")
    from connectors.base import delivery_of  # what the dispatcher builds a delivery with

    root = next(p for p in tmp_path.iterdir() if (p / "templates" / "email" / "retry.j2").exists())
    rendered = render_email(TemplateStore(root).get("email", "retry"), delivery_of(sent.to_json(), {}),
                            unsubscribe_url="https://example.com/u/x")
    assert rendered.subject == "About Payment Failed" and "<p>card declined</p>" in rendered.html


def test_both_events_survive_the_store():
    start = Event("Product Viewed", t("2026-03-02 10:00"), {"name": "Lamp"})
    current = Event("Order Completed", t("2026-03-02 11:00"), {"order_id": "o1"})
    base = Instance("J", "v1", 1, "u1", t("2026-03-02 10:00"), path="j/1", wait="held", since=t("2026-03-02 11:00"),
                    wake=t("2026-03-03 08:00"))
    for inst in (Instance(**{**_fields(base), "start": start, "current": current}),  # no `as`
                 Instance(**{**_fields(base), "named": MappingProxyType({"viewed": start}), "start": start}),
                 base):
        state = new_user("u1").evolve(instances={"J": inst})
        back = state_from_bytes(state_to_bytes(state)).instances["J"]
        assert back == inst
    named = MappingProxyType({"viewed": start})
    only_named = new_user("u1").evolve(instances={"J": Instance(**{**_fields(base), "named": named})})
    aliased = new_user("u1").evolve(instances={"J": Instance(**{**_fields(base), "named": named, "start": start})})
    # the starting event bound with `as` is stored once, by its name, not as a second copy
    assert len(state_to_bytes(aliased)) - len(state_to_bytes(only_named)) <= len("viewed") + 2


def _fields(inst: Instance) -> dict:
    return {name: getattr(inst, name) for name in Instance.__slots__}
