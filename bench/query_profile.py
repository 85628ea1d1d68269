"""Where a Search's milliseconds go: tokenise, encode, search, store lookup, protobuf, gRPC.

In-process stages are timed one by one on the same query stream (median per stage). The
gRPC column is a real ``Search`` against ``dprscope serve`` in its own process, driven by
``load_client.py`` from a third one (a blocking client at concurrency 1, the asyncio one at
``--clients``), minus the in-process work. Both sides first run every question once.
Backends: torch and ONNX fp32/int8.

    python bench/query_profile.py [--passages 5000] [--requests 200] [--clients 8]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, ensure_index, nq_questions, print_table, start_server_process
from load_client import run_load

from dprscope.compute_thread import run_in_fresh_thread
from dprscope.encoders import load_bi_encoder
from dprscope.encoders.onnx_backend import OnnxTextEncoder
from dprscope.encoders.runtime import apply_backend
from dprscope.index.serving import ServingIndex
from dprscope.v1 import retrieval_pb2


def _median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def stage_profile(bi, index: ServingIndex, questions: list[str], k: int) -> dict[str, float]:
    enc = bi.query
    t_tok, t_enc, t_search, t_store, t_pb = [], [], [], [], []
    for q in questions:
        t = time.perf_counter()
        feats = enc.tokenize_numpy([q]) if isinstance(enc, OnnxTextEncoder) else enc.tokenize([q])
        t_tok.append(time.perf_counter() - t)
        t = time.perf_counter()
        vec = enc.encode([q], batch_size=1)
        t_enc.append(time.perf_counter() - t - t_tok[-1])  # encode() tokenises again: subtract it
        t = time.perf_counter()
        scores, rows = index.vectors.search(vec, k)
        t_search.append(time.perf_counter() - t)
        t = time.perf_counter()
        recs = index.store.get_rows([int(r) for r in rows[0] if r >= 0])
        t_store.append(time.perf_counter() - t)
        t = time.perf_counter()
        resp = retrieval_pb2.SearchResponse(hits=[
            retrieval_pb2.Hit(passage_id=r.passage_id, title=r.title, text=r.text, score=float(s), rank=i + 1)
            for i, (r, s) in enumerate(zip(recs, scores[0], strict=False))])
        resp.SerializeToString()
        t_pb.append(time.perf_counter() - t)
        del feats
    return {"tokenise": _median_ms(t_tok), "encode": _median_ms(t_enc), "search": _median_ms(t_search),
            "store lookup": _median_ms(t_store), "protobuf": _median_ms(t_pb)}


def warm_and_profile(bi, index: ServingIndex, questions: list[str]) -> dict[str, float]:
    bi.encode_queries(questions, batch_size=1)  # every query shape once, as the server's warm-up below
    return stage_profile(bi, index, questions, 10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--passages", type=int, default=2000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    index_dir = ensure_index(ROOT / "out" / f"query-profile-index-{args.passages}", args.passages)
    questions = nq_questions(args.requests)
    base = load_bi_encoder("default")
    table = []
    for name in args.backends:
        backend, quant = ("onnx", "int8") if name == "onnx-int8" else (name, None)
        bi = run_in_fresh_thread(partial(apply_backend, base, backend=backend, quantize=quant,
                                         cache_dir=ROOT / "out" / "onnx-cache"))  # export runs torch
        index = ServingIndex.open(index_dir)
        try:
            # On a thread that then exits: a torch OpenMP pool left on this (main) thread would
            # slow the server's encoder thread below and be billed to "gRPC" (dprscope.compute_thread).
            stages = run_in_fresh_thread(partial(warm_and_profile, bi, index, questions))
        finally:
            index.close()
        proc, port = start_server_process(index_dir, "--backend", backend, "--quantize", quant or "none",
                                          "--onnx-cache-dir", str(ROOT / "out" / "onnx-cache"))
        try:
            run_load(port, 1, len(questions), 10, len(questions), blocking=True)  # warm-up
            c1 = _median_ms(run_load(port, 1, len(questions), 10, len(questions), blocking=True)["latencies_s"])
            loaded = _median_ms(run_load(port, args.clients, 2 * len(questions), 10, len(questions))["latencies_s"])
        finally:
            proc.terminate()
            proc.wait(30)
        inproc = sum(stages.values())
        table.append([name, *(f"{v:.2f}" for v in stages.values()), f"{max(c1 - inproc, 0):.2f}", f"{c1:.2f}",
                      f"{loaded:.2f}"])
    print(f"# {len(questions)} NQ questions, index of {args.passages} real passages (flat), top-10, medians in ms")
    print_table(["backend", "tokenise", "encode", "search", "store lookup", "protobuf", "gRPC+batcher (c=1)",
                 "Search p50 c=1", f"Search p50 c={args.clients}"], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
