"""The padding-free forward vs the library forward, on the embedded model, in one process.

Same encoder object, same inputs, the two paths timed alternately (``packed_forward_enabled``)
in ``--rounds`` interleaved rounds, so host drift hits both; each speed-up is the median of
the per-round ratios. Torch runs on one long-lived compute thread, as the micro-batcher runs
it in ``dprscope serve``. Rows: real NQ questions at the batch sizes the micro-batcher forms
(1, 8, 32), and real Wikipedia passages at the build's batch size (32, length-sorted as
``encode`` sorts them).

    python bench/packed_forward.py [--rounds 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from _common import nq_questions, print_table
from index_scale import real_passage_rows

from dprscope.encoders import load_bi_encoder

AGREEMENT_ROW = "max abs difference of the vectors, packed vs library (32 queries)"


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e3


def run(rounds: int, repeats: int) -> list[list[object]]:
    bi = load_bi_encoder("default")
    encoder = bi.query
    questions = nq_questions(400)
    passages = real_passage_rows(256)
    rng = random.Random(0)
    cases: dict[str, Callable[[], object]] = {}
    for size in (1, 8, 32):
        batches = itertools.cycle([rng.sample(questions, size) for _ in range(repeats + 1)])
        cases[f"queries, batch {size}"] = (
            lambda b=batches, n=size: bi.encode_queries(next(b), batch_size=n))
    rows = rng.sample(passages, 32)
    cases["passages, batch 32"] = lambda: bi.encode_passages([r[2] for r in rows], [r[1] for r in rows],
                                                             batch_size=32)
    times: dict[str, dict[bool, list[float]]] = {name: {True: [], False: []} for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            order = [True, False] if rng.random() < 0.5 else [False, True]
            measured = {}
            for packed in order:
                encoder.packed_forward_enabled = packed
                measured[packed] = _median_ms(fn, repeats)
                times[name][packed].append(measured[packed])
            ratios[name].append(measured[False] / measured[True])
    encoder.packed_forward_enabled = True
    agreement = float(np.abs(_encode_queries_with(bi, questions[:32], packed=True)
                             - _encode_queries_with(bi, questions[:32], packed=False)).max())
    table = [[name, f"{statistics.median(times[name][False]):.2f}", f"{statistics.median(times[name][True]):.2f}",
              f"{statistics.median(ratios[name]):.2f}", ", ".join(f"{r:.2f}" for r in ratios[name])]
             for name in cases]
    table.append([AGREEMENT_ROW, f"{agreement:.1e}", "", "", ""])
    return table


def _encode_queries_with(bi, texts: list[str], packed: bool) -> np.ndarray:
    bi.query.packed_forward_enabled = packed
    try:
        return bi.encode_queries(texts, batch_size=len(texts))
    finally:
        bi.query.packed_forward_enabled = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per path per case per round")
    args = parser.parse_args()
    result: dict[str, list[list[object]]] = {}
    worker = threading.Thread(target=lambda: result.setdefault("rows", run(args.rounds, args.repeats)),
                              name="bench-compute")
    worker.start()
    worker.join()
    print(f"\nall-MiniLM-L6-v2, torch fp32, {args.rounds} interleaved rounds x {args.repeats} calls per path\n")
    print_table(["case", "library forward ms", "packed forward ms", "speed-up (median of rounds)", "per round"],
                result["rows"])


if __name__ == "__main__":
    main()
