"""Encoders against their references: sentence-transformers, DPR, plain HF pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dprscope.encoders import load_bi_encoder
from dprscope.encoders.loading import default_model_dir
from dprscope.errors import InvalidArgument, NotFound

QUERIES = ["who got the first nobel prize in physics", "x", "long " * 400, "Ünïcödé query — with dashes"]


def test_default_model_matches_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_dir()), device="cpu")
    ours = encoder.encode_queries(QUERIES)
    theirs = reference.encode(QUERIES, convert_to_numpy=True)
    assert ours.shape == (len(QUERIES), 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_default_model_truncates_at_its_max_length(encoder):
    assert encoder.query.config.max_length == 256
    features = encoder.query.tokenize(["word " * 1000])
    assert features["input_ids"].shape[1] == 256


def test_batch_order_is_restored(encoder):
    batched = encoder.encode_queries(QUERIES, batch_size=2)
    single = np.stack([encoder.encode_queries([q])[0] for q in QUERIES])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_fingerprint_is_stable_and_shared(encoder):
    assert encoder.shared
    assert encoder.query_fingerprint == encoder.context_fingerprint
    assert len(encoder.context_fingerprint) == 64


def _tiny_bert_dir(tmp_path, hidden=32):
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model = BertModel(config).eval()
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(default_model_dir())).save_pretrained(tmp_path)
    return model


def test_plain_hf_dir_with_pooling_choice(tmp_path):
    from transformers import AutoTokenizer

    model = _tiny_bert_dir(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    features = tok(["hello world"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**features).last_hidden_state
    cls_bi = load_bi_encoder(str(tmp_path), pooling="cls")
    mean_bi = load_bi_encoder(str(tmp_path), pooling="mean")
    np.testing.assert_allclose(cls_bi.encode_queries(["hello world"])[0], hidden[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(mean_bi.encode_queries(["hello world"])[0], hidden[0].mean(0).numpy(), atol=1e-5)
    assert cls_bi.kind == "hf" and cls_bi.dim == 32


def save_tiny_dpr_pair(root):
    """A tiny random DPR question/context pair, saved as save_pretrained writes it."""
    from transformers import AutoTokenizer, DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    torch.manual_seed(1)
    config = DPRConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128)
    q = DPRQuestionEncoder(config).eval()
    torch.manual_seed(2)
    c = DPRContextEncoder(config).eval()
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    q.save_pretrained(root / "question_encoder")
    c.save_pretrained(root / "context_encoder")
    tok.save_pretrained(root / "question_encoder")
    tok.save_pretrained(root / "context_encoder")
    return q, c, tok


def test_dpr_pair_round_trip(tmp_path):
    q, c, tok = save_tiny_dpr_pair(tmp_path)
    bi = load_bi_encoder(f"dpr:{tmp_path / 'question_encoder'},{tmp_path / 'context_encoder'}")
    same = load_bi_encoder(str(tmp_path))
    assert bi.kind == "dpr" and not bi.shared and bi.dim == 32
    assert bi.context_fingerprint == same.context_fingerprint != bi.query_fingerprint
    with torch.no_grad():
        q_ref = q(**tok(["who wrote hamlet"], return_tensors="pt")).pooler_output[0].numpy()
        pair = tok(["Hamlet"], ["Hamlet is a tragedy by Shakespeare."], return_tensors="pt")
        c_ref = c(**pair).pooler_output[0].numpy()
    np.testing.assert_allclose(bi.encode_queries(["who wrote hamlet"])[0], q_ref, atol=1e-5)
    np.testing.assert_allclose(bi.encode_passages(["Hamlet"], ["Hamlet is a tragedy by Shakespeare."])[0],
                               c_ref, atol=1e-5)


def test_bad_specs_are_clear(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        load_bi_encoder(str(tmp_path / "missing"))
    with pytest.raises(InvalidArgument, match="neither"):
        load_bi_encoder(str(tmp_path))
    with pytest.raises(InvalidArgument, match="dpr:QUESTION_DIR,CONTEXT_DIR"):
        load_bi_encoder("dpr:only-one")
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text('[{"idx": 0, "path": "", "type": "os.system"}]')
    with pytest.raises(InvalidArgument, match="not supported"):
        load_bi_encoder(str(tmp_path / "st"))
