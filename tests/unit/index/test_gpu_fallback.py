"""Device choice for FAISS and the encoders: the CPU fallback is chosen, logged, never assumed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dprscope.encoders import device as dev
from dprscope.encoders.onnx_backend import ort_providers
from dprscope.index import gpu
from dprscope.index.vector_index import build_vector_index


@pytest.fixture
def flat_index():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    return build_vector_index("flat", x, 16, len(x)), x


def test_auto_falls_back_to_cpu_without_a_gpu(flat_index, monkeypatch, caplog):
    vindex, x = flat_index
    monkeypatch.setattr(gpu, "faiss_gpu_count", lambda: 0)
    with caplog.at_level(logging.INFO, logger="dprscope.index.gpu"):
        placed, where = gpu.place_index(vindex, "auto")
    assert placed is vindex and where.device == "cpu"
    assert "stays on the CPU" in caplog.text
    scores, rows = placed.search(x[:3], 1)
    assert scores.shape == rows.shape == (3, 1)


def test_this_faiss_build_reports_its_gpu_support(flat_index):
    vindex, _ = flat_index
    placed, where = gpu.place_index(vindex, "auto")
    if gpu.faiss_gpu_count() == 0:
        assert placed is vindex and where.device == "cpu" and where.reason


def test_explicit_cuda_without_gpu_warns_and_serves_from_cpu(flat_index, monkeypatch, caplog):
    vindex, _ = flat_index
    monkeypatch.setattr(gpu, "faiss_gpu_count", lambda: 0)
    with caplog.at_level(logging.WARNING, logger="dprscope.index.gpu"):
        placed, where = gpu.place_index(vindex, "cuda")
    assert placed is vindex and where.device == "cpu"
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_failed_gpu_copy_falls_back(flat_index, monkeypatch):
    vindex, _ = flat_index
    monkeypatch.setattr(gpu, "faiss_gpu_count", lambda: 1)

    def boom(*_a):
        raise RuntimeError("out of GPU memory")

    monkeypatch.setattr(gpu, "_to_gpu", boom)
    placed, where = gpu.place_index(vindex, "auto")
    assert placed is vindex and where.device == "cpu" and "out of GPU memory" in where.reason


def test_hnsw_stays_on_cpu_and_bad_names_are_refused(monkeypatch):
    x = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    hnsw = build_vector_index("hnsw", x, 8, len(x), {"M": 8, "efConstruction": 16, "efSearch": 16})
    monkeypatch.setattr(gpu, "faiss_gpu_count", lambda: 1)
    placed, where = gpu.place_index(hnsw, "cuda")
    assert placed is hnsw and "hnsw" in where.reason
    with pytest.raises(ValueError, match="not one of"):
        gpu.place_index(hnsw, "tpu")
    assert gpu.place_index(hnsw, "cpu")[1].reason == "cpu requested"


def test_encoder_device_resolution(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    assert dev.resolve_device("auto") == "cpu"
    assert dev.resolve_device("CPU") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        dev.resolve_device("cuda")
    with pytest.raises(ValueError, match="not one of"):
        dev.resolve_device("metal")
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.resolve_device("auto") == "cuda" and dev.resolve_device("cuda:1") == "cuda:1"


def test_ort_providers_fall_back_to_cpu(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert ort_providers("auto") == ["CPUExecutionProvider"]
    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="CUDAExecutionProvider"):
        ort_providers("cuda")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert ort_providers("auto")[0] == "CUDAExecutionProvider"
    assert ort_providers("cpu") == ["CPUExecutionProvider"]


def test_searches_past_the_gpu_selection_limit_go_to_the_cpu_twin(monkeypatch):
    """FAISS GPU selects at most GPU_MAX_K results; such searches are answered by the CPU copy.

    No GPU here, so a CPU index over different vectors stands in for the GPU copy: which of the
    two answered is visible in the rows returned. tests/gpu runs the same path on a real GPU.
    """
    from dprscope.index import vector_index as vi

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    full = build_vector_index("ivfpq", x, 16, len(x), {"nlist": 16, "m": 4, "nbits": 6, "nprobe": 4})
    assert full.params["refine"] and full.params["refine_k_factor"] == 16
    stand_in = build_vector_index("ivfpq", x[:1000], 16, 1000, {"nlist": 16, "m": 4, "nbits": 6, "nprobe": 4})
    placed = vi.VectorIndex(stand_in.faiss_index, "ivfpq", full.params, cpu_twin=full)
    monkeypatch.setattr(vi, "GPU_MAX_K", 64)
    q = x[2000:2003]
    _, rows = placed.search(q, 4)  # 4 x k_factor 16 = 64: within the limit, the "GPU" answers
    assert (rows < 1000).all()
    _, rows = placed.search(q, 5)  # 80 > 64: the CPU twin answers, and finds the query rows themselves
    assert (rows[:, 0] == np.arange(2000, 2003)).all()
    _, rows = placed.search(q, 4, vi.SearchParams(nprobe=65))  # nprobe past the limit
    assert (rows[:, 0] == np.arange(2000, 2003)).all()
    _, rows = placed.search(q, 60, vi.SearchParams(exact=True))  # exact re-ranks from host vectors
    assert rows.shape == (3, 60)
