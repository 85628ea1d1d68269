"""Activation statistics: the Figure 1 counts and the fire-count histogram."""

from __future__ import annotations

import pytest

from dprscope.analysis import Context, QueryPassagePair, activation_stats, attribute, pairs_from_records
from dprscope.analysis.data import DprRecord
from dprscope.errors import InvalidArgument
from tests.unit.analysis.conftest import TINY_PASSAGES

PAIRS = [
    ("who wrote does he love you", TINY_PASSAGES[0]),
    ("what is the capital of france", TINY_PASSAGES[1]),
    ("first nobel prize in physics", Context(TINY_PASSAGES[2], "Nobel Prize")),
]


def test_histogram_sums_to_neuron_count_and_matches_per_example_attribution(tiny_bi):
    result = activation_stats(tiny_bi, PAIRS, sublayer="both", n_steps=5, threshold=0.2)
    assert result.examples == 3
    assert len(result.layers) == 4
    for stats in result.layers:
        assert len(stats.fire_count_histogram) == 4  # k = 0..3
        assert sum(stats.fire_count_histogram) == stats.neurons
        assert stats.neurons_active == stats.neurons - stats.fire_count_histogram[0]
        assert stats.neurons == (37 if stats.sublayer == "intermediate" else 32)
    # Each example's count equals what attribute() says for that pair alone.
    for (query, passage), counts in zip(PAIRS, result.per_example_counts, strict=True):
        single = attribute(tiny_bi, query, [passage], sublayer="both", n_steps=5, threshold=0.2)
        for entry in single.layers:
            assert counts[(entry.layer, entry.sublayer)] == entry.count_above_threshold


def test_positive_prob_needs_negatives_which_records_can_supply(tiny_bi):
    with pytest.raises(InvalidArgument, match="at least one negative"):
        activation_stats(tiny_bi, PAIRS[:1], target="positive_prob", n_steps=2)
    records = [DprRecord("q one", (Context("pos one"),), (Context("neg one"), Context("neg two"))),
               DprRecord("q two", (), (Context("x"),))]  # no positive: skipped
    pairs = pairs_from_records(records, negatives=2)
    assert pairs == [QueryPassagePair("q one", Context("pos one"), (Context("neg one"), Context("neg two")))]
    result = activation_stats(tiny_bi, pairs, target="positive_prob", layers=[1], n_steps=3)
    assert [s.layer for s in result.layers] == [1]


def test_activation_stats_on_real_model(encoder):
    result = activation_stats(encoder, [("who got the first nobel prize in physics",
                                         "The first Nobel Prize in Physics was awarded to Wilhelm Röntgen."),
                                        ("capital of france", "Paris is the capital of France.")],
                              layers=[0, 5], n_steps=4)
    for stats in result.layers:
        assert stats.neurons == 1536
        assert sum(stats.fire_count_histogram) == 1536
        assert 0 < stats.neurons_active <= 1536


def test_activation_stats_validation(tiny_bi):
    with pytest.raises(InvalidArgument, match="no \\(query, passage\\) pairs"):
        activation_stats(tiny_bi, [])
    with pytest.raises(InvalidArgument, match=r"valid: 0\.\.1"):
        activation_stats(tiny_bi, PAIRS, layers=[2])
    with pytest.raises(InvalidArgument, match="threshold"):
        activation_stats(tiny_bi, PAIRS, threshold=0)
    with pytest.raises(InvalidArgument, match="pair 0"):
        activation_stats(tiny_bi, ["just a string"])
