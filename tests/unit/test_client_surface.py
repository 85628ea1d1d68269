"""The client's public surface is pinned: changing it is a deliberate act."""

from __future__ import annotations

import dprscope_client

PUBLIC = [
    "ActivationStatsResult", "AdminClient", "AnalysisClient", "AnalysisProgress", "AsyncRetrieverClient",
    "AttributeResult", "Hit", "IndexInfo", "ModelList", "ModelVersionInfo", "Passage", "PassagesResult",
    "ProbeResult", "RetrieverClient", "RetrieverError", "SearchResult",
]


def test_public_names_are_pinned_and_sorted():
    assert list(dprscope_client.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(dprscope_client, name)


def test_the_client_does_not_import_the_server_stack():
    import subprocess
    import sys

    code = "import sys, dprscope_client; print(any(m in sys.modules for m in ('torch', 'faiss', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
