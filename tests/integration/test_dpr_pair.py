"""A DPR question/context pair end to end: saved dirs -> index -> server -> same scores as torch."""

from __future__ import annotations

import numpy as np
import torch

from dprscope.encoders import load_bi_encoder
from dprscope.index.builder import build_index
from dprscope_client import RetrieverClient
from tests.shared_data import real_passages, write_tsv
from tests.unit.encoders.test_encoders import save_tiny_dpr_pair


def test_dpr_pair_serves_inner_product_of_pooled_outputs(tmp_path, start_server):
    q_model, c_model, tok = save_tiny_dpr_pair(tmp_path / "dpr")
    spec = f"dpr:{tmp_path / 'dpr' / 'question_encoder'},{tmp_path / 'dpr' / 'context_encoder'}"
    bi = load_bi_encoder(spec)
    passages = real_passages(60)
    write_tsv(tmp_path / "corpus.tsv", passages, header=True)
    manifest = build_index(tmp_path / "corpus.tsv", tmp_path / "index", bi, index_type="flat", batch_size=16)
    assert manifest.dim == 32 and manifest.encoder_fingerprint == bi.context_fingerprint

    query = "who wrote the declaration of independence"
    with torch.no_grad():
        qv = q_model(**tok([query], return_tensors="pt")).pooler_output[0].numpy()
        titles = [p[2] for p in passages]
        texts = [p[1] for p in passages]
        pv = c_model(**tok(titles, texts, padding=True, truncation=True, max_length=128,
                           return_tensors="pt")).pooler_output.numpy()
    scores = pv @ qv
    expected = [passages[i][0] for i in np.argsort(-scores)[:5]]

    handle = start_server(index_dir=tmp_path / "index", encoder_override=bi, model=spec)
    with RetrieverClient(handle.target) as client:
        result = client.search(query, top_k=5)
        info = client.index_info()
    assert [h.passage_id for h in result.hits] == expected
    np.testing.assert_allclose([h.score for h in result.hits], np.sort(scores)[::-1][:5], rtol=1e-4, atol=1e-4)
    assert info.dim == 32 and info.encoder_fingerprint == bi.context_fingerprint
