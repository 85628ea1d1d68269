"""Listwise linear probes: a toy with a known answer, an end-to-end run, real records."""

from __future__ import annotations

import numpy as np
import pytest

from dprscope.analysis import Context, DprRecord, load_dpr_records, probe
from dprscope.analysis.probing import evaluate_split
from dprscope.errors import InvalidArgument
from tests.shared_data import shared_data_dir


def _toy(n: int, n_cand: int, d: int, seed: int, informative: bool):
    """Candidates are random; when informative, the positive (index 0) is the query plus noise."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, d))
    cands = rng.standard_normal((n, n_cand, d))
    if informative:
        cands[:, 0] = q + 0.5 * rng.standard_normal((n, d))
    order = np.stack([rng.permutation(n_cand) for _ in range(n)])
    shuffled = np.take_along_axis(cands, order[:, :, None], axis=1)
    labels = np.argmax(order == 0, axis=1)
    return q, shuffled, labels


@pytest.mark.parametrize("n_cand", [2, 5])
def test_toy_probe_finds_the_informative_layer_and_untrained_is_chance(n_cand):
    split = np.random.default_rng(1).permutation(400)
    test, train = split[:120], split[120:]
    q, cands, labels = _toy(400, n_cand, 16, seed=0, informative=True)
    trained, _ = evaluate_split(q, cands, labels, train, test)
    assert trained > 0.95
    q, cands, labels = _toy(400, n_cand, 16, seed=0, informative=False)
    trained_noise, untrained_noise = evaluate_split(q, cands, labels, train, test)
    chance = 1 / n_cand
    assert abs(trained_noise - chance) < 0.15
    assert abs(untrained_noise - chance) < 0.15


def _identity_records(n: int, negatives: int = 4) -> list[DprRecord]:
    """The positive *is* the question: recoverable at every layer of a shared-weight model."""
    words = ["apple", "river", "engine", "violin", "desert", "planet", "castle", "garden", "copper", "tiger",
             "museum", "harbor", "glacier", "lantern", "meadow", "orchid", "pepper", "quartz", "saddle", "tunnel"]
    out = []
    for i in range(n):
        question = f"{words[i % 20]} {words[(3 * i + 1) % 20]} {words[(7 * i + 2) % 20]}"
        negs = tuple(Context(f"{words[(i + j + 5) % 20]} {words[(2 * i + j) % 20]} {words[(i + 3 * j) % 20]}")
                     for j in range(1, negatives + 1))
        out.append(DprRecord(question, (Context(question),), negs))
    return out


def test_probe_end_to_end_on_tiny_model(tiny_bi):
    result = probe(tiny_bi, _identity_records(40), n_passages=(2, 4), features="mean", seed=3)
    assert [(s.n_passages, s.layer) for s in result.scores] == [(n, layer) for n in (2, 4) for layer in (0, 1, 2)]
    assert result.records_used == 40
    for s in result.scores:
        assert s.accuracy > 0.8
        assert s.chance == pytest.approx(1 / s.n_passages)
        assert 0.0 <= s.untrained_accuracy <= 1.0
        assert s.test_examples == 12 and s.train_examples == 28
    again = probe(tiny_bi, _identity_records(40), n_passages=(2, 4), features="mean", seed=3)
    assert again.scores == result.scores  # seeded: identical


def test_probe_on_real_records_with_embedded_model(encoder):
    data = shared_data_dir()
    records = load_dpr_records(data / "dpr-original-samples" / "nq-dev-10.dpr.jsonl", max_records=5)
    records += load_dpr_records(data / "squad-v2-dev-subset" / "squad-v2-dev-first2articles.dpr.jsonl",
                                max_records=4)
    result = probe(encoder, records, n_passages=(2, 3), layers=[0, 6], features="cls", steps=100)
    assert len(result.scores) == 4
    assert result.records_used == 9
    for s in result.scores:
        assert 0.0 <= s.accuracy <= 1.0 and 0.0 <= s.untrained_accuracy <= 1.0
        assert s.train_examples + s.test_examples == 9


def test_probe_validation(tiny_bi):
    records = _identity_records(10, negatives=2)
    with pytest.raises(InvalidArgument, match=r"N=4 needs 3 hard negatives.*more than 2"):
        probe(tiny_bi, records, n_passages=(2, 4))
    with pytest.raises(InvalidArgument, match="need at least 3"):
        probe(tiny_bi, records[:2], n_passages=(2,))
    with pytest.raises(InvalidArgument, match=r"valid: 0\.\.2"):
        probe(tiny_bi, records, n_passages=(2,), layers=[3])
    with pytest.raises(InvalidArgument, match="unknown features"):
        probe(tiny_bi, records, features="max")
    with pytest.raises(InvalidArgument, match="test_fraction"):
        probe(tiny_bi, records, n_passages=(2,), test_fraction=1.0)
    with pytest.raises(InvalidArgument, match="n_passages"):
        probe(tiny_bi, records, n_passages=(1,))
    with pytest.raises(InvalidArgument, match="no records"):
        probe(tiny_bi, [], n_passages=(2,))
