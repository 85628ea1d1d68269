"""Micro-batching: shared forward passes, back-pressure, deadlines, order."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from dprscope.encoders.batcher import MicroBatcher
from dprscope.errors import DeadlineExceeded, Overloaded
from dprscope.jobs import Deadline


class CountingEncoder:
    """A real (tiny, deterministic) encoder that records its batches: vector = [len(text), index]."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts, batch_size=32):
        self.gate.wait(5)
        time.sleep(self.delay_s)
        self.batches.append(list(texts))
        return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)


def test_results_go_back_to_their_requests():
    enc = CountingEncoder()
    batcher = MicroBatcher(max_batch=8, max_wait_s=0.0, queue_size=16)
    try:
        out = batcher.encode(enc, ["a", "bbb"])
        assert out.vectors[:, 0].tolist() == [1, 3]
    finally:
        batcher.stop()


def test_concurrent_requests_share_a_forward_pass():
    enc = CountingEncoder()
    enc.gate.clear()  # hold the worker so requests pile up
    batcher = MicroBatcher(max_batch=64, max_wait_s=0.0, queue_size=64)
    try:
        futures = [batcher.submit(enc, ["x" * (i + 1)]) for i in range(10)]
        enc.gate.set()
        results = [f.result(5) for f in futures]
        assert [int(r.vectors[0, 0]) for r in results] == list(range(1, 11))
        assert len(enc.batches) < 10  # at least some requests shared a pass
        assert max(r.batch_texts for r in results) > 1
    finally:
        batcher.stop()


def test_max_batch_is_respected():
    enc = CountingEncoder()
    enc.gate.clear()
    batcher = MicroBatcher(max_batch=3, max_wait_s=0.0, queue_size=64)
    try:
        futures = [batcher.submit(enc, ["q"]) for _ in range(10)]
        enc.gate.set()
        for f in futures:
            f.result(5)
        assert all(len(b) <= 3 for b in enc.batches)
        assert sum(len(b) for b in enc.batches) == 10
    finally:
        batcher.stop()


def test_full_queue_is_back_pressure_not_memory():
    enc = CountingEncoder()
    enc.gate.clear()
    batcher = MicroBatcher(max_batch=1, max_wait_s=0.0, queue_size=2)
    try:
        accepted = []
        with pytest.raises(Overloaded, match="queue is full"):
            for _ in range(10):
                accepted.append(batcher.submit(enc, ["q"]))
        assert 2 <= len(accepted) <= 3  # queue size, plus possibly one taken by the worker
        enc.gate.set()
        for f in accepted:
            f.result(5)
    finally:
        batcher.stop()


def test_expired_requests_are_not_encoded():
    enc = CountingEncoder()
    enc.gate.clear()
    batcher = MicroBatcher(max_batch=8, max_wait_s=0.0, queue_size=8)
    try:
        blocker = batcher.submit(enc, ["first"])
        time.sleep(0.05)  # the worker is now inside the first forward pass
        late = batcher.submit(enc, ["late"], Deadline.after(0.01))
        time.sleep(0.05)
        enc.gate.set()
        blocker.result(5)
        with pytest.raises(DeadlineExceeded):
            late.result(5)
        assert all("late" not in b for b in enc.batches)
    finally:
        batcher.stop()


def test_encode_async_awaits_the_worker_and_honours_the_deadline():
    enc = CountingEncoder()
    batcher = MicroBatcher(max_batch=8, max_wait_s=0.0, queue_size=8)

    async def run():
        ok = await batcher.encode_async(enc, ["a", "bbb"])
        enc.gate.clear()  # hold the worker: the next job cannot finish before its deadline
        blocker = batcher.submit(enc, ["first"])
        await asyncio.sleep(0.05)  # the worker is now inside the first forward pass
        with pytest.raises(DeadlineExceeded, match="waiting for the encoder"):
            await batcher.encode_async(enc, ["late"], Deadline.after(0.05))
        enc.gate.set()
        return ok, blocker

    try:
        ok, blocker = asyncio.run(run())
        assert ok.vectors[:, 0].tolist() == [1, 3]
        blocker.result(5)
        time.sleep(0.05)
        assert all("late" not in b for b in enc.batches)
    finally:
        batcher.stop()


def test_a_cancelled_async_wait_drops_its_job_before_encoding():
    """The client went away while queued: its forward pass is never paid for."""
    enc = CountingEncoder()
    enc.gate.clear()
    batcher = MicroBatcher(max_batch=1, max_wait_s=0.0, queue_size=8)

    async def run():
        blocker = batcher.submit(enc, ["first"])
        await asyncio.sleep(0.05)  # the worker is now inside the first forward pass
        waiting = asyncio.ensure_future(batcher.encode_async(enc, ["gone"]))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        enc.gate.set()
        return await asyncio.wrap_future(blocker), await batcher.encode_async(enc, ["after"])

    try:
        first, after = asyncio.run(run())
        assert first.vectors[0, 0] == 5 and after.vectors[0, 0] == 5
        assert enc.batches == [["first"], ["after"]]
    finally:
        batcher.stop()


def test_a_failing_batch_fails_only_its_requests():
    class Failing(CountingEncoder):
        def encode(self, texts, batch_size=32):
            raise RuntimeError("boom")

    batcher = MicroBatcher(max_batch=8, max_wait_s=0.0, queue_size=8)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.encode(Failing(), ["q"])
        assert batcher.encode(CountingEncoder(), ["ok"]).vectors.shape == (1, 2)
    finally:
        batcher.stop()


class ToyIndex:
    """A real searchable: inner product against a fixed matrix."""

    def __init__(self) -> None:
        self.matrix = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)

    def search(self, queries, k, params):
        scores = queries @ self.matrix.T
        rows = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, rows, axis=1), rows


def test_finish_runs_on_the_encoder_thread_per_job():
    from dprscope.encoders.batcher import SearchSpec

    enc = CountingEncoder()
    enc.gate.clear()
    index = ToyIndex()
    threads: list[str] = []

    def finish_for(tag: str):
        def finish(scores, rows):
            threads.append(threading.current_thread().name)
            return (tag, rows.tolist())
        return finish

    def failing(scores, rows):
        raise ValueError("store unavailable")

    batcher = MicroBatcher(max_batch=64, max_wait_s=0.0, queue_size=64)
    try:
        good = [batcher.submit(enc, ["x" * (i + 1)], None, SearchSpec(index, 2, None, finish=finish_for(f"job{i}")))
                for i in range(3)]
        bad = batcher.submit(enc, ["yy"], None, SearchSpec(index, 2, None, finish=failing))
        plain = batcher.submit(enc, ["zzz"], None, SearchSpec(index, 1, None))
        enc.gate.set()
        results = [f.result(5) for f in good]
        assert [r.finished[0] for r in results] == ["job0", "job1", "job2"]
        assert all(r.finished[1] == r.rows.tolist() for r in results)
        assert all(r.finish_s >= 0 for r in results)
        assert set(threads) == {"dprscope-encode"}
        with pytest.raises(ValueError, match="store unavailable"):
            bad.result(5)
        assert plain.result(5).finished is None and plain.result(5).rows.shape == (1, 1)
    finally:
        batcher.stop()


def _prime(batcher: MicroBatcher, enc: CountingEncoder, jobs: int) -> None:
    """Leave one batch of ``jobs`` requests in the batcher's recent history (concurrent load)."""
    enc.gate.clear()
    futures = [batcher.submit(enc, [f"primer {i}"]) for i in range(jobs)]
    enc.gate.set()
    for f in futures:
        f.result(5)
    enc.batches.clear()


def test_a_lone_caller_never_waits_for_company():
    enc = CountingEncoder()
    batcher = MicroBatcher(max_batch=64, max_wait_s=2.0, queue_size=64)
    try:
        for i in range(5):
            started = time.perf_counter()
            batcher.encode(enc, [f"q{i}"])
            assert time.perf_counter() - started < 1.0  # far below the 2 s it would wait under load
        assert enc.batches == [[f"q{i}"] for i in range(5)]
    finally:
        batcher.stop()


def test_the_wait_for_company_ends_at_max_wait():
    enc = CountingEncoder()
    batcher = MicroBatcher(max_batch=64, max_wait_s=0.2, queue_size=64)
    try:
        _prime(batcher, enc, 4)
        started = time.perf_counter()
        batcher.encode(enc, ["alone"])  # the last batch was shared, but nobody else comes
        waited = time.perf_counter() - started
        assert waited >= 0.18
        assert enc.batches == [["alone"]]
    finally:
        batcher.stop()
