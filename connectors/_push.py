"""What the push connectors (`connectors.fcm`, `connectors.webpush`) share: the message they send,
where they find it in a `Delivery`, and how one delivery fans out to a user's devices.

The rendering seam
------------------
Push connectors send an already-rendered message; they never render templates themselves. The
dispatcher (or whoever builds the `Delivery`) puts the rendered push in `delivery.data["_push"]`:
a `PushMessage`, any object with the attributes `title`, `body`, `url`, `image`, `data` (such as
`connectors.render.RenderedPush`), or a dict with those keys. Until rendering is wired in, a
delivery without `_push` is read from `delivery.data` itself: its `title`, `body`, `url` and
`image` keys, and a mapping under `data` for the app's own key/values.

Fan-out
-------
A user may have several devices (FCM registration tokens, Web Push subscriptions); one delivery is
one send per device. The outcome of the whole delivery is:

- any device failed retryably → `RetryableError` (the longest `retry_after` asked for). Devices
  that already accepted the message are remembered per action id, so the retry does not send them
  a duplicate (in memory: a restart between attempts may send a device the message twice);
- else at least one device accepted it → `PushResult` (`provider_id`: the first message id,
  `provider_ids`: all; `stale`: devices found dead on the way, to remove from the profile);
- else all devices were dead → `InvalidRecipient(stale=<the first dead token or endpoint>)`;
- else the first permanent error.

Every error raised also carries `stale_addresses` (all dead tokens or endpoints seen) and `trait`
(the profile trait they live in); `InvalidRecipient.stale` is the token or endpoint itself, which
the daemon reports as a `Push Token Unregistered` event (engine.daemon.deliveries.feedback): the
engine, taking it, removes the token from the profile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .base import Delivery, Result
from .errors import ConfigurationError, DeliveryError, InvalidRecipient, PermanentError, RetryableError


@dataclass(frozen=True)
class PushMessage:
    """A rendered push notification. `data`: the app's own key/values, sent alongside."""

    title: str | None = None
    body: str | None = None
    url: str | None = None
    image: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PushResult(Result):
    """A push accepted for at least one of the user's devices."""

    provider_ids: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()  # dead tokens or endpoints met on the way: remove from the profile


def push_message(delivery: Delivery) -> PushMessage:
    """The rendered message of a push delivery (see the module's docstring for where it is read)."""
    source: Any = delivery.data.get("_push", delivery.data)
    if isinstance(source, PushMessage):
        return source
    if isinstance(source, Mapping):
        get = source.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(source, key, default)
    data = get("data") or {}
    if not isinstance(data, Mapping):
        raise PermanentError(f"the push's `data` must be a mapping, not {type(data).__name__}")
    msg = PushMessage(title=_text(get("title")), body=_text(get("body")), url=_text(get("url")),
                      image=_text(get("image")), data=dict(data))
    if not (msg.title or msg.body or msg.data):
        raise PermanentError("the push has no title, no body and no data: nothing to send")
    return msg


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def profile_list(profile: Mapping[str, Any], many: str, one: str | None = None) -> list[Any]:
    """The values of a profile trait that holds a list (`many`), or one value (`one`), deduplicated."""
    values: list[Any] = []
    raw = profile.get(many)
    if isinstance(raw, (list, tuple)):
        values.extend(raw)
    elif raw:
        values.append(raw)
    if one is not None and profile.get(one):
        values.append(profile[one])
    seen, out = set(), []
    for v in values:
        key = repr(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


class DeliveredMemo:
    """Which devices already accepted each action, so a retry does not send them a duplicate.
    Bounded (the oldest actions are forgotten first) and thread-safe."""

    def __init__(self, size: int = 10_000):
        self._size = size
        self._done: OrderedDict[str, set[str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, action_id: str) -> set[str]:
        with self._lock:
            return set(self._done.get(action_id, ()))

    def add(self, action_id: str, address: str) -> None:
        with self._lock:
            self._done.setdefault(action_id, set()).add(address)
            self._done.move_to_end(action_id)
            while len(self._done) > self._size:
                self._done.popitem(last=False)

    def forget(self, action_id: str) -> None:
        with self._lock:
            self._done.pop(action_id, None)


def fan_out(action_id: str, addresses: Iterable[str], send_one: Callable[[str], str | None],
            memo: DeliveredMemo, *, trait: str) -> PushResult:
    """Send to each address; the delivery's outcome by the rules in the module's docstring."""
    addresses = list(addresses)
    done = memo.get(action_id)
    ids: list[str] = []
    stale: list[str] = []
    stale_errors: list[InvalidRecipient] = []
    retry: list[RetryableError] = []
    permanent: list[PermanentError] = []
    for address in addresses:
        if address in done:
            continue
        try:
            provider_id = send_one(address)
        except InvalidRecipient as err:  # `stale`: the dead token or endpoint (None if it has none)
            stale_errors.append(err)
            if err.stale:
                stale.append(err.stale)
            continue
        except ConfigurationError as err:  # every device would fail the same way
            raise _annotate(err, stale, trait)
        except RetryableError as err:
            retry.append(err)
            continue
        except PermanentError as err:
            permanent.append(err)
            continue
        memo.add(action_id, address)
        if provider_id:
            ids.append(provider_id)
    delivered_before = [a for a in addresses if a in done]
    if retry:
        first = retry[0]
        waits = [e.retry_after for e in retry if e.retry_after is not None]
        accepted = len(ids) + len(delivered_before)
        err = RetryableError(
            first.message + (f" ({len(retry)} of {len(addresses)} devices; {accepted} accepted)"
                             if len(addresses) > 1 else ""),
            status=first.status, answer=first.answer, retry_after=max(waits) if waits else None)
        raise _annotate(err, stale, trait)
    if ids or delivered_before:
        memo.forget(action_id)
        notes = [f"{len(ids) + len(delivered_before)} of {len(addresses)} devices accepted"]
        if stale_errors:
            notes.append(f"{len(stale_errors)} stale")
        if permanent:
            notes.append("refused: " + "; ".join(str(e) for e in permanent))
        return PushResult(provider_id=ids[0] if ids else None, detail=", ".join(notes),
                          provider_ids=tuple(ids), stale=tuple(stale))
    if stale_errors and not permanent:
        if len(stale_errors) == 1:
            raise _annotate(stale_errors[0], stale, trait)
        first = stale_errors[0]
        err = InvalidRecipient(f"no device of this user can receive it: all {len(stale_errors)} tokens or "
                               "subscriptions are gone", status=first.status, answer=first.answer,
                               stale=stale[0] if stale else None)
        raise _annotate(err, stale, trait)
    if permanent:
        raise _annotate(permanent[0], stale, trait)
    raise InvalidRecipient(f"the profile has no push address (`{trait}`)")


def _annotate(err: DeliveryError, stale: list[str], trait: str) -> DeliveryError:
    err.stale_addresses = tuple(stale)  # type: ignore[attr-defined]
    err.trait = trait  # type: ignore[attr-defined]
    return err
