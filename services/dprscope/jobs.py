"""Progress reporting, cancellation and deadlines shared by every long job.

Domain loops (index build, re-index, attribution, probing) take a ``progress`` callback
and a ``CancelToken`` instead of printing or watching signals, so the same loop can
drive a CLI progress bar, a gRPC stream or a metric without knowing which.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dprscope.errors import Cancelled, DeadlineExceeded


@dataclass(frozen=True)
class Progress:
    """One progress report of a long job."""

    stage: str
    done: int
    total: int | None = None
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        """Items per second so far (0 when nothing finished yet)."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, or None when unknown."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


ProgressFn = Callable[[Progress], None]


class CancelToken:
    """A thread-safe flag a caller sets to stop a job at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@dataclass(frozen=True)
class Deadline:
    """An absolute monotonic deadline; ``None`` means none."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    @property
    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def check(self, what: str = "request") -> None:
        if self.expired:
            raise DeadlineExceeded(f"deadline passed before the {what} ran")


@dataclass
class ProgressTicker:
    """Turns ``done`` counts into rate-limited ``Progress`` calls (at most every ``every_s``)."""

    stage: str
    total: int | None
    progress: ProgressFn | None
    every_s: float = 0.5
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def update(self, done: int, message: str = "", force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.progress(Progress(self.stage, done, self.total, message, now - self.started))
