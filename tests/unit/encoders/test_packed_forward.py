"""The padding-free forward ``encode`` runs: the library forward's vectors, for every model kind it takes.

Each test encodes the same mixed-length batch twice on one encoder, once with the packed
forward and once with the library forward (``packed_forward_enabled``), and counts the
library forward's calls with a real forward hook to prove which path ran.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dprscope.encoders import load_bi_encoder
from dprscope.encoders import text_encoder as te
from dprscope.encoders.packed_forward import PackedBertForward
from dprscope.encoders.text_encoder import EncoderConfig, TextEncoder
from tests.shared_data import real_passages
from tests.unit.encoders.test_encoders import save_tiny_dpr_pair
from tests.unit.models.checkpoint_factory import patch_tensors, widened_model, write_tiny_bert

# 2 to ~40 tokens, plus one cut at the model's max length: every batch below is padded.
QUERIES = ["x", "who got the first nobel prize in physics", "when was the eiffel tower built and by whom",
           "what is the longest river that flows through more than three countries in south america today",
           "Ünïcödé query — with dashes", "long " * 400]


def _library_calls(encoder: TextEncoder) -> list[int]:
    calls: list[int] = []
    encoder.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _both_ways(encoder: TextEncoder, encode) -> tuple[np.ndarray, np.ndarray]:
    """``encode()`` with the packed forward, then with the library forward."""
    calls = _library_calls(encoder)
    encoder.packed_forward_enabled = True
    assert encoder.uses_packed_forward
    calls.clear()  # the one-off check ran the library forward once
    packed = encode()
    assert calls == [], "the packed path must not run the library forward"
    encoder.packed_forward_enabled = False
    library = encode()
    assert calls, "the switch must fall back to the library forward"
    encoder.packed_forward_enabled = True
    return packed, library


def test_default_model_queries_and_passages_match_the_library_forward(encoder):
    from dprscope.encoders.loading import default_model_dir, load_sentence_transformers_dir

    fresh = load_sentence_transformers_dir(default_model_dir())  # its own hooks, not the session encoder's
    rows = real_passages(12)
    texts, titles = [r[2] for r in rows], [r[1] for r in rows]
    packed_q, library_q = _both_ways(fresh.query, lambda: fresh.encode_queries(QUERIES, batch_size=len(QUERIES)))
    packed_p, library_p = _both_ways(fresh.context, lambda: fresh.encode_passages(titles, texts, batch_size=5))
    np.testing.assert_allclose(packed_q, library_q, atol=1e-5)
    np.testing.assert_allclose(packed_p, library_p, atol=1e-5)
    np.testing.assert_allclose(packed_q, encoder.encode_queries(QUERIES), atol=1e-5)


def test_one_unpadded_query_takes_the_packed_path_too():
    from dprscope.encoders.loading import default_model_dir, load_sentence_transformers_dir

    fresh = load_sentence_transformers_dir(default_model_dir())
    packed, library = _both_ways(fresh.query, lambda: fresh.encode_queries([QUERIES[1]]))
    np.testing.assert_allclose(packed, library, atol=1e-5)


@pytest.mark.parametrize("projection_dim", [0, 8])
def test_dpr_pair_with_and_without_projection(tmp_path, projection_dim):
    from transformers import DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    save_tiny_dpr_pair(tmp_path)
    if projection_dim:
        torch.manual_seed(3)
        config = DPRConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=128, projection_dim=projection_dim)
        DPRQuestionEncoder(config).save_pretrained(tmp_path / "question_encoder")
        DPRContextEncoder(config).save_pretrained(tmp_path / "context_encoder")
    bi = load_bi_encoder(str(tmp_path))
    assert bi.dim == (projection_dim or 32)
    rows = real_passages(6)
    texts, titles = [r[2] for r in rows], [r[1] for r in rows]
    packed_q, library_q = _both_ways(bi.query, lambda: bi.encode_queries(QUERIES[:5], batch_size=5))
    # DPR encodes passages as a (title, text) pair: token type ids 0 and 1 in one batch.
    packed_p, library_p = _both_ways(bi.context, lambda: bi.encode_passages(titles, texts, batch_size=6))
    np.testing.assert_allclose(packed_q, library_q, atol=1e-5)
    np.testing.assert_allclose(packed_p, library_p, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_plain_bert_every_pooling(tmp_path, pooling):
    bi = load_bi_encoder(str(write_tiny_bert(tmp_path)), pooling=pooling)
    packed, library = _both_ways(bi.query, lambda: bi.encode_queries(QUERIES[:5], batch_size=5))
    np.testing.assert_allclose(packed, library, atol=1e-5)


def test_transformer_patcher_widened_layers_run_as_loaded(tmp_path):
    base = load_bi_encoder(str(write_tiny_bert(tmp_path)), pooling="mean").query
    model = widened_model(base.model, 1, patch_tensors(1, extra=3, hidden=32, scale=2.0))
    patched = TextEncoder(model, base.tokenizer, base.config, name="patched")
    packed, library = _both_ways(patched, lambda: patched.encode(QUERIES[:5], batch_size=5))
    np.testing.assert_allclose(packed, library, atol=1e-5)
    assert not np.allclose(packed, base.encode(QUERIES[:5], batch_size=5), atol=1e-4)  # the patch is live


def test_models_it_does_not_reproduce_use_the_library_forward(tmp_path, caplog):
    from transformers import BertConfig, BertModel

    class CustomBert(BertModel):
        """A subclass may change forward in any way: not ours to reproduce."""

    tiny = load_bi_encoder(str(write_tiny_bert(tmp_path)), pooling="mean").query
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    for model in (CustomBert(config), BertModel(BertConfig(**{**config.to_dict(), "is_decoder": True}))):
        assert PackedBertForward.for_model(model) is None
        caplog.clear()
        encoder = TextEncoder(model.eval(), tiny.tokenizer, EncoderConfig(pooling="mean", normalize=False))
        with caplog.at_level(logging.INFO, logger="dprscope.encoders.text_encoder"):
            assert not encoder.uses_packed_forward
        assert "library forward" in caplog.text
        with torch.inference_mode():
            expected = encoder.forward_features(encoder.tokenize(QUERIES[:3])).numpy()
        np.testing.assert_allclose(encoder.encode(QUERIES[:3], batch_size=3), expected, atol=1e-5)


def test_a_packed_forward_that_disagrees_is_never_used(tmp_path, monkeypatch, caplog):
    bi = load_bi_encoder(str(write_tiny_bert(tmp_path)), pooling="mean")
    monkeypatch.setattr(te, "PACKED_CHECK_TOLERANCE", -1.0)  # no difference passes: the check must refuse
    calls = _library_calls(bi.query)
    with caplog.at_level(logging.WARNING, logger="dprscope.encoders.text_encoder"):
        assert not bi.query.uses_packed_forward
    assert "differs from the library forward" in caplog.text
    calls.clear()
    bi.encode_queries(QUERIES[:3])
    assert calls == [1]
