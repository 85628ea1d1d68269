"""Building requests and channels, shared by the sync and asyncio clients."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import grpc

from dprscope.v1 import retrieval_pb2 as pb

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


#: The Retriever's read methods change nothing, so a call that a stopping server never ran can
#: be sent again. A server that stops kills the calls it had received but not yet started with
#: CANCELLED (gRPC core drops its unmatched calls at shutdown), and one that is gone answers
#: UNAVAILABLE; both are retried with a short backoff, within the caller's deadline, so a rolling
#: restart is invisible to a client. RESOURCE_EXHAUSTED (a full queue) is not retried: that is
#: back-pressure, and retrying it would only add load. A call the client cancels itself is never
#: retried.
READ_RETRY_SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "dprscope.v1.Retriever", "method": method}
                 for method in ("Search", "BatchSearch", "GetPassages", "GetIndexInfo")],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
        },
    }],
})


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                    retry_reads: bool = True) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [("grpc.max_receive_message_length", max_message_bytes),
                                            ("grpc.max_send_message_length", max_message_bytes)]
    if retry_reads:
        options.append(("grpc.service_config", READ_RETRY_SERVICE_CONFIG))
    return options


def credentials(tls: bool, root_certificates: bytes | str | Path | None = None,
                client_cert: bytes | str | Path | None = None,
                client_key: bytes | str | Path | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials (with optional client certificate for mTLS), or None for plaintext."""
    if not tls and root_certificates is None and client_cert is None:
        return None

    def _read(value: bytes | str | Path | None) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        return Path(value).read_bytes()

    return grpc.ssl_channel_credentials(root_certificates=_read(root_certificates),
                                        private_key=_read(client_key), certificate_chain=_read(client_cert))


def _params(ef_search: int, nprobe: int, exact: bool) -> pb.SearchParams:
    return pb.SearchParams(ef_search=ef_search, nprobe=nprobe, exact=exact)


def search_request(query: str, top_k: int, score_threshold: float | None, model_version: str, omit_text: bool,
                   ef_search: int, nprobe: int, exact: bool) -> pb.SearchRequest:
    request = pb.SearchRequest(query=query, top_k=top_k, model_version=model_version, omit_text=omit_text,
                               params=_params(ef_search, nprobe, exact))
    if score_threshold is not None:
        request.score_threshold = score_threshold
    return request


def batch_request(queries: Sequence[str], top_k: int, score_threshold: float | None, model_version: str,
                  omit_text: bool, ef_search: int, nprobe: int, exact: bool) -> pb.BatchSearchRequest:
    request = pb.BatchSearchRequest(queries=list(queries), top_k=top_k, model_version=model_version,
                                    omit_text=omit_text, params=_params(ef_search, nprobe, exact))
    if score_threshold is not None:
        request.score_threshold = score_threshold
    return request
