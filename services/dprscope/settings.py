"""The one configuration object of a running server.

``cli.py`` parses flags (each with a ``DPRSCOPE_*`` environment counterpart) into a frozen
``Settings`` and hands it to ``server.py``; nothing else reads the environment. Limits
live here as ``DEFAULT_*`` constants so README, flags and code agree on one number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 50051
DEFAULT_ANALYSIS_PORT = 50052
DEFAULT_METRICS_PORT = 9464
DEFAULT_MODEL = "default"
DEFAULT_MODEL_VERSION = "v1"
DEFAULT_TOP_K = 10
DEFAULT_MAX_TOP_K = 1000
DEFAULT_MAX_QUERY_BYTES = 4096
DEFAULT_MAX_BATCH_QUERIES = 256
DEFAULT_MAX_PASSAGE_IDS = 1000
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_ENCODE_MAX_BATCH = 64
DEFAULT_ENCODE_MAX_WAIT_MS = 2.0
DEFAULT_QUEUE_SIZE = 256
DEFAULT_GRPC_WORKERS = 64
DEFAULT_MAX_INFLIGHT = 512
DEFAULT_DRAIN_S = 1.0
DEFAULT_GRACE_S = 10.0
DEFAULT_ANALYSIS_CONCURRENCY = 1
DEFAULT_ANALYSIS_QUEUE = 4
# The interpreter's GIL switch interval for a serving process (CPython's default is 5 ms).
# The encoder thread needs the GIL for a moment between every torch op; with request
# threads running Python it could wait up to the full interval each time. At 1 ms the
# bench measured c=1 p50 25.1 -> 22.8 ms and c=32 135 -> 155 QPS; 0.2 ms gained nothing more.
DEFAULT_GIL_SWITCH_MS = 1.0
# libgomp spin-wait iterations before an idle OpenMP worker sleeps (~80 ms on the 2-vCPU
# dev host; libgomp's own default, 300,000, is ~9 ms). Applied by the CLI before torch loads.
DEFAULT_OMP_SPINCOUNT = 3_000_000
DEFAULT_ANALYSIS_YIELD = True  # analysis runs niced and waits between chunks while Search is busy
DEFAULT_KEEP_PREVIOUS = 2
DEFAULT_BACKEND = "torch"
BACKENDS = ("torch", "onnx")
DEFAULT_QUANTIZE: str | None = None
# int8: the ONNX recipe (backend onnx); bf16: torch autocast (backend torch, native bf16 hardware).
QUANTIZE_MODES = ("none", "int8", "bf16")
DEFAULT_DEVICE = "auto"
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Limits:
    """Request limits; each is a flag because a deployment's right value differs."""

    default_top_k: int = DEFAULT_TOP_K
    max_top_k: int = DEFAULT_MAX_TOP_K
    max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES
    max_batch_queries: int = DEFAULT_MAX_BATCH_QUERIES
    max_passage_ids: int = DEFAULT_MAX_PASSAGE_IDS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Settings:
    """Everything ``server.start`` needs; built once by the CLI (or a test)."""

    index_dir: Path
    model: str = DEFAULT_MODEL
    model_version: str = DEFAULT_MODEL_VERSION
    pooling: str | None = None
    backend: str = DEFAULT_BACKEND
    quantize: str | None = DEFAULT_QUANTIZE  # "int8" needs backend "onnx"
    device: str = DEFAULT_DEVICE  # auto: cuda when present, else cpu
    onnx_cache_dir: Path | None = None  # None: ~/.cache/dprscope/onnx
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    analysis_port: int | None = DEFAULT_ANALYSIS_PORT  # None disables the sidecar; 0 picks a free port
    metrics_port: int | None = DEFAULT_METRICS_PORT
    limits: Limits = Limits()
    encode_max_batch: int = DEFAULT_ENCODE_MAX_BATCH
    encode_max_wait_ms: float = DEFAULT_ENCODE_MAX_WAIT_MS
    queue_size: int = DEFAULT_QUEUE_SIZE
    grpc_workers: int = DEFAULT_GRPC_WORKERS
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    drain_s: float = DEFAULT_DRAIN_S
    grace_s: float = DEFAULT_GRACE_S
    mmap_index: bool = True
    admin_token: str | None = None
    checkpoint_root: Path | None = None
    data_root: Path | None = None
    keep_previous: int = DEFAULT_KEEP_PREVIOUS
    canary_file: Path | None = None
    analysis_concurrency: int = DEFAULT_ANALYSIS_CONCURRENCY
    analysis_queue: int = DEFAULT_ANALYSIS_QUEUE
    analysis_yield: bool = DEFAULT_ANALYSIS_YIELD
    gil_switch_ms: float = DEFAULT_GIL_SWITCH_MS  # applied by serve(), which owns its process
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    reindex_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.gil_switch_ms <= 100:
            raise ValueError(f"gil_switch_ms must be in (0, 100], got {self.gil_switch_ms}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {BACKENDS}")
        if (self.quantize or "none") not in QUANTIZE_MODES:
            raise ValueError(f"quantize {self.quantize!r} is not one of {QUANTIZE_MODES}")
        if (self.quantize or "none") == "int8" and self.backend != "onnx":
            raise ValueError(f"quantize 'int8' needs backend 'onnx', not {self.backend!r}")
        if (self.quantize or "none") == "bf16" and self.backend != "torch":
            raise ValueError(f"quantize 'bf16' needs backend 'torch', not {self.backend!r}")
        if self.device.split(":", 1)[0] not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {DEVICES} (optionally cuda:N)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
