"""The one table from dprscope's exception tree to gRPC status codes.

Resolution walks the exception's MRO, so the most specific entry wins (a
``DimensionMismatch`` is FAILED_PRECONDITION because ``FailedPrecondition`` is, unless
it is given its own row). Anything outside the tree is INTERNAL, logged on the server,
and reported to the client without a stack trace or host path.
"""

from __future__ import annotations

import grpc

from dprscope import errors as e

STATUS_FOR_ERROR: dict[type[e.DprscopeError], grpc.StatusCode] = {
    e.DprscopeError: grpc.StatusCode.INTERNAL,
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.UnknownVersion: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.DimensionMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    e.NoIndex: grpc.StatusCode.FAILED_PRECONDITION,
    e.ReindexRequired: grpc.StatusCode.FAILED_PRECONDITION,
    e.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.Cancelled: grpc.StatusCode.CANCELLED,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception, most specific class first."""
    for cls in type(exc).__mro__:
        code = STATUS_FOR_ERROR.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
