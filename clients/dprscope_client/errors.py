"""The client's one exception: a gRPC failure with its status code kept readable."""

from __future__ import annotations

import grpc


class RetrieverError(Exception):
    """A call failed; ``code`` is the gRPC status (e.g. ``grpc.StatusCode.INVALID_ARGUMENT``)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> RetrieverError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return cls(code, details or "")
