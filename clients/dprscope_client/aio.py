"""The asyncio Retriever client (grpc.aio), same surface as ``RetrieverClient``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dprscope.v1 import retrieval_pb2 as pb
from dprscope.v1 import retrieval_pb2_grpc as pb_grpc
from dprscope_client import _requests as rq
from dprscope_client.errors import RetrieverError
from dprscope_client.sync import RETRIEVER_SERVICE
from dprscope_client.types import IndexInfo, PassagesResult, SearchResult


class AsyncRetrieverClient:
    """``async with AsyncRetrieverClient(target) as c: await c.search("...")``."""

    def __init__(self, target: str, *, timeout: float = rq.DEFAULT_TIMEOUT_S, tls: bool = False,
                 root_certificates: bytes | str | Path | None = None, client_cert: bytes | str | Path | None = None,
                 client_key: bytes | str | Path | None = None, metadata: Sequence[tuple[str, str]] = (),
                 max_message_bytes: int = rq.DEFAULT_MAX_MESSAGE_BYTES, retry_reads: bool = True) -> None:
        creds = rq.credentials(tls, root_certificates, client_cert, client_key)
        options = rq.channel_options(max_message_bytes, retry_reads=retry_reads)
        self.channel = (grpc.aio.secure_channel(target, creds, options) if creds is not None
                        else grpc.aio.insecure_channel(target, options))
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self._stub = pb_grpc.RetrieverStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def _call(self, method, request, timeout: float | None):
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout,
                                metadata=self.metadata)
        except grpc.RpcError as exc:
            raise RetrieverError.from_rpc_error(exc) from None

    async def search(self, query: str, top_k: int = 10, *, score_threshold: float | None = None,
                     model_version: str = "", omit_text: bool = False, ef_search: int = 0, nprobe: int = 0,
                     exact: bool = False, timeout: float | None = None) -> SearchResult:
        request = rq.search_request(query, top_k, score_threshold, model_version, omit_text, ef_search, nprobe, exact)
        return SearchResult.from_pb(await self._call(self._stub.Search, request, timeout))

    async def batch_search(self, queries: Sequence[str], top_k: int = 10, *, score_threshold: float | None = None,
                           model_version: str = "", omit_text: bool = False, ef_search: int = 0, nprobe: int = 0,
                           exact: bool = False, timeout: float | None = None) -> list[SearchResult]:
        request = rq.batch_request(queries, top_k, score_threshold, model_version, omit_text, ef_search, nprobe,
                                   exact)
        response = await self._call(self._stub.BatchSearch, request, timeout)
        return [SearchResult.from_pb(r) for r in response.results]

    async def get_passages(self, ids: Sequence[str], *, timeout: float | None = None) -> PassagesResult:
        response = await self._call(self._stub.GetPassages, pb.GetPassagesRequest(ids=list(ids)), timeout)
        return PassagesResult.from_pb(response)

    async def index_info(self, *, timeout: float | None = None) -> IndexInfo:
        return IndexInfo.from_pb(await self._call(self._stub.GetIndexInfo, pb.GetIndexInfoRequest(), timeout))

    async def health(self, service: str = RETRIEVER_SERVICE, *, timeout: float | None = None) -> str:
        response = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncRetrieverClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
