"""Turning a gRPC call context into the domain's Deadline and CancelToken."""

from __future__ import annotations

import grpc

from dprscope.jobs import CancelToken, Deadline

_NO_DEADLINE_S = 1e7  # grpc reports "no deadline" as None or as a huge remaining time


def deadline_of(context: grpc.ServicerContext) -> Deadline:
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return Deadline()
    return Deadline.after(remaining)


def cancel_token_of(context: grpc.ServicerContext) -> CancelToken:
    """A token set when the RPC ends early (client cancel, deadline, disconnect)."""
    token = CancelToken()
    context.add_callback(lambda: token.cancel("the client cancelled the call or its deadline passed"))
    return token
