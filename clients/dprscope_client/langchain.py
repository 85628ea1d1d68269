"""LangChain adapter: a dprscope server as a ``BaseRetriever`` in one line.

    from dprscope_client.langchain import DprscopeRetriever
    retriever = DprscopeRetriever(target="dprscope:50051", k=5)
    docs = retriever.invoke("who painted the mona lisa")      # list[Document]

Needs the optional extra ``pip install 'dprscope[langchain]'`` (``langchain-core``). The
package ``dprscope_client`` never imports this module, so the plain client keeps working
without LangChain installed; importing this module without it raises an ImportError that
says which extra to install.

Each ``Document`` carries the passage text as ``page_content`` and ``id``, and
``passage_id``, ``title``, ``score``, ``rank``, ``model_version`` and ``index_version`` in
``metadata``, so a RAG pipeline can cite passages and log which model version served them.
Following LangChain's retriever conventions, ``k`` is both a constructor field and an
``invoke(query, k=...)`` override.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "dprscope_client.langchain needs langchain-core: pip install 'dprscope[langchain]'"
    ) from exc
from pydantic import ConfigDict, Field, PrivateAttr

from dprscope_client.aio import AsyncRetrieverClient
from dprscope_client.sync import RetrieverClient
from dprscope_client.types import SearchResult

__all__ = ["DprscopeRetriever"]


class DprscopeRetriever(BaseRetriever):
    """Retrieves passages from a dprscope Retriever service (sync and async).

    Attributes:
        target: ``HOST:PORT`` of the Retriever service.
        k: passages per query (the server's ``top_k``; it enforces its own cap).
        score_threshold: drop hits scoring below this (server-side).
        model_version: pin a loaded model version; empty means the active one.
        timeout: per-call deadline in seconds, honoured end to end by the server.
        include_title: prepend ``title`` to ``page_content`` (DPR encodes both).
        tls, root_certificates: TLS to the server (PEM bytes or a path).
        grpc_metadata: extra ``(key, value)`` call metadata (e.g. for a gateway).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    target: str = "127.0.0.1:50051"
    k: int = Field(default=4, ge=1)
    score_threshold: float | None = None
    model_version: str = ""
    timeout: float = Field(default=10.0, gt=0)
    include_title: bool = False
    tls: bool = False
    root_certificates: bytes | str | None = None
    grpc_metadata: list[tuple[str, str]] = Field(default_factory=list)

    _client: RetrieverClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _sync_client(self) -> RetrieverClient:
        # One channel per retriever, created on first use: gRPC channels are thread-safe
        # and expensive to open, and a retriever is often built long before it is used.
        with self._lock:
            if self._client is None:
                self._client = RetrieverClient(self.target, timeout=self.timeout, tls=self.tls,
                                               root_certificates=self.root_certificates,
                                               metadata=self.grpc_metadata)
            return self._client

    def _to_documents(self, result: SearchResult) -> list[Document]:
        documents = []
        for hit in result.hits:
            content = f"{hit.title}\n{hit.text}" if self.include_title and hit.title else hit.text
            documents.append(Document(
                id=hit.passage_id, page_content=content,
                metadata={"passage_id": hit.passage_id, "title": hit.title, "score": hit.score,
                          "rank": hit.rank, "model_version": result.model_version,
                          "index_version": result.index_version}))
        return documents

    def _search_kwargs(self, k: int | None) -> dict[str, Any]:
        return {"top_k": self.k if k is None else k, "score_threshold": self.score_threshold,
                "model_version": self.model_version}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[Document]:
        return self._to_documents(self._sync_client().search(query, **self._search_kwargs(k)))

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       k: int | None = None) -> list[Document]:
        # grpc.aio channels belong to one event loop, so each async call opens its own.
        async with AsyncRetrieverClient(self.target, timeout=self.timeout, tls=self.tls,
                                        root_certificates=self.root_certificates,
                                        metadata=self.grpc_metadata) as client:
            result = await client.search(query, **self._search_kwargs(k))
        return self._to_documents(result)

    def batch_documents(self, queries: Sequence[str], k: int | None = None) -> list[list[Document]]:
        """All queries in one ``BatchSearch`` call (one encoder pass on the server)."""
        results = self._sync_client().batch_search(list(queries), **self._search_kwargs(k))
        return [self._to_documents(r) for r in results]

    def close(self) -> None:
        """Close the cached channel (a later call opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
