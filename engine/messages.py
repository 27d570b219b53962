"""Segment-spec messages, normalised once at the edge so the engine sees one shape.

The daemon's HTTP ingest and the dry-run's log readers both turn raw Segment JSON into a
`Message` with `parse_message`; the engine never looks at raw JSON. Normalising here means:
`page` and `screen` calls become the events "Page Viewed" and "Screen Viewed", timestamps become
timezone-aware UTC datetimes, and a message without a messageId gets a deterministic one derived
from its content (so a replayed log still deduplicates and the dry-run stays byte-identical).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping

_EMPTY: Mapping[str, Any] = MappingProxyType({})

TYPES = ("track", "identify", "page", "screen", "alias", "group")
PAGE_EVENT = "Page Viewed"
SCREEN_EVENT = "Screen Viewed"


@dataclass(frozen=True, slots=True)
class Message:
    """One Segment call, normalised.

    - `type`: track | identify | page | screen | alias | group.
    - `event`: the event name the journeys see: a track's `event`, "Page Viewed" for page,
      "Screen Viewed" for screen; None for identify, alias and group.
    - `properties`: a track's, page's or screen's properties (page/screen `name` is added as the
      property `name` when the properties have none).
    - `traits`: identify's traits; for group, the group's traits.
    - `previous_id`: alias's previousId. `group_id`: group's groupId.
    - `timezone`: `context.timezone` when the sender gave one (an IANA name, not validated here).
    """

    type: str
    message_id: str
    timestamp: datetime
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    properties: Mapping[str, Any] = field(default=_EMPTY)
    traits: Mapping[str, Any] = field(default=_EMPTY)
    previous_id: str | None = None
    group_id: str | None = None
    timezone: str | None = None

    @property
    def actor(self) -> str:
        """The id the message is about before identity stitching: userId, else anonymousId."""
        return self.user_id if self.user_id is not None else self.anonymous_id  # type: ignore[return-value]
