"""Index choices at scale: flat vs HNSW vs IVF-PQ over N vectors of real-like structure.

The vectors are real: a few thousand Wikipedia passages from the shared ``psgs.tsv``
encoded once with the embedded model (ONNX Runtime fp32, cosine 0.99999 to torch) and
cached under ``out/``. They are then replicated to N with Gaussian noise and re-normalised,
so the set keeps the real topic clusters (uniform random vectors make every ANN index look
better than it is). Queries are real NQ questions encoded the same way.

For each setting it prints recall@10 against the exact flat index, latency per query at
batch 1 and per batch of 64, bytes per vector and build time.

    python bench/index_scale.py --n 200000          # a few minutes on 2 cores
    python bench/index_scale.py                     # 1M (HNSW build dominates: ~30+ min)
    python bench/index_scale.py --n 200000 --only ivfpq --nlist 1024
    python bench/index_scale.py --n 5000000 --only ivfpq --pq-m 96 --threads 2   # ~9 GB RAM
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faiss
from _common import PSGS, ROOT, nq_questions, print_table

from dprscope.index.vector_index import blas_threshold

log = logging.getLogger("bench.index_scale")

OUT = ROOT / "out"
BASE_PASSAGES = 4000
NOISE = 0.35  # per-dimension sigma relative to 1/sqrt(dim): neighbours stay near their source passage


def real_passage_rows(n: int) -> list[tuple[str, str, str]]:
    import csv
    import itertools

    csv.field_size_limit(1 << 30)
    with PSGS.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)
        return [(r[0], r[1], r[2]) for r in itertools.islice(reader, n)]


def _ort_bi():
    from dprscope.encoders import load_bi_encoder
    from dprscope.encoders.onnx_backend import OrtOptions, to_onnx

    return to_onnx(load_bi_encoder("default"), OrtOptions(cache_dir=OUT / "onnx-cache"))


def base_embeddings(n: int = BASE_PASSAGES) -> np.ndarray:
    """``n`` real passage embeddings, encoded once and cached in ``out/``."""
    path = OUT / f"passage-emb-{n}.npy"
    if path.exists():
        return np.load(path)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = real_passage_rows(n)
    bi = _ort_bi()
    started = time.perf_counter()
    vecs = bi.encode_passages([r[2] for r in rows], [r[1] for r in rows], batch_size=64)
    log.info("encoded %d passages in %.0fs", n, time.perf_counter() - started)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    tmp.rename(path)
    return vecs


def query_embeddings(n: int) -> np.ndarray:
    path = OUT / f"nq-query-emb-{n}.npy"
    if path.exists():
        return np.load(path)
    OUT.mkdir(parents=True, exist_ok=True)
    vecs = _ort_bi().encode_queries(nq_questions(n), batch_size=64)
    np.save(path, vecs)
    return vecs


def replicate_chunks(base: np.ndarray, n: int, seed: int = 0, chunk: int = 65536):
    """``n`` unit vectors in chunks: base rows, then noisy copies of them.

    Chunks, so a caller can add them straight into an index and never hold a second full copy
    (at 5M x 384 one copy is 7.7 GB).
    """
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    sigma = NOISE / np.sqrt(dim)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        src = base[np.arange(start, stop) % len(base)]
        noisy = src + rng.normal(0.0, sigma, size=src.shape).astype(np.float32)
        if start < len(base):
            keep = min(stop, len(base)) - start
            noisy[:keep] = src[:keep]
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        yield noisy


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def latency(index: faiss.Index, q: np.ndarray, k: int, batch: int, repeats: int, params=None) -> float:
    """Median seconds per call of ``batch`` queries."""
    times = []
    for r in range(repeats):
        start = (r * batch) % max(1, len(q) - batch + 1)
        qb = q[start:start + batch]
        t = time.perf_counter()
        if params is None:
            index.search(qb, k)
        else:
            index.search(qb, k, params=params)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).nbytes)


def run(args: argparse.Namespace) -> list[list[object]]:
    base = base_embeddings(args.base)
    xq = query_embeddings(args.queries)
    n, dim = args.n, base.shape[1]
    # what the service sets (the 1.15.1 default keeps batches off BLAS; see vector_index.blas_threshold)
    faiss.cvar.distance_compute_blas_threshold = blas_threshold(dim)
    k = 10
    rows: list[list[object]] = []
    print(f"# N={n} dim={dim} queries={len(xq)} base passages={len(base)} noise={NOISE}; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads", flush=True)

    t = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    for chunk in replicate_chunks(base, n):
        flat.add(chunk)
    flat_build = time.perf_counter() - t
    # The one copy of the vectors: a view on the flat index's storage, shared by the refine stage.
    xb = faiss.rev_swig_ptr(faiss.downcast_index(flat).get_xb(), n * dim).reshape(n, dim)
    _, truth = flat.search(xq, k)
    # A flat batch-1 search at 5M takes seconds: a few repeats give a stable median.
    flat_repeats = max(5, min(args.repeats, int(args.repeats * 1_000_000 / n) // 5))
    flat_b1 = latency(flat, xq, k, 1, flat_repeats)
    flat_b64 = latency(flat, xq, k, 64, 3)
    flat_bpv = dim * 4
    rows.append(["flat", "-", 1.0, flat_b1 * 1e3, flat_b64 * 1e3, 1.0, flat_bpv, flat_build])

    def add(name: str, setting: str, index: faiss.Index, build_s: float, bpv: float, params=None) -> None:
        _, found = index.search(xq, k, params=params) if params is not None else index.search(xq, k)
        b1 = latency(index, xq, k, 1, args.repeats, params)
        b64 = latency(index, xq, k, 64, max(3, args.repeats // 10), params)
        rows.append([name, setting, recall_at(found, truth, k), b1 * 1e3, b64 * 1e3, flat_b1 / b1, bpv, build_s])
        print(f"  {name:<10} {setting:<28} R@10 {rows[-1][2]:.3f}  b1 {b1 * 1e3:7.3f} ms  "
              f"b64 {b64 * 1e3:8.2f} ms  {flat_b1 / b1:6.1f}x  {bpv:6.0f} B/vec  build {build_s:6.1f}s", flush=True)

    if args.only in (None, "hnsw"):
        for m in args.hnsw_m:
            t = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = args.ef_construction
            hnsw.add(xb)
            build = time.perf_counter() - t
            bpv = index_bytes(hnsw) / n
            for ef in args.ef_search:
                add("hnsw", f"M={m} efC={args.ef_construction} ef={ef}", hnsw, build, bpv,
                    faiss.SearchParametersHNSW(efSearch=ef))
            del hnsw

    if args.only in (None, "ivfpq"):
        nlist = args.nlist or int(4 * np.sqrt(n))
        train = xb[np.random.default_rng(1).choice(n, size=min(n, max(64 * nlist, 65536)), replace=False)]
        for m in args.pq_m:
            t = time.perf_counter()
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            ivf.train(train)
            ivf.add(xb)
            build = time.perf_counter() - t
            code_bpv = index_bytes(ivf) / n
            for nprobe in args.nprobe:
                add("ivfpq", f"nlist={nlist} m={m} nprobe={nprobe}", ivf, build, code_bpv,
                    faiss.SearchParametersIVF(nprobe=nprobe))
            # refine re-scores from the flat index already in memory (no second copy of the vectors)
            refine = faiss.IndexRefine(ivf, flat)
            for kf in args.k_factor:
                refine.k_factor = float(kf)
                for nprobe in args.nprobe:
                    ivf_p = faiss.SearchParametersIVF(nprobe=nprobe)
                    sp = faiss.IndexRefineSearchParameters(k_factor=float(kf), base_index_params=ivf_p)
                    # refine keeps full vectors: in RAM here, memory-mapped from disk at serve time
                    add("ivfpq+ref", f"m={m} nprobe={nprobe} kf={kf}", refine, build, code_bpv + dim * 4, sp)
            del refine, ivf
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    p.add_argument("--base", type=int, default=BASE_PASSAGES, help="real passages encoded (cached in out/)")
    p.add_argument("--queries", type=int, default=500, help="NQ dev questions used as queries")
    p.add_argument("--repeats", type=int, default=200, help="timed batch-1 searches per setting")
    p.add_argument("--only", choices=("hnsw", "ivfpq"), default=None)
    p.add_argument("--hnsw-m", type=int, nargs="+", default=[32])
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (default 4*sqrt(N))")
    p.add_argument("--pq-m", type=int, nargs="+", default=[48, 96], help="PQ bytes per vector (8-bit codes)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--threads", type=int, default=0,
                   help="OpenMP threads (0: faiss default). 1 avoids spin-wait collapse on a shared/oversubscribed CPU")
    p.add_argument("--k-factor", type=int, nargs="+", default=[4, 16])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rows = run(args)
    print()
    print_table(["index", "setting", "recall@10", "b1 ms", "b64 ms", "speedup b1", "bytes/vec", "build s"],
                [[r[0], r[1], f"{r[2]:.3f}", f"{r[3]:.3f}", f"{r[4]:.2f}", f"{r[5]:.1f}", f"{r[6]:.0f}",
                  f"{r[7]:.1f}"] for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
