"""Layer-wise linear probes: can frozen layer-l features pick the positive among N passages?

The experiment of Reichman & Heck (Table 1): for each layer ``l`` (0 = embeddings, then
one per transformer layer) and each N, the query and N passages (the positive plus N-1
hard negatives, order shuffled with a seed) are encoded by the *frozen* model, and a
linear probe trained on a split of the records predicts the positive's position on the
held-out rest. An untrained (randomly initialised) probe gives the chance baseline.

Probe design -- a *listwise linear* probe. For candidate ``j`` the probe sees the
elementwise product ``phi_j = q ⊙ p_j`` (``q``, ``p_j`` the layer-l features, dim d,
standardised with training statistics) and scores it with one shared weight vector:
``s_j = v · phi_j``; a softmax over the N scores gives the prediction, trained with
cross-entropy + L2 (Adam, full batch, numpy). Why this and not a multinomial logistic
regression over the concatenation ``[q, p_1, ..., p_N]``:

* The answer is *relational*: which slot holds the passage that matches the query. A
  linear function of the concatenation can only weigh each slot's absolute features, so
  with shuffled slots it cannot express "slot j agrees with q" at all and sits at chance
  on any layer -- it would measure the probe's blindness, not the layer's content.
* ``v · (q ⊙ p_j) = sum_k v_k q_k p_jk`` is a diagonal bilinear form: the probe is still
  linear in a fixed feature map (no hidden layer, no learned interaction beyond one
  weight per dimension), it shares weights across slots so it is permutation-equivariant,
  and with ``v = 1`` (before standardisation) it *is* the layer's inner-product score, so
  the retriever's own similarity at that layer is in the probe's hypothesis class.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from dprscope.analysis.data import DprRecord
from dprscope.analysis.results import PROBE_FEATURES, ProbeResult, ProbeScore
from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.text_encoder import TextEncoder
from dprscope.errors import InvalidArgument
from dprscope.jobs import CancelToken, ProgressFn, ProgressTicker

log = logging.getLogger(__name__)

DEFAULT_N_PASSAGES = (2, 3, 4, 5)
MAX_N_PASSAGES = 64
DEFAULT_TEST_FRACTION = 0.3
DEFAULT_PROBE_STEPS = 300
DEFAULT_PROBE_LR = 0.05
DEFAULT_PROBE_WEIGHT_DECAY = 1e-3
ENCODE_BATCH = 32


# ----------------------------------------------------------------------------- the probe itself


def fit_listwise_probe(x: np.ndarray, y: np.ndarray, *, steps: int = DEFAULT_PROBE_STEPS,
                       lr: float = DEFAULT_PROBE_LR, weight_decay: float = DEFAULT_PROBE_WEIGHT_DECAY,
                       seed: int = 0) -> np.ndarray:
    """Train ``v`` so that ``softmax_j(x[n, j] · v)`` predicts ``y[n]``.

    Full-batch Adam on mean cross-entropy plus ``weight_decay * |v|^2``, written in numpy
    with the analytic gradient. The problem is convex and tiny (d weights), so an autograd
    graph buys nothing, and torch's intra-op thread pool spins badly on a busy serving
    host for tensors this small (measured >10x slower than numpy under load).

    Args:
        x: per-candidate features ``[examples, N, d]`` (already standardised).
        y: the positive's position ``[examples]``.
        steps, lr, weight_decay: optimiser settings.
        seed: initialisation seed.

    Returns:
        The weight vector ``[d]``.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    n, n_cand, d = x.shape
    flat = x.reshape(n * n_cand, d)
    onehot = np.zeros((n, n_cand))
    onehot[np.arange(n), np.asarray(y)] = 1.0
    v = rng.standard_normal(d) * 0.01
    m = np.zeros(d)
    s = np.zeros(d)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        logits = (flat @ v).reshape(n, n_cand)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = flat.T @ ((p - onehot).reshape(-1) / n) + 2.0 * weight_decay * v
        m = beta1 * m + (1 - beta1) * grad
        s = beta2 * s + (1 - beta2) * grad * grad
        v = v - lr * (m / (1 - beta1**t)) / (np.sqrt(s / (1 - beta2**t)) + eps)
    return v


def untrained_probe(d: int, seed: int = 0) -> np.ndarray:
    """A randomly initialised, never trained probe: the chance baseline."""
    return np.random.default_rng(seed + 1_000_003).standard_normal(d) / math.sqrt(d)


def probe_accuracy(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> float:
    """Fraction of examples whose highest-scoring candidate is the positive."""
    if len(y) == 0:
        return math.nan
    return float(((np.asarray(x, dtype=np.float64) @ v).argmax(axis=1) == np.asarray(y)).mean())


def pair_features(q: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """``q ⊙ p_j`` per candidate: ``[n, d]`` x ``[n, N, d]`` -> ``[n, N, d]``."""
    return q[:, None, :] * cands


def evaluate_split(q: np.ndarray, cands: np.ndarray, labels: np.ndarray, train: np.ndarray,
                   test: np.ndarray, *, seed: int = 0, steps: int = DEFAULT_PROBE_STEPS
                   ) -> tuple[float, float]:
    """Train on ``train`` rows, return (trained, untrained) held-out accuracy on ``test`` rows."""
    feats = pair_features(q, cands).astype(np.float32)
    mean = feats[train].reshape(-1, feats.shape[-1]).mean(axis=0)
    std = feats[train].reshape(-1, feats.shape[-1]).std(axis=0) + 1e-6
    # An affine per-dimension map keeps the probe linear; the mean shift is the same for
    # every candidate, so it cannot leak the answer.
    feats = (feats - mean) / std
    y = labels.astype(np.int64)
    v = fit_listwise_probe(feats[train], y[train], steps=steps, seed=seed)
    trained = probe_accuracy(feats[test], y[test], v)
    untrained = probe_accuracy(feats[test], y[test], untrained_probe(feats.shape[-1], seed))
    return trained, untrained


# ----------------------------------------------------------------------------- features


def _layer_features(encoder: TextEncoder, texts: Sequence[str], titles: Sequence[str] | None,
                    layers: Sequence[int], mode: str, cancel: CancelToken | None,
                    on_batch) -> dict[int, np.ndarray]:
    """Frozen ``hidden_states[l]`` features (CLS or masked mean) for every text."""
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        for start in range(0, len(texts), ENCODE_BATCH):
            if cancel is not None:
                cancel.raise_if_cancelled()
            batch_titles = list(titles[start:start + ENCODE_BATCH]) if titles is not None else None
            feats = encoder.tokenize(list(texts[start:start + ENCODE_BATCH]), batch_titles)
            hidden = encoder.backbone(**feats, output_hidden_states=True).hidden_states
            mask = feats["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
            for layer in layers:
                h = hidden[layer]
                pooled = h[:, 0] if mode == "cls" else (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[layer].append(pooled.float().cpu().numpy())
            on_batch()
    return {layer: np.concatenate(chunks, axis=0) for layer, chunks in out.items()}


# ----------------------------------------------------------------------------- the verb


def _validate_n_passages(n_passages: Sequence[int]) -> tuple[int, ...]:
    if not n_passages:
        return DEFAULT_N_PASSAGES
    out = []
    for n in n_passages:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 2 <= n <= MAX_N_PASSAGES:
            raise InvalidArgument(f"n_passages values must be integers in [2, {MAX_N_PASSAGES}], got {n!r}")
        if int(n) not in out:
            out.append(int(n))
    return tuple(sorted(out))


def probe(bi: BiEncoder, records: Sequence[DprRecord], *, n_passages: Sequence[int] = DEFAULT_N_PASSAGES,
          layers: Sequence[int] | None = None, features: str = "cls",
          test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0, steps: int = DEFAULT_PROBE_STEPS,
          progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> ProbeResult:
    """Held-out accuracy of a listwise linear probe per (N, layer), plus chance baselines.

    Queries go through the query encoder, passages through the context encoder, as in
    retrieval. A record contributes to N when it has a positive and at least N-1 hard
    negatives; it uses its first positive and first N-1 hard negatives.

    Args:
        bi: the loaded bi-encoder.
        records: DPR records (see ``dprscope.analysis.data``).
        n_passages: the Ns (each >= 2).
        layers: hidden-state indices, 0 = embeddings .. ``num_layers``; ``None`` = all.
        features: ``cls`` (position 0) or ``mean`` (mask-aware mean over tokens).
        test_fraction: share of each N's records held out, in (0, 1).
        seed: shuffles candidate order, the split and the probe init.
        steps: Adam steps per probe.
        progress, cancel: reporting and cancellation, checked per batch and per probe.

    Raises:
        InvalidArgument: bad N / layer / features / fraction, N larger than the hard
            negatives any record has, or too few records for a train/test split.
    """
    started = time.monotonic()
    if not isinstance(features, str) or features.lower() not in PROBE_FEATURES:
        raise InvalidArgument(f"unknown features {features!r}; expected one of {list(PROBE_FEATURES)}")
    features = features.lower()
    ns = _validate_n_passages(n_passages)
    if not isinstance(test_fraction, int | float) or not 0.0 < float(test_fraction) < 1.0:
        raise InvalidArgument(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100_000:
        raise InvalidArgument(f"steps must be in [1, 100000], got {steps!r}")
    num_layers = bi.query.num_layers
    if not layers:
        layer_ids: tuple[int, ...] = tuple(range(num_layers + 1))
    else:
        layer_ids = ()
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer <= num_layers:
                raise InvalidArgument(f"layer {layer!r} is out of range: probes use hidden states "
                                      f"0 (embeddings)..{num_layers} (valid: 0..{num_layers})")
            if int(layer) not in layer_ids:
                layer_ids += (int(layer),)
    if not records:
        raise InvalidArgument("no records to probe")
    usable = [r for r in records if r.positive_ctxs and r.hard_negative_ctxs]
    most = max((len(r.hard_negative_ctxs) for r in usable), default=0)
    for n in ns:
        if n - 1 > most:
            raise InvalidArgument(f"N={n} needs {n - 1} hard negatives per record, but no record has more "
                                  f"than {most}; choose N <= {most + 1}")
    max_n = max(ns)
    k = [min(len(r.hard_negative_ctxs), max_n - 1) for r in usable]
    ctxs = [ctx for r, kr in zip(usable, k, strict=True) for ctx in (r.positive_ctxs[0], *r.hard_negative_ctxs[:kr])]

    n_query_batches = math.ceil(len(usable) / ENCODE_BATCH)
    n_ctx_batches = math.ceil(len(ctxs) / ENCODE_BATCH)
    ticker = ProgressTicker("probe", n_query_batches + n_ctx_batches + len(ns) * len(layer_ids), progress)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        ticker.update(done, message)

    q_feats = _layer_features(bi.query, [r.question for r in usable], None, layer_ids, features, cancel,
                              lambda: tick("encoding queries"))
    p_flat = _layer_features(bi.context, [c.text for c in ctxs], [c.title for c in ctxs], layer_ids,
                             features, cancel, lambda: tick("encoding passages"))
    offsets = np.concatenate([[0], np.cumsum([1 + kr for kr in k])])

    scores: list[ProbeScore] = []
    for n in ns:
        rows = np.array([i for i, kr in enumerate(k) if kr >= n - 1], dtype=np.int64)
        rng = np.random.default_rng([seed, n])
        n_test = math.ceil(len(rows) * test_fraction)
        n_train = len(rows) - n_test
        if n_train < 2 or n_test < 1:
            raise InvalidArgument(
                f"N={n}: only {len(rows)} records have {n - 1} hard negatives; need at least 3 "
                f"(>= 2 to train and >= 1 to test at test_fraction={test_fraction})")
        # Candidate j of example e is record-local index order[e, j]; index 0 is the positive.
        order = np.stack([rng.permutation(n) for _ in rows])
        labels = np.argmax(order == 0, axis=1)
        split = rng.permutation(len(rows))
        test, train = np.sort(split[:n_test]), np.sort(split[n_test:])
        gather = offsets[rows][:, None] + order
        for layer in layer_ids:
            if cancel is not None:
                cancel.raise_if_cancelled()
            q = q_feats[layer][rows]
            cands = p_flat[layer][gather]
            acc, untrained = evaluate_split(q, cands, labels, train, test, seed=seed, steps=steps)
            scores.append(ProbeScore(n_passages=n, layer=layer, accuracy=acc, untrained_accuracy=untrained,
                                     chance=1.0 / n, train_examples=n_train, test_examples=n_test))
            tick(f"N={n} layer {layer}")
    ticker.update(done, "done", force=True)
    return ProbeResult(scores=tuple(scores), records_used=len(usable), features=features,
                       seconds=time.monotonic() - started)
