"""How many FFN neurons are strongly activated across a set of (query, positive) pairs.

The paper's Figure 1 counts, per layer, the neurons whose knowledge-neuron attribution
exceeds ``threshold * max`` for at least one input. This runs ``attribute`` once per
pair (steps batched as always) and aggregates: the count of neurons that fire for any
example, and a histogram of how many examples each neuron fires for, which separates a
few always-on neurons from many example-specific ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dprscope.analysis.attribution import (
    DEFAULT_N_STEPS,
    DEFAULT_THRESHOLD,
    attribute,
    resolve_layers,
    resolve_sublayers,
    validate_n_steps,
    validate_threshold,
)
from dprscope.analysis.data import Context, DprRecord
from dprscope.analysis.results import ActivationStatsResult, LayerActivationStats
from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.errors import InvalidArgument
from dprscope.jobs import CancelToken, ProgressFn, ProgressTicker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryPassagePair:
    """A query, its positive passage and optional negatives (needed for ``positive_prob``)."""

    query: str
    passage: Context
    negatives: tuple[Context, ...] = ()


def pairs_from_records(records: Sequence[DprRecord], negatives: int = 0) -> list[QueryPassagePair]:
    """One pair per record with a positive: its first positive and first ``negatives`` hard negatives."""
    return [QueryPassagePair(r.question, r.positive_ctxs[0], tuple(r.hard_negative_ctxs[:negatives]))
            for r in records if r.positive_ctxs]


def _as_pair(p: QueryPassagePair | tuple[str, str | Context], i: int) -> QueryPassagePair:
    if isinstance(p, QueryPassagePair):
        return p
    if isinstance(p, tuple) and len(p) == 2:
        passage = Context(text=p[1]) if isinstance(p[1], str) else p[1]
        return QueryPassagePair(p[0], passage)
    raise InvalidArgument(f"pair {i} must be a QueryPassagePair or (query, passage), got {type(p).__name__}")


def activation_stats(bi: BiEncoder, pairs: Sequence[QueryPassagePair | tuple[str, str | Context]], *,
                     layers: Sequence[int] | None = None, sublayer: str = "intermediate",
                     threshold: float = DEFAULT_THRESHOLD, n_steps: int = DEFAULT_N_STEPS,
                     target: str = "score", side: str = "query", method: str = "riemann_right",
                     positions: str = "all", internal_batch_size: int | None = None,
                     progress: ProgressFn | None = None, cancel: CancelToken | None = None
                     ) -> ActivationStatsResult:
    """Per (layer, sublayer): neurons strongly activated for >= 1 example, and a fire-count histogram.

    Args:
        bi: the loaded bi-encoder.
        pairs: ``QueryPassagePair``s or ``(query, passage)`` tuples.
        layers, sublayer, threshold, n_steps, target, side, method, positions,
        internal_batch_size: as for ``attribute``.
        progress: one tick per example.
        cancel: checked between chunks of every example.

    Raises:
        InvalidArgument: no pairs, or any argument ``attribute`` would reject.
    """
    started = time.monotonic()
    if not pairs:
        raise InvalidArgument("no (query, passage) pairs given")
    items = [_as_pair(p, i) for i, p in enumerate(pairs)]
    validate_n_steps(n_steps)
    threshold = validate_threshold(threshold)
    sublayers = resolve_sublayers(sublayer)
    encoder = bi.query if str(side).lower() == "query" else bi.context
    layer_ids = resolve_layers(layers, encoder.num_layers)
    ticker = ProgressTicker("activation_stats", len(items), progress)
    fire_counts: dict[tuple[int, str], np.ndarray] = {}
    per_example: list[dict[tuple[int, str], int]] = []
    for i, pair in enumerate(items):
        result = attribute(bi, pair.query, [pair.passage, *pair.negatives], target=target, side=side,
                           layers=layer_ids, sublayer=sublayer, n_steps=n_steps, method=method,
                           positions=positions, threshold=threshold, top_neurons=0, return_scores=True,
                           internal_batch_size=internal_batch_size, cancel=cancel)
        counts: dict[tuple[int, str], int] = {}
        for entry in result.layers:
            assert entry.scores is not None  # return_scores=True above; not input validation
            scores = entry.scores.astype(np.float64)
            fired = scores > threshold * entry.max_attribution if entry.max_attribution > 0 \
                else np.zeros(scores.shape, dtype=bool)
            key = (entry.layer, entry.sublayer)
            fire_counts.setdefault(key, np.zeros(entry.neurons, dtype=np.int64))
            fire_counts[key] += fired
            counts[key] = int(fired.sum())
        per_example.append(counts)
        ticker.update(i + 1, f"example {i + 1}/{len(items)}")
    n = len(items)
    stats = []
    for layer in layer_ids:
        for sub in sublayers:
            fc = fire_counts[(layer, sub)]
            hist = np.bincount(fc, minlength=n + 1)
            stats.append(LayerActivationStats(layer=layer, sublayer=sub, neurons_active=int((fc > 0).sum()),
                                              neurons=int(fc.size),
                                              fire_count_histogram=tuple(int(h) for h in hist)))
    ticker.update(n, "done", force=True)
    return ActivationStatsResult(examples=n, layers=tuple(stats), threshold=threshold, n_steps=n_steps,
                                 target=str(target).lower(), side=str(side).lower(),
                                 seconds=time.monotonic() - started, per_example_counts=tuple(per_example))
