"""The Analysis sidecar on a real server (127.0.0.1, port 0) with the real embedded model.

Steps and layers are kept small (m <= 4, two layers) so the file runs in about a minute;
the long jobs (concurrency cap, cancellation, Search isolation) use many steps only so
that they are still running when the test looks, and are always cancelled.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from dprscope.v1 import analysis_pb2 as pb
from dprscope.v1 import analysis_pb2_grpc as pb_grpc
from dprscope_client import AnalysisClient, AnalysisProgress, RetrieverClient, RetrieverError
from tests.shared_data import shared_data_dir

NQ_DEV_10 = ("dpr-original-samples", "nq-dev-10.dpr.jsonl")
REQ = pb.AttributeRequest
MINILM_INTERMEDIATE = 1536
MINILM_HIDDEN = 384


def _nq_dev_records(negatives: int = 4) -> list[dict]:
    path = shared_data_dir().joinpath(*NQ_DEV_10)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in records:
        r["hard_negative_ctxs"] = r["hard_negative_ctxs"][:negatives]
        r["negative_ctxs"] = []
    return records


def _running(handle) -> float:
    return handle.metrics.registry.get_sample_value("dprscope_analysis_jobs_running") or 0.0


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-root")
    source = shared_data_dir().joinpath(*NQ_DEV_10)
    (root / "nq-dev-10.dpr.jsonl").write_bytes(source.read_bytes())
    (root / "escape.jsonl").symlink_to(source)  # a symlink out of the root must be refused
    return root


@pytest.fixture(scope="module")
def analysis_server(small_index, encoder, data_root):
    from dprscope.server import start
    from dprscope.settings import Settings

    handle = start(Settings(index_dir=small_index, host="127.0.0.1", port=0, analysis_port=0, metrics_port=None,
                            drain_s=0.0, grace_s=2.0, data_root=data_root, analysis_concurrency=1,
                            analysis_queue=4),
                   encoder=encoder)
    yield handle
    handle.stop(grace=0, drain=0)


@pytest.fixture
def analysis(analysis_server) -> Iterator[AnalysisClient]:
    with AnalysisClient(f"127.0.0.1:{analysis_server.analysis_port}", timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def example(nq_records) -> tuple[str, list[dict], list[str]]:
    """A question, its gold passage + one BM25 negative (dicts) and their corpus ids."""
    r = nq_records[0]
    ctxs = [r["positive_ctxs"][0], r["hard_negative_ctxs"][0]]
    return r["question"], [{"title": c["title"], "text": c["text"]} for c in ctxs], \
        [str(c["passage_id"]) for c in ctxs]


def _code(exc_info) -> grpc.StatusCode:
    return exc_info.value.code


# ----------------------------------------------------------------------------- Attribute


def test_attribute_streams_progress_then_one_result(analysis, example):
    query, passages, _ = example
    events = list(analysis.attribute_events(query, passages, layers=[0, 5], sublayer="both", steps=4,
                                            top_neurons=5, return_scores=True))
    assert len(events) >= 2
    assert all(isinstance(e, AnalysisProgress) for e in events[:-1])
    result = events[-1]
    assert not isinstance(result, AnalysisProgress)
    assert result.model_version == "v1" and result.steps == 4 and result.method == "riemann_right"
    assert math.isclose(result.threshold, 0.1, rel_tol=1e-6)
    assert [(e.layer, e.sublayer) for e in result.layers] == [
        (0, "intermediate"), (0, "output"), (5, "intermediate"), (5, "output")]
    for entry in result.layers:
        expected = MINILM_INTERMEDIATE if entry.sublayer == "intermediate" else MINILM_HIDDEN
        assert entry.neurons == expected and len(entry.scores) == expected
        assert 1 <= entry.count_above_threshold <= entry.neurons
        assert len(entry.top_neurons) == 5
        values = [n.attribution for n in entry.top_neurons]
        assert values == sorted(values, reverse=True) and math.isclose(values[0], entry.max_attribution, rel_tol=1e-5)
        assert entry.count_above_threshold == sum(s > 0.1 * entry.max_attribution for s in entry.scores)
        assert math.isfinite(entry.target_delta) and math.isfinite(entry.completeness_gap)
        assert math.isclose(entry.completeness_gap, entry.sum_attribution - entry.target_delta, abs_tol=1e-4)


def test_attribute_without_return_scores_sends_no_vector(analysis, example):
    query, passages, _ = example
    result = analysis.attribute(query, passages[:1], layers=[3], steps=2)
    (entry,) = result.layers
    assert entry.scores == () and len(entry.top_neurons) == 20


def test_attribute_by_passage_ids_matches_the_stored_text(analysis, analysis_server, example):
    query, _, ids = example
    by_id = analysis.attribute(query, passage_ids=ids, layers=[5], steps=2, target="positive_prob")
    with analysis_server.registry.lease() as lease:
        stored = lease.index.store.get_ids(ids)
    inline = analysis.attribute(query, [(stored[i].title, stored[i].text) for i in ids], layers=[5], steps=2,
                                target="positive_prob")
    assert by_id.target_value == pytest.approx(inline.target_value, abs=1e-6)
    assert by_id.layers[0].count_above_threshold == inline.layers[0].count_above_threshold


@pytest.mark.parametrize("target", ["score", "positive_prob"])
@pytest.mark.parametrize("side", ["query", "passage"])
def test_attribute_targets_and_sides(analysis, example, target, side):
    query, passages, _ = example
    progress: list[AnalysisProgress] = []
    result = analysis.attribute(query, passages, target=target, side=side, layers=[5], steps=2,
                                progress=progress.append)
    assert progress
    if target == "positive_prob":
        assert 0.0 < result.target_value < 1.0
    (entry,) = result.layers
    assert entry.neurons == MINILM_INTERMEDIATE and entry.count_above_threshold >= 1


def test_gauss_legendre_and_cls_positions(analysis, example):
    query, passages, _ = example
    result = analysis.attribute(query, passages, layers=[2], steps=3, method="gauss_legendre", positions="cls")
    assert result.method == "gauss_legendre" and result.layers[0].count_above_threshold >= 1


# ----------------------------------------------------------------------------- Probe


def test_probe_inline_records(analysis):
    events = list(analysis.probe_events(_nq_dev_records(), n_passages=[2, 3], layers=[0, 6], seed=1))
    assert all(isinstance(e, AnalysisProgress) for e in events[:-1]) and len(events) >= 2
    result = events[-1]
    assert result.records_used == 10
    assert [(s.n_passages, s.layer) for s in result.scores] == [(2, 0), (2, 6), (3, 0), (3, 6)]
    for s in result.scores:
        assert s.chance == pytest.approx(1.0 / s.n_passages)
        assert 0.0 <= s.accuracy <= 1.0 and 0.0 <= s.untrained_accuracy <= 1.0
        assert s.train_examples + s.test_examples == 10


def test_probe_data_path_inside_the_data_root(analysis):
    result = analysis.probe(data_path="nq-dev-10.dpr.jsonl", n_passages=[2], layers=[6], max_records=8)
    assert result.records_used == 8 and len(result.scores) == 1


@pytest.mark.parametrize("path", ["escape.jsonl", "../outside.jsonl", "/etc/passwd"])
def test_probe_data_path_outside_the_root_is_permission_denied(analysis, path):
    with pytest.raises(RetrieverError) as exc:
        analysis.probe(data_path=path, n_passages=[2])
    assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED
    assert "outside" in exc.value.details


def test_probe_missing_data_path_is_not_found(analysis):
    with pytest.raises(RetrieverError) as exc:
        analysis.probe(data_path="nope.jsonl", n_passages=[2])
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


# ----------------------------------------------------------------------------- ActivationStats


def test_activation_stats_inline_pairs(analysis, nq_records):
    pairs = [(r["question"], (r["positive_ctxs"][0]["title"], r["positive_ctxs"][0]["text"])) for r in nq_records[:2]]
    result = analysis.activation_stats(pairs, layers=[0, 5], steps=2)
    assert result.examples == 2 and [s.layer for s in result.layers] == [0, 5]
    for s in result.layers:
        assert s.neurons == MINILM_INTERMEDIATE and 1 <= s.neurons_active <= s.neurons
        assert len(s.fire_count_histogram) == 3 and sum(s.fire_count_histogram) == s.neurons
        assert s.neurons - s.fire_count_histogram[0] == s.neurons_active


def test_activation_stats_from_data_path(analysis):
    result = analysis.activation_stats(data_path="nq-dev-10.dpr.jsonl", max_records=2, layers=[5], steps=2,
                                       sublayer="output", target="positive_prob")
    assert result.examples == 2 and result.layers[0].sublayer == "output"
    assert result.layers[0].neurons == MINILM_HIDDEN


# ----------------------------------------------------------------------------- serving is unharmed


def test_search_results_are_identical_while_an_attribution_runs(analysis_server, analysis, nq_records, example):
    queries = [r["question"] for r in nq_records[:6]]
    with RetrieverClient(analysis_server.target, timeout=30) as search:
        before = [search.search(q, top_k=5) for q in queries]
        query, passages, _ = example
        events = analysis.attribute_events(query, passages, sublayer="both", steps=256)
        assert isinstance(next(events), AnalysisProgress)  # admitted and started
        try:
            assert _wait_for(lambda: _running(analysis_server) == 1, 10)
            during = [search.search(q, top_k=5) for q in queries]
            assert _running(analysis_server) == 1, "the job should still be running"
        finally:
            events.close()
    for b, d in zip(before, during, strict=True):
        assert [h.passage_id for h in b.hits] == [h.passage_id for h in d.hits]
        assert [h.score for h in b.hits] == pytest.approx([h.score for h in d.hits], abs=1e-5)
    assert _wait_for(lambda: _running(analysis_server) == 0, 20)


# ----------------------------------------------------------------------------- admission, cancellation


@pytest.fixture
def capped_server(start_server):
    """analysis_concurrency=1, analysis_queue=1, no --data-root."""
    return start_server(analysis_port=0, analysis_concurrency=1, analysis_queue=1)


def _long_job(client: AnalysisClient, example) -> Iterator:
    query, passages, _ = example
    return client.attribute_events(query, passages, sublayer="both", steps=400)


def test_concurrency_cap_queue_then_resource_exhausted_then_cancel(capped_server, example):
    target = f"127.0.0.1:{capped_server.analysis_port}"
    query, passages, _ = example
    with AnalysisClient(target, timeout=120) as a, AnalysisClient(target, timeout=120) as b, \
            AnalysisClient(target, timeout=120) as c:
        first = _long_job(a, example)
        assert isinstance(next(first), AnalysisProgress)
        assert _wait_for(lambda: _running(capped_server) == 1, 10)
        # A job waiting in the queue respects its deadline (and leaves the queue).
        with pytest.raises(RetrieverError) as exc:
            list(c.attribute_events(query, passages, layers=[0], steps=2, timeout=0.5))
        assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
        gate = capped_server.extras["analysis_service"].gate
        assert _wait_for(lambda: gate.waiting == 0, 5)
        queued_result: list = []
        queued = threading.Thread(target=lambda: queued_result.append(
            b.attribute(query, passages, layers=[0], steps=2)), daemon=True)
        queued.start()
        assert _wait_for(lambda: gate.waiting == 1, 10)
        with pytest.raises(RetrieverError) as exc:
            c.attribute(query, passages, layers=[0], steps=2)
        assert _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit" in exc.value.details
        # Cancelling the running call stops its job; the queued one then runs.
        started = time.monotonic()
        first.close()
        queued.join(60)
        assert not queued.is_alive() and queued_result and queued_result[0].layers[0].layer == 0
        assert time.monotonic() - started < 30
    assert _wait_for(lambda: _running(capped_server) == 0, 10)
    jobs = capped_server.metrics.registry.get_sample_value
    assert jobs("dprscope_analysis_jobs_total", {"method": "attribute", "result": "cancelled"}) >= 1
    assert jobs("dprscope_analysis_jobs_total", {"method": "attribute", "result": "rejected"}) >= 1


def test_client_cancel_stops_the_job_and_frees_the_slot(capped_server, example):
    target = f"127.0.0.1:{capped_server.analysis_port}"
    query, passages, _ = example
    stub = pb_grpc.AnalysisStub(grpc.insecure_channel(target))
    call = stub.Attribute(pb.AttributeRequest(query=query, passages=[pb.PassageInput(**p) for p in passages],
                                              sublayer=REQ.BOTH, steps=400), timeout=120)
    assert next(call).WhichOneof("event") == "progress"
    assert _wait_for(lambda: _running(capped_server) == 1, 10)
    call.cancel()
    assert _wait_for(lambda: _running(capped_server) == 0, 15), "the cancelled job kept running"
    with AnalysisClient(target, timeout=60) as a:
        assert a.attribute(query, passages, layers=[1], steps=2).layers[0].layer == 1


def test_deadline_stops_a_running_job(capped_server, example):
    target = f"127.0.0.1:{capped_server.analysis_port}"
    with AnalysisClient(target) as a:
        query, passages, _ = example
        with pytest.raises(RetrieverError) as exc:
            list(a.attribute_events(query, passages, sublayer="both", steps=400, timeout=1.5))
        assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _wait_for(lambda: _running(capped_server) == 0, 15)


def test_no_data_root_is_permission_denied(capped_server):
    with AnalysisClient(f"127.0.0.1:{capped_server.analysis_port}") as a, pytest.raises(RetrieverError) as exc:
        a.probe(data_path="nq-dev-10.dpr.jsonl")
    assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED
    assert "--data-root" in exc.value.details


# ----------------------------------------------------------------------------- health, reflection


def test_health_and_reflection_on_the_analysis_port(analysis_server):
    channel = grpc.insecure_channel(f"127.0.0.1:{analysis_server.analysis_port}")
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "dprscope.v1.Analysis"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "dprscope.v1.Analysis" in services and "grpc.health.v1.Health" in services
    channel.close()


# ----------------------------------------------------------------------------- bad input


def _call(analysis_server, rpc: str, request) -> grpc.RpcError:
    stub = pb_grpc.AnalysisStub(grpc.insecure_channel(f"127.0.0.1:{analysis_server.analysis_port}"))
    with pytest.raises(grpc.RpcError) as exc:
        list(getattr(stub, rpc)(request, timeout=60))
    return exc.value


P = pb.PassageInput(title="Hamlet", text="Hamlet is a tragedy written by William Shakespeare.")
REC = pb.ProbeRecord(question="who wrote hamlet", positive_ctxs=[pb.ProbeContext(text=P.text)],
                     hard_negative_ctxs=[pb.ProbeContext(text="Macbeth is a tragedy.")])


@pytest.mark.parametrize(("rpc", "request_", "code", "needle"), [
    ("Attribute", pb.AttributeRequest(query="who wrote hamlet"), "INVALID_ARGUMENT", "no passages"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], layers=[6]), "INVALID_ARGUMENT", "0..5"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], layers=[-1]), "INVALID_ARGUMENT", "out of range"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], steps=-1), "INVALID_ARGUMENT", "n_steps"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], steps=513), "INVALID_ARGUMENT", "512"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], model_version="nope"), "INVALID_ARGUMENT", "nope"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], target=99), "INVALID_ARGUMENT", "target=99"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], sublayer=7), "INVALID_ARGUMENT", "sublayer=7"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], threshold=0.0), "INVALID_ARGUMENT", "threshold"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], target=REQ.POSITIVE_PROB), "INVALID_ARGUMENT",
     "negative"),
    ("Attribute", pb.AttributeRequest(query="", passages=[P]), "INVALID_ARGUMENT", "query"),
    ("Attribute", pb.AttributeRequest(query="q", passage_ids=["no-such-id", "nor-this"]), "NOT_FOUND",
     "'no-such-id', 'nor-this'"),
    ("Attribute", pb.AttributeRequest(query="q", passages=[P], passage_ids=["1"]), "INVALID_ARGUMENT", "either"),
    ("Probe", pb.ProbeRequest(), "INVALID_ARGUMENT", "no records"),
    ("Probe", pb.ProbeRequest(records=[REC] * 5, n_passages=[3]), "INVALID_ARGUMENT", "N=3 needs 2 hard negatives"),
    ("Probe", pb.ProbeRequest(records=[REC] * 5, n_passages=[2], layers=[7]), "INVALID_ARGUMENT", "0..6"),
    ("Probe", pb.ProbeRequest(records=[REC] * 5, n_passages=[1]), "INVALID_ARGUMENT", "n_passages"),
    ("Probe", pb.ProbeRequest(records=[REC] * 5, features=9), "INVALID_ARGUMENT", "features=9"),
    ("Probe", pb.ProbeRequest(records=[REC] * 5, model_version="nope"), "INVALID_ARGUMENT", "nope"),
    ("Probe", pb.ProbeRequest(records=[REC] * 5, data_path="x.jsonl"), "INVALID_ARGUMENT", "either"),
    ("ActivationStats", pb.ActivationStatsRequest(), "INVALID_ARGUMENT", "no pairs"),
    ("ActivationStats", pb.ActivationStatsRequest(pairs=[pb.QueryPassagePair(query="q", passage=P)], steps=600),
     "INVALID_ARGUMENT", "n_steps"),
    ("ActivationStats", pb.ActivationStatsRequest(pairs=[pb.QueryPassagePair(query="q", passage=P)], layers=[6]),
     "INVALID_ARGUMENT", "out of range"),
    ("ActivationStats", pb.ActivationStatsRequest(data_path="/etc/passwd"), "PERMISSION_DENIED", "outside"),
])
def test_bad_input_gets_a_clear_status(analysis_server, rpc, request_, code, needle):
    error = _call(analysis_server, rpc, request_)
    assert error.code() == getattr(grpc.StatusCode, code), error.details()
    assert needle in error.details()
