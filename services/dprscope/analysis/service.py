"""Running analysis jobs for the sidecar: admission, leases, data-root confinement, streaming.

``dprscope.analysis``'s verbs are plain functions; a server needs more around them, and
all of it is domain policy, so it lives here rather than in the servicer:

* **Admission** (``JobGate``): at most ``concurrency`` jobs run and ``queue`` wait; the
  next one is refused at once with ``Overloaded`` (RESOURCE_EXHAUSTED) instead of piling
  up. A job waiting in the queue still honours its ``CancelToken`` and ``Deadline``.
* **Same weights:** a job holds a registry lease for its whole life and passes the
  leased ``BiEncoder`` to the verb; nothing is copied or changed (the verbs' hooks are
  thread-scoped and removed in ``finally``).
* **Own threads:** the job body runs on the service's executor (``concurrency`` workers),
  so the handler thread is free to stream the job's ``Progress`` while it runs, and a
  cancelled call stops the job at its next chunk. The handler always waits for the job
  to finish before it releases the lease and the slot, so "running" means running.
* **Server-side files** must resolve (symlinks followed) inside ``data_root``.
* **Search first** (``yield_to_serving``, on by default): both compete for the same cores
  and torch's intra-op pool, so analysis threads run at a lower OS priority
  (``lower_thread_priority``, Linux per-thread nice, inherited by the OpenMP workers they
  start), and between chunks of interpolation steps an attribution waits, bounded, while
  ``serving_busy()`` says Search work is pending (``ServingYield``). Neither touches a
  tensor, so results are the same; a job only takes longer while Search is busy.

``run`` yields ``Progress`` objects and then the result; ``dprscope.api.analysis``
turns both into protobuf.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dprscope.analysis.activation_stats import QueryPassagePair, activation_stats, pairs_from_records
from dprscope.analysis.attribution import (
    DEFAULT_N_STEPS,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_NEURONS,
    attribute,
    resolve_layers,
    resolve_sublayers,
    validate_n_steps,
    validate_threshold,
)
from dprscope.analysis.data import Context, DprRecord, load_dpr_records
from dprscope.analysis.probing import DEFAULT_N_PASSAGES, probe
from dprscope.analysis.results import ActivationStatsResult, AttributionResult, ProbeResult
from dprscope.compute_thread import run_in_fresh_thread
from dprscope.errors import (
    Cancelled,
    DeadlineExceeded,
    DprscopeError,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
)
from dprscope.jobs import CancelToken, Deadline, Progress
from dprscope.metrics import Metrics
from dprscope.models.registry import Lease, ModelRegistry
from dprscope.paths import resolve_inside

log = logging.getLogger(__name__)

T = TypeVar("T")
_POLL_S = 0.1

DEFAULT_YIELD_MAX_WAIT_S = 0.05
"""Longest a job waits for Search at one chunk boundary: Search goes first, analysis never starves."""
DEFAULT_YIELD_POLL_S = 0.002
DEFAULT_ANALYSIS_NICE = 10
"""Added to the analysis threads' nice value (CFS weight ~1/9 of a nice-0 Search thread)."""


# ----------------------------------------------------------------------------- search first


class ServingYield:
    """Called between chunks: while ``busy()`` (Search work pending) wait, at most ``max_wait_s``.

    ``busy`` must be cheap (the composition root passes the encode batcher's ``busy``).
    ``sleep`` and ``clock`` are injectable so tests need no timing.
    """

    def __init__(self, busy: Callable[[], bool], *, max_wait_s: float = DEFAULT_YIELD_MAX_WAIT_S,
                 poll_s: float = DEFAULT_YIELD_POLL_S, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_wait_s < 0 or poll_s <= 0:
            raise ValueError("max_wait_s must be >= 0 and poll_s > 0")
        self.busy = busy
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock
        self.yields = 0
        self.waited_s = 0.0

    def __call__(self) -> float:
        """Wait while Search is busy (bounded); returns the seconds waited."""
        if not self.busy():
            return 0.0
        started = self._clock()
        until = started + self.max_wait_s
        while True:
            now = self._clock()
            if now >= until or not self.busy():
                break
            self._sleep(min(self.poll_s, until - now))
        waited = self._clock() - started
        self.yields += 1
        self.waited_s += waited
        return waited


def lower_thread_priority(increment: int = DEFAULT_ANALYSIS_NICE) -> bool:
    """Raise the calling thread's nice value by ``increment``; False where not possible.

    Linux only: there ``setpriority(PRIO_PROCESS, tid)`` acts on one thread, and threads it
    creates later (torch's OpenMP workers for its parallel regions) inherit the value, so
    call it before the thread first runs torch. Elsewhere PRIO_PROCESS would mean the whole
    process (or another one), so nothing is done. Raising nice needs no privilege; it
    cannot be lowered back, so use it on dedicated threads only.
    """
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError:
        log.debug("could not lower the analysis thread's priority", exc_info=True)
        return False
    return True


# ----------------------------------------------------------------------------- admission


class JobGate:
    """``concurrency`` running slots plus ``queue`` waiting places; beyond that, ``Overloaded``.

    Why not a bare semaphore: a blocking acquire would queue without bound and could not
    notice a cancelled call; a non-blocking one would have no queue at all.
    """

    def __init__(self, concurrency: int, queue_size: int) -> None:
        if concurrency < 1:
            raise ValueError(f"analysis concurrency must be >= 1, got {concurrency}")
        if queue_size < 0:
            raise ValueError(f"analysis queue must be >= 0, got {queue_size}")
        self.concurrency = concurrency
        self.queue_size = queue_size
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextmanager
    def admit(self, cancel: CancelToken | None = None, deadline: Deadline | None = None) -> Iterator[None]:
        """Hold a running slot for the ``with`` body, waiting in the queue if there is room.

        Raises:
            Overloaded: every slot and queue place is taken.
            Cancelled / DeadlineExceeded: the caller gave up while queued.
        """
        with self._cond:
            if self._running >= self.concurrency and self._waiting >= self.queue_size:
                raise Overloaded(f"analysis is at its limit ({self.concurrency} running, {self.queue_size} "
                                 "queued); retry later or raise --analysis-concurrency/--analysis-queue")
            self._waiting += 1
            try:
                while self._running >= self.concurrency:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    wait = _POLL_S
                    if deadline is not None and deadline.remaining is not None:
                        if deadline.remaining <= 0:
                            raise DeadlineExceeded("deadline passed while the analysis job waited in the queue")
                        wait = min(wait, deadline.remaining)
                    self._cond.wait(wait)
            finally:
                self._waiting -= 1
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


# ----------------------------------------------------------------------------- data root


def confine_data_path(path: str, root: Path | None) -> Path:
    """Resolve ``path`` (relative to, or absolute inside, ``root``) with symlinks followed.

    Raises:
        PermissionDenied: no data root configured, or the path (or a symlink in it) leaves it.
        NotFound: inside the root but missing.
        InvalidArgument: empty path or a NUL byte.
    """
    if root is None:
        raise PermissionDenied("server-side data files are disabled: start the server with --data-root DIR")
    if not path.strip():
        raise InvalidArgument("data_path is empty")
    if "\x00" in path:
        raise InvalidArgument("data_path contains a NUL character")
    resolved = resolve_inside(path, root, outside=f"data_path {path!r} is outside the server's data root",
                              missing=f"data_path {path!r} does not exist under the server's data root")
    if not resolved.is_file():
        raise InvalidArgument(f"data_path {path!r} is not a file")
    return resolved


# ----------------------------------------------------------------------------- plain requests


@dataclass(frozen=True)
class AttributeJob:
    """An ``attribute`` call; ``passage_ids`` are looked up in the leased index's store."""

    query: str
    passages: tuple[Context, ...] = ()
    passage_ids: tuple[str, ...] = ()
    target: str = "score"
    side: str = "query"
    layers: tuple[int, ...] = ()
    sublayer: str = "intermediate"
    n_steps: int = DEFAULT_N_STEPS
    method: str = "riemann_right"
    positions: str = "all"
    threshold: float = DEFAULT_THRESHOLD
    top_neurons: int = DEFAULT_TOP_NEURONS
    return_scores: bool = False
    internal_batch_size: int = 0


@dataclass(frozen=True)
class ProbeJob:
    """A ``probe`` call over inline ``records`` or a file under the data root."""

    records: tuple[DprRecord, ...] = ()
    data_path: str = ""
    n_passages: tuple[int, ...] = DEFAULT_N_PASSAGES
    layers: tuple[int, ...] = ()
    features: str = "cls"
    test_fraction: float = 0.3
    seed: int = 0
    max_records: int = 0


@dataclass(frozen=True)
class ActivationStatsJob:
    """An ``activation_stats`` call over inline pairs or a DPR file under the data root."""

    pairs: tuple[QueryPassagePair, ...] = ()
    data_path: str = ""
    layers: tuple[int, ...] = ()
    sublayer: str = "intermediate"
    threshold: float = DEFAULT_THRESHOLD
    n_steps: int = DEFAULT_N_STEPS
    target: str = "score"
    side: str = "query"
    max_records: int = 0


@dataclass(frozen=True)
class Finished:
    """The last item ``run`` yields: the verb's result and the version it ran on."""

    model_version: str
    result: Any


@dataclass
class _Job:
    events: queue.Queue = field(default_factory=queue.Queue)
    future: Future | None = None


# ----------------------------------------------------------------------------- the service


class AnalysisService:
    """Admits, leases and runs analysis jobs; one per analysis server."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics, *, concurrency: int = 1, queue_size: int = 4,
                 data_root: Path | None = None, serving_busy: Callable[[], bool] | None = None,
                 yield_to_serving: bool = True) -> None:
        """``serving_busy``: cheap "Search work is pending" signal; with ``yield_to_serving``
        attributions wait for it between chunks, and job threads run at a lower priority."""
        self.registry = registry
        self.metrics = metrics
        self.gate = JobGate(concurrency, queue_size)
        self.data_root = Path(data_root) if data_root is not None else None
        self.serving_yield = ServingYield(serving_busy) if yield_to_serving and serving_busy is not None else None
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dprscope-analysis",
                                            initializer=lower_thread_priority if yield_to_serving else None)

    def close(self) -> None:
        """Stop accepting jobs; running ones are already cancelled by their RPCs ending."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- verbs ------------------------------------------------------------------------
    def attribute(self, job: AttributeJob, *, model_version: str = "", cancel: CancelToken | None = None,
                  deadline: Deadline | None = None) -> Iterator[Progress | Finished]:
        """Stream ``Progress`` then ``Finished(AttributionResult)``."""
        if job.passages and job.passage_ids:
            raise InvalidArgument("give either passages or passage_ids, not both")
        if not job.passages and not job.passage_ids:
            raise InvalidArgument("no passages and no passage_ids: give at least the positive passage (first)")
        validate_n_steps(job.n_steps)
        validate_threshold(job.threshold)
        resolve_sublayers(job.sublayer)

        def prepare(lease: Lease) -> Callable[..., AttributionResult]:
            encoder = lease.encoder.query if job.side == "query" else lease.encoder.context
            layers = resolve_layers(job.layers, encoder.num_layers)
            passages = job.passages or _lookup_passages(lease, job.passage_ids)

            def body(progress, cancel_token) -> AttributionResult:
                return attribute(lease.encoder, job.query, passages, target=job.target, side=job.side,
                                 layers=layers, sublayer=job.sublayer, n_steps=job.n_steps, method=job.method,
                                 positions=job.positions, threshold=job.threshold, top_neurons=job.top_neurons,
                                 return_scores=job.return_scores,
                                 internal_batch_size=job.internal_batch_size or None,
                                 progress=progress, cancel=cancel_token, between_chunks=self.serving_yield)
            return body

        return self.run("attribute", model_version, prepare, cancel=cancel, deadline=deadline)

    def probe(self, job: ProbeJob, *, model_version: str = "", cancel: CancelToken | None = None,
              deadline: Deadline | None = None) -> Iterator[Progress | Finished]:
        """Stream ``Progress`` then ``Finished(ProbeResult)``."""
        path = self._source(job.records, job.data_path, "records")

        def prepare(lease: Lease) -> Callable[..., ProbeResult]:
            num_layers = lease.encoder.query.num_layers
            for layer in job.layers:
                if not 0 <= layer <= num_layers:
                    raise InvalidArgument(f"layer {layer} is out of range: probes use hidden states "
                                          f"0 (embeddings)..{num_layers} (valid: 0..{num_layers})")

            def body(progress, cancel_token) -> ProbeResult:
                records = job.records
                if path is not None:
                    progress(Progress("loading", 0, None, f"reading {path.name}"))
                    records = tuple(load_dpr_records(path, max_records=job.max_records or None))
                elif job.max_records:
                    records = records[:job.max_records]
                return probe(lease.encoder, records, n_passages=job.n_passages, layers=job.layers or None,
                             features=job.features, test_fraction=job.test_fraction, seed=job.seed,
                             progress=progress, cancel=cancel_token)
            return body

        return self.run("probe", model_version, prepare, cancel=cancel, deadline=deadline)

    def activation_stats(self, job: ActivationStatsJob, *, model_version: str = "",
                         cancel: CancelToken | None = None,
                         deadline: Deadline | None = None) -> Iterator[Progress | Finished]:
        """Stream ``Progress`` then ``Finished(ActivationStatsResult)``."""
        path = self._source(job.pairs, job.data_path, "pairs")
        validate_n_steps(job.n_steps)
        validate_threshold(job.threshold)
        resolve_sublayers(job.sublayer)

        def prepare(lease: Lease) -> Callable[..., ActivationStatsResult]:
            encoder = lease.encoder.query if job.side == "query" else lease.encoder.context
            layers = resolve_layers(job.layers, encoder.num_layers)

            def body(progress, cancel_token) -> ActivationStatsResult:
                pairs: Sequence[QueryPassagePair] = job.pairs
                if path is not None:
                    progress(Progress("loading", 0, None, f"reading {path.name}"))
                    records = load_dpr_records(path, max_records=job.max_records or None)
                    # positive_prob needs a negative beside the positive; the first hard negative.
                    pairs = pairs_from_records(records, negatives=1 if job.target == "positive_prob" else 0)
                elif job.max_records:
                    pairs = pairs[:job.max_records]
                return activation_stats(lease.encoder, pairs, layers=layers, sublayer=job.sublayer,
                                        threshold=job.threshold, n_steps=job.n_steps, target=job.target,
                                        side=job.side, progress=progress, cancel=cancel_token)
            return body

        return self.run("activation_stats", model_version, prepare, cancel=cancel, deadline=deadline)

    def _source(self, inline: Sequence[Any], data_path: str, what: str) -> Path | None:
        if inline and data_path:
            raise InvalidArgument(f"give either inline {what} or data_path, not both")
        if not inline and not data_path:
            raise InvalidArgument(f"no {what} and no data_path: nothing to analyse")
        return confine_data_path(data_path, self.data_root) if data_path else None

    # --- the runner -------------------------------------------------------------------
    def run(self, method: str, model_version: str, prepare: Callable[[Lease], Callable[..., T]], *,
            cancel: CancelToken | None = None, deadline: Deadline | None = None) -> Iterator[Progress | Finished]:
        """Lease, validate (``prepare``), admit, run the body on the executor, stream its progress.

        Generators run lazily; the first ``next`` does all validation, so a bad request
        fails before it takes a queue place, and a full gate fails before any work.
        """
        cancel = cancel or CancelToken()
        deadline = deadline or Deadline()
        started = time.monotonic()
        result_label = "ok"
        try:
            with self.registry.lease(model_version or None) as lease:
                body = prepare(lease)
                with self.gate.admit(cancel, deadline):
                    yield Progress("started", 0, None, f"{method} on model {lease.version}", 0.0)
                    result = yield from self._execute(method, body, cancel, deadline)
                    yield Finished(lease.version, result)
        except BaseException as exc:
            result_label = _result_label(exc)
            raise
        finally:
            self.metrics.analysis_jobs.labels(method, result_label).inc()
            if result_label == "ok":
                self.metrics.analysis_duration.labels(method).observe(time.monotonic() - started)

    def _execute(self, method: str, body: Callable[..., T], cancel: CancelToken,
                 deadline: Deadline) -> Iterator[Progress]:
        job = _Job()

        def progress(p: Progress) -> None:
            job.events.put(p)

        def work() -> T:
            self.metrics.analysis_running.inc()
            try:
                # The executor's threads live on; the job's torch work must not leave an
                # OpenMP pool behind in them (see dprscope.compute_thread).
                return run_in_fresh_thread(lambda: body(progress, cancel), f"dprscope-analysis-{method}")
            finally:
                self.metrics.analysis_running.dec()

        job.future = self._executor.submit(work)
        try:
            while True:
                try:
                    yield job.events.get(timeout=_POLL_S)
                    continue
                except queue.Empty:
                    pass
                if job.future.done() and job.events.empty():
                    return job.future.result()
                if deadline.expired and not cancel.cancelled:
                    # gRPC cancels the call at its deadline too; this covers in-process callers.
                    cancel.cancel(f"the {method} deadline passed")
                    _wait_quietly(job.future, method)
                    raise DeadlineExceeded(f"the {method} job did not finish before the deadline")
        finally:
            # Leaving early (error, cancelled call, closed stream): stop the job and wait
            # for it, so the lease and the running slot outlive the work that uses them.
            if not job.future.done():
                cancel.cancel(cancel.reason or f"{method} stream closed")
                _wait_quietly(job.future, method)


def _wait_quietly(future: Future, method: str) -> None:
    try:
        future.result()
    except BaseException:  # the job was stopped on purpose; its error is not the caller's
        log.debug("%s job ended after it was stopped", method, exc_info=True)


def _lookup_passages(lease: Lease, ids: Sequence[str]) -> tuple[Context, ...]:
    store = getattr(lease.index, "store", None)
    if store is None:
        raise InvalidArgument(f"model version {lease.version!r} has no passage store to look passage_ids up in")
    found = store.get_ids(list(ids))
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise NotFound(f"{len(missing)} passage_ids are not in the index: {shown}")
    return tuple(Context(text=found[i].text, title=found[i].title, passage_id=i) for i in ids)


def _result_label(exc: BaseException) -> str:
    if isinstance(exc, GeneratorExit | Cancelled):
        return "cancelled"
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if isinstance(exc, Overloaded):
        return "rejected"
    if isinstance(exc, InvalidArgument | NotFound | PermissionDenied):
        return "invalid"
    if isinstance(exc, DprscopeError):
        return type(exc).__name__.lower()
    return "error"
