"""The retrieval port's event-loop server: cancellation, binding, stopping.

Search and BatchSearch run as coroutines on ``LoopServer``; what the thread-per-request
server gave for free has to hold here too: a caller who gives up is counted and costs no
further work, a taken port is a clear error, and stopping is idempotent.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from dprscope.v1 import retrieval_pb2 as pb
from dprscope.v1 import retrieval_pb2_grpc as pb_grpc
from dprscope_client import RetrieverClient, RetrieverError


def _sample(handle, name: str, **labels: str) -> float:
    return handle.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_call_the_client_cancels_is_counted_and_frees_its_slot(start_server, nq_records):
    handle = start_server(max_inflight=4)
    questions = [r["question"] for r in nq_records]
    with grpc.insecure_channel(handle.target) as channel:
        stub = pb_grpc.RetrieverStub(channel)
        call = stub.BatchSearch.future(pb.BatchSearchRequest(queries=(questions * 8)[:256], top_k=3), timeout=60)
        deadline = time.monotonic() + 30
        while _sample(handle, "dprscope_inflight_requests", server="retrieval") < 1:  # in the server now
            assert time.monotonic() < deadline and not call.done(), "the call never reached the server"
            time.sleep(0.01)
        assert call.cancel()
    deadline = time.monotonic() + 30
    while _sample(handle, "dprscope_requests_total", method="BatchSearch", code="CANCELLED") < 1:
        assert time.monotonic() < deadline, "the cancelled call was never counted"
        time.sleep(0.05)
    assert _sample(handle, "dprscope_inflight_requests", server="retrieval") == 0
    # all four slots are free again: four concurrent calls are admitted, none refused
    with RetrieverClient(handle.target, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda q: client.search(q, top_k=1), questions[:4]))
    assert all(r.hits for r in results)


def test_a_port_already_taken_is_a_clear_error(start_server):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{port}"):
            start_server(port=port)


def test_stopping_twice_is_harmless_and_the_port_is_released(start_server):
    handle = start_server()
    port = handle.port
    handle.grpc_server.stop(0).wait(10)
    assert handle.grpc_server.stop(0).is_set()
    assert handle.grpc_server.wait_for_termination(1)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_an_unexpected_failure_is_internal_without_details_and_the_server_keeps_serving(start_server):
    """A fault outside dprscope's error tree (here the passage database going away under the
    server) reaches the caller as INTERNAL with a generic message, is counted, and leaves the
    server up."""
    handle = start_server()
    with RetrieverClient(handle.target, timeout=30, retry_reads=False) as client:
        client.search("who wrote hamlet", top_k=1)  # the encoder thread has its store connection now
        store = handle.registry.get(handle.registry.active_name).index.store
        for conn in list(store._all_conns):  # a fault injected below dprscope's own checks
            conn.close()
        with pytest.raises(RetrieverError) as err:
            client.search("who wrote hamlet", top_k=1)
        assert err.value.code == grpc.StatusCode.INTERNAL
        message = str(err.value).lower()
        assert "internal error" in message and "database" not in message and "sqlite" not in message
        assert client.health() == "SERVING"
        assert client.index_info().passages > 0
    assert _sample(handle, "dprscope_requests_total", method="Search", code="INTERNAL") == 1
    assert _sample(handle, "dprscope_inflight_requests", server="retrieval") == 0
