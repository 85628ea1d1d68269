"""ONNX Runtime backend: same vectors as torch, int8 close enough to retrieve with, cached exports."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from dprscope.encoders import load_bi_encoder
from dprscope.encoders import onnx_backend as ob
from dprscope.encoders.onnx_backend import OUTPUT_NAME, OnnxTextEncoder, OrtOptions, to_onnx
from dprscope.encoders.runtime import apply_backend
from dprscope.settings import Settings
from dprscope.store import PassageStore
from tests.conftest import load_nq_records
from tests.unit.encoders.test_encoders import save_tiny_dpr_pair

N_QUESTIONS = 64


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [r["question"] for r in load_nq_records(N_QUESTIONS)]


@pytest.fixture(scope="module")
def ort_fp32(encoder, onnx_cache):
    return to_onnx(encoder, OrtOptions(cache_dir=onnx_cache))


@pytest.fixture(scope="module")
def ort_int8(encoder, onnx_cache):
    return to_onnx(encoder, OrtOptions(cache_dir=onnx_cache, quantize="int8"))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_matches_torch_on_nq_questions_and_passages(encoder, ort_fp32, questions):
    assert ort_fp32.shared and isinstance(ort_fp32.query, OnnxTextEncoder)
    ref = encoder.encode_queries(questions)
    got = ort_fp32.encode_queries(questions)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert _cosines(ref, got).min() >= 0.9999
    one = ort_fp32.encode_queries(questions[:1])  # batch-1 fast path gives the same vector
    assert _cosines(ref[:1], one)[0] >= 0.9999
    titles, texts = ["Hamlet", "Paris"], ["Hamlet is a tragedy by Shakespeare.", "Paris is the capital of France."]
    assert _cosines(encoder.encode_passages(titles, texts), ort_fp32.encode_passages(titles, texts)).min() >= 0.9999


def test_torch_weights_and_fingerprint_stay_available(encoder, ort_fp32):
    """Manifests, hot-swap checks and the analysis sidecar need the torch side."""
    enc = ort_fp32.query
    assert enc.model is encoder.query.model and enc.backbone is encoder.query.backbone
    assert ort_fp32.context_fingerprint == encoder.context_fingerprint
    assert enc.config == encoder.query.config and ort_fp32.dim == encoder.dim
    assert ort_fp32.describe() == encoder.describe()


def test_int8_stays_close_enough_to_retrieve_with(encoder, ort_int8, questions, small_index, record_property):
    ref = encoder.encode_queries(questions)
    got = ort_int8.encode_queries(questions)
    cos = _cosines(ref, got)
    index = faiss.read_index(str(small_index / "index.faiss"))
    _, top_ref = index.search(ref, 10)
    _, top_got = index.search(got, 10)
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ref, top_got, strict=True)]))
    record_property("int8_cosine_mean", float(cos.mean()))
    record_property("int8_top10_overlap", overlap)
    # The int8 recipe (quantization.py) measured here: cosine mean 0.9984, min 0.9969, top-10
    # overlap 0.973 (plain per-channel int8 was ~0.993 / 0.988 / 0.9; bench/RESULTS.md).
    assert cos.mean() >= 0.998 and cos.min() >= 0.995, (cos.mean(), cos.min())
    assert overlap >= 0.96, overlap
    assert ort_int8.query.onnx_path.name.endswith(f"-{ob.int8_precision()}.onnx")


def test_outlier_smoothing_keeps_the_fp32_function(encoder, ort_fp32, questions):
    """The smoothed graph (before int8) computes the same vectors and tames the outlier channels."""
    import onnx
    import onnxruntime as ort

    from dprscope.encoders import quantization as qz

    model = onnx.load(str(ort_fp32.query.onnx_path))
    feeds = ob.calibration_feeds(encoder.query)
    groups = sorted(qz._weight_matmuls(model))
    before = qz.channel_absmax(model, feeds, groups)
    assert qz.smooth_outliers(model, feeds) >= 12  # at least the LayerNorm and GELU outputs of 6 layers
    smoothed = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = ort_fp32.query.tokenize_numpy(questions[:8])
    np.testing.assert_allclose(smoothed.run([OUTPUT_NAME], probe)[0], ort_fp32.query.run(probe), atol=1e-4)
    ratios = [b.max() / np.percentile(b, qz.OUTLIER_PERCENTILE) for b in before.values()]
    assert max(ratios) > 5  # MiniLM has real outlier channels (up to ~9x the 95th percentile)
    # What int8 has to cover after smoothing: each smoothed tensor's range shrank to its p95.
    suffix = "/outlier_smoothed"
    inputs = sorted({n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[0].endswith(suffix)})
    after = qz.channel_absmax(model, feeds, inputs)
    for name, a in after.items():
        original = before[name[: -len(suffix)]]
        level = np.percentile(original, qz.OUTLIER_PERCENTILE)
        assert a.max() <= 1.001 * level < original.max(), name


def test_outlier_scales_touch_only_outlier_channels():
    from dprscope.encoders.quantization import outlier_scales

    flat = np.linspace(1.0, 1.5, 100)
    assert outlier_scales(flat) is None  # nothing stands out: no Mul in the graph
    spiky = flat.copy()
    spiky[7] = 20.0
    s = outlier_scales(spiky)
    level = np.percentile(spiky, 95)
    assert s is not None and s[7] == pytest.approx(20.0 / level)
    assert (s[spiky <= level] == 1.0).all()  # everything up to the percentile keeps its scale
    assert np.allclose((spiky / s)[spiky > level], level)  # above it, pulled down to it
    assert outlier_scales(np.zeros(10)) is None


def test_int8_file_name_carries_the_recipe(encoder, ort_fp32, onnx_cache, tmp_path, monkeypatch):
    """An int8 file from an older recipe (or none) in the cache is never picked up."""
    import shutil

    from dprscope.encoders.quantization import RECIPE

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(ort_fp32.query.onnx_path, cache / ort_fp32.query.onnx_path.name)
    old = cache / f"{ob.cache_key(encoder.query, 'int8')}.onnx"
    old.write_bytes(b"an int8 file from the plain per-channel recipe")
    made = []

    def fake_quantize(fp32, path, feeds):
        made.append((fp32, len(feeds)))
        path.write_bytes(b"new recipe")
        return path

    monkeypatch.setattr(ob, "quantize_int8", fake_quantize)
    path = ob.ensure_onnx(encoder.query, "int8", cache)
    assert path != old and path.name.endswith(f"-int8-{RECIPE}.onnx") and path.read_bytes() == b"new recipe"
    assert made == [(cache / ort_fp32.query.onnx_path.name, len(ob.calibration_feeds(encoder.query)))]
    assert old.read_bytes().startswith(b"an int8 file")
    assert ob.ensure_onnx(encoder.query, "int8", cache) == path and len(made) == 1  # then reused


def test_cache_is_keyed_by_fingerprint_and_reused(encoder, ort_fp32, onnx_cache, monkeypatch):
    path = ort_fp32.query.onnx_path
    assert path.parent == onnx_cache and path.name.startswith(encoder.context_fingerprint)
    assert not list(onnx_cache.glob(".export-*")), "temp export dirs must not survive"
    mtime = path.stat().st_mtime_ns

    def no_export(*_a, **_k):
        raise AssertionError("a cached export was exported again")

    monkeypatch.setattr(ob, "export_onnx", no_export)
    again = to_onnx(encoder, OrtOptions(cache_dir=onnx_cache))
    assert again.query.onnx_path == path and path.stat().st_mtime_ns == mtime
    assert [o.name for o in again.query.session.get_outputs()] == [OUTPUT_NAME]


def test_dpr_pair_exports_each_side_once(tmp_path):
    import torch

    q, c, tok = save_tiny_dpr_pair(tmp_path / "dpr")
    bi = load_bi_encoder(str(tmp_path / "dpr"))
    obi = to_onnx(bi, OrtOptions(cache_dir=tmp_path / "cache"))
    assert not obi.shared and obi.query.onnx_path != obi.context.onnx_path
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 2
    with torch.no_grad():
        q_ref = q(**tok(["who wrote hamlet"], return_tensors="pt")).pooler_output.numpy()
        c_ref = c(**tok(["Hamlet", "Paris"], ["A tragedy by Shakespeare.", "Capital of France, on the Seine."],
                        padding=True, return_tensors="pt")).pooler_output.numpy()
    np.testing.assert_allclose(obi.encode_queries(["who wrote hamlet"]), q_ref, atol=1e-4)
    got = obi.encode_passages(["Hamlet", "Paris"], ["A tragedy by Shakespeare.", "Capital of France, on the Seine."])
    np.testing.assert_allclose(got, c_ref, atol=1e-4)


def test_backend_choices_are_validated(encoder):
    with pytest.raises(ValueError, match="needs backend 'onnx'"):
        Settings(index_dir=".", quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        Settings(index_dir=".", backend="onnx", quantize="int4")
    with pytest.raises(ValueError, match="needs backend 'onnx'"):
        apply_backend(encoder, backend="torch", quantize="int8")
    with pytest.raises(ValueError, match="not one of"):
        apply_backend(encoder, backend="tensorrt")
    assert apply_backend(encoder, backend="torch", device="cpu") is encoder


def test_server_with_onnx_backend_answers_search(start_server, encoder, small_index, onnx_cache):
    from dprscope_client import RetrieverClient

    query = "who sang the song i will always love you"
    index = faiss.read_index(str(small_index / "index.faiss"))
    _, rows = index.search(encoder.encode_queries([query]), 5)
    handle = start_server(backend="onnx", onnx_cache_dir=onnx_cache)
    served = handle.registry.get(handle.registry.active_name).encoder
    assert isinstance(served.query, OnnxTextEncoder)
    with RetrieverClient(handle.target) as client:
        result = client.search(query, top_k=5)
    store = PassageStore.open_readonly(small_index / "passages.sqlite")
    try:
        expected = [r.passage_id for r in store.get_rows([int(i) for i in rows[0]])]
    finally:
        store.close()
    assert [h.passage_id for h in result.hits] == expected


def test_encoder_runtime_is_the_servers_choice_as_a_value(encoder, ort_fp32, onnx_cache):
    """What SwapManager applies to loaded versions: the same apply_backend, and the torch side back."""
    from dprscope.encoders.runtime import EncoderRuntime, torch_side

    assert EncoderRuntime(device="cpu").is_identity and EncoderRuntime(device="cpu").apply(encoder) is encoder
    onnx = EncoderRuntime(backend="onnx", device="cpu", cache_dir=onnx_cache)
    assert not onnx.is_identity and onnx.precision == "fp32"
    assert EncoderRuntime(backend="onnx", quantize="int8").precision == "int8"
    served = onnx.apply(encoder)
    assert isinstance(served.query, OnnxTextEncoder) and served.query.onnx_path == ort_fp32.query.onnx_path
    weights = torch_side(served)
    assert weights.query is encoder.query and weights.shared and "backend" not in weights.extra
    assert torch_side(encoder) is encoder


def test_runtime_agreement_check_refuses_a_skewed_runtime(encoder, ort_fp32):
    from dprscope.errors import FailedPrecondition
    from dprscope.models.canary import DEFAULT_CANARY_QUERIES, canary_vectors, check_runtime_agreement

    reference = canary_vectors(encoder, DEFAULT_CANARY_QUERIES, with_context=True)
    served = canary_vectors(ort_fp32, DEFAULT_CANARY_QUERIES, with_context=True)
    assert check_runtime_agreement(reference, served, "fp32") >= 0.9999
    skewed = [v + 0.05 * np.random.default_rng(0).normal(size=v.shape).astype(np.float32) for v in served]
    with pytest.raises(FailedPrecondition, match="disagrees with the checkpoint's torch weights"):
        check_runtime_agreement(reference, skewed, "fp32")
    broken = [served[0], np.full_like(served[1], np.nan)]
    with pytest.raises(FailedPrecondition, match="non-finite"):
        check_runtime_agreement(reference, broken, "int8")
