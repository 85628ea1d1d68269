"""``DprscopeRetriever`` against a real server, held to LangChain's ``BaseRetriever`` contract.

The contract (as langchain-tests' retriever suite states it): ``invoke`` returns a list of
``Document``; ``k`` works as a constructor field and as an ``invoke`` keyword; the async
path returns the same; callbacks see the run; it composes in a chain. And the plain
client must keep working when langchain-core is not installed.
"""

from __future__ import annotations

import asyncio
import importlib
import sys

import grpc
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda

from dprscope_client import RetrieverError
from dprscope_client.langchain import DprscopeRetriever


@pytest.fixture
def retriever(server):
    r = DprscopeRetriever(target=server.target, k=3, timeout=30)
    yield r
    r.close()


def test_is_a_base_retriever_returning_documents_with_metadata(retriever, nq_records, client):
    record = nq_records[0]
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke(record["question"])
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    expected = client.search(record["question"], top_k=3)
    assert [d.id for d in docs] == [h.passage_id for h in expected.hits]
    assert [d.page_content for d in docs] == [h.text for h in expected.hits]
    first = docs[0].metadata
    assert first["rank"] == 1 and first["model_version"] == "v1" and first["index_version"]
    assert first["title"] and isinstance(first["score"], float)
    assert str(record["positive_ctxs"][0]["passage_id"]) in [d.id for d in retriever.invoke(record["question"],
                                                                                                k=10)]


def test_k_as_field_and_as_invoke_keyword(server, retriever):
    assert len(retriever.invoke("who wrote the odyssey", k=1)) == 1
    assert len(retriever.invoke("who wrote the odyssey", k=7)) == 7
    wide = DprscopeRetriever(target=server.target, k=5)
    try:
        assert len(wide.invoke("who wrote the odyssey")) == 5
    finally:
        wide.close()
    with pytest.raises(ValueError, match="k"):
        DprscopeRetriever(target=server.target, k=0)


def test_async_equals_sync_and_batch(retriever, nq_records):
    questions = [r["question"] for r in nq_records[:3]]
    sync = [[d.id for d in docs] for docs in retriever.batch(questions)]
    async_docs = asyncio.run(retriever.ainvoke(questions[0]))
    assert [d.id for d in async_docs] == sync[0]
    one_call = [[d.id for d in docs] for docs in retriever.batch_documents(questions)]
    assert one_call == sync


def test_callbacks_and_chain_composition(retriever):
    seen: list[int] = []

    class Recorder(BaseCallbackHandler):
        def on_retriever_end(self, documents, **kwargs) -> None:
            seen.append(len(documents))

    chain = retriever | RunnableLambda(lambda docs: "\n\n".join(d.page_content for d in docs))
    context = chain.invoke("what is the largest planet", config={"callbacks": [Recorder()]})
    assert context.count("\n\n") == 2 and seen == [3]


def test_title_in_content_and_server_errors_surface(server):
    r = DprscopeRetriever(target=server.target, k=2, include_title=True)
    try:
        doc = r.invoke("what is photosynthesis")[0]
        assert doc.page_content.startswith(doc.metadata["title"] + "\n")
        with pytest.raises(RetrieverError) as info:
            r.invoke("   ")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        r.close()


def test_client_imports_without_langchain(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_core", None)  # makes `import langchain_core` fail
    for name in [n for n in sys.modules if n.startswith("langchain_core.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "dprscope_client.langchain", raising=False)
    client_module = importlib.reload(importlib.import_module("dprscope_client"))
    assert "langchain" not in client_module.__all__ and client_module.RetrieverClient
    with pytest.raises(ImportError, match=r"dprscope\[langchain\]"):
        importlib.import_module("dprscope_client.langchain")
