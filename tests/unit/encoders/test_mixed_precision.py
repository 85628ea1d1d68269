"""``--quantize bf16``: torch autocast on native-bf16 hardware, fp32 (logged) elsewhere."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dprscope.encoders import mixed_precision as mp
from dprscope.encoders.runtime import EncoderRuntime, apply_backend, torch_side
from dprscope.settings import Settings
from tests.shared_data import real_passages

QUESTIONS = ["who wrote hamlet", "when did the titanic sink", "what is the capital of australia",
             "how many players are on a football team", "who painted the mona lisa"]


def _need_native_bf16() -> None:
    ok, why = mp.native_bf16("cpu")
    if not ok:
        pytest.skip(f"no native bf16 here, so --quantize bf16 serves fp32 ({why}); the fallback is tested below")


def test_bf16_follows_fp32_and_leaves_the_input_alone(encoder):
    _need_native_bf16()
    rows = real_passages(16)
    texts, titles = [r[2] for r in rows], [r[1] for r in rows]
    ref_q, ref_p = encoder.encode_queries(QUESTIONS), encoder.encode_passages(texts, titles)
    served = apply_backend(encoder, backend="torch", quantize="bf16", device="cpu")
    assert isinstance(served.query, mp.AutocastTextEncoder) and mp.bf16_in_use(served)
    assert served.shared and served.extra["precision"] == "bf16"
    # Same weights: same fingerprints, so an fp32-built index still matches and analysis sees fp32.
    assert served.query_fingerprint == encoder.query_fingerprint
    assert served.context_fingerprint == encoder.context_fingerprint
    got_q, got_p = served.encode_queries(QUESTIONS), served.encode_passages(texts, titles)
    assert got_q.dtype == np.float32 and got_p.shape == ref_p.shape
    assert (got_q * ref_q).sum(1).min() >= 0.9995
    assert (got_p * ref_p).sum(1).min() >= 0.9995
    assert not np.array_equal(got_p, ref_p)  # it really computed in bf16
    # The input encoder is untouched and the torch side is the fp32 original.
    np.testing.assert_array_equal(encoder.encode_queries(QUESTIONS), ref_q)
    assert torch_side(served).query is encoder.query


def test_without_native_bf16_the_encoder_stays_fp32_and_says_why(encoder, monkeypatch, caplog):
    monkeypatch.setattr(mp, "native_bf16", lambda device: (False, "no AMX or AVX512-BF16 on this CPU"))
    with caplog.at_level(logging.WARNING, logger="dprscope.encoders.mixed_precision"):
        served = apply_backend(encoder, backend="torch", quantize="bf16", device="cpu")
    assert served is encoder
    assert "serving fp32 instead" in caplog.text and "AVX512-BF16" in caplog.text


def test_bf16_is_a_torch_precision(encoder):
    with pytest.raises(ValueError, match="needs backend 'torch'"):
        apply_backend(encoder, backend="onnx", quantize="bf16")
    with pytest.raises(ValueError, match="needs backend 'torch'"):
        Settings(index_dir=".", backend="onnx", quantize="bf16")
    assert Settings(index_dir=".", quantize="bf16").quantize == "bf16"
    runtime = EncoderRuntime(quantize="bf16", device="cpu")
    # Not the identity: versions loaded through ModelAdmin get bf16 too, and their canary
    # compares the bf16 runtime against the fp32 weights at the fp32 agreement floor.
    assert runtime.precision == "bf16" and not runtime.is_identity


def test_server_on_bf16_answers_like_fp32(start_server, encoder, small_index):
    from dprscope.index import SearchParams, ServingIndex
    from dprscope_client import RetrieverClient

    _need_native_bf16()
    handle = start_server(quantize="bf16")
    served = handle.registry.get(handle.registry.active_name).encoder
    assert mp.bf16_in_use(served)
    index = ServingIndex.open(small_index)
    try:
        with RetrieverClient(handle.target) as client:
            for question in QUESTIONS:
                _, rows = index.search(encoder.encode_queries([question]), 5, SearchParams())
                expected = [p.passage_id for p in index.passages(rows[0])]
                got = [h.passage_id for h in client.search(question, top_k=5).hits]
                assert got[:3] == expected[:3] and len(set(got) & set(expected)) >= 4
    finally:
        index.close()


def test_build_index_with_bf16_records_it_and_serves_fp32_queries(tmp_path, encoder):
    """``dprscope build-index --quantize bf16``: bf16 passages, same fingerprints, fp32 queries still find them."""
    from dprscope.cli import main
    from dprscope.index import SearchParams, ServingIndex, read_manifest
    from tests.shared_data import write_tsv

    _need_native_bf16()
    rows = real_passages(48, offset=200)
    corpus = write_tsv(tmp_path / "corpus.tsv", rows)
    out = tmp_path / "bf16-index"
    assert main(["build-index", "--corpus", str(corpus), "--out", str(out), "--quantize", "bf16",
                 "--batch-size", "16"]) == 0
    manifest = read_manifest(out)
    assert manifest.encoder["precision"] == "bf16" and manifest.index_type == "flat"
    assert manifest.encoder_fingerprint == encoder.context_fingerprint
    serving = ServingIndex.open(out)
    try:
        fp32 = encoder.encode_passages([r[2] for r in rows], [r[1] for r in rows])
        stored = serving.vectors.reconstruct_all()
        assert (stored * fp32).sum(1).min() >= 0.9995
        q = encoder.encode_queries([rows[7][2] + " " + rows[7][1][:150]])
        _, found = serving.search(q, 1, SearchParams())
        assert serving.passages(found[0])[0].passage_id == rows[7][0]
    finally:
        serving.close()
