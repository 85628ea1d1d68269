"""Plain result types, so callers never handle protobuf messages."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from dprscope.v1 import retrieval_pb2 as pb


@dataclass(frozen=True)
class Hit:
    passage_id: str
    title: str
    text: str
    score: float
    rank: int


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    model_version: str
    index_version: str
    encode_ms: float
    search_ms: float
    total_ms: float
    queue_ms: float = 0.0
    fetch_ms: float = 0.0

    @classmethod
    def from_pb(cls, r: pb.SearchResponse) -> SearchResult:
        t = r.timings
        return cls(hits=[Hit(h.passage_id, h.title, h.text, h.score, h.rank) for h in r.hits],
                   model_version=r.model_version, index_version=r.index_version,
                   encode_ms=t.encode_ms, search_ms=t.search_ms, total_ms=t.total_ms,
                   queue_ms=t.queue_ms, fetch_ms=t.fetch_ms)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Passage:
    passage_id: str
    title: str
    text: str


@dataclass(frozen=True)
class PassagesResult:
    passages: list[Passage]
    missing_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_pb(cls, r: pb.GetPassagesResponse) -> PassagesResult:
        return cls([Passage(p.passage_id, p.title, p.text) for p in r.passages], list(r.missing_ids))


@dataclass(frozen=True)
class IndexInfo:
    passages: int
    dim: int
    metric: str
    index_type: str
    encoder_fingerprint: str
    model_version: str
    built_at: str
    index_version: str
    index_params: dict
    corpus_sha256: str
    stale: bool

    @classmethod
    def from_pb(cls, r: pb.IndexInfo) -> IndexInfo:
        return cls(r.passages, r.dim, r.metric, r.index_type, r.encoder_fingerprint, r.model_version,
                   r.built_at, r.index_version, json.loads(r.index_params_json or "{}"), r.corpus_sha256,
                   r.stale)
