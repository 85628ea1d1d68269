"""Python client for dprscope: ``RetrieverClient`` (blocking) and ``AsyncRetrieverClient``."""

from __future__ import annotations

from dprscope_client.admin import AdminClient, ModelList, ModelVersionInfo
from dprscope_client.aio import AsyncRetrieverClient
from dprscope_client.analysis import (
    ActivationStatsResult,
    AnalysisClient,
    AnalysisProgress,
    AttributeResult,
    ProbeResult,
)
from dprscope_client.errors import RetrieverError
from dprscope_client.sync import RetrieverClient
from dprscope_client.types import Hit, IndexInfo, Passage, PassagesResult, SearchResult

__all__ = [
    "ActivationStatsResult",
    "AdminClient",
    "AnalysisClient",
    "AnalysisProgress",
    "AsyncRetrieverClient",
    "AttributeResult",
    "Hit",
    "IndexInfo",
    "ModelList",
    "ModelVersionInfo",
    "Passage",
    "PassagesResult",
    "ProbeResult",
    "RetrieverClient",
    "RetrieverError",
    "SearchResult",
]
