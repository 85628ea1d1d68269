"""Benchmark: Search latency before, during and after a hot swap, with zero failed requests.

Starts a real dprscope server in-process on a small index (built from the shared
Wikipedia passages, or ``--index-dir``), runs N client threads searching continuously,
and meanwhile loads a QUERY-role DELTA checkpoint (an edited copy of the embedded model)
and flips between it and the base version. Prints p50/p99 Search latency per phase,
load and activation seconds, and failed requests.

Targets: 0 failed requests; p99 while swapping <= 2x the steady-state p99.

Usage::

    python bench/swap_under_load.py [--clients 16] [--seconds 5] [--passages 300] [--index-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from dprscope.encoders import load_bi_encoder
from dprscope.encoders.loading import default_model_dir
from dprscope.index.builder import build_index
from dprscope.server import start
from dprscope.settings import Settings
from dprscope_client import AdminClient, RetrieverClient

log = logging.getLogger("bench.swap_under_load")

SHARED_PSGS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wikipedia-passages-combined" / \
    "psgs.tsv"
EDIT_KEY = "encoder.layer.5.output.dense.weight"
TOKEN = "bench-token"
QUERIES = ["who wrote the declaration of independence", "what is the capital of australia",
           "when did the first world war start", "how many legs does a spider have", "who painted the mona lisa",
           "what is the speed of light", "where is mount everest", "who discovered penicillin",
           "what causes earthquakes", "how does photosynthesis work", "what language is spoken in brazil",
           "who composed the four seasons"]


@dataclass
class Sample:
    started: float
    seconds: float
    ok: bool


def build_small_index(out: Path, passages: int, encoder) -> Path:
    """A flat index over the first ``passages`` rows of the shared corpus."""
    corpus = out.parent / "bench-corpus.tsv"
    csv.field_size_limit(sys.maxsize)
    with SHARED_PSGS.resolve().open(newline="", encoding="utf-8") as src, corpus.open("w", newline="") as dst:
        reader, writer = csv.reader(src, delimiter="\t"), csv.writer(dst, delimiter="\t", lineterminator="\n")
        for row in itertools.islice(reader, passages + 1):
            writer.writerow(row)
    build_index(corpus, out, encoder, index_type="flat", batch_size=32)
    return out


def write_delta(root: Path) -> str:
    state = load_file(str(default_model_dir() / "model.safetensors"))
    save_file({EDIT_KEY: (state[EDIT_KEY] * 1.5).contiguous()}, str(root / "edit.safetensors"))
    return "edit.safetensors"


def client_loop(target: str, stop: threading.Event, samples: list[Sample], lock: threading.Lock, seed: int) -> None:
    with RetrieverClient(target, timeout=30) as client:
        for n in itertools.count(seed):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                client.search(QUERIES[n % len(QUERIES)], top_k=5, omit_text=True)
                ok = True
            except Exception:
                ok = False
            with lock:
                samples.append(Sample(t0, time.perf_counter() - t0, ok))


def percentiles(samples: list[Sample]) -> tuple[int, int, float, float]:
    lat = np.array([s.seconds for s in samples if s.ok]) * 1e3
    failed = sum(not s.ok for s in samples)
    if lat.size == 0:
        return len(samples), failed, float("nan"), float("nan")
    return len(samples), failed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the steady phases")
    parser.add_argument("--swap-seconds", type=float, default=5.0, help="how long to flip versions")
    parser.add_argument("--flip-every", type=float, default=0.25, help="seconds between activate/rollback")
    parser.add_argument("--passages", type=int, default=300)
    parser.add_argument("--index-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="dprscope-bench-") as tmp:
        tmp_path = Path(tmp)
        encoder = load_bi_encoder("default")
        index_dir = args.index_dir or build_small_index(tmp_path / "index", args.passages, encoder)
        root = tmp_path / "ckpt"
        root.mkdir()
        delta = write_delta(root)
        settings = Settings(index_dir=index_dir, host="127.0.0.1", port=0, analysis_port=None, metrics_port=None,
                            admin_token=TOKEN, checkpoint_root=root, drain_s=0.0, grace_s=2.0)
        handle = start(settings, encoder=encoder)
        samples: list[Sample] = []
        lock = threading.Lock()
        stop = threading.Event()
        threads = [threading.Thread(target=client_loop, args=(handle.target, stop, samples, lock, i), daemon=True)
                   for i in range(args.clients)]
        phases: dict[str, tuple[float, float]] = {}
        activations: list[float] = []
        try:
            for t in threads:
                t.start()
            time.sleep(1.0)  # let every client connect before measuring
            with AdminClient(handle.target, TOKEN) as admin:
                t = time.perf_counter()
                time.sleep(args.seconds)
                phases["before (steady)"] = (t, time.perf_counter())
                t = time.perf_counter()
                info = admin.load(delta, version="v2", kind="DELTA", role="QUERY")
                load_s = time.perf_counter() - t
                phases["during load"] = (t, time.perf_counter())
                t = time.perf_counter()
                flips = 0
                while time.perf_counter() - t < args.swap_seconds:
                    a0 = time.perf_counter()
                    if flips % 2 == 0:
                        admin.activate("v2")
                    else:
                        admin.rollback()
                    activations.append(time.perf_counter() - a0)
                    flips += 1
                    time.sleep(args.flip_every)
                phases[f"during swaps ({flips} flips)"] = (t, time.perf_counter())
                t = time.perf_counter()
                time.sleep(args.seconds)
                phases["after"] = (t, time.perf_counter())
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            handle.stop(grace=0, drain=0)

    print(f"\ndprscope swap under load: {args.clients} clients, index {index_dir.name}, "
          f"delta {info.version} (canary top-10 overlap {info.canary.mean_topk_overlap:.2f})\n")
    print(f"{'phase':<26} {'requests':>9} {'failed':>7} {'p50 ms':>9} {'p99 ms':>9}")
    print("-" * 64)
    steady_p99 = None
    swap_p99 = None
    for name, (a, b) in phases.items():
        n, failed, p50, p99 = percentiles([s for s in samples if a <= s.started < b])
        print(f"{name:<26} {n:>9} {failed:>7} {p50:>9.1f} {p99:>9.1f}")
        if name.startswith("before"):
            steady_p99 = p99
        if name.startswith("during swaps"):
            swap_p99 = p99
    total_failed = sum(not s.ok for s in samples)
    print("-" * 64)
    print(f"load + validate: {load_s:.2f}s; activation (RPC round trip) mean {np.mean(activations) * 1e3:.1f} ms, "
          f"max {np.max(activations) * 1e3:.1f} ms over {len(activations)} flips")
    ratio = (swap_p99 / steady_p99) if steady_p99 and swap_p99 else float("nan")
    print(f"failed requests: {total_failed} (target 0); p99 swaps / steady: {ratio:.2f}x (target <= 2x)")
    return 0 if total_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
