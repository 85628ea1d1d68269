"""A query encoder and a context encoder that share one vector space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dprscope.encoders.text_encoder import TextEncoder

METRICS = ("ip",)


@dataclass
class BiEncoder:
    """The unit the registry versions: two text encoders (possibly the same object).

    ``shared`` is true when one set of weights encodes both sides (sentence-transformers
    models); DPR pairs have two. Scores are always inner products: normalised models get
    cosine for free, DPR was trained on raw inner product.
    """

    query: TextEncoder
    context: TextEncoder
    kind: str
    source: str
    metric: str = "ip"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def shared(self) -> bool:
        return self.query is self.context

    @property
    def dim(self) -> int:
        return self.query.dim

    @property
    def query_fingerprint(self) -> str:
        return self.query.fingerprint

    @property
    def context_fingerprint(self) -> str:
        return self.context.fingerprint

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.query.encode(queries, batch_size=batch_size)

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self.context.encode(texts, titles=titles, batch_size=batch_size)

    def describe(self) -> dict[str, object]:
        """A JSON-able summary stamped into manifests and shown by admin listings."""
        return {
            "kind": self.kind,
            "source": self.source,
            "metric": self.metric,
            "dim": self.dim,
            "pooling": self.context.config.pooling,
            "normalize": self.context.config.normalize,
            "max_length": self.context.config.max_length,
            "passage_format": self.context.config.passage_format,
            "query_fingerprint": self.query_fingerprint,
            "context_fingerprint": self.context_fingerprint,
            # Reduced-precision compute keeps the fp32 fingerprints; say so beside them.
            **({"precision": self.extra["precision"]}
               if self.extra.get("precision", "fp32") not in ("fp32", "none") else {}),
        }
