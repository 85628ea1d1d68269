"""Every Prometheus metric dprscope exposes, on its own registry.

``server.py`` builds one ``Metrics`` and passes it down; tests build a fresh one, so no
global state leaks between them. Names follow Prometheus conventions: the ``dprscope_``
prefix, base units in the suffix (``_seconds``, ``_total``, ``_bytes``), and only bounded
label sets (``method``, ``code``, ``stage``, ``model_version``, ``result``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
                     0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LONG_JOB_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STAGES = ("queue", "encode", "search", "fetch")


@dataclass
class Metrics:
    """The metric families; attributes are the public surface other modules use."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("dprscope_requests_total", "gRPC requests by method and status code.",
                                ["method", "code"], registry=r)
        self.request_failures = Counter("dprscope_request_failures_total",
                                        "gRPC requests that ended with a non-OK status.",
                                        ["method", "code"], registry=r)
        self.request_duration = Histogram("dprscope_request_duration_seconds",
                                          "End-to-end handler time per request.", ["method"],
                                          buckets=LATENCY_BUCKETS_S, registry=r)
        self.stage_duration = Histogram("dprscope_stage_duration_seconds",
                                        "Time per request stage: queue, encode, search, fetch.", ["stage"],
                                        buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("dprscope_encode_batch_size", "Texts per query-encoder forward pass.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_jobs = Histogram("dprscope_encode_batch_requests", "Requests sharing one forward pass.",
                                    buckets=BATCH_BUCKETS, registry=r)
        # Per batch, not per request: its rate of sum is the encoder's busy fraction (1.0 = saturated),
        # which per-request stage times cannot show.
        self.batch_encode = Histogram("dprscope_encode_batch_seconds", "Wall time of one query-encoder forward pass.",
                                      buckets=LATENCY_BUCKETS_S, registry=r)
        self.inflight = Gauge("dprscope_inflight_requests", "Requests being handled now.", ["server"],
                              registry=r)
        self.queue_depth = Gauge("dprscope_encode_queue_depth", "Encode jobs waiting for the encoder.",
                                 registry=r)
        self.queue_capacity = Gauge("dprscope_encode_queue_capacity", "Size of the bounded encode queue.",
                                    registry=r)
        self.index_passages = Gauge("dprscope_index_passages", "Passages in the serving index.",
                                    ["model_version"], registry=r)
        self.model_info = Gauge("dprscope_model_info",
                                "1 for the active model version; labels carry its identity.",
                                ["model_version", "query_fingerprint", "context_fingerprint", "index_version"],
                                registry=r)
        self.versions_loaded = Gauge("dprscope_model_versions_loaded", "Model versions held in memory.",
                                     registry=r)
        self.version_requests = Counter("dprscope_model_version_requests_total",
                                        "Search requests served, by the model version that served them.",
                                        ["model_version"], registry=r)
        self.index_stale = Gauge("dprscope_index_stale",
                                 "1 when the active context encoder differs from the index's encoder.",
                                 registry=r)
        # Hot swap.
        self.swaps = Counter("dprscope_swaps_total", "Activations and rollbacks by result.",
                             ["action", "result"], registry=r)
        self.checkpoint_loads = Counter("dprscope_checkpoint_loads_total", "Checkpoint loads by result.",
                                        ["kind", "result"], registry=r)
        self.load_duration = Histogram("dprscope_checkpoint_load_duration_seconds",
                                       "Time to load and validate a checkpoint.", buckets=LONG_JOB_BUCKETS_S,
                                       registry=r)
        self.activation_duration = Histogram("dprscope_activation_duration_seconds",
                                             "Time from Activate to the new version serving.",
                                             buckets=(*LATENCY_BUCKETS_S, 30.0, 60.0, 300.0, 1800.0), registry=r)
        self.reindex_progress = Gauge("dprscope_reindex_progress_ratio",
                                      "Shadow re-index progress (0..1) per target version.",
                                      ["model_version"], registry=r)
        self.reindex_passages = Counter("dprscope_reindex_passages_total", "Passages re-encoded by re-indexing.",
                                        registry=r)
        # Analysis sidecar.
        self.analysis_jobs = Counter("dprscope_analysis_jobs_total", "Analysis jobs by method and result.",
                                     ["method", "result"], registry=r)
        self.analysis_running = Gauge("dprscope_analysis_jobs_running", "Analysis jobs running now.",
                                      registry=r)
        self.analysis_duration = Histogram("dprscope_analysis_duration_seconds", "Analysis job duration.",
                                           ["method"], buckets=LONG_JOB_BUCKETS_S, registry=r)
        self._info_lock = threading.Lock()

    def set_active_model(self, version: str, query_fp: str, context_fp: str, index_version: str) -> None:
        """Point the info metric at the new active version (old label sets disappear)."""
        with self._info_lock:
            self.model_info.clear()
            self.model_info.labels(version, query_fp[:16], context_fp[:16], index_version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve_http(self, port: int, host: str = "0.0.0.0"):
        """Start the ``/metrics`` HTTP endpoint; returns (server, thread), port 0 picks one."""
        return start_http_server(port, addr=host, registry=self.registry)
