"""The Retriever service over a real gRPC server on 127.0.0.1 with the real model and data."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dprscope.v1 import retrieval_pb2 as pb
from dprscope.v1 import retrieval_pb2_grpc as pb_grpc
from dprscope_client import RetrieverClient, RetrieverError


def test_search_returns_ranked_hits_with_versions_and_timings(client, nq_records):
    record = nq_records[0]
    result = client.search(record["question"], top_k=5)
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert result.model_version == "v1"
    assert result.index_version
    assert result.total_ms >= result.encode_ms > 0
    assert all(h.title and h.text for h in result.hits)
    gold = str(record["positive_ctxs"][0]["passage_id"])
    assert gold in [h.passage_id for h in result.hits]


def test_default_top_k_omit_text_and_threshold(client, nq_records):
    question = nq_records[1]["question"]
    assert len(client.search(question, top_k=0).hits) == 10
    bare = client.search(question, top_k=3, omit_text=True)
    assert all(h.title == "" and h.text == "" and h.passage_id for h in bare.hits)
    full = client.search(question, top_k=20)
    cut = full.hits[4].score
    thresholded = client.search(question, top_k=20, score_threshold=cut)
    assert [h.passage_id for h in thresholded.hits] == [h.passage_id for h in full.hits if h.score >= cut]


def test_exact_search_on_flat_equals_default(client, nq_records):
    question = nq_records[2]["question"]
    a = client.search(question, top_k=5)
    b = client.search(question, top_k=5, exact=True)
    assert [h.passage_id for h in a.hits] == [h.passage_id for h in b.hits]


def test_batch_search_is_in_order_and_matches_single_searches(client, nq_records):
    questions = [r["question"] for r in nq_records[:6]]
    batch = client.batch_search(questions, top_k=4)
    assert len(batch) == len(questions)
    for question, result in zip(questions, batch, strict=True):
        single = client.search(question, top_k=4)
        assert [h.passage_id for h in result.hits] == [h.passage_id for h in single.hits]
        for x, y in zip(result.hits, single.hits, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-4)


def test_get_passages_and_missing_ids(client, nq_records):
    gold = str(nq_records[0]["positive_ctxs"][0]["passage_id"])
    result = client.get_passages([gold, "no-such-id"])
    assert [p.passage_id for p in result.passages] == [gold]
    assert result.passages[0].text.startswith(nq_records[0]["positive_ctxs"][0]["text"][:30])
    assert result.missing_ids == ["no-such-id"]


def test_index_info_describes_the_serving_pair(client, encoder, small_index):
    info = client.index_info()
    assert info.dim == 384 and info.metric == "ip" and info.index_type == "flat"
    assert info.encoder_fingerprint == encoder.context_fingerprint
    assert info.model_version == "v1" and info.built_at and not info.stale
    assert info.passages > 100


def test_served_index_is_placed_per_settings_device(server, client):
    """The server opens its index with ``settings.device`` (default auto): on faiss-cpu, the CPU with a reason."""
    from dprscope.index.gpu import faiss_gpu_count

    index = server.registry.get(server.registry.active_name).index
    assert server.settings.device == "auto"
    expected = "cpu" if faiss_gpu_count() == 0 else "cuda:0"
    assert index.placement.device == expected and index.placement.reason
    assert client.search("who wrote hamlet", top_k=3).hits


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"query": ""}, "empty"),
        ({"query": "   \t "}, "empty"),
        ({"query": "ok", "top_k": -1}, "top_k=-1"),
        ({"query": "ok", "top_k": 1001}, "1..1000"),
        ({"query": "x" * 5000}, "limit is 4096 bytes"),
        ({"query": "ok", "model_version": "nope"}, "'nope' is not loaded"),
        ({"query": "ok", "ef_search": 64}, "ef_search"),
        ({"query": "ok\x00"}, "NUL"),
    ],
)
def test_bad_search_input_is_invalid_argument(client, kwargs, fragment):
    query = kwargs.pop("query")
    with pytest.raises(RetrieverError) as info:
        client.search(query, **kwargs)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details
    assert client.search("what is the capital of france", top_k=1).hits  # still serving


def test_bad_batch_and_passage_requests(client):
    for call, fragment in [
        (lambda: client.batch_search([]), "queries is empty"),
        (lambda: client.batch_search(["ok"] * 257), "limit is 256"),
        (lambda: client.batch_search(["ok", ""]), "queries[1] is empty"),
        (lambda: client.get_passages([]), "ids is empty"),
        (lambda: client.get_passages([""]), "ids[0]"),
    ]:
        with pytest.raises(RetrieverError) as info:
            call()
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, fragment
        assert fragment in info.value.details


def test_expired_deadline_is_deadline_exceeded(client):
    with pytest.raises(RetrieverError) as info:
        client.search("a question that will not make it in time", timeout=0.0005)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.search("still serving?", top_k=1).hits


def test_many_concurrent_clients_get_independent_correct_answers(server, nq_records):
    questions = [r["question"] for r in nq_records[:16]]
    with RetrieverClient(server.target) as c:
        expected = {q: [h.passage_id for h in c.search(q, top_k=5).hits] for q in questions}
    errors: list[BaseException] = []
    mismatches: list[str] = []

    def worker(offset: int) -> None:
        try:
            with RetrieverClient(server.target, timeout=60) as c:
                for i in range(6):
                    q = questions[(offset + i) % len(questions)]
                    got = [h.passage_id for h in c.search(q, top_k=5).hits]
                    if got != expected[q]:
                        mismatches.append(q)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not mismatches


def test_full_queue_answers_resource_exhausted(start_server, nq_records):
    handle = start_server(queue_size=1, encode_max_batch=1)
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def worker() -> None:
        with RetrieverClient(handle.target, timeout=60) as c:
            try:
                c.search(nq_records[3]["question"])
                code = grpc.StatusCode.OK
            except RetrieverError as exc:
                code = exc.code
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" not in exc.details:
                    code = grpc.StatusCode.UNKNOWN  # wrong message: fail below
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes


def test_health_and_reflection(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "dprscope.v1.Retriever"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"dprscope.v1.Retriever", "grpc.health.v1.Health"} <= names


def test_health_goes_not_serving_while_draining(start_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    handle = start_server(drain_s=1.5)
    stopper = threading.Thread(target=handle.stop)
    with grpc.insecure_channel(handle.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="dprscope.v1.Retriever")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        stopper.start()
        import time

        time.sleep(0.3)
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # in-flight work during the drain window still completes
        search = pb_grpc.RetrieverStub(channel).Search(pb.SearchRequest(query="still answered", top_k=1), timeout=10)
        assert search.hits
    stopper.join(30)


def test_metrics_exposition(server, client):
    client.search("how many moons does mars have", top_k=3)
    with pytest.raises(RetrieverError):
        client.search("")
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name in ("dprscope_requests", "dprscope_request_duration_seconds", "dprscope_stage_duration_seconds",
                 "dprscope_encode_batch_size", "dprscope_inflight_requests", "dprscope_index_passages",
                 "dprscope_model_info", "dprscope_encode_queue_depth", "dprscope_request_failures"):
        assert name in families, name
    samples = [(s.name, s.labels, s.value) for s in families["dprscope_requests"].samples]
    assert any(lbl == {"method": "Search", "code": "OK"} and v >= 1 for _, lbl, v in samples)
    assert any(lbl == {"method": "Search", "code": "INVALID_ARGUMENT"} and v >= 1 for _, lbl, v in samples)
    stages = {s.labels.get("stage") for s in families["dprscope_stage_duration_seconds"].samples}
    assert {"queue", "encode", "search", "fetch"} <= stages
    info = [s for s in families["dprscope_model_info"].samples if s.value == 1]
    assert info and info[0].labels["model_version"] == "v1"
    assert all(name.startswith("dprscope_") for name in families if not name.startswith(("python_", "process_")))


def test_warm_up_is_not_counted_as_client_traffic(start_server):
    """The start-up warm-up runs ~34 searches; request, stage and batch metrics start at zero anyway."""
    handle = start_server()
    body = urllib.request.urlopen(f"http://127.0.0.1:{handle.metrics_port}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    version_requests = [s.value for s in families["dprscope_model_version_requests"].samples
                        if s.name.endswith("_total")]
    assert sum(version_requests) == 0
    stage_counts = [s.value for s in families["dprscope_stage_duration_seconds"].samples if s.name.endswith("_count")]
    assert sum(stage_counts) == 0
    for family in ("dprscope_encode_batch_size", "dprscope_encode_batch_requests", "dprscope_encode_batch_seconds"):
        assert [s.value for s in families[family].samples if s.name.endswith("_count")] == [0], family
    with RetrieverClient(handle.target) as client:
        client.search("who wrote hamlet", top_k=3)
    body = urllib.request.urlopen(f"http://127.0.0.1:{handle.metrics_port}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert sum(s.value for s in families["dprscope_model_version_requests"].samples if s.name.endswith("_total")) == 1
    assert [s.value for s in families["dprscope_encode_batch_size"].samples if s.name.endswith("_count")] == [1]
    encode_s = {s.name: s.value for s in families["dprscope_encode_batch_seconds"].samples}
    assert encode_s["dprscope_encode_batch_seconds_count"] == 1
    assert 0 < encode_s["dprscope_encode_batch_seconds_sum"] < 60
