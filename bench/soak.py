"""Soak: many concurrent clients against ``dprscope serve`` for minutes, then a table.

The CI load test (tests/reliability/test_load.py) runs 12 seconds; this is the long
version an operator runs before a release or after changing limits. It builds (or
reuses) a bench index of real passages, starts the server as its own process, drives it
with CLIENTS threads for DURATION seconds with NQ questions, samples the server's RSS,
and prints: requests, OK, RESOURCE_EXHAUSTED, failures (anything else: must be 0),
wrong answers, p50/p99 of OK requests, QPS, RSS before/after/peak.

    python bench/soak.py [--clients 64] [--duration 300] [--passages 5000] [--queue-size 256]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import psutil
from _common import ROOT, ensure_index, nq_questions, percentiles, print_table, start_server_process

from dprscope_client import RetrieverClient, RetrieverError


def soak(target: str, pid: int, questions: list[str], clients: int, duration: float) -> dict[str, object]:
    with RetrieverClient(target, timeout=60) as c:
        expected = {q: [h.passage_id for h in c.search(q, top_k=5).hits] for q in questions}
    proc = psutil.Process(pid)
    rss_before = proc.memory_info().rss
    peak = rss_before
    lock = threading.Lock()
    codes: dict[str, int] = {}
    latencies: list[float] = []
    wrong = 0
    stop_at = time.monotonic() + duration

    def client(i: int) -> None:
        nonlocal wrong
        local: list[float] = []
        counts: dict[str, int] = {}
        bad = 0
        with RetrieverClient(target, timeout=60) as c:
            n = i
            while time.monotonic() < stop_at:
                q = questions[n % len(questions)]
                n += 1
                t = time.perf_counter()
                try:
                    hits = [h.passage_id for h in c.search(q, top_k=5).hits]
                    local.append(time.perf_counter() - t)
                    code = "OK"
                    bad += hits != expected[q]
                except RetrieverError as exc:
                    code = exc.code.name
                    time.sleep(0.02)
                counts[code] = counts.get(code, 0) + 1
        with lock:
            latencies.extend(local)
            wrong += bad
            for k, v in counts.items():
                codes[k] = codes.get(k, 0) + v

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.5)
    elapsed = time.monotonic() - began
    total = sum(codes.values())
    ok = codes.get("OK", 0)
    shed = codes.get("RESOURCE_EXHAUSTED", 0)
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    return {"clients": clients, "seconds": elapsed, "requests": total, "ok": ok, "resource_exhausted": shed,
            "failures": total - ok - shed, "wrong": wrong, "p50_ms": p50, "p99_ms": p99, "qps": ok / elapsed,
            "rss_before_mib": rss_before / 2**20, "rss_after_mib": proc.memory_info().rss / 2**20,
            "rss_peak_mib": peak / 2**20, "codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds")
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--queue-size", type=int, default=256)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--index", type=Path, default=None, help="serve this index instead of the bench one")
    args = parser.parse_args()

    index_dir = args.index or ensure_index(ROOT / "out" / f"bench-index-{args.passages}", args.passages)
    proc, port = start_server_process(index_dir, "--queue-size", str(args.queue_size))
    try:
        row = soak(f"127.0.0.1:{port}", proc.pid, nq_questions(args.questions), args.clients, args.duration)
    finally:
        proc.terminate()
        exit_code = proc.wait(120)
    print(f"\nsoak: {args.clients} clients, {row['seconds']:.0f}s, queue {args.queue_size}, index {index_dir}; "
          f"server exited {exit_code} after SIGTERM; status codes {row['codes']}")
    print_table(["requests", "OK", "RESOURCE_EXHAUSTED", "failures", "wrong", "p50 ms", "p99 ms", "QPS",
                 "RSS before MiB", "RSS after MiB", "RSS peak MiB"],
                [[row["requests"], row["ok"], row["resource_exhausted"], row["failures"], row["wrong"],
                  row["p50_ms"], row["p99_ms"], row["qps"], row["rss_before_mib"], row["rss_after_mib"],
                  row["rss_peak_mib"]]])


if __name__ == "__main__":
    main()
