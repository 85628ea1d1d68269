"""Search latency and throughput: the in-process floor vs the gRPC service.

The floor is the same encoder + the same FAISS index + the same passage store called
directly, one query at a time (no gRPC, no batching). The service runs as a separate
``dprscope serve`` process and is driven by ``load_client.py``: one gRPC client in a third
process, so the load costs the shared cores little and never shares a GIL with the service
or with the floor.

The host is shared and its speed drifts by 10-20 % within minutes, so everything is
measured in ``--rounds`` interleaved rounds (floor; service at concurrency 1 with a blocking
client — how a synchronous pipeline calls — and with the asyncio client; then concurrency 8
and 32), and each ratio to the floor is the median of the per-round ratios: a slow minute
then slows both sides of a round. Both sides first run every
question once, so neither pays first-shape costs in the timed runs. The server-side columns
are medians of the stage timings every SearchResponse carries; client p50 minus server
total is what gRPC, the network stack and the client cost. "queries per forward pass" and
"encoder busy" (forward-pass seconds per second) come from the server's
``dprscope_encode_batch_*`` metrics, read at both ends of each timed window.

    python bench/search_latency.py [--passages 5000] [--requests 300] [--rounds 3]

Targets: service p50 at c=1 <= 1.15x the floor; service QPS at c=32 >= 3x the
sequential floor's QPS.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import ROOT, ensure_index, free_port, nq_questions, percentiles, print_table, start_server_process
from load_client import run_load

from dprscope.encoders.runtime import build_encoder
from dprscope.index.serving import ServingIndex
from dprscope.index.vector_index import SearchParams


class Floor:
    """The in-process baseline: encode, search and fetch one query at a time."""

    def __init__(self, index_dir: Path, k: int, backend: str, quantize: str | None) -> None:
        self.encoder = build_encoder("default", backend=backend, quantize=quantize)
        self.index = ServingIndex.open(index_dir)
        self.k = k

    def run(self, questions: list[str]) -> tuple[list[float], float]:
        samples = []
        started = time.perf_counter()
        for q in questions:
            t = time.perf_counter()
            vectors = self.encoder.encode_queries([q])
            _, rows = self.index.search(vectors, self.k, SearchParams())
            self.index.passages(rows[0])
            samples.append(time.perf_counter() - t)
        return samples, len(questions) / (time.perf_counter() - started)

    def close(self) -> None:
        self.index.close()


def _service_row(name: str, c: int, report: dict, p50_ratio: float, qps_ratio: float) -> list:
    p50, p99 = percentiles(report["latencies_s"])
    return [name, c, f"{p50:.2f}", f"{p99:.2f}", f"{report['qps']:.1f}", f"{p50_ratio:.2f}",
            f"{qps_ratio:.2f}", f"{report['total_ms']:.1f}", f"{report['queue_ms']:.1f}",
            f"{report['encode_ms']:.1f} / {report['search_ms']:.1f} / {report['fetch_ms']:.1f}",
            f"{report['client_cpu_ms_per_request']:.2f}", f"{report['mean_batch']:.1f}",
            f"{report['encoder_busy']:.2f}", report["failed"]]


def _pooled(reports: list[dict]) -> dict:
    pooled = {"latencies_s": [x for r in reports for x in r["latencies_s"]],
              "qps": statistics.mean(r["qps"] for r in reports), "failed": sum(r["failed"] for r in reports)}
    for key in ("total_ms", "queue_ms", "encode_ms", "search_ms", "fetch_ms", "client_cpu_ms_per_request",
                "mean_batch", "encoder_busy"):
        pooled[key] = statistics.median(r[key] for r in reports)
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300, help="requests per c=1 round; twice that at c=8/32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of floor and service")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index-dir", type=Path, default=ROOT / "out" / "bench-index")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="encoder runtime for both the floor and the service")
    parser.add_argument("--quantize", choices=("none", "int8", "bf16"), default="none")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server process only (repeatable), e.g. GOMP_SPINCOUNT=10000")
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)

    index_dir = ensure_index(args.index_dir, args.passages)
    questions = nq_questions(max(args.requests, 200))
    timed = questions[: args.requests]
    quantize = None if args.quantize == "none" else args.quantize
    floor = Floor(index_dir, args.k, args.backend, quantize)
    metrics_port = free_port()
    proc, port = start_server_process(index_dir, "--backend", args.backend, "--quantize", args.quantize,
                                      "--metrics-port", str(metrics_port), env_overrides=server_env)
    try:
        floor.run(questions)  # warm-up: every query shape once, on both sides
        run_load(port, 1, len(questions), args.k, len(questions), blocking=True)
        floor_samples: list[float] = []
        floor_qps: list[float] = []
        setups = {"blocking": (1, True), "asyncio": (1, False), "c8": (8, False), "c32": (32, False)}
        reports: dict[str, list[dict]] = {name: [] for name in setups}
        p50_ratios: dict[str, list[float]] = {name: [] for name in setups}
        qps_ratios: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(args.rounds):
            samples, qps = floor.run(timed)
            floor_samples += samples
            floor_qps.append(qps)
            round_f50 = percentiles(samples)[0]
            for name, (c, is_blocking) in setups.items():
                total = len(timed) if c == 1 else len(timed) * 2
                report = run_load(port, c, total, args.k, len(questions), blocking=is_blocking,
                                  metrics_port=metrics_port)
                reports[name].append(report)
                p50_ratios[name].append(percentiles(report["latencies_s"])[0] / round_f50)
                qps_ratios[name].append(report["qps"] / qps)
        f50, f99 = percentiles(floor_samples)
        fqps = statistics.mean(floor_qps)
        labels = {"blocking": "service c=1, blocking client", "asyncio": "service c=1, asyncio client",
                  "c8": "service c=8", "c32": "service c=32"}
        rows = [["in-process floor (sequential)", 1, f"{f50:.2f}", f"{f99:.2f}", f"{fqps:.1f}", "1.00", "1.00",
                 "-", "-", "-", "-", "-", "-", 0]]
        rows += [_service_row(labels[name], c, _pooled(reports[name]), statistics.median(p50_ratios[name]),
                              statistics.median(qps_ratios[name])) for name, (c, _) in setups.items()]
    finally:
        proc.terminate()
        proc.wait(30)
        floor.close()
    print(f"\nindex: {args.passages} passages (flat, all-MiniLM-L6-v2, dim 384), top_k={args.k}, "
          f"backend {args.backend} ({args.quantize}), server env {server_env or 'unchanged'}; "
          f"per-round c=1 p50 ratios: "
          f"blocking {', '.join(f'{r:.2f}' for r in p50_ratios['blocking'])}; "
          f"asyncio {', '.join(f'{r:.2f}' for r in p50_ratios['asyncio'])}; "
          f"per-round c=32 QPS ratios: {', '.join(f'{r:.2f}' for r in qps_ratios['c32'])}\n")
    print_table(["setup", "concurrency", "p50 ms", "p99 ms", "QPS", "p50 / floor p50", "QPS / floor QPS",
                 "server total ms", "server queue ms", "server encode / search / fetch ms", "client CPU ms/req",
                 "queries per forward pass", "encoder busy", "failed"], rows)


if __name__ == "__main__":
    main()
