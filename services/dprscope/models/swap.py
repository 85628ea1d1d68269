"""Hot swap: load, validate, activate (with a shadow re-index when needed), roll back, unload.

``SwapManager`` is the domain behind ``ModelAdmin``. The promise it keeps is Triton's: a
failed load leaves the serving version untouched, and a successful swap loses no request.

- **Load** builds the new encoder beside the active one (FULL / DELTA / PATCH, role BOTH /
  QUERY / CONTEXT), always on copies of the base, then validates it: shapes, dim equal to
  the index's, finite canary outputs, and how far the canary top-k moved (torch weights
  against the active version's torch weights). Then it puts the version on the server's
  runtime (``EncoderRuntime``: ONNX fp32/int8, CUDA), exactly as the server did with its
  first model, and checks the converted encoder against the torch weights on the
  canaries. Any failure leaves the version FAILED with its reason; nothing that serves
  changed.
- **Activate** is one reference swap in the registry (leases keep in-flight requests on
  the version they started with). A version whose context encoder differs from every
  loaded index needs a re-index: a background thread re-encodes the passage store into a
  shadow index directory, reporting progress, and flips model + index together when it
  completes; until then the old pair serves. ``allow_stale_index`` skips that, labelled.
- **Rollback / Unload** reuse the registry; old versions beyond ``keep_previous`` are
  freed, and shadow indexes nobody references any more are closed and deleted.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dprscope.compute_thread import run_in_fresh_thread
from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.loading import load_bi_encoder
from dprscope.encoders.runtime import EncoderRuntime, torch_side
from dprscope.encoders.text_encoder import TextEncoder
from dprscope.errors import (
    Cancelled,
    DimensionMismatch,
    DprscopeError,
    FailedPrecondition,
    InvalidArgument,
    UnknownVersion,
)
from dprscope.jobs import CancelToken, Progress
from dprscope.metrics import Metrics
from dprscope.models import checkpoints as ck
from dprscope.models.canary import (
    CanaryReport,
    canary_vectors,
    check_runtime_agreement,
    load_canary_queries,
    run_canary,
)
from dprscope.models.registry import ModelRegistry, ModelVersion, VersionState

log = logging.getLogger(__name__)

KINDS = ("FULL", "DELTA", "PATCH")
ROLES = ("BOTH", "QUERY", "CONTEXT")
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_REINDEX_BATCH = 32
DISK_MARGIN = 1.2
ENCODE_SHARE = 0.95  # of re-index progress; building the FAISS index is the rest


@dataclass(frozen=True)
class LoadRequest:
    """A ``LoadCheckpoint`` call in domain terms."""

    path: str
    version: str = ""
    kind: str = "FULL"
    role: str = "BOTH"
    base_version: str = ""
    pooling: str = ""


@dataclass(frozen=True)
class VersionView:
    """One row of ``ListModels``: a snapshot, safe to hand to another thread."""

    name: str
    state: str
    query_fingerprint: str = ""
    context_fingerprint: str = ""
    differs_from_index: tuple[str, ...] = ()
    needs_reindex: bool = False
    load_seconds: float = 0.0
    error: str = ""
    kind: str = "FULL"
    role: str = "BOTH"
    base_version: str = ""
    source: str = ""
    dim: int = 0
    canary: CanaryReport | None = None
    reindex_progress: float = 0.0
    stale_index: bool = False
    loaded_at: float = 0.0


@dataclass(frozen=True)
class ModelListing:
    versions: list[VersionView]
    active: str
    previous: str


@dataclass
class _ReindexJob:
    version: str
    token: CancelToken
    started: float
    out_dir: Path
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: DprscopeError | None = None
    last_done: int = 0


class SwapManager:
    """Load, activate, roll back and unload model versions on a live registry."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics | None = None, *,
                 checkpoint_root: Path | None = None, canary_file: Path | None = None,
                 reindex_dir: Path | None = None, reindex_batch_size: int = DEFAULT_REINDEX_BATCH,
                 mmap_index: bool = True, index_device: str = "cpu",
                 runtime: EncoderRuntime | None = None) -> None:
        self.registry = registry
        self.runtime = runtime  # None: loaded versions stay as loaded (torch on the CPU)
        self.metrics = metrics
        self.checkpoint_root = Path(checkpoint_root) if checkpoint_root is not None else None
        self.canary_queries = load_canary_queries(canary_file)
        self.reindex_dir = Path(reindex_dir) if reindex_dir is not None else None
        self.reindex_batch_size = reindex_batch_size
        self.mmap_index = mmap_index
        self.index_device = index_device  # shadow indexes go where the served one went (index/gpu.py)
        self._swap_lock = threading.RLock()
        self._job: _ReindexJob | None = None
        self._owned_indexes: dict[int, tuple[Any, Path]] = {}  # id(index) -> (index, shadow dir we built)
        self._closed = False

    # --- loading ---------------------------------------------------------------------
    def load(self, request: LoadRequest) -> VersionView:
        """Load and validate a checkpoint beside the active version.

        Runs on a short-lived thread: the canary encodes must not leave an OpenMP pool in
        the long-lived gRPC handler thread that called (see dprscope.compute_thread).

        Raises:
            InvalidArgument / UnknownVersion: bad kind, role, name or base version.
            PermissionDenied: the path leaves the checkpoint root.
            NotFound: the path does not exist.
            DimensionMismatch / FailedPrecondition / InvalidArgument: validation failed; the
                version is then listed as FAILED with the reason.
        """
        return run_in_fresh_thread(lambda: self._load(request), "dprscope-load")

    def _load(self, request: LoadRequest) -> VersionView:
        kind, role = request.kind.upper() or "FULL", request.role.upper() or "BOTH"
        if kind not in KINDS:
            raise InvalidArgument(f"kind {request.kind!r} is not one of {KINDS}")
        if role not in ROLES:
            raise InvalidArgument(f"role {request.role!r} is not one of {ROLES}")
        if request.pooling and request.pooling not in ("mean", "cls"):
            raise InvalidArgument(f"pooling {request.pooling!r} is not one of ('mean', 'cls')")
        path = ck.confine(request.path, self.checkpoint_root)
        name = request.version or self._next_name()
        if not VERSION_NAME.match(name):
            raise InvalidArgument(f"version name {name!r} must match {VERSION_NAME.pattern}")
        base: ModelVersion | None = None
        if kind != "FULL" or role != "BOTH":
            base_name = request.base_version or self.registry.active_name
            if not base_name or base_name not in self.registry:
                raise UnknownVersion(f"base_version {base_name!r} is not loaded; loaded: "
                                     f"{sorted(v.name for v in self.registry.versions())}")
            base = self.registry.get(base_name)
            if base.encoder is None or not base.usable:
                raise InvalidArgument(f"base_version {base_name!r} is {base.state.value} and cannot be a base")
        self._reserve(name, request, kind, role, base)
        started = time.perf_counter()
        try:
            encoder, details = self._build(path, request, kind, role, base)
            active = self.registry.get(self._active_name())
            index = active.index
            context_changed = base is None or role != "QUERY"
            if encoder.query.dim != encoder.context.dim:
                raise DimensionMismatch(f"query encoder dim {encoder.query.dim} != context encoder dim "
                                        f"{encoder.context.dim}")
            weights = torch_side(encoder)
            report = run_canary(weights, int(index.manifest.dim), self.canary_queries, torch_side(active.encoder),
                                index, check_context=context_changed)
            encoder = self._to_runtime(encoder, weights, context_changed, details)
            # Fingerprints are computed here, in the loading thread, never on a swap.
            details.update(query_fingerprint=encoder.query_fingerprint,
                           context_fingerprint=encoder.context_fingerprint)
            own_index = base.index if base is not None else index
            seconds = time.perf_counter() - started
            self.registry.update(name, encoder=encoder, index=own_index, state=VersionState.READY,
                                 load_seconds=seconds, canary=report.as_dict(), details=details, error="")
        except Exception as exc:
            error = exc if isinstance(exc, DprscopeError) else InvalidArgument(
                f"could not load checkpoint {request.path!r}: {type(exc).__name__}: {self._scrub(str(exc))}")
            if not isinstance(exc, DprscopeError):
                log.warning("loading %s failed", request.path, exc_info=True)
            self._fail(name, kind, str(error), time.perf_counter() - started)
            if error is exc:
                raise
            raise error from exc
        if self.metrics is not None:
            self.metrics.checkpoint_loads.labels(kind, "success").inc()
            self.metrics.load_duration.observe(seconds)
        log.info("loaded %s (%s, role %s) from %s in %.2fs on %s; canary top-%d overlap mean %.2f min %.2f",
                 name, kind, role, request.path, seconds, details.get("backend", "torch"), report.k,
                 report.mean_topk_overlap, report.min_topk_overlap)
        return self.describe(name)

    def _to_runtime(self, encoder: BiEncoder, weights: BiEncoder, check_context: bool,
                    details: dict[str, Any]) -> BiEncoder:
        """``encoder`` on the server's runtime, checked against its torch ``weights`` on the canaries.

        The torch vectors are taken first: putting torch on CUDA moves the models in place.
        """
        if self.runtime is None or self.runtime.is_identity:
            return encoder
        reference = canary_vectors(weights, self.canary_queries, check_context)
        served = self.runtime.apply(encoder)
        if served is encoder:
            return encoder
        precision = self.runtime.precision
        worst = check_runtime_agreement(reference, canary_vectors(served, self.canary_queries, check_context),
                                        precision)
        details.update(backend=self.runtime.backend, precision=precision, runtime_min_cosine=round(worst, 5))
        return served

    def _scrub(self, message: str) -> str:
        """Keep host paths out of messages that travel to clients."""
        if self.checkpoint_root is not None:
            message = message.replace(str(self.checkpoint_root.resolve()), "<checkpoint-root>")
            message = message.replace(str(self.checkpoint_root), "<checkpoint-root>")
        return message[:500]

    def _next_name(self) -> str:
        n = len(self.registry.versions()) + 1
        while f"v{n}" in self.registry:
            n += 1
        return f"v{n}"

    def _active_name(self) -> str:
        active = self.registry.active_name
        if active is None:
            raise FailedPrecondition("no version is active; the server has nothing to validate against")
        return active

    def _reserve(self, name: str, request: LoadRequest, kind: str, role: str, base: ModelVersion | None) -> None:
        """Register the name as LOADING (a FAILED leftover of the same name is replaced)."""
        with self._swap_lock:
            if name in self.registry:
                existing = self.registry.get(name)
                if existing.state != VersionState.FAILED:
                    raise InvalidArgument(f"model version {name!r} is already loaded ({existing.state.value}); "
                                          "pick another name or unload it first")
                self.registry.remove(name)
            self.registry.add(ModelVersion(name=name, encoder=None, index=None, state=VersionState.LOADING,
                                           source=request.path, kind=kind, role=role,
                                           base_version=base.name if base is not None else ""))

    def _fail(self, name: str, kind: str, reason: str, seconds: float) -> None:
        log.warning("checkpoint %s FAILED: %s", name, reason)
        try:
            self.registry.update(name, state=VersionState.FAILED, error=reason, encoder=None, index=None,
                                 load_seconds=seconds)
        except DprscopeError:
            pass
        if self.metrics is not None:
            self.metrics.checkpoint_loads.labels(kind, "failed").inc()

    def _build(self, path: Path, request: LoadRequest, kind: str, role: str,
               base: ModelVersion | None) -> tuple[BiEncoder, dict[str, Any]]:
        """The new BiEncoder; everything taken from ``base`` is shared or copied, never mutated."""
        details: dict[str, Any] = {"path": request.path}
        name = request.version or path.stem
        if kind == "FULL":
            ck.ensure_safe_model_dir(path)
            loaded = load_bi_encoder(str(path), pooling=request.pooling or None)
            loaded.source = request.path
            if base is None:
                return loaded, details
            query, context = loaded.query, loaded.context
        else:
            tensors = ck.read_tensors(path)
            ck.check_finite(tensors, path.name)
            details["tensors"] = len(tensors)
            details["bytes"] = ck.delta_size_bytes(tensors.values())
            if base is None:  # unreachable: DELTA/PATCH always have a base
                raise InvalidArgument(f"{kind} needs a base_version")
            query, context = self._apply(kind, role, tensors, base.encoder, name, details)
        b = base.encoder  # type: ignore[union-attr]
        if role == "QUERY":
            context = b.context
        elif role == "CONTEXT":
            query = b.query
        bi = BiEncoder(query=query, context=context, kind=b.kind, source=f"{kind.lower()}:{request.path}",
                       metric=b.metric, extra=dict(b.extra))
        return bi, details

    def _apply(self, kind: str, role: str, tensors: dict, base: BiEncoder, name: str,
               details: dict[str, Any]) -> tuple[TextEncoder, TextEncoder]:
        def edit(encoder: TextEncoder, part: dict) -> TextEncoder:
            if kind == "DELTA":
                return ck.apply_delta(encoder, part, name)
            patched, extra = ck.apply_patch(encoder, part, name)
            details["extra_neurons"] = details.get("extra_neurons", 0) + extra
            return patched

        if role == "QUERY":
            return edit(base.query, tensors), base.context
        if role == "CONTEXT":
            return base.query, edit(base.context, tensors)
        groups = ck.split_by_role(tensors, base.shared)
        if "both" in groups:
            shared = edit(base.query, groups["both"])
            return shared, shared
        query = edit(base.query, groups["query"]) if "query" in groups else base.query
        context = edit(base.context, groups["context"]) if "context" in groups else base.context
        return query, context

    # --- activation ------------------------------------------------------------------
    def _matching_index(self, version: ModelVersion) -> Any | None:
        """An open index built with this version's context encoder (its own first)."""
        fp = version.encoder.context_fingerprint  # type: ignore[union-attr]
        if version.index is not None and version.index.manifest.encoder_fingerprint == fp:
            return version.index
        active = self.registry.active_name
        candidates = sorted(self.registry.versions(), key=lambda v: v.name != active)
        for other in candidates:
            if other.index is not None and other.index.manifest.encoder_fingerprint == fp:
                return other.index
        return None

    def activate(self, name: str, allow_stale_index: bool = False, wait: bool = False) -> VersionView:
        """Make ``name`` serve; starts a shadow re-index when its context encoder needs one.

        Raises:
            UnknownVersion: not loaded.
            FailedPrecondition: FAILED/LOADING, no space for the re-index, or no active index.
        """
        if not name:
            raise InvalidArgument("version is empty; name the version to activate")
        started = time.perf_counter()
        with self._swap_lock:
            version = self._usable(name)
            job = self._job
            if job is not None and job.version == name and not job.done.is_set():
                if not wait:
                    return self.describe(name)
            else:
                self._cancel_job("a new Activate replaced it")
                job = None
            if job is None:
                if name == self.registry.active_name and not version.stale_index:
                    return self.describe(name)
                index = self._matching_index(version)
                if index is not None or allow_stale_index:
                    stale = index is None
                    target_index = index if index is not None else self.registry.get(self._active_name()).index
                    self.registry.update(name, stale_index=stale)
                    self._flip(name, target_index, started, "activate")
                    if stale:
                        log.warning("activated %s with a stale index (allow_stale_index): its context encoder "
                                    "differs from the one that built the index", name)
                    return self.describe(name)
                job = self._start_reindex(version, started)
        if wait:
            job.done.wait()
            if job.error is not None:
                raise job.error
        return self.describe(name)

    def _usable(self, name: str) -> ModelVersion:
        if name not in self.registry:
            raise UnknownVersion(f"model version {name!r} is not loaded; loaded: "
                                 f"{sorted(v.name for v in self.registry.versions())}")
        version = self.registry.get(name)
        if version.encoder is None or version.state in (VersionState.FAILED, VersionState.LOADING):
            raise FailedPrecondition(f"model version {name!r} is {version.state.value} and cannot serve"
                                     + (f" ({version.error})" if version.error else ""))
        return version

    def _flip(self, name: str, index: Any, started: float, action: str) -> None:
        """The one reference swap, then metrics and pruning."""
        self.registry.activate(name, index=index)
        if self.metrics is not None:
            self.metrics.swaps.labels(action, "success").inc()
            self.metrics.activation_duration.observe(time.perf_counter() - started)
        self._prune()

    def _prune(self) -> None:
        freed = self.registry.prune_history()
        if freed:
            self._release_indexes()

    def _release_indexes(self) -> None:
        """Close and delete shadow indexes no loaded version uses any more."""
        in_use = {id(v.index) for v in self.registry.versions() if v.index is not None}
        job = self._job
        for key, (index, directory) in list(self._owned_indexes.items()):
            if key in in_use:
                continue
            del self._owned_indexes[key]
            index.close()
            if job is not None and not job.done.is_set() and job.out_dir == directory:
                continue
            log.info("deleting shadow index %s (no version uses it)", directory)
            shutil.rmtree(directory, ignore_errors=True)

    # --- re-indexing -----------------------------------------------------------------
    def _reindex_root(self, index: Any) -> Path:
        if self.reindex_dir is not None:
            return self.reindex_dir
        directory = Path(index.directory)
        return directory.parent / f"{directory.name}.reindex"

    def _estimate_bytes(self, index: Any) -> int:
        m = index.manifest
        vectors = int(m.passages) * int(m.dim) * 4
        store_bytes = index.store.path.stat().st_size if index.store.path.exists() else 0
        return int((2 * vectors + store_bytes) * DISK_MARGIN)

    def _check_disk(self, root: Path, need: int) -> None:
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < need:
            raise FailedPrecondition(f"re-index needs about {need / 2**20:.1f} MiB under {root} but only "
                                     f"{free / 2**20:.1f} MiB are free; free space or set --reindex-dir")

    def _start_reindex(self, version: ModelVersion, started: float) -> _ReindexJob:
        active = self.registry.get(self._active_name())
        source = active.index
        if source is None:
            raise FailedPrecondition("the active version has no index to re-encode")
        root = self._reindex_root(source)
        self._check_disk(root, self._estimate_bytes(source))
        fp = version.encoder.context_fingerprint  # type: ignore[union-attr]
        out_dir = root / f"{version.name}-{fp[:12]}"
        job = _ReindexJob(version.name, CancelToken(), started, out_dir)
        self.registry.update(version.name, state=VersionState.REINDEXING, reindex_progress=0.0, error="")
        if self.metrics is not None:
            self.metrics.reindex_progress.labels(version.name).set(0.0)
        job.thread = threading.Thread(target=self._run_reindex, args=(job, version.encoder, source),
                                      name=f"dprscope-reindex-{version.name}", daemon=True)
        self._job = job
        log.info("activation of %s needs a re-index: encoding %d passages into %s", version.name,
                 source.manifest.passages, out_dir)
        job.thread.start()
        return job

    def _on_progress(self, job: _ReindexJob, p: Progress) -> None:
        if p.stage == "encode" and p.total:
            ratio = ENCODE_SHARE * min(1.0, p.done / p.total)
            if self.metrics is not None and p.done > job.last_done:
                self.metrics.reindex_passages.inc(p.done - job.last_done)
            job.last_done = max(job.last_done, p.done)
        elif p.stage == "encode":
            return
        else:
            ratio = ENCODE_SHARE + (1 - ENCODE_SHARE) * (min(1.0, p.done / p.total) if p.total else 0.0)
        try:
            version = self.registry.get(job.version)
        except DprscopeError:
            return
        version.reindex_progress = ratio  # a float store: no lock, no listener churn
        if self.metrics is not None:
            self.metrics.reindex_progress.labels(job.version).set(ratio)

    def _run_reindex(self, job: _ReindexJob, encoder: BiEncoder, source: Any) -> None:
        from dprscope.index.builder import reindex_from_store
        from dprscope.index.serving import ServingIndex

        action_result = "failed"
        try:
            kwargs: dict[str, Any] = {
                "index_type": source.manifest.index_type, "index_params": dict(source.manifest.index_params),
                "batch_size": self.reindex_batch_size, "progress": lambda p: self._on_progress(job, p),
                "cancel": job.token}
            try:
                reindex_from_store(source.store, job.out_dir, encoder, **kwargs)
            except FailedPrecondition:
                if job.token.cancelled:
                    raise
                # A leftover from other inputs in our own shadow directory: start over.
                reindex_from_store(source.store, job.out_dir, encoder, overwrite=True, **kwargs)
            job.token.raise_if_cancelled()
            new_index = ServingIndex.open(job.out_dir, mmap=self.mmap_index, device=self.index_device)
            if new_index.manifest.dim != encoder.dim:
                new_index.close()
                raise DimensionMismatch(f"re-indexed dim {new_index.manifest.dim} != encoder dim {encoder.dim}")
            with self._swap_lock:
                if job.token.cancelled or job.version not in self.registry:
                    new_index.close()
                    raise Cancelled(job.token.reason or f"{job.version} was unloaded")
                self._owned_indexes[id(new_index)] = (new_index, job.out_dir)
                self.registry.update(job.version, stale_index=False, reindex_progress=1.0)
                self._flip(job.version, new_index, job.started, "activate")
            action_result = "success"
            if self.metrics is not None:
                self.metrics.reindex_progress.labels(job.version).set(1.0)
            log.info("re-index for %s finished; model and index flipped together", job.version)
        except Cancelled as exc:
            action_result = "cancelled"
            job.error = exc
            log.info("re-index for %s cancelled: %s", job.version, exc)
        except DprscopeError as exc:
            job.error = exc
            log.warning("re-index for %s failed: %s", job.version, exc)
        except Exception as exc:  # the thread must always end the job cleanly
            log.exception("re-index for %s failed", job.version)
            job.error = FailedPrecondition(f"re-index failed: {type(exc).__name__}: {exc}")
        finally:
            if action_result != "success":
                self._end_failed_job(job, action_result)
            job.done.set()

    def _end_failed_job(self, job: _ReindexJob, result: str) -> None:
        if self.metrics is not None:
            self.metrics.swaps.labels("activate", result).inc()
            self.metrics.reindex_progress.labels(job.version).set(0.0)
        with self._swap_lock:
            if job.version in self.registry:
                version = self.registry.get(job.version)
                if version.state == VersionState.REINDEXING:
                    error = "" if result == "cancelled" else f"re-index failed: {job.error}"
                    self.registry.update(job.version, state=VersionState.READY, reindex_progress=0.0, error=error)

    def _cancel_job(self, reason: str) -> None:
        """Stop a running re-index and wait for its thread (called under the swap lock)."""
        job = self._job
        if job is None or job.done.is_set():
            return
        job.token.cancel(reason)
        self._swap_lock.release()
        try:  # the job's final step takes the swap lock; let it finish
            job.done.wait()
        finally:
            self._swap_lock.acquire()

    # --- rollback / unload / list ----------------------------------------------------
    def rollback(self) -> VersionView:
        """Return to the previously active version (cancels a pending re-index)."""
        started = time.perf_counter()
        with self._swap_lock:
            self._cancel_job("a Rollback replaced it")
            try:
                version = self.registry.rollback()
            except DprscopeError:
                if self.metrics is not None:
                    self.metrics.swaps.labels("rollback", "failed").inc()
                raise
            if self.metrics is not None:
                self.metrics.swaps.labels("rollback", "success").inc()
                self.metrics.activation_duration.observe(time.perf_counter() - started)
            self._prune()
            return self.describe(version.name)

    def unload(self, name: str) -> VersionView:
        """Free a non-active version (cancelling its re-index), waiting for its leases."""
        if not name:
            raise InvalidArgument("version is empty; name the version to unload")
        with self._swap_lock:
            if name not in self.registry:
                raise UnknownVersion(f"model version {name!r} is not loaded")
            job = self._job
            if job is not None and job.version == name:
                self._cancel_job(f"{name} was unloaded")
            view = self.describe(name)
            self.registry.remove(name)
            self._release_indexes()
        log.info("unloaded %s", name)
        return view

    def describe(self, name: str) -> VersionView:
        version = self.registry.get(name)
        return self._view(version, self._active_index())

    def _active_index(self) -> Any | None:
        active = self.registry.active_name
        if active is None or active not in self.registry:
            return None
        return self.registry.get(active).index

    def _view(self, v: ModelVersion, index: Any | None) -> VersionView:
        enc = v.encoder
        differs: list[str] = []
        needs = False
        qfp = cfp = ""
        dim = 0
        if enc is not None:
            qfp, cfp, dim = enc.query_fingerprint, enc.context_fingerprint, enc.dim
            if index is not None:
                m = index.manifest
                if qfp != m.query_fingerprint:
                    differs.append("query")
                if cfp != m.encoder_fingerprint:
                    differs.append("context")
                needs = cfp != m.encoder_fingerprint and self._matching_index(v) is None
        canary = None
        if v.canary:
            c = v.canary
            canary = CanaryReport(int(c["queries"]), int(c["k"]), float(c["mean_topk_overlap"]),
                                  float(c["min_topk_overlap"]))
        return VersionView(name=v.name, state=v.state.value, query_fingerprint=qfp, context_fingerprint=cfp,
                           differs_from_index=tuple(differs), needs_reindex=needs, load_seconds=v.load_seconds,
                           error=v.error, kind=v.kind, role=v.role, base_version=v.base_version, source=v.source,
                           dim=dim, canary=canary, reindex_progress=v.reindex_progress, stale_index=v.stale_index,
                           loaded_at=v.loaded_at)

    def list(self) -> ModelListing:
        index = self._active_index()
        views = [self._view(v, index) for v in sorted(self.registry.versions(), key=lambda v: v.loaded_at)]
        return ModelListing(views, self.registry.active_name or "", self.registry.previous_name or "")

    def close(self) -> None:
        """Cancel a running re-index and wait for it (server shutdown)."""
        if self._closed:
            return
        self._closed = True
        with self._swap_lock:
            self._cancel_job("the server is shutting down")
