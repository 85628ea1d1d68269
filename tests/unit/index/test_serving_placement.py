"""ServingIndex.open(device=...): FAISS placement for serving, with a stated CPU fallback.

The index directories here are imported from random vectors joined to real passages, so
no encoder runs: placement is about where FAISS searches, not what the vectors mean.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from dprscope.index import SearchParams, ServingIndex, import_embeddings
from dprscope.index import gpu as gpu_mod
from tests.shared_data import real_passages, write_tsv

DIM = 32
N = 200


def write_imported_index(tmp: Path, n: int = N, dim: int = DIM, index_type: str = "flat",
                         index_params: dict | None = None) -> tuple[Path, np.ndarray]:
    """An index directory of ``n`` real passages with random unit vectors; returns (dir, vectors)."""
    rows = real_passages(n)
    corpus = write_tsv(tmp / "psgs.tsv", rows)
    vecs = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    shard = tmp / "emb_0.pkl"
    shard.write_bytes(pickle.dumps([(r[0], vecs[i]) for i, r in enumerate(rows)]))
    out = tmp / "idx"
    import_embeddings([shard], corpus, out, index_type=index_type, trust_pickle=True, index_params=index_params)
    return out, vecs


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return write_imported_index(tmp_path_factory.mktemp("placement"))


@pytest.fixture
def no_gpu(monkeypatch):
    """Behave like a faiss-cpu host even where FAISS does see a GPU."""
    monkeypatch.setattr(gpu_mod, "faiss_gpu_count", lambda: 0)


def _search(index: ServingIndex, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return index.search(q, 10, SearchParams())


def test_default_is_the_cpu_as_before(imported):
    directory, vecs = imported
    index = ServingIndex.open(directory)
    try:
        assert index.placement.device == "cpu" and index.placement.reason == "cpu requested"
        _, rows = _search(index, vecs[:5])
        assert rows[:, 0].tolist() == list(range(5))
    finally:
        index.close()


def test_auto_without_gpu_falls_back_with_a_reason_and_same_results(imported, no_gpu, caplog):
    directory, vecs = imported
    reference = ServingIndex.open(directory, device="cpu")
    with caplog.at_level(logging.INFO, logger="dprscope.index"):
        auto = ServingIndex.open(directory, device="auto")
    try:
        assert auto.placement.device == "cpu"
        assert "faiss" in auto.placement.reason and auto.placement.reason != "cpu requested"
        assert "stays on the CPU" in caplog.text
        assert "on cpu (" in caplog.text  # the open log line names the placement and its reason
        for got, want in zip(_search(auto, vecs[:20]), _search(reference, vecs[:20]), strict=True):
            np.testing.assert_array_equal(got, want)
    finally:
        auto.close()
        reference.close()


def test_explicit_cuda_without_gpu_warns_and_serves_from_cpu(imported, no_gpu, caplog):
    directory, vecs = imported
    reference = ServingIndex.open(directory)
    with caplog.at_level(logging.WARNING, logger="dprscope.index.gpu"):
        index = ServingIndex.open(directory, device="cuda")
    try:
        assert index.placement.device == "cpu"
        assert any(r.levelno == logging.WARNING and "stays on the CPU" in r.getMessage() for r in caplog.records)
        for got, want in zip(_search(index, vecs[:20]), _search(reference, vecs[:20]), strict=True):
            np.testing.assert_array_equal(got, want)
    finally:
        index.close()
        reference.close()


def test_this_faiss_build_places_auto_where_it_can(imported):
    """Unpatched: on faiss-cpu (this project's CI) auto must stay on the CPU and say why."""
    directory, _ = imported
    index = ServingIndex.open(directory, device="auto")
    try:
        if gpu_mod.faiss_gpu_count() == 0:
            assert index.placement.device == "cpu" and index.placement.reason
        else:
            assert index.placement.device == "cuda:0"
    finally:
        index.close()


def test_unknown_device_is_refused_and_closes_the_store(imported, monkeypatch):
    directory, _ = imported
    closed = []
    from dprscope.store import PassageStore

    original = PassageStore.close
    monkeypatch.setattr(PassageStore, "close", lambda self: (closed.append(True), original(self)))
    with pytest.raises(ValueError, match="not one of"):
        ServingIndex.open(directory, device="tpu")
    assert closed == [True]
