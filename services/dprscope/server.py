"""Composition root: settings in, running servers out.

``start(settings)`` loads the model once into the ``ModelRegistry``, opens the index,
wires the domain services to the gRPC servicers, health, reflection and metrics, runs a
warm-up query, and only then reports SERVING. It returns a ``ServerHandle`` with the
bound ports, so tests can bind port 0 and read the real ports back. ``serve`` adds the
signal handling (the only place that knows about signals) and blocks.

Shutdown order: health NOT_SERVING -> drain delay (load balancers notice) ->
``stop(grace)`` on both servers (in-flight requests finish) -> encoder and index closed.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dprscope.api.interceptors import AdminAuthInterceptor, AsyncServingInterceptor
from dprscope.api.loop_server import LoopServer
from dprscope.api.retriever import RetrieverServicer
from dprscope.encoders.batcher import MicroBatcher
from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.loading import load_bi_encoder
from dprscope.encoders.runtime import apply_backend
from dprscope.errors import DimensionMismatch
from dprscope.index.serving import ServingIndex
from dprscope.metrics import Metrics
from dprscope.models.registry import ModelRegistry, ModelVersion, VersionState
from dprscope.retrieval import RetrievalService, SearchOptions
from dprscope.settings import Settings
from dprscope.v1 import retrieval_pb2, retrieval_pb2_grpc

log = logging.getLogger(__name__)

RETRIEVER_SERVICE = retrieval_pb2.DESCRIPTOR.services_by_name["Retriever"].full_name
ADMIN_SERVICE = "dprscope.v1.ModelAdmin"
ANALYSIS_SERVICE = "dprscope.v1.Analysis"
WARMUP_QUERY = "what is dense passage retrieval"
# Warm-up queries of 1..N words. torch (oneDNN) prepares kernels per input shape, so the
# first query of each new token length costs up to ~1.5x a repeat; questions are mostly
# 5-30 tokens. Paying those firsts before SERVING (~0.5 s) keeps them off the first clients.
WARMUP_TEXT = ("who was the first person to walk on the moon and when did the apollo eleven mission "
               "land there during the summer of nineteen sixty nine according to the records kept by nasa")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServerHandle:
    """A running dprscope: servers, their bound ports, and the shared domain objects."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    retrieval: RetrievalService
    batcher: MicroBatcher
    health: health.HealthServicer
    grpc_server: LoopServer
    port: int
    analysis_server: grpc.Server | None = None
    analysis_health: health.HealthServicer | None = None
    analysis_port: int | None = None
    metrics_port: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    _metrics_http: Any = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float | None = None, drain: float | None = None) -> None:
        """Drain and stop everything; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_s if grace is None else grace
        drain = self.settings.drain_s if drain is None else drain
        log.info("draining: health NOT_SERVING, then %.1fs before stopping (grace %.1fs)", drain, grace)
        self.health.enter_graceful_shutdown()
        if self.analysis_health is not None:
            self.analysis_health.enter_graceful_shutdown()
        if drain > 0:
            time.sleep(drain)
        events = [self.grpc_server.stop(grace)]
        if self.analysis_server is not None:
            events.append(self.analysis_server.stop(grace))
        for event in events:
            event.wait()
        for closer in self.extras.get("closers", []):
            try:
                closer()
            except Exception:
                log.exception("closing %r failed", closer)
        self.batcher.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        for version in self.registry.versions():
            if version.index is not None:
                version.index.close()
        log.info("stopped")

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    size = settings.limits.max_message_bytes
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0)]


def _bind(server: grpc.Server | LoopServer, settings: Settings, port: int) -> int:
    address = f"{settings.host}:{port}"
    try:
        if settings.tls_cert is not None and settings.tls_key is not None:
            ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
            creds = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
                                                root_certificates=ca, require_client_auth=ca is not None)
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc.aio reports a failed bind by raising; grpc.server by returning 0
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind {address}")
    return bound


def _check_pair(encoder: BiEncoder, index: ServingIndex) -> None:
    if encoder.dim != index.manifest.dim:
        raise DimensionMismatch(f"model dim {encoder.dim} does not match index dim {index.manifest.dim} "
                                f"({index.directory})")
    if encoder.context_fingerprint != index.manifest.encoder_fingerprint:
        log.warning("the index %s was built with context encoder %s, serving with %s: scores may be off",
                    index.directory, index.manifest.encoder_fingerprint[:12], encoder.context_fingerprint[:12])


def _metrics_listener(metrics: Metrics, retriever_health: health.HealthServicer):
    def update(registry: ModelRegistry) -> None:
        versions = registry.versions()
        metrics.versions_loaded.set(len(versions))
        active = registry.active_name
        if active is None:
            retriever_health.set(RETRIEVER_SERVICE, NOT_SERVING)
            return
        version = registry.get(active)
        index = version.index
        if version.encoder is None or index is None:
            return
        metrics.set_active_model(active, version.encoder.query_fingerprint, version.encoder.context_fingerprint,
                                 index.manifest.index_version)
        metrics.index_passages.clear()
        metrics.index_passages.labels(active).set(index.manifest.passages)
        stale = version.stale_index or version.encoder.context_fingerprint != index.manifest.encoder_fingerprint
        metrics.index_stale.set(1 if stale else 0)
    return update


def start(settings: Settings, *, metrics: Metrics | None = None, encoder: BiEncoder | None = None) -> ServerHandle:
    """Build and start everything ``settings`` describes; returns when SERVING."""
    metrics = metrics or Metrics()
    started = time.perf_counter()
    encoder = apply_backend(encoder or load_bi_encoder(settings.model, pooling=settings.pooling),
                            backend=settings.backend, quantize=settings.quantize, device=settings.device,
                            cache_dir=settings.onnx_cache_dir)
    index = ServingIndex.open(Path(settings.index_dir), mmap=settings.mmap_index, device=settings.device)
    _check_pair(encoder, index)

    registry = ModelRegistry(keep_previous=settings.keep_previous)
    retriever_health = health.HealthServicer(experimental_non_blocking=True,
                                             experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2))
    for name in ("", RETRIEVER_SERVICE, ADMIN_SERVICE):
        retriever_health.set(name, NOT_SERVING)
    registry.on_change(_metrics_listener(metrics, retriever_health))

    batcher = MicroBatcher(max_batch=settings.encode_max_batch, max_wait_s=settings.encode_max_wait_ms / 1e3,
                           queue_size=settings.queue_size)
    metrics.queue_capacity.set(settings.queue_size)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    retrieval = RetrievalService(registry, batcher, settings.limits, metrics)

    registry.add(ModelVersion(name=settings.model_version, encoder=encoder, index=index,
                              state=VersionState.READY, source=settings.model, kind="FULL", role="BOTH",
                              load_seconds=time.perf_counter() - started))
    registry.activate(settings.model_version)

    # The retrieval port runs on an event loop (see api/loop_server.py); its blocking
    # handlers (ModelAdmin, health, store lookups) get the thread pool.
    server = LoopServer(interceptors=[AdminAuthInterceptor(settings.admin_token),
                                      AsyncServingInterceptor(metrics, "retrieval", settings.max_inflight)],
                        options=_server_options(settings), sync_workers=settings.grpc_workers)
    retrieval_pb2_grpc.add_RetrieverServicer_to_server(RetrieverServicer(retrieval), server.server)
    health_pb2_grpc.add_HealthServicer_to_server(retriever_health, server.server)
    service_names = [RETRIEVER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
    handle_extras: dict[str, Any] = {"closers": []}
    admin = _attach_admin(server.server, settings, registry, metrics, handle_extras)
    if admin:
        service_names.append(ADMIN_SERVICE)
    reflection.enable_server_reflection(service_names, server.server)
    try:
        port = _bind(server, settings, settings.port)
        server.start()
    except BaseException:
        server.stop(0).wait()
        batcher.stop()
        raise

    handle = ServerHandle(settings=settings, metrics=metrics, registry=registry, retrieval=retrieval,
                          batcher=batcher, health=retriever_health, grpc_server=server, port=port,
                          extras=handle_extras)
    try:
        _attach_analysis(handle)
        if settings.metrics_port is not None:
            http_server, _ = metrics.serve_http(settings.metrics_port, settings.host)
            handle._metrics_http = http_server
            handle.metrics_port = int(http_server.server_port)
        # Warm-up: the first forward pass is slow (allocations, kernel selection); pay it
        # before any client does, and only then say SERVING. It is not client traffic, so it
        # goes through a metrics-less view of the same registry and batcher.
        _warm_up(RetrievalService(registry, batcher, settings.limits))
        batcher.observer = lambda s: (metrics.batch_size.observe(s.texts), metrics.batch_jobs.observe(s.jobs),
                                      metrics.batch_encode.observe(s.encode_s))
    except BaseException:
        handle.stop(grace=0, drain=0)
        raise
    for name in ("", RETRIEVER_SERVICE, ADMIN_SERVICE):
        retriever_health.set(name, SERVING)
    if handle.analysis_health is not None:
        for name in ("", ANALYSIS_SERVICE):
            handle.analysis_health.set(name, SERVING)
    log.info("serving %s on port %d (analysis %s, metrics %s) after %.1fs", settings.index_dir, port,
             handle.analysis_port, handle.metrics_port, time.perf_counter() - started)
    return handle


def _warm_up(retrieval: RetrievalService) -> None:
    """Run the query shapes clients will send through the real path (encoder thread included)."""
    retrieval.search(WARMUP_QUERY, SearchOptions(top_k=1))
    words = WARMUP_TEXT.split()
    for n in range(1, len(words) + 1):
        retrieval.search(" ".join(words[:n]), SearchOptions(top_k=1))


def _attach_admin(server: grpc.aio.Server, settings: Settings, registry: ModelRegistry, metrics: Metrics,
                  extras: dict[str, Any]) -> bool:
    """Register ModelAdmin on the retrieval server when the admin room is available."""
    try:
        from dprscope.api.admin import attach_admin
    except ImportError:
        return False
    return attach_admin(server, settings, registry, metrics, extras)


def _attach_analysis(handle: ServerHandle) -> None:
    """Start the Analysis sidecar server (its own port and executor) when enabled."""
    if handle.settings.analysis_port is None:
        return
    try:
        from dprscope.api.analysis import attach_analysis
    except ImportError:
        return
    attach_analysis(handle)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then drain and return 0.

    This function owns its process, so it (and not ``start``, which tests and embedders call
    inside their own processes) sets process-wide knobs such as the GIL switch interval.
    """
    sys.setswitchinterval(settings.gil_switch_ms / 1e3)
    handle = start(settings)
    stop_requested = threading.Event()

    def _on_signal(signum, _frame) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"dprscope serving on {settings.host}:{handle.port} "
          f"(metrics :{handle.metrics_port}, analysis :{handle.analysis_port})", flush=True)
    while not stop_requested.wait(0.5):
        pass
    handle.stop()
    return 0
