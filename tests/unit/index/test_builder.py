from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dprscope.errors import Cancelled, FailedPrecondition, NoIndex
from dprscope.index import SearchParams, ServingIndex, build_index, read_manifest, reindex_from_store
from dprscope.jobs import CancelToken, Progress
from dprscope.store import PassageStore
from tests.shared_data import real_passages as real_rows
from tests.shared_data import write_tsv

N_PASSAGES = 96
REPO = Path(__file__).resolve().parents[3]


def _contents(index_dir: Path) -> tuple[np.ndarray, list]:
    serving = ServingIndex.open(index_dir)
    try:
        vectors = serving.vectors.reconstruct_all()
        rows = [r for batch in serving.store.iter_batches(64) for r in batch]
    finally:
        serving.close()
    return vectors, rows


def _assert_same_index(a: Path, b: Path) -> None:
    va, ra = _contents(a)
    vb, rb = _contents(b)
    assert ra == rb
    np.testing.assert_allclose(va, vb, atol=1e-5)


def test_build_layout_manifest_and_search(baseline_index, corpus_tsv, encoder):
    names = sorted(p.name for p in baseline_index.iterdir())
    assert names == ["index.faiss", "manifest.json", "passages.sqlite"]
    m = read_manifest(baseline_index)
    assert m.passages == N_PASSAGES
    assert m.dim == encoder.dim
    assert m.metric == "ip"
    assert m.encoder_fingerprint == encoder.context_fingerprint
    assert m.query_fingerprint == encoder.query_fingerprint
    assert m.index_type == "flat"
    assert m.split_words is None
    serving = ServingIndex.open(baseline_index)
    try:
        rec = serving.store.get_rows([17])[0]
        q = encoder.encode_queries([rec.title + " " + rec.text[:200]])
        _scores, rows = serving.search(q, 5, SearchParams())
        assert rows[0, 0] == 17
        assert serving.passages(rows[0])[0].passage_id == rec.passage_id
    finally:
        serving.close()


def test_finished_directory_is_returned_without_work(baseline_index, corpus_tsv, encoder):
    before = read_manifest(baseline_index)
    again = build_index(corpus_tsv, baseline_index, encoder, batch_size=16, shard_size=32)
    assert again == before


def test_other_inputs_refused_or_overwritten(tmp_path, baseline_index, encoder):
    other = write_tsv(tmp_path / "other.tsv", real_rows(20, offset=500))
    with pytest.raises(FailedPrecondition, match="fresh output directory"):
        build_index(other, baseline_index, encoder, batch_size=16, shard_size=32)
    out = tmp_path / "copy"
    build_index(other, out, encoder, shard_size=8)
    m = build_index(other, out, encoder, index_type="hnsw", shard_size=8, overwrite=True)
    assert m.index_type == "hnsw"
    assert m.passages == 20


def test_cancel_then_resume_equals_uninterrupted(tmp_path, corpus_tsv, baseline_index, encoder):
    out = tmp_path / "idx"
    token = CancelToken()
    seen: list[Progress] = []

    def progress(p: Progress) -> None:
        seen.append(p)
        if p.stage == "encode" and p.done >= 48:
            token.cancel("test")

    with pytest.raises(Cancelled):
        build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32, progress=progress, cancel=token)
    assert not (out / "manifest.json").exists()
    shards = sorted(p.name for p in (out / "shards").glob("shard_*.npy"))
    assert shards == ["shard_00000.npy"]
    assert json.loads((out / "shards" / "build.json").read_text())["shard_size"] == 32
    with pytest.raises(NoIndex):
        ServingIndex.open(out)

    resumed: list[Progress] = []
    build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32, progress=resumed.append)
    first_encode = next(p for p in resumed if p.stage == "encode")
    assert first_encode.done == 32
    assert first_encode.total == N_PASSAGES
    assert any(p.stage == "index" for p in resumed)
    assert not (out / "shards").exists()
    _assert_same_index(out, baseline_index)


def test_keyboard_interrupt_then_resume(tmp_path, corpus_tsv, baseline_index, encoder):
    out = tmp_path / "idx"

    def progress(p: Progress) -> None:
        if p.stage == "encode" and p.done >= 80:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32, progress=progress)
    assert not (out / "manifest.json").exists()
    # The store may hold rows of the unfinished shard; resume must drop them.
    build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32, keep_shards=True)
    assert sorted(p.name for p in (out / "shards").glob("*.npy"))[-1] == "shard_00002.npy"
    _assert_same_index(out, baseline_index)


def test_resume_with_changed_inputs_refused(tmp_path, corpus_tsv, encoder):
    out = tmp_path / "idx"
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        build_index(corpus_tsv, out, encoder, shard_size=32, cancel=token)
    with pytest.raises(FailedPrecondition, match="shard_size"):
        build_index(corpus_tsv, out, encoder, shard_size=16)


def test_reindex_from_store(tmp_path, baseline_index, encoder):
    out = tmp_path / "re"
    store = PassageStore.open_readonly(baseline_index / "passages.sqlite")
    try:
        m = reindex_from_store(store, out, encoder, "hnsw", None, 32, None, None)
    finally:
        store.close()
    base = read_manifest(baseline_index)
    assert m.index_type == "hnsw"
    assert m.passages == base.passages
    assert m.corpus_sha256 == base.corpus_sha256
    assert m.index_version != base.index_version
    serving = ServingIndex.open(out)
    try:
        exact = serving.search(serving.vectors.reconstruct_all()[:5], 1, SearchParams(exact=True))[1]
        assert exact[:, 0].tolist() == [0, 1, 2, 3, 4]
    finally:
        serving.close()
    va, ra = _contents(out)
    vb, rb = _contents(baseline_index)
    assert ra == rb
    np.testing.assert_allclose(va, vb, atol=1e-4)


def test_serving_refuses_inconsistent_directory(tmp_path, baseline_index):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(baseline_index, copy)
    m = read_manifest(copy)
    data = json.loads((copy / "manifest.json").read_text()) | {"passages": m.passages + 1}
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(FailedPrecondition, match="inconsistent"):
        ServingIndex.open(copy)


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path, corpus_tsv, baseline_index, encoder):
    out = tmp_path / "idx"
    code = (
        "import sys; from pathlib import Path;"
        "from dprscope.encoders import load_bi_encoder; from dprscope.index import build_index;"
        "build_index(Path(sys.argv[1]), Path(sys.argv[2]), load_bi_encoder('default'),"
        " batch_size=8, shard_size=16)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code, str(corpus_tsv), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "shards" / "shard_00001.npy").exists():
            if proc.poll() is not None:
                pytest.fail(f"builder exited early with {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("no shard written within 120 s")
            time.sleep(0.05)
        time.sleep(0.3)  # land somewhere inside the next shard
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "manifest.json").exists()
    build_index(corpus_tsv, out, encoder, batch_size=8, shard_size=16)
    va, ra = _contents(out)
    vb, rb = _contents(baseline_index)
    assert ra == rb
    np.testing.assert_allclose(va, vb, atol=1e-4)


def test_auto_index_type_is_resolved_once_passages_are_counted(tmp_path, baseline_index, corpus_tsv, encoder,
                                                               monkeypatch):
    import dprscope.index.vector_index as vi

    # The baseline (default type) is small, so auto built it flat; asking again for auto or
    # for flat finds the finished index instead of refusing "other inputs".
    assert read_manifest(baseline_index).index_type == "flat"
    before = read_manifest(baseline_index)
    assert build_index(corpus_tsv, baseline_index, encoder, index_type="flat", batch_size=16, shard_size=32) == before
    with pytest.raises(FailedPrecondition, match="other inputs"):
        build_index(corpus_tsv, baseline_index, encoder, index_type="hnsw", batch_size=16, shard_size=32)
    # Past the size threshold auto builds IVF-PQ with exact re-ranking and says so in the manifest.
    monkeypatch.setattr(vi, "AUTO_FLAT_MAX_PASSAGES", N_PASSAGES - 1)
    out = tmp_path / "auto-ivfpq"
    m = build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32)
    assert m.index_type == "ivfpq"
    assert m.index_params["refine"] is True
    assert build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32) == m
    serving = ServingIndex.open(out)
    try:
        rec = serving.store.get_rows([17])[0]
        q = encoder.encode_queries([rec.title + " " + rec.text[:200]])
        _scores, rows = serving.search(q, 5, SearchParams(exact=True))
        assert rows[0, 0] == 17
    finally:
        serving.close()
