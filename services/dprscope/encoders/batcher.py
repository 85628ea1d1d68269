"""Dynamic micro-batching of query encoding across concurrent requests.

One worker thread owns the encoder forward passes. Requests queue jobs (one or many
texts) in a bounded queue; the worker takes the first job, adds every job already
waiting for the same encoder up to ``max_batch`` texts, and encodes them together.
It waits up to ``max_wait_s`` for more work only when the previous batch held more
than one job — i.e. only under concurrency — so a lone request pays no batching delay.
A full queue raises ``Overloaded`` at once (back-pressure, never unbounded memory), and
a job whose deadline has passed is dropped before it costs a forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dprscope.encoders.text_encoder import TextEncoder
from dprscope.errors import DeadlineExceeded, Overloaded, Unavailable
from dprscope.jobs import Deadline

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT_S = 0.002
DEFAULT_QUEUE_SIZE = 256


def _wait_limit(deadline: Deadline) -> float | None:
    """How long ``encode`` and ``encode_async`` wait for a job: until the deadline, plus 50 ms of
    slack so a result finishing right at the deadline is still delivered (None: no deadline)."""
    remaining = deadline.remaining
    return None if remaining is None else max(remaining, 0.0) + 0.05


@dataclass(frozen=True)
class BatchStats:
    """What one encode batch cost; handed to an observer (metrics) after each batch."""

    jobs: int
    texts: int
    encode_s: float


class Searchable(Protocol):
    """Anything with a batched top-k search (the serving index)."""

    def search(self, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class SearchSpec:
    """Search to run on a job's vectors right after encoding, batched with its neighbours.

    Jobs that share an index and search params are searched with one FAISS call (BLAS for
    flat indexes, one pass for graph/IVF), at the largest ``k`` among them, and each job keeps
    its own prefix. Running the search on the encoder thread also keeps every compute-heavy
    call on one thread, so torch's and faiss' OpenMP pools never fight over the cores.
    """

    index: Searchable
    k: int
    params: Any
    # Per-job post-processing (passage lookup, hit building) run on the encoder thread right
    # after the search. Request threads then wake to finished results instead of all doing
    # that Python work at once while the next forward pass needs the GIL between every torch
    # op: in-process at 32 concurrent requests that contention cost 240 -> 177 QPS.
    finish: Callable[[np.ndarray, np.ndarray], Any] | None = None


@dataclass
class EncodeResult:
    vectors: np.ndarray
    queue_s: float
    encode_s: float
    batch_texts: int
    scores: np.ndarray | None = None
    rows: np.ndarray | None = None
    search_s: float = 0.0
    finished: Any = None
    finish_s: float = 0.0


@dataclass
class _Job:
    encoder: TextEncoder
    texts: Sequence[str]
    deadline: Deadline
    search: SearchSpec | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    future: Future[EncodeResult] = field(default_factory=Future)


class MicroBatcher:
    """Shares forward passes between concurrent requests; see the module docstring."""

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 observer: Callable[[BatchStats], None] | None = None) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_s >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._carry: list[_Job] = []
        # Settable later: the server attaches its metrics only after the start-up warm-up,
        # so warm-up batches never show up in the batch-size histograms.
        self.observer = observer
        self._stopped = threading.Event()
        self._last_jobs = 1
        self._active = False  # the worker holds a batch (gathering or encoding)
        self._thread = threading.Thread(target=self._run, name="dprscope-encode", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting to be encoded."""
        return self._queue.qsize() + len(self._carry)

    @property
    def busy(self) -> bool:
        """Encoding now or jobs waiting: cheap enough to poll (e.g. by background work that yields)."""
        return self._active or not self._queue.empty() or bool(self._carry)

    def submit(self, encoder: TextEncoder, texts: Sequence[str], deadline: Deadline | None = None,
               search: SearchSpec | None = None) -> Future[EncodeResult]:
        """Queue texts for encoding; raises ``Overloaded`` when the queue is full."""
        if self._stopped.is_set():
            raise Unavailable("the encoder is shutting down")
        job = _Job(encoder, texts, deadline or Deadline(), search)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(
                f"encode queue is full ({self._queue.maxsize} waiting requests); retry with backoff"
            ) from None
        return job.future

    def encode(self, encoder: TextEncoder, texts: Sequence[str], deadline: Deadline | None = None,
               search: SearchSpec | None = None) -> EncodeResult:
        """Submit and wait, honouring the deadline while waiting."""
        deadline = deadline or Deadline()
        future = self.submit(encoder, texts, deadline, search)
        try:
            return future.result(timeout=_wait_limit(deadline))
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded("deadline passed while waiting for the encoder") from None

    async def encode_async(self, encoder: TextEncoder, texts: Sequence[str], deadline: Deadline | None = None,
                           search: SearchSpec | None = None) -> EncodeResult:
        """``encode`` for an event loop: the caller awaits instead of parking a thread.

        Cancelling the awaiting task (the client went away) cancels the job too, so a job
        nobody waits for any more is skipped before it costs a forward pass.
        """
        deadline = deadline or Deadline()
        future = self.submit(encoder, texts, deadline, search)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=_wait_limit(deadline))
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded("deadline passed while waiting for the encoder") from None

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    # --- worker ------------------------------------------------------------------
    def _next_job(self, timeout: float | None) -> _Job | None:
        if self._carry:
            return self._carry.pop(0)
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _gather(self, first: _Job) -> list[_Job]:
        batch = [first]
        size = len(first.texts)
        wait_until = time.perf_counter() + (self.max_wait_s if self._last_jobs > 1 else 0.0)
        carried: list[_Job] = []
        while size < self.max_batch:
            job = self._next_job(timeout=max(0.0, wait_until - time.perf_counter()))
            if job is None:
                break
            if job.encoder is not first.encoder or size + len(job.texts) > self.max_batch:
                carried.append(job)
                if job.encoder is first.encoder:
                    break
                continue
            batch.append(job)
            size += len(job.texts)
        self._carry = carried + self._carry
        return batch

    def _run(self) -> None:
        while True:
            first = self._next_job(timeout=None)
            if first is None:
                if self._stopped.is_set():
                    self._drain_remaining()
                    return
                continue
            self._active = True
            try:
                batch = [job for job in self._gather(first) if self._still_wanted(job)]
                if not batch:
                    continue
                self._last_jobs = len(batch)
                self._encode(batch)
            finally:
                self._active = False

    def _still_wanted(self, job: _Job) -> bool:
        if job.future.cancelled():
            return False
        if job.deadline.expired:
            job.future.set_exception(DeadlineExceeded("deadline passed before the query was encoded"))
            return False
        return job.future.set_running_or_notify_cancel()

    def _encode(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        started = time.perf_counter()
        try:
            vectors = batch[0].encoder.encode(texts, batch_size=max(len(texts), 1))
        except Exception as exc:  # one bad batch fails its own requests, never the worker
            log.exception("encoding a batch of %d texts failed", len(texts))
            for job in batch:
                job.future.set_exception(exc)
            return
        encode_s = time.perf_counter() - started
        results: list[EncodeResult | BaseException] = []
        offset = 0
        for job in batch:
            n = len(job.texts)
            results.append(EncodeResult(vectors[offset:offset + n], started - job.enqueued, encode_s, len(texts)))
            offset += n
        self._search(batch, results)
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        if self.observer is not None:
            try:
                self.observer(BatchStats(len(batch), len(texts), encode_s))
            except Exception:
                log.exception("batch observer failed")

    @staticmethod
    def _search(batch: list[_Job], results: list[EncodeResult | BaseException]) -> None:
        """Run the jobs' searches, one FAISS call per (index, params) group."""
        groups: dict[tuple[int, Any], list[int]] = {}
        for i, job in enumerate(batch):
            if job.search is not None:
                groups.setdefault((id(job.search.index), job.search.params), []).append(i)
        for members in groups.values():
            spec = batch[members[0]].search
            if spec is None:  # cannot happen: only jobs with a search are grouped
                continue
            k = max(batch[i].search.k for i in members)  # type: ignore[union-attr]
            queries = np.concatenate([results[i].vectors for i in members])  # type: ignore[union-attr]
            started = time.perf_counter()
            try:
                scores, rows = spec.index.search(queries, k, spec.params)
            except Exception as exc:  # bad params fail their own group only
                for i in members:
                    results[i] = exc
                continue
            search_s = time.perf_counter() - started
            offset = 0
            for i in members:
                result = results[i]
                job_k = batch[i].search.k  # type: ignore[union-attr]
                n = len(batch[i].texts)
                result.scores = scores[offset:offset + n, :job_k]  # type: ignore[union-attr]
                result.rows = rows[offset:offset + n, :job_k]  # type: ignore[union-attr]
                result.search_s = search_s  # type: ignore[union-attr]
                offset += n
            for i in members:
                MicroBatcher._finish(batch[i], results, i)

    @staticmethod
    def _finish(job: _Job, results: list[EncodeResult | BaseException], i: int) -> None:
        """Run the job's own post-processing; its failure fails that job only."""
        finish = job.search.finish if job.search is not None else None
        result = results[i]
        if finish is None or isinstance(result, BaseException) or job.future.cancelled():
            return
        started = time.perf_counter()
        try:
            result.finished = finish(result.scores, result.rows)
        except Exception as exc:
            results[i] = exc
            return
        result.finish_s = time.perf_counter() - started

    def _drain_remaining(self) -> None:
        for job in self._carry:
            job.future.set_exception(Unavailable("the encoder is shutting down"))
        self._carry = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.set_exception(Unavailable("the encoder is shutting down"))
