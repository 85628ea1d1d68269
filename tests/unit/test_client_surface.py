"""The client's public surface is pinned: changing it is a deliberate act."""

from __future__ import annotations

import dprscope_client


def test_public_names_are_pinned():
    expected = {"AsyncRetrieverClient", "Hit", "IndexInfo", "Passage", "PassagesResult", "RetrieverClient",
                "RetrieverError", "SearchResult"}
    assert expected <= set(dprscope_client.__all__)
    for name in dprscope_client.__all__:
        assert hasattr(dprscope_client, name)
