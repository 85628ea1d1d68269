"""Bad input to attribute() fails fast with InvalidArgument and a message naming the allowed values."""

from __future__ import annotations

import pytest

from dprscope.analysis import attribute
from dprscope.errors import InvalidArgument
from tests.unit.analysis.conftest import TINY_PASSAGES, TINY_QUERY


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"passages": []}, "no passages"),
    ({"passages": ["   "]}, "passage 0 is empty"),
    ({"query": ""}, "query is empty"),
    ({"layers": [2]}, r"layer 2 is out of range: the model has 2 layers \(valid: 0\.\.1\)"),
    ({"layers": [-1]}, "out of range"),
    ({"n_steps": 0}, r"n_steps must be an integer in \[1, 512\]"),
    ({"n_steps": 513}, "n_steps"),
    ({"threshold": 0.0}, r"threshold must be in \(0, 1\]"),
    ({"threshold": 1.5}, "threshold"),
    ({"target": "logit"}, r"unknown target 'logit'; expected one of \['score', 'positive_prob'\]"),
    ({"side": "both"}, "unknown side"),
    ({"sublayer": "attention"}, "unknown sublayer"),
    ({"method": "riemann_left"}, "unknown method"),
    ({"positions": "last"}, "unknown positions"),
    ({"top_neurons": -1}, "top_neurons"),
    ({"internal_batch_size": -2}, "internal_batch_size"),
    ({"target": "positive_prob", "passages": TINY_PASSAGES[:1]}, "at least one negative"),
])
def test_attribute_rejects(tiny_bi, kwargs, message):
    args = {"query": TINY_QUERY, "passages": TINY_PASSAGES, **kwargs}
    with pytest.raises(InvalidArgument, match=message):
        attribute(tiny_bi, args.pop("query"), args.pop("passages"), **args)


def test_names_are_case_insensitive_and_layers_deduplicated(tiny_bi):
    r = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, target="SCORE", side="Query", sublayer="BOTH",
                  method="GAUSS_LEGENDRE", positions="CLS", layers=[1, 1, 0], n_steps=2)
    assert [(e.layer, e.sublayer) for e in r.layers] == [(1, "intermediate"), (1, "output"),
                                                         (0, "intermediate"), (0, "output")]
