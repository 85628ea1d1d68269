"""FAISS indexes behind one small class: flat, HNSW and IVF-PQ, inner product throughout.

Serving searches one index from many threads at once, so per-request knobs (``ef_search``,
``nprobe``, ``exact``) travel as FAISS ``SearchParameters`` objects on each call; nothing
here ever mutates an index after it is built. Defaults chosen at build time are stored in
the index itself (``efSearch``, ``nprobe``, refine ``k_factor``) and in the manifest.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dprscope.errors import DimensionMismatch, FailedPrecondition, InvalidArgument
from dprscope.jobs import ProgressFn, ProgressTicker

log = logging.getLogger(__name__)

# Exhaustive search (flat indexes, IVF's coarse quantizer) scans row by row with SIMD for a few
# queries and switches to BLAS matrix blocks for more. On 2 cores, 1 thread (bench/flat_search.py,
# bench/RESULTS.md): one query over 5,000 x 384 takes 0.5 ms scanned and 1.5-3.0 ms through BLAS,
# and over 200k x 384 40 ms against 90 ms; from 3 queries on BLAS wins at 200k (4 queries: 97
# against 170 ms), and a batch of 64 scanned takes 4-10x as long. So 1 or 2 queries are scanned.
BLAS_MIN_QUERIES = 3


def _faiss_version() -> tuple[int, ...]:
    return tuple(int(part) for part in faiss.__version__.split(".")[:2] if part.isdigit())


def blas_threshold(dim: int, version: tuple[int, ...] | None = None) -> int:
    """``distance_compute_blas_threshold`` that sends ``BLAS_MIN_QUERIES`` queries of ``dim`` to BLAS.

    faiss up to 1.13 compares the number of queries with it (default 20). From 1.14 it compares
    queries x dim (default 128000: 333 queries at 384-d, so batched search never used BLAS), and
    a query count set there (20) sent even a single query through BLAS, 4-6x slower.
    """
    counts_elements = (version or _faiss_version()) >= (1, 14)
    return BLAS_MIN_QUERIES * dim if counts_elements else BLAS_MIN_QUERIES

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
# Not a FAISS type: asks for the type that suits the corpus size (``resolve_index_type``).
AUTO_INDEX_TYPE = "auto"
INDEX_TYPE_CHOICES = (AUTO_INDEX_TYPE, *INDEX_TYPES)
# Largest corpus that ``auto`` serves from an exact flat index. A flat search streams every
# vector: on a 2-core host ~0.5 us per 384-d vector, so ~100 ms per query at 200k, already
# several times the query encode. IVF-PQ + refine at the default nprobe (>= 32) measured
# recall@10 0.949 (48-byte codes, the 384-d default) to 0.970 (96-byte) at 200k, 0.982 at 1M
# and 0.993 at 5M (96-byte), at 1-6 ms (bench/RESULTS.md "Index scale"). HNSW is never chosen:
# on the near-duplicate-heavy 1M set it falls to 0.6 recall@10 at efSearch 256.
AUTO_FLAT_MAX_PASSAGES = 200_000
METRIC = "ip"
ADD_CHUNK = 16384
MAX_K = 100_000
# Below this many multiply-adds a search runs on the calling thread alone (see _search_threads).
SINGLE_THREAD_MACS = 1 << 26
# FAISS GPU indexes select at most this many results per query and probe at most this many
# IVF lists (GPU_MAX_SELECTION_K). A refined IVF-PQ asks its base for top_k x k_factor, so on a
# GPU top_k 200 at k_factor 16 would fail; such searches go to the CPU copy instead.
GPU_MAX_K = 2048


@dataclass(frozen=True)
class SearchParams:
    """Per-request search knobs; 0 means the index's own default."""

    ef_search: int = 0
    nprobe: int = 0
    exact: bool = False


@contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """Run faiss' parallel regions on ``n`` threads, for the calling thread only.

    ``omp_set_num_threads`` changes the calling thread's own setting (libgomp keeps it per
    thread), so concurrent searches on other threads are unaffected.
    """
    before = faiss.omp_get_max_threads()
    if n == before:
        yield
        return
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _check_type(index_type: str) -> None:
    if index_type not in INDEX_TYPES:
        raise InvalidArgument(f"unknown index type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")


def check_index_type(index_type: str) -> None:
    """Accept a FAISS type or ``auto`` (what builders take before they know the corpus size)."""
    if index_type not in INDEX_TYPE_CHOICES:
        raise InvalidArgument(
            f"unknown index type {index_type!r}; expected one of {', '.join(INDEX_TYPE_CHOICES)}"
        )


def resolve_index_type(index_type: str, n: int) -> str:
    """The FAISS type to build for ``n`` passages: ``auto`` picks flat or IVF-PQ + refine by size."""
    check_index_type(index_type)
    if index_type != AUTO_INDEX_TYPE:
        return index_type
    return "flat" if n <= AUTO_FLAT_MAX_PASSAGES else "ivfpq"


def same_index_type(requested: str, built: str, n: int) -> bool:
    """Whether an index of type ``built`` over ``n`` passages is what ``requested`` asks for."""
    return requested == built or (requested == AUTO_INDEX_TYPE and resolve_index_type(requested, n) == built)


def _pq_m(dim: int) -> int:
    """Sub-quantizer count: a divisor of dim near dim/8 (48 bytes for 384-d, 96 for 768-d)."""
    target = max(1, dim // 8)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), -m))


def default_index_params(index_type: str, n: int, dim: int) -> dict[str, Any]:
    """Sensible build and search defaults for ``n`` vectors of ``dim`` dimensions.

    IVF-PQ's ``nlist`` follows the usual ~4*sqrt(n) but is clipped so k-means gets at least
    39 training points per list, and ``nbits`` shrinks on small corpora so the PQ codebooks
    (2**nbits centroids) can be trained at all. ``refine`` keeps the full vectors beside the
    codes and re-ranks exactly: R@10 0.53 -> 0.99 at 1M (STACK-NOTES).

    Search defaults come from bench/RESULTS.md "Index scale" (200k real-passage vectors,
    500 NQ queries, recall@10 vs exact): HNSW M=32 reaches 0.953 at efSearch 256 but only
    0.899 at 128, so efSearch is 256. IVF-PQ + refine needs ``refine_k_factor`` 16 (kf 4:
    0.77-0.93) and nprobe >= 32 to pass 0.95 (m=48: nprobe 16 -> 0.930, 32 -> 0.949,
    128 -> 0.961; m=96: 32 -> 0.970, 64 -> 0.984), so nprobe is nlist/32 but at least 32,
    clipped to nlist for small corpora.
    """
    _check_type(index_type)
    if index_type == "flat":
        return {}
    if index_type == "hnsw":
        return {"M": 32, "efConstruction": 200, "efSearch": 256}
    n = max(int(n), 1)
    nlist = round(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // 39))
    nbits = 8
    while nbits > 1 and n < 39 * (1 << nbits):
        nbits -= 1
    return {
        "nlist": nlist,
        "m": _pq_m(dim),
        "nbits": nbits,
        "nprobe": max(1, min(nlist, max(32, nlist // 32))),
        "refine": True,
        "refine_k_factor": 16,
    }


def _downcast(index: faiss.Index) -> faiss.Index:
    return faiss.downcast_index(index)


class VectorIndex:
    """A built FAISS index plus what it is (type, dim, params); safe for concurrent search."""

    def __init__(self, index: faiss.Index, index_type: str, params: dict[str, Any], metric: str = METRIC,
                 cpu_twin: VectorIndex | None = None):
        """``cpu_twin``: for an index placed on a GPU, the CPU index it was copied from; it answers
        the searches the GPU cannot (see ``GPU_MAX_K``). Loaded memory-mapped, it costs page
        cache, not a second resident copy."""
        _check_type(index_type)
        if metric != METRIC:
            raise InvalidArgument(f"unsupported metric {metric!r}; dprscope indexes use {METRIC!r}")
        self._index = index  # keep the owner alive: sub-index wrappers below do not own memory
        self.index_type = index_type
        self.dim = int(index.d)
        self.metric = metric
        self.params = dict(params)
        self._cpu_twin = cpu_twin
        self._blas_threshold = blas_threshold(self.dim)
        self._exact_index: faiss.Index | None = None
        self._refine: bool = False
        top = _downcast(index)
        if index_type == "flat":
            self._exact_index = top
        elif index_type == "hnsw":
            self._exact_index = _downcast(top.storage)
        else:
            if isinstance(top, faiss.IndexRefine):
                self._refine = True
                self._exact_index = _downcast(top.refine_index)
                self._refine_k = float(top.k_factor)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying FAISS object (read-only use: it is shared between threads)."""
        return self._index

    def _search_parameters(self, params: SearchParams) -> faiss.SearchParameters | None:
        if params.ef_search < 0 or params.nprobe < 0:
            raise InvalidArgument("ef_search and nprobe must be >= 0 (0 means the index default)")
        if params.ef_search and self.index_type != "hnsw":
            raise InvalidArgument(f"ef_search applies to hnsw indexes only; this index is {self.index_type}")
        if params.nprobe and self.index_type != "ivfpq":
            raise InvalidArgument(f"nprobe applies to ivfpq indexes only; this index is {self.index_type}")
        if params.ef_search:
            return faiss.SearchParametersHNSW(efSearch=int(params.ef_search))
        if params.nprobe:
            ivf = faiss.SearchParametersIVF(nprobe=int(params.nprobe))
            if self._refine:
                wrapped = faiss.IndexRefineSearchParameters(k_factor=self._refine_k, base_index_params=ivf)
                wrapped._keep_alive = ivf  # SWIG does not hold the nested object
                return wrapped
            return ivf
        return None

    def _search_threads(self, nq: int) -> int:
        """OpenMP threads worth waking for a search of ``nq`` queries.

        faiss-cpu ships its own libgomp, separate from torch's. Each runtime keeps its own
        worker pool and spin-waits after every parallel region, so a one-query search that
        wakes faiss' pool right between two encoder forward passes leaves two pools spinning
        against each other: on two cores that cost 8 ms per search and slowed the next
        encode by 50 %, for a search that takes well under a millisecond on one thread.
        Small searches therefore stay on the calling thread; big batched ones (many
        queries over a large flat index) keep the calling thread's own setting, so a caller
        that limited faiss' threads is never overridden.
        """
        # graph and IVF searches parallelise over queries only: 8 queries are worth a pool
        per_query = self.ntotal * self.dim if self.index_type == "flat" else SINGLE_THREAD_MACS // 8
        work = nq * per_query
        return 1 if work < SINGLE_THREAD_MACS else faiss.omp_get_max_threads()

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams = SearchParams()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: (scores [n,k] float32, rows [n,k] int64, -1 where fewer hits).

        Raises:
            InvalidArgument: k out of range, a knob that does not apply to this index type.
            DimensionMismatch: query width differs from the index.
            FailedPrecondition: ``exact`` on an index that keeps no full vectors.
        """
        if not 0 < int(k) <= MAX_K:
            raise InvalidArgument(f"k must be in 1..{MAX_K}, got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2:
            raise InvalidArgument(f"queries must be a [n, dim] array, got shape {q.shape}")
        if q.shape[1] != self.dim:
            raise DimensionMismatch(f"query vectors have dim {q.shape[1]}, the index has dim {self.dim}")
        if self._cpu_twin is not None and self._beyond_gpu_limits(int(k), params):
            return self._cpu_twin.search(q, int(k), params)
        # A process-wide setting, written before each search because indexes of different widths
        # can serve side by side. A concurrent search of another width can only make this one take
        # the slower of two exact paths (their scores agree to float rounding).
        faiss.cvar.distance_compute_blas_threshold = self._blas_threshold
        with _omp_threads(self._search_threads(q.shape[0])):
            scores, rows = self._search(q, int(k), params)
        return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)

    def _beyond_gpu_limits(self, k: int, params: SearchParams) -> bool:
        """Whether this search asks a GPU index for more than FAISS GPU can select or probe."""
        if params.exact:  # a refined index re-ranks from host vectors; flat's exact index is the GPU one
            return not self._refine and k > GPU_MAX_K
        selected = k * self._refine_k if self._refine else k
        nprobe = params.nprobe or int(self.params.get("nprobe", 0))
        return selected > GPU_MAX_K or nprobe > GPU_MAX_K

    def _search(self, q: np.ndarray, k: int, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        if params.exact:
            if params.ef_search or params.nprobe:
                raise InvalidArgument("exact search takes no ef_search or nprobe")
            if self._exact_index is None:
                raise FailedPrecondition(
                    f"exact search needs full vectors; this {self.index_type} index keeps only "
                    "compressed codes (build with refine=True)"
                )
            return self._exact_index.search(q, k)
        sp = self._search_parameters(params)
        if sp is None:
            return self._index.search(q, k)
        return self._index.search(q, k, params=sp)

    def reconstruct_all(self) -> np.ndarray:
        """Every stored full vector in row order (flat storage only; for checks and re-use)."""
        if self._exact_index is None:
            raise FailedPrecondition(f"this {self.index_type} index keeps no full vectors")
        return self._exact_index.reconstruct_n(0, self._exact_index.ntotal)

    def save(self, path: Path) -> None:
        """Write atomically (temp file + fsync + rename): a reader never sees half an index."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, index_type: str, metric: str, params: dict[str, Any], mmap: bool = True) -> VectorIndex:
        """Read an index; memory-map it where FAISS supports that for the type.

        ``IO_FLAG_MMAP_IFC`` maps every flat code array of the file, which for IVF-PQ with
        refine includes the full vectors kept for re-ranking (16x the PQ codes): a
        200k x 384 IVF-PQ+refine index then costs +2 MiB of RSS instead of +295 MiB with
        ``IO_FLAG_MMAP``, which maps only the inverted lists. Older index files that a flag
        cannot read fall back to the next one.
        """
        _check_type(index_type)
        path = Path(path)
        if not path.is_file():
            raise FailedPrecondition(f"index file {path} is missing")
        flags = []
        if mmap:
            flags.append(faiss.IO_FLAG_MMAP_IFC)
            if index_type == "ivfpq":
                flags.append(faiss.IO_FLAG_MMAP)
        flags.append(0)
        last: Exception | None = None
        for flag in flags:
            try:
                index = faiss.read_index(str(path), flag)
                break
            except RuntimeError as exc:
                log.debug("reading %s with flags %#x failed: %s", path, flag, exc)
                last = exc
        else:
            raise FailedPrecondition(f"cannot read index file {path}: {last}")
        return cls(index, index_type, params, metric)


def _new_index(index_type: str, dim: int, params: dict[str, Any]) -> faiss.Index:
    if index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["efConstruction"])
        index.hnsw.efSearch = int(params["efSearch"])
        return index
    m, nbits, nlist = int(params["m"]), int(params["nbits"]), int(params["nlist"])
    if dim % m:
        raise InvalidArgument(f"ivfpq m={m} must divide dim {dim}")
    if not 1 <= nbits <= 16:
        raise InvalidArgument(f"ivfpq nbits must be in 1..16, got {nbits}")
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.nprobe = int(params["nprobe"])
    if not params.get("refine", True):
        return ivf
    refine = faiss.IndexRefineFlat(ivf)
    refine.own_fields = True
    ivf.this.disown()
    refine.k_factor = float(params.get("refine_k_factor", 4))
    return refine


def _chunks(vectors: Iterable[np.ndarray] | np.ndarray) -> Iterator[np.ndarray]:
    if isinstance(vectors, np.ndarray):
        for start in range(0, len(vectors), ADD_CHUNK):
            yield vectors[start : start + ADD_CHUNK]
        return
    for chunk in vectors:
        for start in range(0, len(chunk), ADD_CHUNK):
            yield chunk[start : start + ADD_CHUNK]


def _sample(vectors: Iterable[np.ndarray] | np.ndarray, n: int, size: int, seed: int = 0) -> np.ndarray:
    """A uniform sample of ``size`` rows from a re-iterable source of ``n`` rows (one pass)."""
    if size >= n:
        return np.concatenate([np.asarray(c, dtype=np.float32) for c in _chunks(vectors)])
    wanted = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    out, seen = [], 0
    for chunk in _chunks(vectors):
        lo, hi = np.searchsorted(wanted, [seen, seen + len(chunk)])
        if hi > lo:
            out.append(np.asarray(chunk[wanted[lo:hi] - seen], dtype=np.float32))
        seen += len(chunk)
    return np.concatenate(out)


def build_vector_index(
    index_type: str,
    vectors_iter: Iterable[np.ndarray] | np.ndarray,
    dim: int,
    n: int,
    params: dict[str, Any] | None = None,
    train_sample: int | None = None,
    progress: ProgressFn | None = None,
) -> VectorIndex:
    """Build an inner-product index from ``n`` vectors given whole or as chunks.

    ``index_type`` may be ``auto``; the returned index carries the type it resolved to.

    IVF-PQ trains on a uniform sample. For that, ``vectors_iter`` must be re-iterable (an
    array, a list, or an object whose ``__iter__`` starts over, such as the builder's
    shard reader); a one-shot iterator is buffered in memory first, with a warning.

    Args:
        params: overrides merged over ``default_index_params``.
        train_sample: training rows for IVF-PQ (default: up to 256 per list and PQ centroid).
    """
    if n <= 0:
        raise InvalidArgument("cannot build an index over zero vectors")
    index_type = resolve_index_type(index_type, n)
    merged = {**default_index_params(index_type, n, dim), **(params or {})}
    unknown = set(merged) - set(default_index_params(index_type, max(n, 1), dim))
    if unknown:
        raise InvalidArgument(f"unknown {index_type} index params: {', '.join(sorted(unknown))}")
    index = _new_index(index_type, dim, merged)
    ticker = ProgressTicker("index", n, progress)
    source: Iterable[np.ndarray] | np.ndarray = vectors_iter
    if index_type == "ivfpq":
        size = train_sample or min(n, max(64 * int(merged["nlist"]), 256 * (1 << int(merged["nbits"]))))
        if isinstance(vectors_iter, Iterator):
            log.warning("ivfpq: buffering %d vectors in memory, the source cannot be re-read", n)
            buffered = list(_chunks(vectors_iter))
            source = np.concatenate(buffered) if buffered else np.zeros((0, dim), np.float32)
        sample = _sample(source, n, min(size, n))
        ticker.update(0, f"training ivfpq on {len(sample)} vectors", force=True)
        index.train(sample)
    added = 0
    for chunk in _chunks(source):
        arr = np.ascontiguousarray(chunk, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise DimensionMismatch(f"vectors of shape {arr.shape} do not match dim {dim}")
        index.add(arr)
        added += len(arr)
        ticker.update(added)
    if added != n:
        raise FailedPrecondition(f"expected {n} vectors, got {added}")
    ticker.update(added, force=True)
    return VectorIndex(index, index_type, merged)
