"""``dprscope build-index --engine ray``: passages encoded by a Ray Data actor pool.

The driver streams the corpus (after the rows a previous run finished: resume is the
builder's) in windows of ``window`` passages. Each window becomes a Ray dataset that
``map_batches`` sends through a pool of ``PassageEncoderActor``s, one model per actor
(on a GPU each when the cluster has them), with order preserved. Batches are exactly
the local build's batches (``batch_size`` rows, same order), so the vectors are the same
numbers and the index is the same index.

Why windows rather than one dataset over the whole corpus: a 21M-passage corpus does not
fit in the driver as Python objects, and DPR's TSV with ``split_words`` has to be split by
the same reader the local build uses. A window costs one actor-pool start (model load);
with the default 64 batches per actor per window that is a few percent of encode time.

Ray is the optional ``[distributed]`` extra; importing this module without it is fine,
calling ``ray_encode_batches`` is not.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dprscope.errors import FailedPrecondition
from dprscope.index.builder import EncodeBatches, Passage

log = logging.getLogger(__name__)

DEFAULT_ACTORS = 2
BATCHES_PER_ACTOR_PER_WINDOW = 64


def ray_available() -> bool:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise FailedPrecondition(
            "--engine ray needs Ray Data: pip install 'dprscope[distributed]' (ray[data])") from exc
    return ray


@dataclass(frozen=True)
class RayEncodeConfig:
    """Which model every actor loads and how the pool is shaped."""

    model: str
    pooling: str | None = None
    backend: str = "torch"
    quantize: str | None = None
    device: str = "auto"
    actors: int = DEFAULT_ACTORS
    gpus_per_actor: float = 0.0  # 0: CPU actors; 1: one GPU each (set automatically when the cluster has GPUs)
    threads_per_actor: int = 1
    window: int = 0  # passages per Ray dataset; 0: actors * batch_size * BATCHES_PER_ACTOR_PER_WINDOW
    expected_fingerprint: str = ""


class PassageEncoderActor:
    """One model per actor, loaded once in ``__init__``; ``__call__`` encodes one batch."""

    def __init__(self, config: RayEncodeConfig) -> None:
        import torch

        from dprscope.encoders.runtime import build_encoder

        torch.set_num_threads(max(1, config.threads_per_actor))
        device = config.device if config.gpus_per_actor > 0 else "cpu"
        self.bi = build_encoder(config.model, pooling=config.pooling, backend=config.backend,
                                quantize=config.quantize, device=device)
        if config.expected_fingerprint and self.bi.context_fingerprint != config.expected_fingerprint:
            raise FailedPrecondition(
                f"actor loaded context encoder {self.bi.context_fingerprint[:12]} from {config.model!r}, "
                f"the driver has {config.expected_fingerprint[:12]}: workers see different model files")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        titles = [str(t) for t in batch["title"]]
        texts = [str(t) for t in batch["text"]]
        vectors = self.bi.encode_passages(titles, texts, batch_size=max(1, len(texts)))
        return {"vector": np.asarray(vectors, dtype=np.float32)}


def _cluster_gpus(ray: Any) -> float:
    try:
        return float(ray.cluster_resources().get("GPU", 0.0))
    except Exception:
        return 0.0


def ray_encode_batches(config: RayEncodeConfig) -> EncodeBatches:
    """An ``EncodeBatches`` engine for ``build_index`` backed by a Ray Data actor pool.

    Connects to the running Ray cluster (``ray.init`` by the caller, or ``RAY_ADDRESS``)
    or starts a local one sized for ``config.actors``.
    """
    ray = _require_ray()
    if config.actors < 1:
        raise ValueError(f"actors must be >= 1, got {config.actors}")

    def encode(passages: Iterator[Passage], batch_size: int) -> Iterator[tuple[list[Passage], np.ndarray]]:
        if not ray.is_initialized():
            ray.init(num_cpus=max(config.actors * config.threads_per_actor, 1), include_dashboard=False,
                     log_to_driver=False)
        gpus = config.gpus_per_actor
        if gpus == 0 and config.device != "cpu" and _cluster_gpus(ray) >= config.actors:
            gpus = 1.0
        cfg = RayEncodeConfig(**{**config.__dict__, "gpus_per_actor": gpus})
        window = config.window or config.actors * batch_size * BATCHES_PER_ACTOR_PER_WINDOW
        window = max(batch_size, window // batch_size * batch_size)  # whole batches only
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        while True:
            chunk = list(itertools.islice(passages, window))
            if not chunk:
                return
            yield from _encode_window(ray, cfg, chunk, batch_size)

    return encode


def _encode_window(ray: Any, cfg: RayEncodeConfig, chunk: list[Passage], batch_size: int
                   ) -> Iterator[tuple[list[Passage], np.ndarray]]:
    """One Ray dataset: blocks of exactly ``batch_size`` rows -> actor pool -> batches in order."""
    items = [{"title": p[1], "text": p[2]} for p in chunk]
    blocks = math.ceil(len(items) / batch_size)
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    kwargs: dict[str, Any] = {"num_gpus": cfg.gpus_per_actor} if cfg.gpus_per_actor else {"num_cpus": 1}
    encoded = ds.map_batches(PassageEncoderActor, fn_constructor_args=(cfg,), batch_size=batch_size,
                             batch_format="numpy", concurrency=min(cfg.actors, blocks), **kwargs)
    pos = 0
    for out in encoded.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        vectors = np.asarray(out["vector"], dtype=np.float32)
        if vectors.ndim == 1:  # a column of per-row arrays
            vectors = np.stack(list(vectors))
        yield chunk[pos:pos + len(vectors)], vectors
        pos += len(vectors)
    if pos != len(chunk):
        raise FailedPrecondition(f"Ray returned {pos} vectors for {len(chunk)} passages")


def build_index_ray(corpus: Path, out_dir: Path, config: RayEncodeConfig, **build_kwargs: Any):
    """``build_index`` with the encode stage on Ray; same arguments, same directory.

    The driver loads the model too: its fingerprints go into ``build.json`` and the
    manifest, and every actor checks that it loaded the same weights.
    """
    from dprscope.encoders.runtime import build_encoder
    from dprscope.index.builder import build_index

    encoder = build_encoder(config.model, pooling=config.pooling, device="cpu")
    cfg = RayEncodeConfig(**{**config.__dict__, "expected_fingerprint": encoder.context_fingerprint})
    return build_index(corpus, out_dir, encoder, encode_batches=ray_encode_batches(cfg), **build_kwargs)
