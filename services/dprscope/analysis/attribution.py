"""Knowledge-neuron attribution: integrated gradients over FFN activations (Dai et al. 2022).

For layer ``l`` let ``w`` be the activation of one FFN sublayer for a single input (a
query, or the positive passage). With the baseline zero, neuron ``i`` gets::

    Attr(w_i) = w_i * integral_0^1 dP(alpha * w) / dw_i  dalpha

where ``P`` is the retrieval target (the query-positive inner product, or the softmax
probability of the positive among the given passages). The integral is a quadrature
over ``n_steps`` alphas: ``riemann_right`` (alphas k/m, k = 1..m, as Dai et al. and the
paper use) or ``gauss_legendre`` (nodes mapped to [0, 1]; converges much faster).

Why it is shaped this way:

* **Steps are batched.** One forward/backward evaluates a whole chunk of alphas: the
  single tokenized input is expanded along the batch dimension and the hooked sublayer's
  output is replaced by ``alpha_b * w`` for row ``b``. Because rows of a BERT forward
  are independent (eval mode, no batch norm), ``grad(sum_b P_b)`` w.r.t. the replaced
  tensor is every row's own gradient. ``internal_batch_size`` bounds a chunk (as in
  captum), so BERT-base at m = 50 on long passages stays within memory.
* **Weights are never touched.** The gradient is taken with ``torch.autograd.grad``
  with respect to the intercepted activation tensor, which alone has
  ``requires_grad``; parameters get no ``.grad`` and are never written.
* **Serving is unharmed.** Hooks come from ``dprscope.analysis.hooks``: they act only on
  the thread that installed them and are removed in ``finally``. Gradients are enabled
  only inside this module (``torch.enable_grad()``); grad mode is thread-local in torch,
  so concurrent ``inference_mode`` searches are unaffected.
* **Completeness is always reported.** The zero baseline ``P(0)`` is evaluated as one
  extra row (weight 0) of the last chunk, so ``target_delta = P(x) - P(0)`` and the gap
  ``sum(attr) - target_delta`` come at almost no cost.

Sublayers: ``intermediate`` is the output of ``BertIntermediate`` (up-projection + GELU,
``intermediate_size`` neurons, the "keys"). ``output`` is the output of
``BertOutput.dense`` (down-projection, ``hidden_size`` neurons, the "values"): the FFN's
own contribution *before* dropout, residual add and LayerNorm, so each neuron is one
coordinate the FFN writes into the residual stream and zeroing it is exactly "the FFN
contributes nothing here" (zeroing after LayerNorm would also remove the residual).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dprscope.analysis.data import Context
from dprscope.analysis.hooks import capture_outputs, replace_output
from dprscope.analysis.results import (
    METHODS,
    POSITIONS,
    SIDES,
    SUBLAYER_CHOICES,
    SUBLAYERS,
    TARGETS,
    AttributionResult,
    LayerAttribution,
    NeuronScore,
)
from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.text_encoder import TextEncoder
from dprscope.errors import FailedPrecondition, InvalidArgument
from dprscope.jobs import CancelToken, ProgressFn, ProgressTicker

log = logging.getLogger(__name__)

DEFAULT_N_STEPS = 20
MAX_N_STEPS = 512
DEFAULT_THRESHOLD = 0.1
DEFAULT_TOP_NEURONS = 20
MAX_TOP_NEURONS = 100_000
DEFAULT_TOKEN_BUDGET = 8192
"""Tokens per interpolation chunk when ``internal_batch_size`` is automatic: a chunk of
``budget // tokens`` alphas keeps BERT-base activations at a few hundred MiB."""

PassageLike = str | Context
Objective = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- validation


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise InvalidArgument(f"unknown {name} {value!r}; expected one of {list(allowed)}")
    return value.lower()


def validate_n_steps(n_steps: int) -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= MAX_N_STEPS:
        raise InvalidArgument(f"n_steps must be an integer in [1, {MAX_N_STEPS}], got {n_steps!r}")
    return n_steps


def validate_threshold(threshold: float) -> float:
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) <= 1.0:
        raise InvalidArgument(f"threshold must be in (0, 1] (a fraction of the max attribution), "
                              f"got {threshold!r}")
    return float(threshold)


def resolve_layers(layers: Sequence[int] | None, num_layers: int) -> tuple[int, ...]:
    """``None``/empty means all layers; otherwise dedupe, keep order, check the range."""
    if not layers:
        return tuple(range(num_layers))
    out: list[int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer < num_layers:
            raise InvalidArgument(f"layer {layer!r} is out of range: the model has {num_layers} layers "
                                  f"(valid: 0..{num_layers - 1})")
        if int(layer) not in out:
            out.append(int(layer))
    return tuple(out)


def resolve_sublayers(sublayer: str) -> tuple[str, ...]:
    sublayer = _choice("sublayer", sublayer, SUBLAYER_CHOICES)
    return SUBLAYERS if sublayer == "both" else (sublayer,)


def _as_context(p: PassageLike, i: int) -> Context:
    ctx = Context(text=p) if isinstance(p, str) else p
    if not isinstance(ctx, Context) or not ctx.text.strip():
        raise InvalidArgument(f"passage {i} is empty; every passage needs text")
    return ctx


# ----------------------------------------------------------------------------- building blocks


def approximation_parameters(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Alphas in (0, 1] and quadrature weights (summing to 1) for ``method``.

    ``riemann_right``: alphas ``k/m`` for ``k = 1..m``, weights ``1/m`` (Dai et al.).
    ``gauss_legendre``: Legendre nodes and weights mapped from [-1, 1] to [0, 1].
    """
    method = _choice("method", method, METHODS)
    validate_n_steps(n_steps)
    if method == "riemann_right":
        alphas = np.arange(1, n_steps + 1, dtype=np.float64) / n_steps
        return alphas, np.full(n_steps, 1.0 / n_steps)
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return (nodes + 1.0) / 2.0, weights / 2.0


def ffn_module(encoder: TextEncoder, layer: int, sublayer: str) -> torch.nn.Module:
    """The module whose forward output is the ``sublayer`` activation of ``layer``.

    Raises:
        FailedPrecondition: the backbone is not BERT-shaped (no ``encoder.layer[i]``).
    """
    try:
        block = encoder.backbone.encoder.layer[layer]
        return block.intermediate if sublayer == "intermediate" else block.output.dense
    except AttributeError as exc:
        raise FailedPrecondition(
            f"model {type(encoder.backbone).__name__} has no BERT FFN at encoder.layer[{layer}]; "
            "attribution supports BERT-style backbones") from exc


def make_objective(target: str, side: str, fixed: torch.Tensor) -> Objective:
    """``P(vectors) -> [batch]`` for the varying side's vectors ``[batch, dim]``.

    Args:
        target: ``score`` (inner product with the positive) or ``positive_prob``.
        side: ``query`` -- ``fixed`` holds all passage vectors ``[n, dim]``, positive
            first; ``passage`` -- ``fixed`` holds ``[query; negatives...]`` ``[n, dim]``.
        fixed: the other side's vectors, computed once without grad.
    """
    if side == "query":
        def objective(v: torch.Tensor) -> torch.Tensor:
            scores = v @ fixed.T
            return scores[:, 0] if target == "score" else torch.softmax(scores, dim=1)[:, 0]
        return objective

    q, negatives = fixed[0], fixed[1:]

    def passage_objective(v: torch.Tensor) -> torch.Tensor:
        s_pos = v @ q
        if target == "score":
            return s_pos
        s_neg = (negatives @ q).unsqueeze(0).expand(v.shape[0], -1)
        return torch.softmax(torch.cat([s_pos.unsqueeze(1), s_neg], dim=1), dim=1)[:, 0]

    return passage_objective


@dataclass(frozen=True)
class _Integral:
    attributions: np.ndarray  # [neurons], float64
    baseline_value: float


def integrate(encoder: TextEncoder, features: dict[str, torch.Tensor], module: torch.nn.Module,
              activation: torch.Tensor, objective: Objective, alphas: np.ndarray, weights: np.ndarray, *,
              positions: str = "all", internal_batch_size: int, on_chunk: Callable[[], None] | None = None
              ) -> _Integral:
    """Integrated gradients of ``objective`` w.r.t. ``module``'s output, steps batched.

    Args:
        encoder: runs the forward (its ``forward_features``).
        features: the single tokenized input, batch 1.
        module: the hooked sublayer.
        activation: that module's output for the input, ``[tokens, neurons]``.
        objective: maps pooled vectors ``[b, dim]`` to ``P`` ``[b]``.
        alphas, weights: the quadrature (see ``approximation_parameters``).
        positions: ``all`` scales every token position's activation together and sums
            attributions over positions; ``cls`` scales and attributes position 0 only.
        internal_batch_size: alphas per forward/backward.
        on_chunk: called after each chunk (progress + cancellation).
    """
    w = activation
    # The zero baseline rides along as one extra row with weight 0.
    all_alphas = np.concatenate([alphas, [0.0]])
    all_weights = np.concatenate([weights, [0.0]])
    grad_sum = torch.zeros_like(w if positions == "all" else w[0], dtype=torch.float64)
    baseline_value = math.nan
    n = len(all_alphas)
    broadcast = True
    start = 0
    while start < n:
        a = torch.as_tensor(all_alphas[start:start + internal_batch_size], dtype=w.dtype)
        c = a.shape[0]
        try:
            p, g = _chunk(encoder, features, module, w, a, objective, positions, broadcast)
        except (RuntimeError, FailedPrecondition):
            if not broadcast or start > 0:
                raise
            # Decided once, on the first chunk: this architecture does not broadcast a
            # batch-1 prefix against the widened activation, so repeat the input for every
            # row instead. A genuine error fails the repeated run as well and propagates.
            log.debug("batch-broadcast at %s failed; repeating the input instead", type(module).__name__,
                      exc_info=True)
            broadcast = False
            continue
        if g is not None:
            wts = torch.as_tensor(all_weights[start:start + c], dtype=torch.float64)
            grad_sum += torch.tensordot(wts, g.to(torch.float64), dims=1)
        if start + c == n:
            baseline_value = float(p[-1].detach())
        start += c
        if on_chunk is not None:
            on_chunk()
    w64 = w.to(torch.float64)
    attr = (w64 * grad_sum).sum(dim=0) if positions == "all" else w64[0] * grad_sum
    return _Integral(attr.numpy(), baseline_value)


def _chunk(encoder: TextEncoder, features: dict[str, torch.Tensor], module: torch.nn.Module, w: torch.Tensor,
           a: torch.Tensor, objective: Objective, positions: str, broadcast: bool
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward/backward for the alphas ``a``: returns ``P`` per row and ``dP/dx``.

    With ``broadcast`` the input stays at batch 1: everything below the hooked sublayer
    runs once, and the batch widens to ``len(a)`` only where the scaled activation enters
    (the residual add, the attention mask and the pooling mask broadcast). Layers below
    the hooked one get no gradient anyway, so this loses nothing and saves up to half of
    the forward. Without it the input is repeated ``len(a)`` times (always valid).
    """
    c = a.shape[0]
    batch = features if broadcast else {k: v.expand(c, *v.shape[1:]) for k, v in features.items()}
    if positions == "all":
        x = (a.view(-1, 1, 1) * w).requires_grad_(True)

        def replacement(out: torch.Tensor) -> torch.Tensor:
            _check_shape(out, (out.shape[0], *x.shape[1:]))
            return x
    else:
        x = (a.view(-1, 1) * w[0]).requires_grad_(True)
        rest = w[1:].unsqueeze(0).expand(c, -1, -1)

        def replacement(out: torch.Tensor) -> torch.Tensor:
            full = torch.cat([x.unsqueeze(1), rest], dim=1)
            _check_shape(out, (out.shape[0], *full.shape[1:]))
            return full
    with torch.enable_grad(), replace_output(module, replacement):
        p = objective(encoder.forward_features(batch))
        if p.shape != (c,):
            raise FailedPrecondition(f"target has shape {tuple(p.shape)} for {c} interpolation rows")
        (g,) = torch.autograd.grad(p.sum(), x, allow_unused=True)
    return p, g


def _check_shape(out: torch.Tensor, expected: tuple[int, ...]) -> None:
    if out.shape != expected:
        raise FailedPrecondition(f"hooked activation has shape {tuple(out.shape)}, expected {tuple(expected)}")


def summarize_layer(layer: int, sublayer: str, attr: np.ndarray, *, target_value: float,
                    baseline_value: float, threshold: float, top_neurons: int,
                    return_scores: bool) -> LayerAttribution:
    """Counts, top neurons and the completeness check for one attribution vector."""
    max_attr = float(attr.max()) if attr.size else 0.0
    count = int((attr > threshold * max_attr).sum()) if max_attr > 0 else 0
    k = min(top_neurons, attr.size)
    top_idx = np.argsort(-attr, kind="stable")[:k]
    total = float(attr.sum())
    delta = target_value - baseline_value
    return LayerAttribution(
        layer=layer,
        sublayer=sublayer,
        neurons=int(attr.size),
        count_above_threshold=count,
        top_neurons=tuple(NeuronScore(int(i), float(attr[i])) for i in top_idx),
        scores=attr.astype(np.float32) if return_scores else None,
        max_attribution=max_attr,
        sum_attribution=total,
        baseline_value=baseline_value,
        target_delta=delta,
        completeness_gap=total - delta,
    )


def default_internal_batch_size(tokens: int, n_rows: int) -> int:
    return max(1, min(n_rows, DEFAULT_TOKEN_BUDGET // max(1, tokens)))


# ----------------------------------------------------------------------------- the verb


def attribute(bi: BiEncoder, query: str, passages: Sequence[PassageLike], *, target: str = "score",
              side: str = "query", layers: Sequence[int] | None = None, sublayer: str = "intermediate",
              n_steps: int = DEFAULT_N_STEPS, method: str = "riemann_right", positions: str = "all",
              threshold: float = DEFAULT_THRESHOLD, top_neurons: int = DEFAULT_TOP_NEURONS,
              return_scores: bool = False, internal_batch_size: int | None = None,
              progress: ProgressFn | None = None, cancel: CancelToken | None = None,
              between_chunks: Callable[[], object] | None = None) -> AttributionResult:
    """Knowledge-neuron integrated gradients for one query and its passages.

    Args:
        bi: the loaded bi-encoder (the registry's, never a copy).
        query: the question.
        passages: the positive first, then optional negatives (texts or ``Context``).
        target: ``score`` = inner product of the query and positive vectors (normalised
            when the model normalises); ``positive_prob`` = softmax over all passages'
            scores, taken at the positive (needs at least one negative).
        side: ``query`` attributes through the query encoder with the passage vectors
            fixed; ``passage`` through the context encoder on the positive passage with
            the query (and negative) vectors fixed.
        layers: transformer layers (0-based); ``None``/empty = all.
        sublayer: ``intermediate`` (keys), ``output`` (values) or ``both``.
        n_steps: quadrature steps m, 1..512.
        method: ``riemann_right`` or ``gauss_legendre``.
        positions: ``all`` (sum over tokens) or ``cls`` (position 0 only).
        threshold: strongly-activated cut as a fraction of the max attribution, (0, 1].
        top_neurons: how many top neurons to return per layer.
        return_scores: include the full per-neuron vector.
        internal_batch_size: alphas per forward/backward; ``None``/0 = from a token budget.
        progress: receives ``Progress`` per chunk (rate-limited).
        cancel: checked between chunks.
        between_chunks: called after each chunk (after the cancel check); may block
            briefly. The server passes a hook that lets pending Search work have the CPU.
            It never sees or changes any tensor, so results do not depend on it.

    Returns:
        One ``LayerAttribution`` per (layer, sublayer), layer-major.

    Raises:
        InvalidArgument: bad names, ranges or empty inputs.
        Cancelled: ``cancel`` was set.
    """
    started = time.monotonic()
    target = _choice("target", target, TARGETS)
    side = _choice("side", side, SIDES)
    method = _choice("method", method, METHODS)
    positions = _choice("positions", positions, POSITIONS)
    sublayers = resolve_sublayers(sublayer)
    validate_n_steps(n_steps)
    threshold = validate_threshold(threshold)
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("query is empty")
    if not passages:
        raise InvalidArgument("no passages: give at least the positive passage (first)")
    ctxs = [_as_context(p, i) for i, p in enumerate(passages)]
    if target == "positive_prob" and len(ctxs) < 2:
        raise InvalidArgument("target positive_prob needs at least one negative passage besides the positive "
                              "(with one passage the probability is always 1)")
    if isinstance(top_neurons, bool) or not isinstance(top_neurons, int) or not 0 <= top_neurons <= MAX_TOP_NEURONS:
        raise InvalidArgument(f"top_neurons must be in [0, {MAX_TOP_NEURONS}], got {top_neurons!r}")
    if internal_batch_size is not None and (isinstance(internal_batch_size, bool)
                                            or not isinstance(internal_batch_size, int)
                                            or internal_batch_size < 0):
        raise InvalidArgument(f"internal_batch_size must be >= 1 (or 0/None = automatic), "
                              f"got {internal_batch_size!r}")
    encoder = bi.query if side == "query" else bi.context
    layer_ids = resolve_layers(layers, encoder.num_layers)
    alphas, weights = approximation_parameters(method, n_steps)

    with torch.no_grad():
        if side == "query":
            features = encoder.tokenize([query])
            ctx_feats = bi.context.tokenize([c.text for c in ctxs], [c.title for c in ctxs])
            fixed = bi.context.forward_features(ctx_feats)
        else:
            pos = ctxs[0]
            features = encoder.tokenize([pos.text], [pos.title])
            fixed = bi.query.forward_features(bi.query.tokenize([query]))
            if len(ctxs) > 1:
                rest = ctxs[1:]
                negs = bi.context.forward_features(bi.context.tokenize([c.text for c in rest],
                                                                       [c.title for c in rest]))
                fixed = torch.cat([fixed, negs], dim=0)
    fixed = fixed.detach()
    objective = make_objective(target, side, fixed)

    pairs = [(layer, sub) for layer in layer_ids for sub in sublayers]
    modules = [ffn_module(encoder, layer, sub) for layer, sub in pairs]
    with torch.no_grad(), capture_outputs(modules) as captured:
        target_value = float(objective(encoder.forward_features(features))[0])
    tokens = int(features["input_ids"].shape[1])
    n_rows = n_steps + 1
    chunk = internal_batch_size or default_internal_batch_size(tokens, n_rows)
    chunks_per_pair = math.ceil(n_rows / chunk)
    ticker = ProgressTicker("attribute", len(pairs) * chunks_per_pair, progress)
    done = 0
    if cancel is not None:
        cancel.raise_if_cancelled()
    entries: list[LayerAttribution] = []
    for i, (layer, sub) in enumerate(pairs):
        message = f"layer {layer} {sub}"

        def on_chunk(message: str = message) -> None:
            nonlocal done
            done += 1
            ticker.update(done, message)
            if cancel is not None:
                cancel.raise_if_cancelled()
            if between_chunks is not None:
                between_chunks()

        result = integrate(encoder, features, modules[i], captured[i][0], objective, alphas, weights,
                           positions=positions, internal_batch_size=chunk, on_chunk=on_chunk)
        entries.append(summarize_layer(layer, sub, result.attributions, target_value=target_value,
                                       baseline_value=result.baseline_value, threshold=threshold,
                                       top_neurons=top_neurons, return_scores=return_scores))
    ticker.update(done, "done", force=True)
    seconds = time.monotonic() - started
    log.debug("attribution of %d (layer, sublayer) pairs, m=%d, %d tokens in %.2fs",
              len(pairs), n_steps, tokens, seconds)
    return AttributionResult(target=target, side=side, target_value=target_value, layers=tuple(entries),
                             n_steps=n_steps, method=method, positions=positions, threshold=threshold,
                             tokens=tokens, seconds=seconds)
