"""The one exception tree of dprscope.

Domain code raises these; ``dprscope.api.errors`` owns the single table that turns them
into gRPC status codes, so no servicer decides codes on its own::

    DprscopeError
    ├── InvalidArgument            bad request values (empty query, top_k out of range, ...)
    │   └── UnknownVersion         a model_version that is not loaded
    ├── NotFound                   ids, versions or files that do not exist
    ├── FailedPrecondition         the request is fine but the service state forbids it
    │   ├── DimensionMismatch      encoder dim != index dim
    │   ├── NoIndex                nothing to search
    │   └── ReindexRequired        a context-encoder change needs a new index first
    ├── Overloaded                 queue or concurrency cap full: back-pressure
    ├── DeadlineExceeded           the caller's deadline passed before the work ran
    ├── Unauthenticated            missing or wrong credentials
    ├── PermissionDenied           credentials fine, action refused (paths, disabled admin)
    ├── Cancelled                  the caller (or operator) cancelled a long job
    └── Unavailable                draining or no active version

Messages name the bad value and the allowed range or set, because the message is what
an operator reads at 3 a.m.
"""

from __future__ import annotations


class DprscopeError(Exception):
    """Base of every error dprscope raises on purpose."""


class InvalidArgument(DprscopeError):
    """A request value is outside what the service accepts."""


class UnknownVersion(InvalidArgument):
    """The request names a model version that is not loaded."""


class NotFound(DprscopeError):
    """A named thing (passage, version, file) does not exist."""


class FailedPrecondition(DprscopeError):
    """The request is valid but the current state of the service forbids it."""


class DimensionMismatch(FailedPrecondition):
    """An encoder's embedding size does not match the index."""


class NoIndex(FailedPrecondition):
    """There is no index to search."""


class ReindexRequired(FailedPrecondition):
    """The context encoder changed; the index must be rebuilt before it can serve."""


class Overloaded(DprscopeError):
    """A bounded queue or concurrency cap is full; retry later."""


class DeadlineExceeded(DprscopeError):
    """The caller's deadline passed before the work could run."""


class Unauthenticated(DprscopeError):
    """Credentials are missing or wrong."""


class PermissionDenied(DprscopeError):
    """Credentials are valid (or irrelevant) but the action is not allowed."""


class Cancelled(DprscopeError):
    """The job was cancelled by its caller."""


class Unavailable(DprscopeError):
    """The service cannot take the request right now (draining, nothing active)."""


ALL_ERRORS: tuple[type[DprscopeError], ...] = (
    DprscopeError,
    InvalidArgument,
    UnknownVersion,
    NotFound,
    FailedPrecondition,
    DimensionMismatch,
    NoIndex,
    ReindexRequired,
    Overloaded,
    DeadlineExceeded,
    Unauthenticated,
    PermissionDenied,
    Cancelled,
    Unavailable,
)
