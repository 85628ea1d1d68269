"""The benchmark tools themselves, on tiny inputs: a broken load generator or index-scale run
would otherwise only show up when someone re-measures the README tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_data import shared_data_dir

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def load_client():
    sys.path.insert(0, str(BENCH))
    try:
        import load_client

        yield load_client
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize(("concurrency", "blocking"), [(1, True), (1, False), (4, False)])
def test_load_client_reports_latencies_and_server_stages(server, load_client, concurrency, blocking):
    shared_data_dir()
    report = load_client.run_load(server.port, concurrency, 12, k=5, questions=8, blocking=blocking)
    assert report["failed"] == 0 and len(report["latencies_s"]) == 12
    assert all(0 < s < 60 for s in report["latencies_s"]) and report["qps"] > 0
    assert report["encode_ms"] > 0 and report["total_ms"] >= report["encode_ms"]
    assert report["client_cpu_ms_per_request"] > 0
    assert "mean_batch" not in report  # no metrics port given


@pytest.mark.parametrize(("concurrency", "blocking"), [(1, True), (4, False)])
def test_load_client_reads_the_servers_encoder_figures_for_the_timed_window(server, load_client, concurrency,
                                                                            blocking):
    """The slot warm-up's one-query batches stay outside the window the figures cover."""
    shared_data_dir()
    report = load_client.run_load(server.port, concurrency, 16, k=5, questions=8, blocking=blocking,
                                  metrics_port=server.metrics_port)
    assert report["failed"] == 0
    if concurrency == 1:
        assert report["mean_batch"] == 1.0
    else:
        assert 1.0 <= report["mean_batch"] <= concurrency
    assert 0 < report["encoder_busy"] <= 1.05  # one encoder thread: at most its own wall time


def test_load_client_refuses_blocking_above_concurrency_one(load_client):
    with pytest.raises(ValueError, match="concurrency 1"):
        load_client.run_load(1, 4, 10, blocking=True)


@pytest.mark.slow
def test_index_scale_runs_end_to_end_on_a_small_set(tmp_path):
    """Encodes a few real passages, replicates them, and checks every printed setting's recall."""
    shared_data_dir()
    out = subprocess.run(
        [sys.executable, str(BENCH / "index_scale.py"), "--n", "20000", "--base", "300", "--queries", "40",
         "--only", "ivfpq", "--pq-m", "48", "--nprobe", "8", "--k-factor", "16", "--repeats", "3",
         "--threads", "1"],
        capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ivfpq")]
    assert len(rows) == 2, out.stdout
    recalls = {r.split("|")[1].strip(): float(r.split("|")[3]) for r in rows}
    assert recalls["ivfpq+ref"] >= recalls["ivfpq"] and recalls["ivfpq+ref"] >= 0.8, recalls


def test_packed_forward_bench_times_every_case_and_checks_agreement():
    """One round, two calls per path: every case gets a row, and the agreement row is tiny."""
    shared_data_dir()
    out = subprocess.run([sys.executable, str(BENCH / "packed_forward.py"), "--rounds", "1", "--repeats", "2"],
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| case")}
    for case in ("queries, batch 1", "queries, batch 8", "queries, batch 32", "passages, batch 32"):
        library_ms, packed_ms = float(rows[case][0]), float(rows[case][1])
        assert library_ms > 0 and packed_ms > 0, rows[case]
    assert float(rows["max abs difference of the vectors, packed vs library (32 queries)"][0]) <= 1e-5


def test_flat_search_bench_times_every_setting_for_every_cell():
    """One small round: a row per (size, batch) with a time for each threshold and their ratios."""
    out = subprocess.run([sys.executable, str(BENCH / "flat_search.py"), "--sizes", "300", "--batches", "1", "4",
                          "--rounds", "1", "--repeats", "2"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| 300")]
    assert [int(r[1]) for r in rows] == [1, 4], out.stdout
    for row in rows:
        times = [float(c) for c in row[2:5]]
        assert all(t > 0 for t in times), row
        assert all(c.strip().endswith("x") for c in row[5:]), row
