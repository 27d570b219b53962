"""A connector that records instead of delivering: for tests and the dry-run, like a mock
transport shipped with an HTTP client. It can also be told to fail, to test what the outbox does
with each kind of error."""

from __future__ import annotations

from collections import deque
from typing import Iterable

from .base import Delivery, Result


class RecordingConnector:
    def __init__(self, name: str = "recording", channel: str = "email", *, fail: Iterable[Exception] = ()):
        self.name = name
        self.channel = channel
        self.delivered: list[Delivery] = []
        self.attempts: list[Delivery] = []
        self._failures = deque(fail)  # raised one per attempt, in order, before deliveries succeed

    def deliver(self, delivery: Delivery) -> Result:
        self.attempts.append(delivery)
        if self._failures:
            raise self._failures.popleft()
        self.delivered.append(delivery)
        return Result(provider_id=f"rec-{len(self.delivered)}")
