"""Canary queries: a cheap forward pass that tells a broken checkpoint from a working one.

Before a new version may serve, it encodes the canary set: every vector must be finite
and of the index's dimension. We also search the serving index with both the active
and the new query vectors and report how much the top-k moved, so an operator sees at
load time whether an edit that should touch one fact reshuffled everything.

Both of those judge the *weights* and run on torch. A server on ONNX Runtime then converts
the version (export, maybe int8); ``check_runtime_agreement`` runs the canaries once more
through the converted encoder and requires its vectors to stay close to the torch ones,
so a broken export fails the load instead of serving skewed vectors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.errors import DimensionMismatch, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

DEFAULT_CANARY_K = 10
# Minimum per-canary cosine between the served runtime and the torch weights. ORT fp32
# matches torch to >= 0.9999; the int8 recipe measured 0.9967 min on 100 NQ questions.
RUNTIME_AGREEMENT = {"fp32": 0.999, "bf16": 0.999, "int8": 0.98}
MAX_CANARY_QUERIES = 256
DEFAULT_CANARY_QUERIES: tuple[str, ...] = (
    "who wrote hamlet",
    "what is the capital of france",
    "when did world war ii end",
    "how does photosynthesis work",
    "who painted the mona lisa",
    "what is the speed of light",
    "where is mount everest",
    "who was the first president of the united states",
    "what causes earthquakes",
    "how many planets are in the solar system",
    "what language is spoken in brazil",
    "who discovered penicillin",
    "what is dense passage retrieval",
    "when was the printing press invented",
    "what is the largest ocean on earth",
    "who composed the four seasons",
)


@dataclass(frozen=True)
class CanaryReport:
    """How the canary set fared on a candidate version."""

    queries: int
    k: int
    mean_topk_overlap: float
    min_topk_overlap: float

    def as_dict(self) -> dict[str, float]:
        return {"queries": self.queries, "k": self.k, "mean_topk_overlap": self.mean_topk_overlap,
                "min_topk_overlap": self.min_topk_overlap}


def load_canary_queries(path: Path | None) -> tuple[str, ...]:
    """One query per line (blank lines and ``#`` comments skipped); the default set without a file."""
    if path is None:
        return DEFAULT_CANARY_QUERIES
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise NotFound(f"canary file {path} does not exist") from None
    queries = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not queries:
        raise InvalidArgument(f"canary file {path} holds no queries")
    if len(queries) > MAX_CANARY_QUERIES:
        raise InvalidArgument(f"canary file {path} holds {len(queries)} queries; the limit is {MAX_CANARY_QUERIES}")
    return queries


def _check_vectors(vectors: np.ndarray, n: int, dim: int, side: str) -> None:
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise FailedPrecondition(f"{side} encoder returned shape {vectors.shape} for {n} canary texts")
    if vectors.shape[1] != dim:
        raise DimensionMismatch(f"{side} encoder produces dim {vectors.shape[1]}; the index has dim {dim}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors)).any(axis=1).sum())
        raise FailedPrecondition(f"{side} encoder produced non-finite vectors (NaN/Inf) for {bad} of {n} "
                                 "canary queries")


def run_canary(candidate: BiEncoder, index_dim: int, queries: tuple[str, ...],
               active: BiEncoder | None = None, index=None, k: int = DEFAULT_CANARY_K,
               check_context: bool = True) -> CanaryReport:
    """Encode the canaries with ``candidate``; compare its top-k with ``active``'s on ``index``.

    Raises:
        DimensionMismatch: an encoder's dim differs from ``index_dim``.
        FailedPrecondition: non-finite outputs.
    """
    q = candidate.encode_queries(list(queries))
    _check_vectors(q, len(queries), index_dim, "query")
    if check_context:  # the canaries as passages: the context side must be finite too
        c = candidate.encode_passages(["canary"] * len(queries), list(queries))
        _check_vectors(c, len(queries), index_dim, "context")
    if active is None or index is None:
        return CanaryReport(len(queries), k, 1.0, 1.0)
    k = max(1, min(k, int(index.manifest.passages)))
    reference = active.encode_queries(list(queries))
    _, new_rows = index.search(q, k)
    _, old_rows = index.search(reference, k)
    overlaps = []
    for new, old in zip(new_rows, old_rows, strict=True):
        a = {int(r) for r in new if r >= 0}
        b = {int(r) for r in old if r >= 0}
        overlaps.append(len(a & b) / max(1, len(b)))
    return CanaryReport(len(queries), k, float(np.mean(overlaps)), float(np.min(overlaps)))


def canary_vectors(encoder: BiEncoder, queries: tuple[str, ...], with_context: bool) -> list[np.ndarray]:
    """The canaries as queries (and, ``with_context``, as passages) through ``encoder``."""
    out = [encoder.encode_queries(list(queries))]
    if with_context:
        out.append(encoder.encode_passages(["canary"] * len(queries), list(queries)))
    return out


def check_runtime_agreement(reference: list[np.ndarray], served: list[np.ndarray], precision: str) -> float:
    """Min cosine between torch (``reference``) and served vectors of the canaries.

    Raises:
        FailedPrecondition: non-finite served vectors, or agreement below ``RUNTIME_AGREEMENT``.
    """
    floor = RUNTIME_AGREEMENT[precision]
    worst = 1.0
    for side, ref, got in zip(("query", "context"), reference, served, strict=False):
        if got.shape != ref.shape or not np.isfinite(got).all():
            raise FailedPrecondition(f"the {precision} runtime's {side} encoder returned shape {got.shape} or "
                                     f"non-finite vectors for the canaries (torch: {ref.shape})")
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cos = (ref * got).sum(axis=1) / np.maximum(norms, 1e-12)
        worst = min(worst, float(cos.min()))
    if worst < floor:
        raise FailedPrecondition(f"the {precision} runtime disagrees with the checkpoint's torch weights: canary "
                                 f"cosine {worst:.4f} < {floor} (a broken export or quantisation)")
    return worst
