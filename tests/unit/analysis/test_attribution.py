"""Integrated gradients over FFN activations: exactness, completeness, captum, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dprscope.analysis import approximation_parameters, attribute
from dprscope.analysis.attribution import ffn_module, make_objective
from dprscope.analysis.data import Context
from dprscope.encoders.bi_encoder import BiEncoder
from tests.unit.analysis.conftest import TINY_PASSAGES, TINY_QUERY


def _setup(bi: BiEncoder, side: str, target: str, passages=TINY_PASSAGES):
    """Independent of the code under test: features of the varying input and P(vectors)."""
    with torch.no_grad():
        if side == "query":
            enc = bi.query
            feats = enc.tokenize([TINY_QUERY])
            fixed = bi.context.forward_features(bi.context.tokenize(list(passages), [""] * len(passages)))
        else:
            enc = bi.context
            feats = enc.tokenize([passages[0]], [""])
            fixed = bi.query.forward_features(bi.query.tokenize([TINY_QUERY]))
            if len(passages) > 1:
                negs = bi.context.forward_features(bi.context.tokenize(list(passages[1:]),
                                                                       [""] * (len(passages) - 1)))
                fixed = torch.cat([fixed, negs])
    return enc, feats, make_objective(target, side, fixed)


def _activation(enc, feats, module) -> torch.Tensor:
    seen = {}
    handle = module.register_forward_hook(lambda _m, _i, o: seen.setdefault("w", o.detach()))
    try:
        with torch.no_grad():
            enc.forward_features(feats)
    finally:
        handle.remove()
    return seen["w"][0]


def _p_with(enc, feats, module, act: torch.Tensor) -> torch.Tensor:
    """P with ``module``'s output replaced by ``act`` ([b, T, D]); plain hooks, batch = act's."""
    handle = module.register_forward_hook(lambda _m, _i, _o: act)
    try:
        batch = {k: v.expand(act.shape[0], *v.shape[1:]) for k, v in feats.items()}
        return objective_holder["f"](enc.forward_features(batch))
    finally:
        handle.remove()


objective_holder: dict = {}


def brute_force(bi, side, target, layer, sublayer, m, positions="all"):
    """``w * mean_k grad P((k/m) w)``, one alpha per forward/backward, batch 1."""
    enc, feats, objective = _setup(bi, side, target)
    objective_holder["f"] = objective
    module = ffn_module(enc, layer, sublayer)
    w = _activation(enc, feats, module)
    grads = torch.zeros_like(w)
    for k in range(1, m + 1):
        with torch.enable_grad():
            if positions == "all":
                x = ((k / m) * w).unsqueeze(0).requires_grad_(True)
                act = x
            else:
                x = ((k / m) * w[0]).unsqueeze(0).requires_grad_(True)
                act = torch.cat([x.unsqueeze(1), w[1:].unsqueeze(0)], dim=1)
            p = _p_with(enc, feats, module, act)
            (g,) = torch.autograd.grad(p.sum(), x)
        if positions == "all":
            grads += g[0]
        else:
            grads[0] += g[0]
    attr = w * grads / m
    attr = attr.sum(0) if positions == "all" else attr[0]
    with torch.no_grad():
        base = torch.zeros_like(w)
        if positions == "cls":  # only position 0 is zeroed; the rest keep their activation
            base[1:] = w[1:]
        p0 = float(_p_with(enc, feats, module, base.unsqueeze(0))[0])
        px = float(objective(enc.forward_features(feats))[0])
    return attr.double().numpy(), px, p0


@pytest.mark.parametrize(("side", "target", "sublayer", "positions"), [
    ("query", "score", "intermediate", "all"),
    ("query", "positive_prob", "output", "all"),
    ("passage", "score", "output", "cls"),
    ("passage", "positive_prob", "intermediate", "all"),
    ("query", "score", "intermediate", "cls"),
])
def test_riemann_right_equals_brute_force_loop(tiny_bi, side, target, sublayer, positions):
    m = 7
    result = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, target=target, side=side, sublayer=sublayer,
                       n_steps=m, positions=positions, return_scores=True, top_neurons=5)
    for layer in (0, 1):
        expected, px, p0 = brute_force(tiny_bi, side, target, layer, sublayer, m, positions)
        entry = result.layer(layer, sublayer)
        np.testing.assert_allclose(entry.scores, expected, rtol=1e-4, atol=1e-6)
        assert entry.target_delta == pytest.approx(px - p0, abs=1e-5)
        assert result.target_value == pytest.approx(px, abs=1e-6)
        assert entry.neurons == (37 if sublayer == "intermediate" else 32)
        assert [n.index for n in entry.top_neurons] == list(np.argsort(-expected, kind="stable")[:5])


def test_completeness_gap_shrinks_with_steps_and_gauss_legendre_converges_faster(tiny_bi64):
    def gap(m: int, method: str) -> float:
        r = attribute(tiny_bi64, TINY_QUERY, TINY_PASSAGES, target="positive_prob", n_steps=m, method=method,
                      sublayer="both")
        return max(abs(e.completeness_gap) for e in r.layers)

    riemann = [gap(m, "riemann_right") for m in (8, 64, 256)]
    assert riemann[0] > riemann[1] > riemann[2]
    assert riemann[2] < riemann[0] / 10
    gauss = [gap(m, "gauss_legendre") for m in (8, 64)]
    assert gauss[0] < riemann[2]  # 8 Gauss-Legendre nodes beat 256 Riemann steps
    assert gauss[1] < 1e-9


def test_sum_of_attributions_matches_score_difference_on_real_model(encoder):
    r = attribute(encoder, "who got the first nobel prize in physics",
                  [Context("The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Röntgen.",
                           "Nobel Prize in Physics"), "Paris is the capital of France."],
                  layers=[0, 5], sublayer="both", n_steps=12, method="gauss_legendre")
    q = encoder.encode_queries(["who got the first nobel prize in physics"])
    p = encoder.encode_passages(["Nobel Prize in Physics"],
                                ["The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Röntgen."])
    assert r.target_value == pytest.approx(float(q[0] @ p[0]), abs=1e-5)  # the serving score
    for e in r.layers:
        assert abs(e.completeness_gap) < 1e-3 * max(1.0, abs(e.target_delta))
        assert e.neurons == (1536 if e.sublayer == "intermediate" else 384)


def test_matches_captum_integrated_gradients_over_the_layer_activation(tiny_bi):
    captum_attr = pytest.importorskip("captum.attr")
    m = 16
    enc, feats, objective = _setup(tiny_bi, "query", "positive_prob")
    objective_holder["f"] = objective
    for layer, sublayer in [(0, "intermediate"), (1, "output")]:
        module = ffn_module(enc, layer, sublayer)
        w = _activation(enc, feats, module).unsqueeze(0)

        def forward(act: torch.Tensor, module=module) -> torch.Tensor:
            return _p_with(enc, feats, module, act)

        ig = captum_attr.IntegratedGradients(forward)
        theirs, delta = ig.attribute(w, baselines=torch.zeros_like(w), n_steps=m, method="riemann_right",
                                     return_convergence_delta=True)
        ours = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, target="positive_prob", layers=[layer],
                         sublayer=sublayer, n_steps=m, return_scores=True).layers[0]
        np.testing.assert_allclose(ours.scores, theirs[0].sum(0).double().numpy(), rtol=1e-4, atol=1e-7)
        # captum's delta is sum(attr) - (F(x) - F(baseline)): our completeness gap.
        assert ours.completeness_gap == pytest.approx(float(delta[0]), abs=1e-5)


def test_matches_captum_gauss_legendre(tiny_bi):
    captum_attr = pytest.importorskip("captum.attr")
    enc, feats, objective = _setup(tiny_bi, "query", "score")
    objective_holder["f"] = objective
    module = ffn_module(enc, 1, "intermediate")
    w = _activation(enc, feats, module).unsqueeze(0)
    ig = captum_attr.IntegratedGradients(lambda act: _p_with(enc, feats, module, act))
    theirs = ig.attribute(w, baselines=torch.zeros_like(w), n_steps=10, method="gausslegendre")
    ours = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, layers=[1], n_steps=10, method="gauss_legendre",
                     return_scores=True).layers[0]
    np.testing.assert_allclose(ours.scores, theirs[0].sum(0).double().numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("positions", ["all", "cls"])
def test_chunked_equals_unchunked(tiny_bi, positions):
    kwargs = {"target": "positive_prob", "sublayer": "both", "n_steps": 10, "positions": positions,
              "return_scores": True}
    whole = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, internal_batch_size=64, **kwargs)
    chunked = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, internal_batch_size=3, **kwargs)
    for a, b in zip(whole.layers, chunked.layers, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)
        assert a.baseline_value == pytest.approx(b.baseline_value, abs=1e-6)


def test_unshared_encoders_attribute_through_the_right_side(tiny_dpr_pair):
    q_side = attribute(tiny_dpr_pair, TINY_QUERY, TINY_PASSAGES, side="query", n_steps=4, return_scores=True)
    p_side = attribute(tiny_dpr_pair, TINY_QUERY, TINY_PASSAGES, side="passage", n_steps=4, return_scores=True)
    assert q_side.target_value == pytest.approx(p_side.target_value, abs=1e-5)  # the same score
    assert not np.allclose(q_side.layers[0].scores, p_side.layers[0].scores)


def test_approximation_parameters():
    alphas, weights = approximation_parameters("riemann_right", 4)
    np.testing.assert_allclose(alphas, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weights, [0.25] * 4)
    alphas, weights = approximation_parameters("gauss_legendre", 5)
    assert np.all((alphas > 0) & (alphas < 1))
    assert weights.sum() == pytest.approx(1.0)
    assert (weights * alphas**3).sum() == pytest.approx(0.25)  # exact for polynomials


def test_threshold_counts_and_top_neurons(tiny_bi):
    r = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, n_steps=5, threshold=0.5, top_neurons=3,
                  return_scores=True)
    for e in r.layers:
        assert e.count_above_threshold == int((e.scores > 0.5 * e.max_attribution).sum())
        assert len(e.top_neurons) == 3
        assert e.top_neurons[0].attribution == pytest.approx(e.max_attribution, rel=1e-6)
        assert e.sum_attribution == pytest.approx(float(e.scores.astype(np.float64).sum()), rel=1e-5, abs=1e-7)
    no_scores = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, n_steps=2)
    assert all(e.scores is None for e in no_scores.layers)


@pytest.mark.parametrize("positions", ["all", "cls"])
def test_batch_broadcast_equals_repeated_input(tiny_bi, positions):
    from dprscope.analysis.attribution import _chunk

    enc, feats, objective = _setup(tiny_bi, "query", "positive_prob")
    module = ffn_module(enc, 0, "output")
    w = _activation(enc, feats, module)
    alphas = torch.tensor([0.25, 0.5, 1.0, 0.0])
    p_b, g_b = _chunk(enc, feats, module, w, alphas, objective, positions, broadcast=True)
    p_r, g_r = _chunk(enc, feats, module, w, alphas, objective, positions, broadcast=False)
    torch.testing.assert_close(p_b, p_r, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_b, g_r, rtol=1e-5, atol=1e-7)
