"""The blocking Retriever client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dprscope.v1 import retrieval_pb2 as pb
from dprscope.v1 import retrieval_pb2_grpc as pb_grpc
from dprscope_client import _requests as rq
from dprscope_client.errors import RetrieverError
from dprscope_client.types import IndexInfo, PassagesResult, SearchResult

RETRIEVER_SERVICE = "dprscope.v1.Retriever"


class RetrieverClient:
    """Talks to a dprscope Retriever; every call has a timeout and raises ``RetrieverError``.

    >>> with RetrieverClient("127.0.0.1:50051") as client:
    ...     result = client.search("who wrote hamlet", top_k=5)
    """

    def __init__(self, target: str, *, timeout: float = rq.DEFAULT_TIMEOUT_S, tls: bool = False,
                 root_certificates: bytes | str | Path | None = None, client_cert: bytes | str | Path | None = None,
                 client_key: bytes | str | Path | None = None, metadata: Sequence[tuple[str, str]] = (),
                 max_message_bytes: int = rq.DEFAULT_MAX_MESSAGE_BYTES, retry_reads: bool = True) -> None:
        creds = rq.credentials(tls, root_certificates, client_cert, client_key)
        options = rq.channel_options(max_message_bytes, retry_reads=retry_reads)
        self.channel = (grpc.secure_channel(target, creds, options) if creds is not None
                        else grpc.insecure_channel(target, options))
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self._stub = pb_grpc.RetrieverStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise RetrieverError.from_rpc_error(exc) from None

    def search(self, query: str, top_k: int = 10, *, score_threshold: float | None = None, model_version: str = "",
               omit_text: bool = False, ef_search: int = 0, nprobe: int = 0, exact: bool = False,
               timeout: float | None = None) -> SearchResult:
        request = rq.search_request(query, top_k, score_threshold, model_version, omit_text, ef_search, nprobe, exact)
        return SearchResult.from_pb(self._call(self._stub.Search, request, timeout))

    def batch_search(self, queries: Sequence[str], top_k: int = 10, *, score_threshold: float | None = None,
                     model_version: str = "", omit_text: bool = False, ef_search: int = 0, nprobe: int = 0,
                     exact: bool = False, timeout: float | None = None) -> list[SearchResult]:
        request = rq.batch_request(queries, top_k, score_threshold, model_version, omit_text, ef_search, nprobe,
                                   exact)
        response = self._call(self._stub.BatchSearch, request, timeout)
        return [SearchResult.from_pb(r) for r in response.results]

    def get_passages(self, ids: Sequence[str], *, timeout: float | None = None) -> PassagesResult:
        response = self._call(self._stub.GetPassages, pb.GetPassagesRequest(ids=list(ids)), timeout)
        return PassagesResult.from_pb(response)

    def index_info(self, *, timeout: float | None = None) -> IndexInfo:
        return IndexInfo.from_pb(self._call(self._stub.GetIndexInfo, pb.GetIndexInfoRequest(), timeout))

    def health(self, service: str = RETRIEVER_SERVICE, *, timeout: float | None = None) -> str:
        """``SERVING`` / ``NOT_SERVING`` / ``SERVICE_UNKNOWN`` for a service name ("" = overall)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        """Block until the channel connects and health says SERVING (or raise on timeout)."""
        import time

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.health(timeout=min(2.0, max(0.1, deadline - time.monotonic()))) == "SERVING":
                    return
            except RetrieverError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"server not SERVING within {timeout}s (last error: {last})")

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RetrieverClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
