"""Load: 64 concurrent clients against a real ``dprscope serve`` with a deliberately small queue.

The only acceptable answers are OK (with exactly the hits a lone request gets) and
RESOURCE_EXHAUSTED (back-pressure: the queue is full, memory is not the buffer). The
server's RSS must stay bounded, the server's own counters must agree with what the
clients saw, and p99 is reported. The run is bounded in time, not a benchmark: numbers
are printed, never asserted (bench/soak.py runs the long version).
"""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dprscope_client import RetrieverClient, RetrieverError
from tests.reliability._harness import ServeProcess

CLIENTS = 64
DURATION_S = 12.0
QUEUE_SIZE = 8
RSS_GROWTH_LIMIT = 256 * 2**20  # 64 clients must not cost the server more than this


def _server_counts(metrics_port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "dprscope_requests":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["method"] == "Search":
                    counts[s.labels["code"]] = counts.get(s.labels["code"], 0) + s.value
    return counts


@pytest.mark.slow
def test_64_clients_only_ok_or_resource_exhausted(small_index, nq_records, tmp_path, capsys):
    server = ServeProcess(small_index, tmp_path / "serve.log", "--queue-size", str(QUEUE_SIZE),
                          "--encode-max-batch", "16", "--grpc-workers", "96", "--max-inflight", "128",
                          "--drain-seconds", "0")
    try:
        server.wait_serving()
        proc = psutil.Process(server.pid)
        questions = [r["question"] for r in nq_records]
        with RetrieverClient(server.target, timeout=30) as c:
            expected = {q: [h.passage_id for h in c.search(q, top_k=3).hits] for q in questions}
        warm = _server_counts(server.metrics_port)
        rss_before = proc.memory_info().rss
        rss_peak = rss_before
        lock = threading.Lock()
        codes: dict[str, int] = {}
        latencies: list[float] = []
        mismatches: list[str] = []
        stop_at = time.monotonic() + DURATION_S
        start = threading.Barrier(CLIENTS + 1)

        def client(i: int) -> None:
            local_codes: dict[str, int] = {}
            local_lat: list[float] = []
            with RetrieverClient(server.target, timeout=30) as c:
                start.wait()
                n = i
                while time.monotonic() < stop_at:
                    q = questions[n % len(questions)]
                    n += 1
                    t = time.perf_counter()
                    try:
                        got = [h.passage_id for h in c.search(q, top_k=3).hits]
                        local_lat.append(time.perf_counter() - t)
                        code = "OK"
                        if got != expected[q]:
                            with lock:
                                mismatches.append(q)
                    except RetrieverError as exc:
                        code = exc.code.name
                        if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            time.sleep(0.02)  # a polite client backs off
                    local_codes[code] = local_codes.get(code, 0) + 1
            with lock:
                for k, v in local_codes.items():
                    codes[k] = codes.get(k, 0) + v
                latencies.extend(local_lat)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        start.wait()
        began = time.monotonic()
        while any(t.is_alive() for t in threads):
            rss_peak = max(rss_peak, proc.memory_info().rss)
            time.sleep(0.25)
            if time.monotonic() - began > DURATION_S + 120:
                break
        elapsed = time.monotonic() - began
        for t in threads:
            t.join(5)
        rss_after = proc.memory_info().rss
        after = _server_counts(server.metrics_port)
        served = {k: after.get(k, 0) - warm.get(k, 0) for k in after}
        assert server.proc.poll() is None, server.log()
        with RetrieverClient(server.target, timeout=30) as c:  # still answers, correctly
            assert [h.passage_id for h in c.search(questions[0], top_k=3).hits] == expected[questions[0]]
    finally:
        server.close()

    total = sum(codes.values())
    p50, p99 = (np.percentile(np.asarray(latencies) * 1e3, [50, 99]) if latencies else (float("nan"),) * 2)
    mib = 2**20
    with capsys.disabled():
        print(f"\n[load] {CLIENTS} clients x {elapsed:.1f}s, queue {QUEUE_SIZE}: {total} requests, "
              f"OK {codes.get('OK', 0)}, RESOURCE_EXHAUSTED {codes.get('RESOURCE_EXHAUSTED', 0)}, "
              f"other {total - codes.get('OK', 0) - codes.get('RESOURCE_EXHAUSTED', 0)}; "
              f"OK p50 {p50:.1f} ms p99 {p99:.1f} ms; {codes.get('OK', 0) / elapsed:.1f} OK/s; server RSS "
              f"{rss_before / mib:.0f} -> {rss_after / mib:.0f} MiB (peak {rss_peak / mib:.0f})")
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes.get("OK", 0) >= CLIENTS, "the server must keep serving under overload"
    assert not mismatches, f"{len(mismatches)} OK responses with wrong hits"
    assert rss_peak - rss_before < RSS_GROWTH_LIMIT, "server memory grew with load: an unbounded buffer"
    # the server's counters saw exactly what the clients saw
    assert served.get("OK", 0) == codes.get("OK", 0)
    assert served.get("RESOURCE_EXHAUSTED", 0) == codes.get("RESOURCE_EXHAUSTED", 0)
