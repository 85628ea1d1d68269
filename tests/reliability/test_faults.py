"""Faults: SIGTERM under load, kill -9 mid-build, a read-only store, crash-safe index files.

Beyond tests/e2e's basic SIGTERM check, the drain here is observed from outside the way a
load balancer sees it: health flips to NOT_SERVING first, requests already running (big
batches) finish with correct answers, new requests are refused UNAVAILABLE once the
server stops, and the process exits 0 having released its ports.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dprscope.errors import FailedPrecondition, NoIndex
from dprscope.index.serving import ServingIndex
from dprscope_client import RetrieverClient, RetrieverError
from tests.reliability._harness import DPRSCOPE, ServeProcess


# --- SIGTERM under load -------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_under_load_drains_in_flight_and_refuses_new(small_index, nq_records, tmp_path, capsys):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = ServeProcess(small_index, tmp_path / "serve.log", "--drain-seconds", "1.0", "--grace-seconds", "30")
    questions = [r["question"] for r in nq_records]
    try:
        server.wait_serving()
        with RetrieverClient(server.target, timeout=60) as c:
            expected = {q: [h.passage_id for h in c.search(q, top_k=3).hits] for q in questions}
        events: list[tuple[float, str, str]] = []  # (time, kind, code)
        lock = threading.Lock()
        stop = threading.Event()

        def small_load() -> None:
            with RetrieverClient(server.target, timeout=60) as c:
                i = 0
                while not stop.is_set():
                    q = questions[i % len(questions)]
                    i += 1
                    try:
                        ok = [h.passage_id for h in c.search(q, top_k=3).hits] == expected[q]
                        code = "OK" if ok else "WRONG"
                    except RetrieverError as exc:
                        code = exc.code.name
                    with lock:
                        events.append((time.monotonic(), "search", code))
                    if code == "UNAVAILABLE":
                        time.sleep(0.05)

        batch = (questions * 4)[:128]  # big batches: long-running in-flight work
        batch_results: list[tuple[float, float, str]] = []

        def big_batch() -> None:
            with RetrieverClient(server.target, timeout=120) as c:
                began = time.monotonic()
                try:
                    results = c.batch_search(batch, top_k=3)
                    ok = all([h.passage_id for h in r.hits] == expected[q] for q, r in zip(batch, results,
                                                                                           strict=True))
                    code = "OK" if ok else "WRONG"
                except RetrieverError as exc:
                    code = exc.code.name
                with lock:
                    batch_results.append((began, time.monotonic(), code))

        loaders = [threading.Thread(target=small_load, daemon=True) for _ in range(6)]
        for t in loaders:
            t.start()
        time.sleep(1.0)
        batches = [threading.Thread(target=big_batch, daemon=True) for _ in range(3)]
        for t in batches:
            t.start()
        time.sleep(0.3)  # the batches are in flight now
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        # a load balancer's view: health goes NOT_SERVING while the process still runs
        health_seen = "SERVING"
        with grpc.insecure_channel(server.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and server.proc.poll() is None:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="dprscope.v1.Retriever"), timeout=2)
                    health_seen = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
                except grpc.RpcError:
                    break
                if health_seen == "NOT_SERVING":
                    break
                time.sleep(0.05)
        code = server.proc.wait(timeout=120)
        exited_at = time.monotonic()
        stop.set()
        for t in [*loaders, *batches]:
            t.join(60)
        log = server.log()
        # after exit: a new request is refused, and the ports are released
        with RetrieverClient(server.target, timeout=3) as c, pytest.raises(RetrieverError) as refused:
            c.search("anyone there?", top_k=1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", server.metrics_port)) != 0, "metrics port still open"
    finally:
        server.close()

    assert code == 0, log
    assert health_seen == "NOT_SERVING", "health must flip before the server stops"
    assert "draining" in log and "stopped" in log
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    before = [c for t, _, c in events if t < sigterm_at]
    codes = {c for _, _, c in events}
    assert "WRONG" not in codes and codes <= {"OK", "UNAVAILABLE"}, codes
    assert before and set(before) == {"OK"}
    assert len(batch_results) == 3 and {c for _, _, c in batch_results} == {"OK"}, batch_results
    late = sum(1 for _, end, _ in batch_results if end > sigterm_at + 1.0)
    with capsys.disabled():
        print(f"\n[sigterm] {len(events)} searches ({sum(1 for c in before if c == 'OK')} before SIGTERM), "
              f"3 batches of 128 in flight all OK ({late} finished after the drain window), "
              f"exit {code} {exited_at - sigterm_at:.1f}s after SIGTERM")


@pytest.mark.slow
def test_stopping_under_load_never_shows_a_client_a_killed_call(start_server, nq_records):
    """Calls that reach a stopping server before it runs them are killed with CANCELLED by gRPC
    core; the client sends such reads again, so callers only ever see answers or UNAVAILABLE.
    Without the client's retry this loop showed CANCELLED in about one stop in three."""
    questions = [r["question"] for r in nq_records]
    codes: dict[str, int] = {}
    lock = threading.Lock()
    for _ in range(6):
        handle = start_server(drain_s=0.0, grace_s=30.0)
        stop = threading.Event()

        def hammer(target: str = handle.target, stop: threading.Event = stop) -> None:
            with RetrieverClient(target, timeout=60) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        c.search(questions[i % len(questions)], top_k=3)
                        code = "OK"
                    except RetrieverError as exc:
                        code = exc.code.name
                    with lock:
                        codes[code] = codes.get(code, 0) + 1
                    if code == "UNAVAILABLE":
                        time.sleep(0.05)

        loaders = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
        for t in loaders:
            t.start()
        time.sleep(0.5)
        handle.stop()
        time.sleep(0.2)
        stop.set()
        for t in loaders:
            t.join(60)
    assert codes.get("OK", 0) > 0 and set(codes) <= {"OK", "UNAVAILABLE"}, codes


# --- kill -9 during build-index, through the real CLI ------------------------------------
def _head(small_corpus: Path, out: Path, rows: int) -> Path:
    lines = small_corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return out


@pytest.mark.slow
def test_kill_9_during_cli_build_then_rerun_equals_uninterrupted(small_corpus, nq_records, encoder, tmp_path):
    from dprscope.index.builder import build_index

    corpus = _head(small_corpus, tmp_path / "corpus.tsv", 48)
    out = tmp_path / "killed"
    args = [*DPRSCOPE, "build-index", "--corpus", str(corpus), "--out", str(out), "--batch-size", "8",
            "--shard-size", "8"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "shards" / "shard_00001.npy").exists():
            assert proc.poll() is None, f"build exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no second shard within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not (out / "manifest.json").exists()
    with pytest.raises(NoIndex):
        ServingIndex.open(out)  # a killed build never looks like an index
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "48 passages" in done.stdout

    reference = tmp_path / "uninterrupted"
    build_index(corpus, reference, encoder, batch_size=8, shard_size=8)
    a, b = ServingIndex.open(out), ServingIndex.open(reference)
    try:
        queries = encoder.encode_queries([r["question"] for r in nq_records[:20]])
        sa, ra = a.search(queries, 5)
        sb, rb = b.search(queries, 5)
        assert (ra == rb).all(), "resumed index ranks differently from the uninterrupted build"
        np.testing.assert_allclose(sa, sb, atol=1e-4)
        assert [p.passage_id for p in a.passages(ra[0])] == [p.passage_id for p in b.passages(rb[0])]
    finally:
        a.close()
        b.close()


# --- the passage store is read-only at serve time -----------------------------------------
def test_serving_store_is_read_only(start_server, small_index):
    store_file = small_index / "passages.sqlite"
    digest = hashlib.sha256(store_file.read_bytes()).hexdigest()
    handle = start_server()
    with RetrieverClient(handle.target, timeout=30) as c:
        assert c.search("what is the tallest mountain", top_k=3).hits
        assert c.get_passages([c.search("rivers of europe", top_k=1).hits[0].passage_id]).passages
    store = handle.registry.get(handle.registry.active_name).index.store
    assert store.readonly
    from dprscope.store.sqlite_store import PassageRecord

    with pytest.raises(FailedPrecondition, match="read-only"):
        store.add([PassageRecord(10**9, "evil", "t", "x")])
    conn = store._conn()  # the very connection requests read through
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM passages")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO passages(row, id, title, text) VALUES (?, ?, ?, ?)", (10**9, "evil", "t", "x"))
    assert hashlib.sha256(store_file.read_bytes()).hexdigest() == digest
    assert not (small_index / "passages.sqlite-wal").exists() and not (small_index / "passages.sqlite-shm").exists()


# --- index files are written atomically -------------------------------------------------
class _Crash(BaseException):
    """A stand-in for the process dying (BaseException: no handler may swallow it)."""


def _corpus(path: Path, prefix: str, n: int = 24) -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "title": f"{prefix} {i}",
                                        "text": f"{prefix} passage {i} about subject {i % 5}"}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def _crash_before_manifest(monkeypatch) -> None:
    import dprscope.index.builder as builder

    def crash(directory, manifest):
        raise _Crash("killed between index.faiss and manifest.json")
    monkeypatch.setattr(builder, "write_manifest", crash)


def test_crash_between_index_and_manifest_never_loads(tmp_path, encoder, monkeypatch, start_server):
    from dprscope.index.builder import build_index

    corpus = _corpus(tmp_path / "a.jsonl", "a")
    out = tmp_path / "idx"
    with monkeypatch.context() as m:
        _crash_before_manifest(m)
        with pytest.raises(_Crash):
            build_index(corpus, out, encoder, batch_size=8, shard_size=8)
    assert (out / "index.faiss").exists() and not (out / "manifest.json").exists()
    assert not list(out.glob(".*tmp*")), "temp files renamed into place, not left half-written"
    with pytest.raises(NoIndex):
        ServingIndex.open(out)
    with pytest.raises(NoIndex):
        start_server(index_dir=out)  # the server refuses it instead of serving half an index
    manifest = build_index(corpus, out, encoder, batch_size=8, shard_size=8)  # the re-run completes it
    assert manifest.passages == 24
    ServingIndex.open(out).close()


def test_crash_while_overwriting_never_pairs_old_manifest_with_new_vectors(tmp_path, encoder, monkeypatch):
    from dprscope.index.builder import build_index

    out = tmp_path / "idx"
    old = build_index(_corpus(tmp_path / "a.jsonl", "a"), out, encoder, batch_size=8, shard_size=8)
    with monkeypatch.context() as m:
        _crash_before_manifest(m)
        with pytest.raises(_Crash):
            build_index(_corpus(tmp_path / "b.jsonl", "b", 30), out, encoder, batch_size=8, shard_size=8,
                        overwrite=True)
    # the old manifest went first: the directory is "no index", not "index a" over b's vectors
    with pytest.raises((NoIndex, FailedPrecondition)):
        index = ServingIndex.open(out)
        index.close()
        pytest.fail(f"a half-overwritten directory loaded as {old.index_version}")


def test_crash_while_writing_index_faiss_leaves_no_index(tmp_path, encoder, monkeypatch):
    import faiss

    import dprscope.index.vector_index as vector_index
    from dprscope.index.builder import build_index

    out = tmp_path / "idx"

    def half_write(index, path):
        Path(path).write_bytes(b"IxFI" + b"\x00" * 16)  # a torn write
        raise _Crash("killed while writing index.faiss")
    with monkeypatch.context() as m:
        m.setattr(vector_index.faiss, "write_index", half_write)
        with pytest.raises(_Crash):
            build_index(_corpus(tmp_path / "a.jsonl", "a"), out, encoder, batch_size=8, shard_size=8)
    assert not (out / "index.faiss").exists(), "a torn index.faiss took the final name"
    assert not (out / "manifest.json").exists()
    with pytest.raises(NoIndex):
        ServingIndex.open(out)
    assert faiss.write_index is not half_write
    assert build_index(_corpus(tmp_path / "a.jsonl", "a"), out, encoder, batch_size=8, shard_size=8).passages == 24
