"""Search latency and throughput: the in-process floor vs the gRPC service.

The floor is the same encoder + the same FAISS index + the same passage store called
directly, one query at a time (no gRPC, no batching). The service runs as a separate
``dprscope serve`` process and is driven at concurrency 1, 8 and 32 by ``load_client.py``:
one asyncio gRPC client in a third process, so the load costs the shared cores little and
never shares a GIL with the service or with the floor. Concurrency 1 is measured twice: with
a blocking client (how a synchronous pipeline calls) and with the asyncio one. The server-side
columns are medians of the stage timings every SearchResponse carries; client p50 minus server
total is what gRPC, the network stack and the client cost.

    python bench/search_latency.py [--passages 5000] [--requests 300]

Targets: service p50 at c=1 <= 1.15x the floor; service QPS at c=32 >= 3x the
sequential floor's QPS.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import ROOT, ensure_index, nq_questions, percentiles, print_table, start_server_process
from load_client import run_load

from dprscope.encoders.runtime import build_encoder
from dprscope.index.serving import ServingIndex
from dprscope.index.vector_index import SearchParams


def floor(index_dir: Path, questions: list[str], k: int, backend: str, quantize: str | None
          ) -> tuple[list[float], float]:
    encoder = build_encoder("default", backend=backend, quantize=quantize)
    index = ServingIndex.open(index_dir)
    for q in questions:  # warm-up: every query shape once, as the service gets below
        encoder.encode_queries([q])
    samples = []
    started = time.perf_counter()
    for q in questions:
        t = time.perf_counter()
        vectors = encoder.encode_queries([q])
        _, rows = index.search(vectors, k, SearchParams())
        index.passages(rows[0])
        samples.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    index.close()
    return samples, len(questions) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index-dir", type=Path, default=ROOT / "out" / "bench-index")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="encoder runtime for both the floor and the service")
    parser.add_argument("--quantize", choices=("none", "int8", "bf16"), default="none")
    args = parser.parse_args()

    index_dir = ensure_index(args.index_dir, args.passages)
    questions = nq_questions(max(args.requests, 200))
    quantize = None if args.quantize == "none" else args.quantize
    floor_samples, floor_qps = floor(index_dir, questions[: args.requests], args.k, args.backend, quantize)
    f50, f99 = percentiles(floor_samples)
    rows = [["in-process floor (sequential)", 1, f"{f50:.2f}", f"{f99:.2f}", f"{floor_qps:.1f}", "1.00", "1.00",
             "-", "-", "-", "-", 0]]
    proc, port = start_server_process(index_dir, "--backend", args.backend, "--quantize", args.quantize)
    try:
        run_load(port, 1, len(questions), args.k, len(questions), blocking=True)  # warm-up, as the floor's
        runs = [("service c=1, blocking client", 1, True), ("service c=1, asyncio client", 1, False),
                ("service c=8", 8, False), ("service c=32", 32, False)]
        for name, c, blocking in runs:
            report = run_load(port, c, args.requests if c == 1 else args.requests * 2, args.k, len(questions),
                              blocking=blocking)
            p50, p99 = percentiles(report["latencies_s"])
            rows.append([name, c, f"{p50:.2f}", f"{p99:.2f}", f"{report['qps']:.1f}", f"{p50 / f50:.2f}",
                         f"{report['qps'] / floor_qps:.2f}", f"{report['total_ms']:.1f}", f"{report['queue_ms']:.1f}",
                         f"{report['encode_ms']:.1f} / {report['search_ms']:.1f} / {report['fetch_ms']:.1f}",
                         f"{report['client_cpu_ms_per_request']:.2f}", report["failed"]])
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\nindex: {args.passages} passages (flat, all-MiniLM-L6-v2, dim 384), top_k={args.k}, "
          f"backend {args.backend} ({args.quantize})\n")
    print_table(["setup", "concurrency", "p50 ms", "p99 ms", "QPS", "p50 / floor p50", "QPS / floor QPS",
                 "server total ms", "server queue ms", "server encode / search / fetch ms", "client CPU ms/req",
                  "failed"], rows)


if __name__ == "__main__":
    main()
