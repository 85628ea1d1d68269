"""Protobuf <-> domain converters for the Retriever service (and nothing else)."""

from __future__ import annotations

import json

from dprscope.index.vector_index import SearchParams
from dprscope.retrieval import Hit, IndexDescription, PassageLookup, SearchOptions, SearchOutcome, Timings
from dprscope.v1 import retrieval_pb2 as pb


def search_options(request: pb.SearchRequest | pb.BatchSearchRequest) -> SearchOptions:
    nested = request.params if request.HasField("params") else None
    params = SearchParams(
        ef_search=(nested.ef_search if nested and nested.ef_search else request.ef_search),
        nprobe=(nested.nprobe if nested and nested.nprobe else request.nprobe),
        exact=bool((nested.exact if nested else False) or request.exact),
    )
    threshold = request.score_threshold if request.HasField("score_threshold") else None
    return SearchOptions(top_k=request.top_k, score_threshold=threshold, model_version=request.model_version,
                         omit_text=request.omit_text, params=params)


def _timings(t: Timings) -> pb.Timings:
    return pb.Timings(queue_ms=t.queue_ms, encode_ms=t.encode_ms, search_ms=t.search_ms,
                      fetch_ms=t.fetch_ms, total_ms=t.total_ms)


def _hit(h: Hit) -> pb.Hit:
    return pb.Hit(passage_id=h.passage_id, title=h.title, text=h.text, score=h.score, rank=h.rank)


def search_response(outcome: SearchOutcome) -> pb.SearchResponse:
    t = outcome.timings
    return pb.SearchResponse(hits=[_hit(h) for h in outcome.hits], model_version=outcome.model_version,
                             index_version=outcome.index_version, timings=_timings(t),
                             encode_ms=t.encode_ms, search_ms=t.search_ms, total_ms=t.total_ms)


def batch_search_response(outcomes: list[SearchOutcome]) -> pb.BatchSearchResponse:
    first = outcomes[0]
    return pb.BatchSearchResponse(results=[search_response(o) for o in outcomes],
                                  model_version=first.model_version, index_version=first.index_version,
                                  timings=_timings(first.timings))


def passages_response(lookup: PassageLookup) -> pb.GetPassagesResponse:
    return pb.GetPassagesResponse(
        passages=[pb.Passage(passage_id=p.passage_id, title=p.title, text=p.text) for p in lookup.passages],
        missing_ids=lookup.missing_ids)


def index_info(d: IndexDescription) -> pb.IndexInfo:
    return pb.IndexInfo(passages=d.passages, dim=d.dim, metric=d.metric, index_type=d.index_type,
                        encoder_fingerprint=d.encoder_fingerprint, model_version=d.model_version,
                        built_at=d.built_at, index_version=d.index_version,
                        index_params_json=json.dumps(d.index_params, sort_keys=True),
                        corpus_sha256=d.corpus_sha256, stale=d.stale, dprscope_version=d.dprscope_version,
                        format_version=d.format_version)
