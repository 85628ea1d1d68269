"""The ``ModelRegistry``: which versions are loaded, which one serves, and who holds them.

A request takes a ``Lease`` on a version when it starts and keeps using that version's
encoder *and* index until it ends, whatever activations happen meanwhile. Activation is
one reference swap under a lock, so a request can never see half a swap, and a version
is only freed once no lease holds it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, UnknownVersion

log = logging.getLogger(__name__)

DEFAULT_KEEP_PREVIOUS = 2


class VersionState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"
    REINDEXING = "REINDEXING"


@dataclass
class ModelVersion:
    """One loaded (or failed, or loading) version and the index it serves with."""

    name: str
    encoder: BiEncoder | None
    index: Any | None = None
    state: VersionState = VersionState.READY
    source: str = ""
    kind: str = "FULL"
    role: str = "BOTH"
    base_version: str = ""
    error: str = ""
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    stale_index: bool = False
    reindex_progress: float = 0.0
    canary: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    leases: int = 0

    @property
    def usable(self) -> bool:
        return self.encoder is not None and self.state in (VersionState.READY, VersionState.ACTIVE,
                                                           VersionState.REINDEXING)


@dataclass(frozen=True)
class Lease:
    """What a request holds for its whole life: one version's encoder and index."""

    version: str
    encoder: BiEncoder
    index: Any


Listener = Callable[["ModelRegistry"], None]


class ModelRegistry:
    """Versions by name, the active pointer, the previous-versions stack and leases."""

    def __init__(self, keep_previous: int = DEFAULT_KEEP_PREVIOUS) -> None:
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)
        self._versions: dict[str, ModelVersion] = {}
        self._active: str | None = None
        self._history: list[str] = []  # previously active versions, most recent last
        self.keep_previous = keep_previous
        self._listeners: list[Listener] = []

    # --- observation -------------------------------------------------------------
    def on_change(self, listener: Listener) -> None:
        """Call ``listener(registry)`` after every activation, rollback, add or removal."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # a metrics listener must never break a swap
                log.exception("registry listener failed")

    @property
    def active_name(self) -> str | None:
        return self._active

    @property
    def previous_name(self) -> str | None:
        with self._lock:
            return self._history[-1] if self._history else None

    def versions(self) -> list[ModelVersion]:
        with self._lock:
            return list(self._versions.values())

    def get(self, name: str) -> ModelVersion:
        with self._lock:
            version = self._versions.get(name)
            if version is None:
                raise NotFound(f"model version {name!r} is not loaded; loaded: {sorted(self._versions)}")
            return version

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._versions

    # --- mutation ----------------------------------------------------------------
    def add(self, version: ModelVersion) -> ModelVersion:
        with self._lock:
            if version.name in self._versions:
                raise InvalidArgument(f"model version {version.name!r} already exists")
            self._versions[version.name] = version
        self._notify()
        return version

    def update(self, name: str, **changes: Any) -> ModelVersion:
        with self._lock:
            version = self.get(name)
            for key, value in changes.items():
                setattr(version, key, value)
        self._notify()
        return version

    def activate(self, name: str, index: Any | None = None) -> ModelVersion:
        """Make ``name`` the active version (optionally with a new index) in one swap."""
        with self._lock:
            version = self.get(name)
            if version.encoder is None or version.state in (VersionState.FAILED, VersionState.LOADING):
                raise FailedPrecondition(f"model version {name!r} is {version.state.value}, cannot activate")
            if index is not None:
                version.index = index
            if version.index is None:
                raise FailedPrecondition(f"model version {name!r} has no index to serve with")
            previous = self._active
            if previous == name:
                version.state = VersionState.ACTIVE
                return version
            if previous is not None:
                self._versions[previous].state = VersionState.READY
                self._history = [h for h in self._history if h != previous] + [previous]
            self._history = [h for h in self._history if h != name]
            version.state = VersionState.ACTIVE
            self._active = name
            log.info("activated model version %s (previous: %s)", name, previous)
        self._notify()
        return version

    def rollback(self) -> ModelVersion:
        """Re-activate the most recent previously active version that is still loaded."""
        with self._lock:
            while self._history:
                candidate = self._history[-1]
                version = self._versions.get(candidate)
                if version is not None and version.usable:
                    current = self._active
                    self._history.pop()
                    if current is not None:
                        self._versions[current].state = VersionState.READY
                    version.state = VersionState.ACTIVE
                    self._active = candidate
                    log.info("rolled back from %s to %s", current, candidate)
                    break
                self._history.pop()
            else:
                raise FailedPrecondition("no previous version to roll back to")
        self._notify()
        return version

    def remove(self, name: str, wait_s: float = 30.0) -> ModelVersion:
        """Drop a non-active version once its leases are released (waits up to ``wait_s``)."""
        with self._lock:
            version = self.get(name)
            if name == self._active:
                raise FailedPrecondition(f"model version {name!r} is active; activate another first")
            deadline = time.monotonic() + wait_s
            while version.leases > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FailedPrecondition(f"model version {name!r} still has {version.leases} requests in flight")
                self._released.wait(left)
            del self._versions[name]
            self._history = [h for h in self._history if h != name]
        self._notify()
        return version

    def prune_history(self) -> list[str]:
        """Free previously active versions beyond ``keep_previous`` (oldest first)."""
        freed: list[str] = []
        with self._lock:
            while len(self._history) > self.keep_previous:
                name = self._history.pop(0)
                version = self._versions.get(name)
                if version is not None and version.leases == 0 and name != self._active:
                    del self._versions[name]
                    freed.append(name)
        if freed:
            log.info("freed old versions %s", freed)
            self._notify()
        return freed

    # --- leasing -----------------------------------------------------------------
    def resolve(self, name: str | None) -> str:
        """The version a request means: its explicit name, or the active one."""
        if name:
            return name
        active = self._active
        if active is None:
            raise Unavailable("no model version is active")
        return active

    @contextmanager
    def lease(self, name: str | None = None) -> Iterator[Lease]:
        """Hold a version (the active one by default) for the duration of a request."""
        with self._lock:
            target = self.resolve(name)
            version = self._versions.get(target)
            if version is None:
                raise UnknownVersion(f"model_version {target!r} is not loaded; loaded: {sorted(self._versions)}")
            if not version.usable or version.index is None:
                raise UnknownVersion(f"model_version {target!r} is {version.state.value} and cannot serve")
            version.leases += 1
            lease = Lease(version.name, version.encoder, version.index)  # type: ignore[arg-type]
        try:
            yield lease
        finally:
            with self._lock:
                version.leases -= 1
                if version.leases == 0:
                    self._released.notify_all()
