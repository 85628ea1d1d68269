"""Exhaustive (flat) search: dprscope's scan/BLAS choice against the settings it replaces.

FAISS answers a flat search either by scanning the rows with SIMD, one query at a time, or by
BLAS matrix blocks; ``distance_compute_blas_threshold`` picks. This times, in one process and
interleaved rounds, a ``VectorIndex`` flat search (the service's own path and its thread
choice) with the threshold dprscope sets, the one it set before (20, which faiss >= 1.14 reads
as 20 *elements*, so every search took BLAS) and the library default (128000 elements, so
batches never did). Random unit vectors: an exhaustive scan costs the same for any data.

    python bench/flat_search.py [--sizes 5000 50000] [--dim 384] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from index_scale import latency

from dprscope.index.vector_index import VectorIndex, blas_threshold

LIBRARY_DEFAULT = int(faiss.cvar.distance_compute_blas_threshold)
PREVIOUS_SETTING = 20


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _Pinned(VectorIndex):
    """A VectorIndex whose searches use a fixed threshold instead of dprscope's."""

    def __init__(self, index: faiss.Index, threshold: int) -> None:
        super().__init__(index, "flat", {})
        self._blas_threshold = threshold


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=0, help="searches per cell and round (0: by size)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    queries = _unit(rng, 256, args.dim)
    rows = []
    for size in args.sizes:
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(_unit(rng, size, args.dim))
        setups = {"dprscope": VectorIndex(flat, "flat", {}), "previous (20)": _Pinned(flat, PREVIOUS_SETTING),
                  f"library default ({LIBRARY_DEFAULT})": _Pinned(flat, LIBRARY_DEFAULT)}
        repeats = args.repeats or max(3, min(60, 600_000 // size))
        for nq in args.batches:
            samples: dict[str, list[float]] = {name: [] for name in setups}
            for r in range(args.rounds):
                order = list(setups) if r % 2 == 0 else list(reversed(setups))
                for name in order:
                    samples[name].append(latency(setups[name], queries, 10, nq, repeats) * 1e3)
            ms = {name: statistics.median(v) for name, v in samples.items()}
            ours = ms["dprscope"]
            rows.append([size, nq, *(f"{v:.2f}" for v in ms.values()),
                         *(f"{v / ours:.2f}x" for name, v in ms.items() if name != "dprscope")])
    names = list(setups)
    print(f"\nflat IP search, dim {args.dim}, top-10, faiss {faiss.__version__}, dprscope threshold "
          f"{blas_threshold(args.dim)} (BLAS from 3 queries); median of {args.rounds} interleaved rounds\n")
    print_table(["passages", "queries", *(f"{n} ms" for n in names), *(f"{n} / dprscope" for n in names[1:])],
                rows)


if __name__ == "__main__":
    main()
