"""GPU paths on a real CUDA device: torch CUDA encoder, ORT CUDA EP, FAISS GPU index.

Marked ``gpu`` (deselected by default: ``pytest -m gpu tests/gpu`` runs them) and skipped
with the reason when the device or the GPU builds are missing, so CI stays green.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _need_torch_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device (CPU-only machine or CPU torch wheel)")


def test_torch_cuda_encoder_matches_cpu(encoder):
    _need_torch_cuda()
    import copy

    from dprscope.encoders.device import bi_encoder_on_device

    qs = ["who wrote hamlet", "when did the titanic sink"]
    ref = encoder.encode_queries(qs)
    on_gpu = bi_encoder_on_device(copy.deepcopy(encoder), "cuda")
    got = on_gpu.encode_queries(qs)
    assert (ref * got).sum(1).min() >= 0.9999


def test_ort_cuda_provider_matches_cpu(encoder, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install the [gpu] extra on a CUDA machine)")
    from dprscope.encoders.onnx_backend import OrtOptions, to_onnx

    obi = to_onnx(encoder, OrtOptions(cache_dir=tmp_path, device="cuda"))
    assert obi.query.session.get_providers()[0] == "CUDAExecutionProvider"
    qs = ["who wrote hamlet", "when did the titanic sink"]
    assert (encoder.encode_queries(qs) * obi.encode_queries(qs)).sum(1).min() >= 0.999


def test_faiss_gpu_flat_and_ivfpq_match_cpu():
    from dprscope.index import gpu
    from dprscope.index.vector_index import build_vector_index

    if gpu.faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support or sees no GPU (faiss-cpu build)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = build_vector_index("flat", x, 64, len(x))
    placed, where = gpu.place_index(flat, "cuda")
    assert where.device == "cuda:0"
    _, cpu_rows = flat.search(x[:50], 10)
    _, gpu_rows = placed.search(x[:50], 10)
    assert (cpu_rows[:, 0] == gpu_rows[:, 0]).all()
    ivf = build_vector_index("ivfpq", x, 64, len(x), {"nlist": 64, "m": 16})
    placed, where = gpu.place_index(ivf, "cuda")
    assert where.device == "cuda:0"
    _, rows = placed.search(x[:50], 10)
    assert (rows[:, 0] == np.arange(50)).mean() >= 0.9


@pytest.mark.parametrize(("index_type", "floor"), [("flat", 1.0), ("ivfpq", 0.9)])
def test_serving_index_on_gpu_matches_cpu(tmp_path, index_type, floor):
    """``ServingIndex.open(device="cuda")`` (what the server does with --device) serves the same hits."""
    from dprscope.index import SearchParams, ServingIndex, gpu
    from tests.unit.index.test_serving_placement import write_imported_index

    if gpu.faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support or sees no GPU (faiss-cpu build)")
    # 10k vectors: enough for 8-bit PQ codes, the only code size FAISS GPU IVF-PQ takes.
    directory, vecs = write_imported_index(tmp_path, n=10_000, dim=64, index_type=index_type)
    cpu = ServingIndex.open(directory, device="cpu")
    placed = ServingIndex.open(directory, device="cuda")
    try:
        assert placed.placement.device == "cuda:0", placed.placement.reason
        q = vecs[:100] + 0.05 * np.random.default_rng(1).normal(size=(100, 64)).astype(np.float32)
        cpu_scores, cpu_rows = cpu.search(q, 10, SearchParams())
        gpu_scores, gpu_rows = placed.search(q, 10, SearchParams())
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cpu_rows, gpu_rows, strict=True)])
        assert overlap >= floor, overlap
        assert (cpu_rows[:, 0] == gpu_rows[:, 0]).mean() >= floor
        if index_type == "flat":
            np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-4)
    finally:
        placed.close()
        cpu.close()


def test_refined_ivfpq_on_gpu_answers_top_k_past_the_gpu_selection_limit(tmp_path):
    """top_k 200 x k_factor 16 = 3200 > FAISS GPU's 2048: served from the CPU copy, not an error."""
    from dprscope.index import SearchParams, ServingIndex, gpu
    from tests.unit.index.test_serving_placement import write_imported_index

    if gpu.faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support or sees no GPU (faiss-cpu build)")
    directory, vecs = write_imported_index(tmp_path, n=10_000, dim=64, index_type="ivfpq")
    cpu = ServingIndex.open(directory, device="cpu")
    placed = ServingIndex.open(directory, device="cuda")
    try:
        assert placed.placement.device == "cuda:0", placed.placement.reason
        _, cpu_rows = cpu.search(vecs[:4], 200, SearchParams())
        _, gpu_rows = placed.search(vecs[:4], 200, SearchParams())
        assert gpu_rows.shape == (4, 200)
        assert (gpu_rows == cpu_rows).all()
        _, small = placed.search(vecs[:4], 10, SearchParams())  # within the limit: the GPU answers
        assert (small[:, 0] == np.arange(4)).all()
    finally:
        placed.close()
        cpu.close()
