"""A closed-loop gRPC load generator that runs in its own process.

``search_latency.py`` and friends measure the *service*, so the load must cost the server's
cores as little as possible and must not share a GIL with the code that times it. One
asyncio event loop with ``concurrency`` in-flight ``Search`` calls (``grpc.aio``) is far
lighter than as many client threads, and a subprocess keeps its CPU out of the measuring
process. It prints one JSON object: client-side latencies, QPS, failures, the CPU seconds
the generator itself used, and medians of the server-reported stage timings.

    python bench/load_client.py --port 50051 --concurrency 32 --requests 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("queue_ms", "encode_ms", "search_ms", "fetch_ms", "total_ms")
ENCODER_SERIES = ("dprscope_encode_batch_seconds_sum", "dprscope_encode_batch_size_count",
                  "dprscope_encode_batch_size_sum")


def _encoder_counters(metrics_url: str | None) -> dict[str, float] | None:
    """The server's per-batch encoder counters, read from its /metrics (None: not asked for)."""
    if metrics_url is None:
        return None
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    body = urlopen(metrics_url, timeout=10).read().decode()
    values = {sample.name: sample.value for family in text_string_to_metric_families(body)
              for sample in family.samples if sample.name in ENCODER_SERIES}
    return {name: values.get(name, 0.0) for name in ENCODER_SERIES}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Recorder:
    """Latencies, server stage timings and failures of the timed requests, and the report."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.stages: dict[str, list[float]] = {s: [] for s in STAGES}
        self.failures = 0
        self._cpu0 = self._wall0 = 0.0
        self._metrics_url: str | None = None
        self._counters0: dict[str, float] | None = None

    def start(self, metrics_url: str | None = None) -> None:
        """Begin the timed window; with ``metrics_url``, the server's encoder counters are read at
        both ends of it, so the slot warm-up's one-query batches stay out of the batch figures."""
        self._metrics_url = metrics_url
        self._counters0 = _encoder_counters(metrics_url)
        self._cpu0, self._wall0 = _cpu_s(), time.perf_counter()

    def record(self, started: float, result) -> None:
        self.latencies.append(time.perf_counter() - started)
        for s in STAGES:
            self.stages[s].append(getattr(result, s))

    def report(self) -> dict:
        wall, cpu = time.perf_counter() - self._wall0, _cpu_s() - self._cpu0
        out = {"latencies_s": self.latencies, "qps": len(self.latencies) / wall, "failed": self.failures,
               "client_cpu_ms_per_request": cpu / max(len(self.latencies), 1) * 1e3,
               **{s: statistics.median(v) for s, v in self.stages.items() if v}}
        end = _encoder_counters(self._metrics_url)
        if end is not None and self._counters0 is not None:
            delta = {name: end[name] - self._counters0[name] for name in ENCODER_SERIES}
            batches = max(delta["dprscope_encode_batch_size_count"], 1.0)
            out["mean_batch"] = delta["dprscope_encode_batch_size_sum"] / batches
            out["encoder_busy"] = delta["dprscope_encode_batch_seconds_sum"] / wall
        return out


async def _drive(target: str, questions: list[str], k: int, concurrency: int, total: int,
                 metrics_url: str | None = None) -> dict:
    from dprscope_client import AsyncRetrieverClient

    rec = _Recorder()
    async with AsyncRetrieverClient(target, timeout=120) as client:
        for q in questions[:concurrency]:  # connect and warm every in-flight slot once
            await client.search(q, top_k=k)
        pending = iter(range(total))

        async def worker() -> None:
            for i in pending:
                started = time.perf_counter()
                try:
                    rec.record(started, await client.search(questions[i % len(questions)], top_k=k))
                except Exception:
                    rec.failures += 1

        rec.start(metrics_url)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return rec.report()


def _drive_blocking(target: str, questions: list[str], k: int, total: int, metrics_url: str | None = None) -> dict:
    """Concurrency 1 the way a synchronous RAG pipeline calls: a blocking stub, no event loop.

    An asyncio client adds an event-loop turn and a future per call (~0.3 ms of client CPU
    here) that a one-at-a-time caller does not need.
    """
    from dprscope_client import RetrieverClient

    rec = _Recorder()
    with RetrieverClient(target, timeout=120) as client:
        client.search(questions[0], top_k=k)
        rec.start(metrics_url)
        for i in range(total):
            started = time.perf_counter()
            try:
                rec.record(started, client.search(questions[i % len(questions)], top_k=k))
            except Exception:
                rec.failures += 1
        return rec.report()


def run_load(port: int, concurrency: int, total: int, k: int = 10, questions: int = 200,
             blocking: bool = False, metrics_port: int | None = None) -> dict:
    """Run the generator in a fresh process against 127.0.0.1:``port``; returns its report.

    ``blocking`` (concurrency 1 only): a synchronous client instead of the asyncio one.
    ``metrics_port``: the server's metrics port; the report then adds ``mean_batch`` (queries per
    forward pass) and ``encoder_busy`` (forward-pass seconds per second of the timed window).
    """
    if blocking and concurrency != 1:
        raise ValueError("a blocking client drives concurrency 1 only")
    out = subprocess.run(
        [sys.executable, __file__, "--port", str(port), "--concurrency", str(concurrency), "--requests", str(total),
         "--k", str(k), "--questions", str(questions), *(["--blocking"] if blocking else []),
         *(["--metrics-port", str(metrics_port)] if metrics_port else [])],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--blocking", action="store_true", help="concurrency 1 with a synchronous client")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="the server's metrics port: report mean batch size and encoder busy fraction")
    args = parser.parse_args()
    from _common import nq_questions

    target, questions = f"127.0.0.1:{args.port}", nq_questions(args.questions)
    metrics_url = f"http://127.0.0.1:{args.metrics_port}/metrics" if args.metrics_port else None
    if args.blocking:
        if args.concurrency != 1:
            parser.error("--blocking drives concurrency 1 only")
        report = _drive_blocking(target, questions, args.k, args.requests, metrics_url)
    else:
        report = asyncio.run(_drive(target, questions, args.k, args.concurrency, args.requests, metrics_url))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
