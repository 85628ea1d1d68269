from __future__ import annotations

import pickle

import numpy as np
import pytest

from dprscope.errors import InvalidArgument, PermissionDenied
from dprscope.index import SearchParams, ServingIndex, import_embeddings, read_manifest
from tests.shared_data import real_passages, write_tsv

DIM = 16


@pytest.fixture
def dpr_files(tmp_path):
    rows = real_passages(30)
    corpus = write_tsv(tmp_path / "psgs_w100.tsv", rows)
    rng = np.random.default_rng(0)
    ids = [r[0] for r in rows]
    vecs = rng.normal(size=(len(ids) + 2, DIM)).astype(np.float32)
    shard0 = [(f"wiki:{pid}", vecs[i]) for i, pid in enumerate(ids[:20])]
    shard1 = [(pid, vecs[20 + i]) for i, pid in enumerate(ids[20:])]
    shard1 += [("not-in-corpus-1", vecs[-2]), ("not-in-corpus-2", vecs[-1])]
    files = []
    for k, shard in enumerate((shard0, shard1)):
        path = tmp_path / f"wikipedia_passages_{k}.pkl"
        path.write_bytes(pickle.dumps(shard))
        files.append(path)
    return files, corpus, ids, vecs


def test_refuses_without_trust(tmp_path, dpr_files):
    files, corpus, _, _ = dpr_files
    with pytest.raises(PermissionDenied, match="trust-pickle"):
        import_embeddings(files, corpus, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_import_joins_text_and_skips_unknown_ids(tmp_path, dpr_files, index_type):
    files, corpus, ids, vecs = dpr_files
    out = tmp_path / "idx"
    m = import_embeddings(files, corpus, out, index_type=index_type, trust_pickle=True)
    assert m.passages == 30
    assert m.dim == DIM
    assert m.encoder_fingerprint.startswith("imported:")
    assert m.extra["skipped_missing_ids"] == 2
    assert read_manifest(out) == m
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "manifest.json", "passages.sqlite"]
    serving = ServingIndex.open(out)
    try:
        _, rows = serving.search(vecs[:30], 1, SearchParams(exact=True))
        assert rows[:, 0].tolist() == list(range(30))
        recs = serving.store.get_rows([0, 25])
        assert [r.passage_id for r in recs] == [ids[0], ids[25]]
        assert recs[0].text
    finally:
        serving.close()
    again = import_embeddings(files, corpus, out, index_type=index_type, trust_pickle=True)
    assert again == m


def test_encoder_info_and_no_matching_ids(tmp_path, dpr_files):
    files, corpus, _, _ = dpr_files
    info = {"kind": "dpr", "context_fingerprint": "c" * 64, "query_fingerprint": "q" * 64, "dim": DIM}
    m = import_embeddings(files, corpus, tmp_path / "a", encoder_info=info, trust_pickle=True)
    assert m.encoder_fingerprint == "c" * 64
    assert m.query_fingerprint == "q" * 64
    other = write_tsv(tmp_path / "other.tsv", real_passages(5, offset=1000))
    with pytest.raises(InvalidArgument, match="none of the"):
        import_embeddings(files, other, tmp_path / "b", trust_pickle=True)
