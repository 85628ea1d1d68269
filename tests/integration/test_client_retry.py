"""The client's read retries, against a real gRPC server on 127.0.0.1 that fails on purpose.

A stopping server kills the calls it had received but not started with CANCELLED, and a gone
one answers UNAVAILABLE. The clients send the Retriever's read methods again on those two codes
(and only those), so the stub server here answers each code a set number of times before it
succeeds, and counts the attempts that reached it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from dprscope.v1 import retrieval_pb2 as pb
from dprscope.v1 import retrieval_pb2_grpc as pb_grpc
from dprscope_client import AsyncRetrieverClient, RetrieverClient, RetrieverError


class FlakyRetriever(pb_grpc.RetrieverServicer):
    """Fails the first ``failures`` calls of each method with ``code``, then answers."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK
        self.failures = 0
        self.attempts = 0
        self._lock = threading.Lock()

    def arm(self, code: grpc.StatusCode, failures: int) -> None:
        with self._lock:
            self.code, self.failures, self.attempts = code, failures, 0

    def _attempt(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.attempts += 1
            failing = self.attempts <= self.failures
        if failing:
            context.abort(self.code, f"attempt {self.attempts} fails on purpose")

    def Search(self, request, context):
        self._attempt(context)
        return pb.SearchResponse(hits=[pb.Hit(passage_id="7", title="T", text=request.query, score=1.0, rank=1)],
                                 model_version="v1", index_version="i1")

    def GetPassages(self, request, context):
        self._attempt(context)
        return pb.GetPassagesResponse(passages=[pb.Passage(passage_id=i, title="T", text="x") for i in request.ids])


@pytest.fixture(scope="module")
def flaky() -> Iterator[tuple[FlakyRetriever, str]]:
    servicer = FlakyRetriever()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RetrieverServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.mark.parametrize("code", [grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE])
def test_a_read_killed_by_a_stopping_server_is_sent_again(flaky, code):
    servicer, target = flaky
    servicer.arm(code, failures=2)
    with RetrieverClient(target, timeout=10) as client:
        result = client.search("who wrote hamlet", top_k=1)
    assert [h.text for h in result.hits] == ["who wrote hamlet"]
    assert servicer.attempts == 3


def test_retries_are_bounded_and_the_last_status_reaches_the_caller(flaky):
    servicer, target = flaky
    servicer.arm(grpc.StatusCode.UNAVAILABLE, failures=10)
    with RetrieverClient(target, timeout=10) as client, pytest.raises(RetrieverError) as err:
        client.search("who wrote hamlet")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert "fails on purpose" in str(err.value)
    assert servicer.attempts == 3


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.INTERNAL])
def test_back_pressure_and_real_errors_are_not_retried(flaky, code):
    servicer, target = flaky
    servicer.arm(code, failures=1)
    with RetrieverClient(target, timeout=10) as client, pytest.raises(RetrieverError) as err:
        client.search("who wrote hamlet")
    assert err.value.code == code
    assert servicer.attempts == 1


def test_retries_can_be_turned_off(flaky):
    servicer, target = flaky
    servicer.arm(grpc.StatusCode.CANCELLED, failures=1)
    with RetrieverClient(target, timeout=10, retry_reads=False) as client, pytest.raises(RetrieverError) as err:
        client.search("who wrote hamlet")
    assert err.value.code == grpc.StatusCode.CANCELLED
    assert servicer.attempts == 1


def test_get_passages_is_retried_too(flaky):
    servicer, target = flaky
    servicer.arm(grpc.StatusCode.CANCELLED, failures=1)
    with RetrieverClient(target, timeout=10) as client:
        result = client.get_passages(["1", "2"])
    assert [p.passage_id for p in result.passages] == ["1", "2"]
    assert servicer.attempts == 2


def test_the_asyncio_client_retries_the_same_way(flaky):
    servicer, target = flaky

    async def run() -> tuple[list[str], int]:
        servicer.arm(grpc.StatusCode.CANCELLED, failures=2)
        async with AsyncRetrieverClient(target, timeout=10) as client:
            ok = await client.search("who wrote hamlet", top_k=1)
        servicer.arm(grpc.StatusCode.RESOURCE_EXHAUSTED, failures=1)
        async with AsyncRetrieverClient(target, timeout=10) as client:
            with pytest.raises(RetrieverError) as err:
                await client.search("who wrote hamlet")
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        return [h.passage_id for h in ok.hits], servicer.attempts

    ids, attempts_after_back_pressure = asyncio.run(run())
    assert ids == ["7"]
    assert attempts_after_back_pressure == 1
