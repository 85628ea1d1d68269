"""Benchmark: knowledge-neuron attribution, batched steps vs a per-step reference loop.

Prints seconds per example for all layers of the embedded model at m steps (default 20)
with dprscope's implementation (interpolation steps batched into one forward/backward
per chunk) against a reference loop in the style of the knowledge-neurons library with
no step batching: per layer, one forward and one backward per step. The target is a
ratio >= 3x. Both compute the same attributions; the script checks that they agree.

``--search-p99`` runs the second half of issue 4's benchmark instead: Search p99 on a
served index while attribution jobs run on the sidecar vs idle (target <= 1.5x), in
``bench_search_p99_under_attribution``. The server runs with its default
``--analysis-yield`` (analysis niced, pausing between chunks while Search is busy);
``--no-analysis-yield`` measures without it, ``--compare`` runs both back to back.

Usage::

    python bench/attribution.py --examples 5 --steps 20 [--side query|passage] [--sublayer intermediate]
    python bench/attribution.py --search-p99 [--passages 2000 --requests 200 --steps 20]
    python bench/attribution.py --search-p99 --compare     # --no-analysis-yield, then the default
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from dprscope.analysis import attribute
from dprscope.analysis.attribution import ffn_module, make_objective
from dprscope.analysis.data import Context, load_dpr_records
from dprscope.encoders import load_bi_encoder
from dprscope.encoders.bi_encoder import BiEncoder

log = logging.getLogger("bench.attribution")

SHARED_NQ = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dpr-original-samples" / \
    "nq-dev-10.dpr.jsonl"
FALLBACK = [
    ("who got the first nobel prize in physics",
     Context("The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Conrad Röntgen.", "Nobel Prize")),
    ("what is the capital of france", Context("Paris is the capital and most populous city of France.", "Paris")),
]


def load_examples(n: int) -> list[tuple[str, list[Context]]]:
    """(query, [positive, hard negative]) from the shared NQ dev sample, or a built-in fallback."""
    if SHARED_NQ.resolve().is_file():
        records = load_dpr_records(SHARED_NQ.resolve(), max_records=n)
        examples = [(r.question, [r.positive_ctxs[0], r.hard_negative_ctxs[0]]) for r in records]
    else:
        examples = [(q, [p, FALLBACK[(i + 1) % len(FALLBACK)][1]]) for i, (q, p) in enumerate(FALLBACK)]
    return [examples[i % len(examples)] for i in range(n)]


def reference_loop(bi: BiEncoder, query: str, passages: list[Context], *, side: str, target: str,
                   sublayer: str, n_steps: int) -> dict[int, np.ndarray]:
    """Knowledge-neurons-style reference: per layer, one forward/backward per Riemann step."""
    encoder = bi.query if side == "query" else bi.context
    with torch.no_grad():
        if side == "query":
            feats = encoder.tokenize([query])
            fixed = bi.context.forward_features(bi.context.tokenize([p.text for p in passages],
                                                                    [p.title for p in passages]))
        else:
            feats = encoder.tokenize([passages[0].text], [passages[0].title])
            fixed = torch.cat([bi.query.forward_features(bi.query.tokenize([query])),
                               bi.context.forward_features(bi.context.tokenize(
                                   [p.text for p in passages[1:]], [p.title for p in passages[1:]]))])
    objective = make_objective(target, side, fixed)
    out: dict[int, np.ndarray] = {}
    for layer in range(encoder.num_layers):
        module = ffn_module(encoder, layer, sublayer)
        seen: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(lambda _m, _i, o, seen=seen: seen.setdefault("w", o.detach()))
        try:
            with torch.no_grad():
                encoder.forward_features(feats)
        finally:
            handle.remove()
        w = seen["w"]
        grads = torch.zeros_like(w)
        for k in range(1, n_steps + 1):
            x = ((k / n_steps) * w).requires_grad_(True)
            handle = module.register_forward_hook(lambda _m, _i, _o, x=x: x)
            try:
                with torch.enable_grad():
                    p = objective(encoder.forward_features(feats))
                    (g,) = torch.autograd.grad(p.sum(), x)
            finally:
                handle.remove()
            grads += g
        out[layer] = (w * grads / n_steps)[0].sum(0).double().numpy()
    return out


def bench_search_p99_under_attribution(passages: int = 2000, requests: int = 200, steps: int = 20,
                                       index_dir: Path | None = None, analysis_yield: bool = True
                                       ) -> dict[str, float]:
    """Search p99 latency while an attribution job runs vs idle (target <= 1.5x).

    A real ``dprscope serve`` subprocess (Retriever + Analysis sidecar) over a flat index
    of ``passages`` real passages; one client sends ``requests`` sequential Searches idle,
    then again while a long all-layer attribution (both sublayers, ``steps`` steps, run
    back to back) streams on the sidecar. Returns and prints p50/p99 and their ratios.
    ``analysis_yield`` is the server's ``--analysis-yield`` flag.
    """
    import sys
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import ROOT, ensure_index, free_port, nq_questions, percentiles, print_table, start_server_process

    from dprscope_client import AnalysisClient, RetrieverClient

    index_dir = ensure_index(index_dir or ROOT / "out" / "bench-index-attribution", passages)
    questions = nq_questions(requests)
    examples = load_examples(4)
    analysis_port = free_port()
    proc, port = start_server_process(index_dir, "--analysis-port", str(analysis_port),
                                      "--analysis-yield" if analysis_yield else "--no-analysis-yield")

    def searches(client: RetrieverClient) -> list[float]:
        samples = []
        for q in questions:
            t = time.perf_counter()
            client.search(q, top_k=10)
            samples.append(time.perf_counter() - t)
        return samples

    stop = threading.Event()
    jobs = 0

    def attribution_loop() -> None:
        nonlocal jobs
        with AnalysisClient(f"127.0.0.1:{analysis_port}") as analysis:
            while not stop.is_set():
                query, ctxs = examples[jobs % len(examples)]
                analysis.attribute(query, [(c.title, c.text) for c in ctxs], sublayer="both", steps=steps)
                jobs += 1

    try:
        with RetrieverClient(f"127.0.0.1:{port}", timeout=30) as client:
            searches(client)  # warm-up
            idle = searches(client)
            worker = threading.Thread(target=attribution_loop, daemon=True)
            worker.start()
            time.sleep(1.0)  # let the first job get going
            busy = searches(client)
            stop.set()
            worker.join(300)
    finally:
        proc.terminate()
        proc.wait(30)
    import json

    served = json.loads((index_dir / "manifest.json").read_text()).get("passages", passages)
    i50, i99 = percentiles(idle)
    b50, b99 = percentiles(busy)
    print(f"\nSearch under attribution ({'--analysis-yield' if analysis_yield else '--no-analysis-yield'}): "
          f"{served} passages (flat), {requests} sequential searches each, attribution all layers x both "
          f"sublayers, m={steps}, {jobs} jobs finished during the busy phase")
    print_table(["phase", "p50 ms", "p99 ms"], [["idle", f"{i50:.2f}", f"{i99:.2f}"],
                                               ["attribution running", f"{b50:.2f}", f"{b99:.2f}"],
                                               ["ratio", f"{b50 / i50:.2f}x", f"{b99 / i99:.2f}x (target <= 1.5x)"]])
    return {"idle_p50_ms": i50, "idle_p99_ms": i99, "busy_p50_ms": b50, "busy_p99_ms": b99,
            "p50_ratio": b50 / i50, "p99_ratio": b99 / i99, "jobs": float(jobs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5, help="examples to time (default 5)")
    parser.add_argument("--steps", type=int, default=20, help="Riemann steps m (default 20)")
    parser.add_argument("--side", choices=("query", "passage"), default="query")
    parser.add_argument("--target", choices=("score", "positive_prob"), default="score")
    parser.add_argument("--sublayer", choices=("intermediate", "output"), default="intermediate")
    parser.add_argument("--model", default="default", help="model spec (default: the embedded MiniLM)")
    parser.add_argument("--search-p99", action="store_true",
                        help="instead: Search p99 while an attribution runs vs idle, on a served index")
    parser.add_argument("--passages", type=int, default=2000, help="index size for --search-p99")
    parser.add_argument("--requests", type=int, default=200, help="searches per phase for --search-p99")
    parser.add_argument("--analysis-yield", action=argparse.BooleanOptionalAction, default=True,
                        help="the server's --analysis-yield for --search-p99 (default on)")
    parser.add_argument("--compare", action="store_true",
                        help="with --search-p99: run --no-analysis-yield, then --analysis-yield")
    args = parser.parse_args(argv)
    if args.search_p99:
        for flag in ((False, True) if args.compare else (args.analysis_yield,)):
            bench_search_p99_under_attribution(args.passages, args.requests, args.steps, analysis_yield=flag)
        return 0

    bi = load_bi_encoder(args.model)
    examples = load_examples(args.examples)
    layers = bi.query.num_layers
    # Warm up both paths once so one-time allocations do not count.
    q0, p0 = examples[0]
    attribute(bi, q0, p0, side=args.side, target=args.target, sublayer=args.sublayer, n_steps=2)
    reference_loop(bi, q0, p0, side=args.side, target=args.target, sublayer=args.sublayer, n_steps=2)

    batched_s, reference_s, worst = 0.0, 0.0, 0.0
    for query, passages in examples:
        t = time.perf_counter()
        ours = attribute(bi, query, passages, side=args.side, target=args.target, sublayer=args.sublayer,
                         n_steps=args.steps, return_scores=True)
        batched_s += time.perf_counter() - t
        t = time.perf_counter()
        ref = reference_loop(bi, query, passages, side=args.side, target=args.target, sublayer=args.sublayer,
                             n_steps=args.steps)
        reference_s += time.perf_counter() - t
        for entry in ours.layers:
            assert entry.scores is not None
            scale = max(1e-12, float(np.abs(ref[entry.layer]).max()))
            worst = max(worst, float(np.abs(entry.scores - ref[entry.layer]).max()) / scale)

    n = len(examples)
    rows = [
        ("dprscope (steps batched)", batched_s / n),
        ("reference (1 fwd/bwd per step)", reference_s / n),
    ]
    print(f"model={bi.query.name} layers={layers} sublayer={args.sublayer} side={args.side} "
          f"target={args.target} m={args.steps} examples={n} torch_threads={torch.get_num_threads()}")
    print(f"{'implementation':<34}{'s/example':>12}")
    for name, sec in rows:
        print(f"{name:<34}{sec:>12.3f}")
    print(f"{'speed-up':<34}{reference_s / batched_s:>11.2f}x   (target >= 3x)")
    print(f"max relative difference of attributions: {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
