"""Every domain error has exactly one gRPC status, resolved most-specific first."""

from __future__ import annotations

import grpc

from dprscope import errors
from dprscope.api.errors import STATUS_FOR_ERROR, status_for


def test_every_error_class_has_a_status():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DprscopeError)]
    missing = [c.__name__ for c in classes if c not in STATUS_FOR_ERROR]
    assert not missing


def test_most_specific_wins_and_unknown_is_internal():
    assert status_for(errors.DimensionMismatch("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.UnknownVersion("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(errors.Overloaded("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_for(RuntimeError("x")) == grpc.StatusCode.INTERNAL
