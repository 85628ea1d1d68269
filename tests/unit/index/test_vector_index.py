from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from dprscope.errors import DimensionMismatch, FailedPrecondition, InvalidArgument
from dprscope.index.vector_index import (
    INDEX_TYPES,
    SearchParams,
    VectorIndex,
    build_vector_index,
    default_index_params,
)

DIM = 64
N = 4000


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, dim))
    x = centers[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = _clustered(N, DIM)
    q = _clustered(50, DIM, seed=1)
    return x, q


@pytest.fixture(scope="module")
def indexes(data):
    x, _ = data
    chunks = [x[i : i + 1000] for i in range(0, N, 1000)]  # a re-iterable list of chunks
    return {t: build_vector_index(t, chunks, DIM, N) for t in INDEX_TYPES}


def _recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows, truth, strict=True)]))


def test_flat_is_exact(data, indexes):
    x, q = data
    scores, rows = indexes["flat"].search(q, 10)
    brute = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert _recall(rows, brute) == 1.0
    assert scores.dtype == np.float32
    assert rows.dtype == np.int64
    np.testing.assert_allclose(scores[:, 0], np.max(q @ x.T, axis=1), rtol=1e-5)


@pytest.mark.parametrize(("index_type", "floor"), [("hnsw", 0.9), ("ivfpq", 0.85)])
def test_approximate_recall(data, indexes, index_type, floor):
    _, q = data
    _, truth = indexes["flat"].search(q, 10)
    _, rows = indexes[index_type].search(q, 10)
    assert _recall(rows, truth) >= floor


def test_per_request_params_do_not_mutate(data, indexes):
    _, q = data
    _, truth = indexes["flat"].search(q, 10)
    hnsw = indexes["hnsw"]
    default_ef = hnsw.faiss_index.hnsw.efSearch
    _, low = hnsw.search(q, 10, SearchParams(ef_search=10))
    _, high = hnsw.search(q, 10, SearchParams(ef_search=400))
    assert _recall(high, truth) >= _recall(low, truth)
    assert hnsw.faiss_index.hnsw.efSearch == default_ef
    ivf = indexes["ivfpq"]
    _, one = ivf.search(q, 10, SearchParams(nprobe=1))
    _, many = ivf.search(q, 10, SearchParams(nprobe=ivf.params["nlist"]))
    assert _recall(many, truth) >= _recall(one, truth)
    assert _recall(many, truth) >= 0.9


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_exact_uses_stored_vectors(data, indexes, index_type):
    _, q = data
    s_flat, truth = indexes["flat"].search(q, 10)
    s_exact, rows = indexes[index_type].search(q, 10, SearchParams(exact=True))
    assert _recall(rows, truth) == 1.0
    np.testing.assert_allclose(s_exact, s_flat, rtol=1e-5)


def test_exact_without_full_vectors(data):
    x, q = data
    idx = build_vector_index("ivfpq", x, DIM, N, {"refine": False})
    with pytest.raises(FailedPrecondition, match="full vectors"):
        idx.search(q, 5, SearchParams(exact=True))
    assert idx.search(q, 5)[1].shape == (50, 5)


def test_bad_params(data, indexes):
    _, q = data
    with pytest.raises(InvalidArgument, match="ef_search applies to hnsw"):
        indexes["flat"].search(q, 5, SearchParams(ef_search=10))
    with pytest.raises(InvalidArgument, match="nprobe applies to ivfpq"):
        indexes["hnsw"].search(q, 5, SearchParams(nprobe=4))
    with pytest.raises(InvalidArgument):
        indexes["flat"].search(q, 0)
    with pytest.raises(InvalidArgument):
        indexes["hnsw"].search(q, 5, SearchParams(ef_search=-1))
    with pytest.raises(DimensionMismatch):
        indexes["flat"].search(q[:, :10], 5)
    with pytest.raises(InvalidArgument, match="unknown index type"):
        build_vector_index("lsh", q, DIM, len(q))
    with pytest.raises(InvalidArgument, match="unknown hnsw index params"):
        build_vector_index("hnsw", q, DIM, len(q), {"Mx": 4})


def test_missing_hits_are_minus_one(data):
    x, q = data
    idx = build_vector_index("flat", x[:3], DIM, 3)
    _scores, rows = idx.search(q[:2], 5)
    assert (rows[:, 3:] == -1).all()
    assert (rows[:, :3] >= 0).all()


def test_default_params():
    p = default_index_params("ivfpq", 1_000_000, 768)
    assert p["m"] == 96
    assert p["nbits"] == 8
    assert p["refine"] is True
    assert 39 * p["nlist"] <= 1_000_000
    assert default_index_params("ivfpq", 1_000_000, 384)["m"] == 48
    small = default_index_params("ivfpq", 3000, 384)
    assert small["nbits"] < 8
    assert 384 % small["m"] == 0
    assert 39 * small["nlist"] <= 3000
    assert default_index_params("hnsw", 10, 8) == {"M": 32, "efConstruction": 200, "efSearch": 256}
    # bench/RESULTS.md "Index scale": refine kf 16 and nprobe >= 32 for recall@10 >= 0.95
    assert p["refine_k_factor"] == 16
    assert p["nprobe"] == max(32, p["nlist"] // 32) and p["nprobe"] <= p["nlist"]
    at_200k = default_index_params("ivfpq", 200_000, 384)
    assert at_200k["nlist"] == 1789 and at_200k["nprobe"] == 55
    assert small["nprobe"] == min(32, small["nlist"])
    tiny = default_index_params("ivfpq", 100, 384)
    assert tiny["nprobe"] == tiny["nlist"]


@pytest.mark.parametrize("index_type", INDEX_TYPES)
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, data, indexes, index_type, mmap):
    _, q = data
    idx = indexes[index_type]
    path = tmp_path / "index.faiss"
    idx.save(path)
    loaded = VectorIndex.load(path, index_type, "ip", idx.params, mmap=mmap)
    assert loaded.ntotal == N
    np.testing.assert_array_equal(loaded.search(q, 10)[1], idx.search(q, 10)[1])
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_one_shot_iterator_for_ivfpq(data):
    x, _q = data
    idx = build_vector_index("ivfpq", iter([x[:2000], x[2000:]]), DIM, N)
    assert idx.ntotal == N


def test_wrong_count_is_refused(data):
    x, _ = data
    with pytest.raises(FailedPrecondition, match="expected 10"):
        build_vector_index("flat", x[:5], DIM, 10)


def test_concurrent_searches_with_mixed_params(data, indexes):
    _, q = data
    hnsw = indexes["hnsw"]
    expected = {ef: hnsw.search(q, 10, SearchParams(ef_search=ef))[1] for ef in (16, 256)}
    errors: list[BaseException] = []

    def work(ef: int) -> None:
        try:
            for _ in range(20):
                np.testing.assert_array_equal(hnsw.search(q, 10, SearchParams(ef_search=ef))[1], expected[ef])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ef,)) for ef in (16, 256, 16, 256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_small_searches_stay_on_the_calling_thread(data, indexes, monkeypatch):
    """One query never wakes faiss' OpenMP pool; a big batched flat search still does; results agree."""
    import faiss

    import dprscope.index.vector_index as vi

    flat = indexes["flat"]
    assert flat._search_threads(1) == 1
    assert indexes["hnsw"]._search_threads(1) == 1
    assert indexes["ivfpq"]._search_threads(1) == 1
    big_flat = vi.SINGLE_THREAD_MACS // (flat.ntotal * flat.dim) + 1
    caller_threads = faiss.omp_get_max_threads()
    for setting in (4, 1):  # big searches keep whatever the calling thread asked faiss for
        faiss.omp_set_num_threads(setting)
        try:
            assert flat._search_threads(big_flat) == setting
            assert indexes["hnsw"]._search_threads(64) == setting
        finally:
            faiss.omp_set_num_threads(caller_threads)

    _, q = data
    seen: list[int] = []
    real_search = flat._index.search

    def spy(*args, **kwargs):
        seen.append(faiss.omp_get_max_threads())
        return real_search(*args, **kwargs)

    before = faiss.omp_get_max_threads()
    monkeypatch.setattr(flat._index, "search", spy, raising=False)
    one_scores, one_rows = flat.search(q[:1], 10)
    assert seen == [1]
    assert faiss.omp_get_max_threads() == before  # restored for the thread's other work
    monkeypatch.undo()
    all_scores, all_rows = flat.search(q, 10)
    np.testing.assert_array_equal(one_rows[0], all_rows[0])
    np.testing.assert_allclose(one_scores[0], all_scores[0], rtol=1e-6)


def test_blas_threshold_follows_the_faiss_version():
    """faiss >= 1.14 compares queries x dim with the threshold, older versions the query count."""
    from dprscope.index.vector_index import BLAS_MIN_QUERIES, blas_threshold

    assert blas_threshold(384, (1, 15)) == BLAS_MIN_QUERIES * 384
    assert blas_threshold(768, (1, 14)) == BLAS_MIN_QUERIES * 768
    assert blas_threshold(768, (1, 13)) == BLAS_MIN_QUERIES
    # below BLAS_MIN_QUERIES the scan is chosen, at it BLAS, under either reading
    for version in ((1, 13), (1, 15)):
        per_query = 384 if version >= (1, 14) else 1
        assert (BLAS_MIN_QUERIES - 1) * per_query < blas_threshold(384, version) <= BLAS_MIN_QUERIES * per_query


@pytest.mark.parametrize("nq", [1, 2, 3, 5])
def test_flat_search_runs_under_its_own_width_threshold_and_stays_exact(data, nq, monkeypatch):
    """Each index sets the process-wide threshold for its width just before its search."""
    import faiss

    from dprscope.index.vector_index import blas_threshold

    x, q = data
    narrow = VectorIndex(faiss.IndexFlatIP(DIM), "flat", {})
    narrow._index.add(x)
    wide = VectorIndex(faiss.IndexFlatIP(2 * DIM), "flat", {})
    wide._index.add(np.hstack([x, x]) / np.sqrt(2))
    seen: list[int] = []
    for index in (wide, narrow):
        real_search = index._index.search

        def spy(*args, _real=real_search, **kwargs):
            seen.append(int(faiss.cvar.distance_compute_blas_threshold))
            return _real(*args, **kwargs)

        monkeypatch.setattr(index._index, "search", spy, raising=False)
    _, wide_rows = wide.search(np.hstack([q[:nq], q[:nq]]) / np.sqrt(2), 10)
    scores, rows = narrow.search(q[:nq], 10)
    assert seen == [blas_threshold(2 * DIM), blas_threshold(DIM)]
    truth = q[:nq] @ x.T
    assert _recall(rows, np.argsort(-truth, axis=1)[:, :10]) == 1.0
    np.testing.assert_allclose(scores, -np.sort(-truth, axis=1)[:, :10], rtol=1e-5, atol=1e-6)
    assert _recall(wide_rows, rows) == 1.0


_LOAD_AND_MEASURE = """
import json, sys
import numpy as np
from dprscope.index.vector_index import VectorIndex

def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

path, mmap, params = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
queries = np.load(sys.argv[4])
before = rss_mib()
index = VectorIndex.load(path, "ivfpq", "ip", params, mmap=mmap)
growth = rss_mib() - before
print(json.dumps({"growth": growth, "rows": index.search(queries, 10)[1].tolist()}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read the resident set size")
def test_ivfpq_refine_vectors_stay_on_disk_when_mapped(tmp_path):
    """The refine vectors (the bulk of an IVF-PQ+refine file) are mapped, not read into RAM.

    Each load runs in a fresh interpreter: in this process, memory freed by earlier tests
    would be reused by the allocator and hide the growth being measured.
    """
    import json
    import subprocess
    import sys

    n, dim = 50_000, 128  # 24 MiB of full vectors beside 0.4 MiB of PQ codes
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = {"nlist": 32, "m": 8, "nbits": 6, "nprobe": 8, "refine": True, "refine_k_factor": 4}
    built = build_vector_index("ivfpq", [x[i:i + 25_000] for i in range(0, n, 25_000)], dim, n, params)
    path = tmp_path / "index.faiss"
    built.save(path)
    np.save(tmp_path / "queries.npy", x[:5])
    expected = built.search(x[:5], 10)[1].tolist()

    def load(mmap: bool) -> dict:
        out = subprocess.run([sys.executable, "-c", _LOAD_AND_MEASURE, str(path), "1" if mmap else "0",
                              json.dumps(params), str(tmp_path / "queries.npy")],
                             capture_output=True, text=True, check=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])

    mapped, in_ram = load(True), load(False)
    assert mapped["rows"] == expected and in_ram["rows"] == expected
    assert in_ram["growth"] > 20, f"reading into RAM grew RSS by only {in_ram['growth']:.1f} MiB"
    assert mapped["growth"] < in_ram["growth"] / 4, (
        f"mapped load grew RSS by {mapped['growth']:.1f} MiB (read into RAM: {in_ram['growth']:.1f})")


def test_auto_index_type_follows_corpus_size():
    from dprscope.index.vector_index import (
        AUTO_FLAT_MAX_PASSAGES,
        resolve_index_type,
        same_index_type,
    )

    assert resolve_index_type("auto", 1) == "flat"
    assert resolve_index_type("auto", AUTO_FLAT_MAX_PASSAGES) == "flat"
    assert resolve_index_type("auto", AUTO_FLAT_MAX_PASSAGES + 1) == "ivfpq"
    assert resolve_index_type("auto", 21_015_320) == "ivfpq"
    for explicit in INDEX_TYPES:
        assert resolve_index_type(explicit, 10**9) == explicit
    with pytest.raises(InvalidArgument, match="auto, flat, hnsw, ivfpq"):
        resolve_index_type("annoy", 10)
    assert same_index_type("auto", "flat", 1000)
    assert not same_index_type("auto", "hnsw", 1000)
    assert not same_index_type("auto", "flat", AUTO_FLAT_MAX_PASSAGES + 1)
    assert same_index_type("hnsw", "hnsw", 10)


def test_cli_index_type_choices_mirror_the_index_package():
    from dprscope import cli
    from dprscope.index import AUTO_INDEX_TYPE, INDEX_TYPE_CHOICES

    assert cli.INDEX_TYPE_CHOICES == INDEX_TYPE_CHOICES
    assert cli.AUTO_INDEX_TYPE == AUTO_INDEX_TYPE


def test_build_auto_resolves_and_reports_the_built_type(data, monkeypatch):
    import dprscope.index.vector_index as vi

    x, q = data
    small = build_vector_index("auto", x[:500], DIM, 500)
    assert small.index_type == "flat"
    monkeypatch.setattr(vi, "AUTO_FLAT_MAX_PASSAGES", 499)
    large = build_vector_index("auto", x[:500], DIM, 500)
    assert large.index_type == "ivfpq"
    assert large.params["refine"] is True
    _scores, rows = large.search(q[:3], 5)
    assert (rows >= 0).all()
