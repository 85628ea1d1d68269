"""ModelAdmin on an ONNX Runtime server: loaded versions serve on the server's runtime, not torch.

A real server on 127.0.0.1 started with ``backend="onnx"`` loads a checkpoint over gRPC,
activates it, and must then serve it through an ONNX encoder whose Search hits and scores
agree with the torch encoder of the same checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest

from dprscope.encoders import load_bi_encoder
from dprscope.encoders.onnx_backend import OnnxTextEncoder, int8_precision
from dprscope.index import SearchParams, ServingIndex
from dprscope_client import AdminClient, RetrieverClient
from tests.unit.models import checkpoint_factory as cf

TOKEN = "runtime-admin-token"
QUESTIONS = cf.SWAP_QUESTIONS


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-checkpoints")
    cf.write_edited_model(root / "edited_full", scale=1.5)
    cf.write_delta(root / "query_edit.safetensors", scale=1.5)
    return root


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime-onnx-cache")


@pytest.fixture(scope="module")
def edited_torch(ckpt_root):
    """The same checkpoint on torch: the reference the served ONNX version must agree with."""
    return load_bi_encoder(str(ckpt_root / "edited_full"))


def _expected(small_index, torch_bi, question: str, k: int = 5) -> tuple[list[str], np.ndarray]:
    index = ServingIndex.open(small_index)
    try:
        scores, rows = index.search(torch_bi.encode_queries([question]), k, SearchParams())
        return [p.passage_id for p in index.passages(rows[0])], scores[0]
    finally:
        index.close()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_full_checkpoint_loaded_on_onnx_server_serves_on_onnx(start_server, ckpt_root, onnx_cache, small_index,
                                                              edited_torch):
    handle = start_server(backend="onnx", onnx_cache_dir=onnx_cache, admin_token=TOKEN, checkpoint_root=ckpt_root)
    with AdminClient(handle.target, TOKEN, timeout=300) as admin, RetrieverClient(handle.target, timeout=60) as client:
        loaded = admin.load("edited_full", version="edited", kind="FULL")
        assert loaded.state == "READY", loaded.error
        assert loaded.canary.mean_topk_overlap < 1.0  # the canary still sees the weight edit (torch vs torch)
        # the edit changes the context encoder too: serve it against the old index, labelled stale
        assert admin.activate("edited", allow_stale_index=True).state == "ACTIVE"

        version = handle.registry.get("edited")
        served = version.encoder
        assert served.shared and isinstance(served.query, OnnxTextEncoder)
        assert served.query.precision == "fp32" and served.query.onnx_path.parent == onnx_cache
        assert served.query_fingerprint == edited_torch.query_fingerprint  # same weights, other runtime
        assert version.details["backend"] == "onnx" and version.details["runtime_min_cosine"] >= 0.999

        cos = _cosines(served.encode_queries(QUESTIONS), edited_torch.encode_queries(QUESTIONS))
        assert cos.min() >= 0.9999, cos
        for question in QUESTIONS:
            result = client.search(question, top_k=5)
            assert result.model_version == "edited"
            ids, scores = _expected(small_index, edited_torch, question)
            assert [h.passage_id for h in result.hits] == ids
            np.testing.assert_allclose([h.score for h in result.hits], scores, atol=1e-3)


def test_delta_loaded_on_int8_server_is_quantised_like_the_server(start_server, ckpt_root, onnx_cache, small_index,
                                                                  edited_torch):
    handle = start_server(backend="onnx", quantize="int8", onnx_cache_dir=onnx_cache, admin_token=TOKEN,
                          checkpoint_root=ckpt_root)
    with AdminClient(handle.target, TOKEN, timeout=300) as admin, RetrieverClient(handle.target, timeout=60) as client:
        loaded = admin.load("query_edit.safetensors", version="q8", kind="DELTA", role="QUERY")
        assert loaded.state == "READY", loaded.error
        assert admin.activate("q8").state == "ACTIVE"  # query-only: the index still matches

        version = handle.registry.get("q8")
        served, base = version.encoder, handle.registry.get("v1").encoder
        assert isinstance(served.query, OnnxTextEncoder) and served.query.precision == "int8"
        assert served.query.onnx_path.name.endswith(f"-{int8_precision()}.onnx")
        assert served.context is base.context  # the unchanged side keeps the server's int8 session
        assert version.details["precision"] == "int8" and version.details["runtime_min_cosine"] >= 0.98

        # The delta scales the same tensor as edited_full, so the torch query sides are equal.
        assert served.query_fingerprint == edited_torch.query_fingerprint
        cos = _cosines(served.encode_queries(QUESTIONS), edited_torch.encode_queries(QUESTIONS))
        assert cos.min() >= 0.99, cos
        top1 = 0
        for question in QUESTIONS:
            result = client.search(question, top_k=5)
            assert result.model_version == "q8"
            ids, scores = _expected(small_index, edited_torch, question)
            top1 += result.hits[0].passage_id == ids[0]
            assert len(set(ids) & {h.passage_id for h in result.hits}) >= 3
            np.testing.assert_allclose([h.score for h in result.hits], scores, atol=0.03)
        assert top1 >= len(QUESTIONS) - 1
