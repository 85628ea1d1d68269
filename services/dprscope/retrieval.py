"""The domain behind the Retriever service: validate, encode (batched), search, fetch.

Plain dataclasses in and out; the gRPC servicer only translates. Every request holds a
registry lease from start to finish, so the encoder, the index and the passage store it
uses always belong together, even while an operator swaps versions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dprscope.encoders.batcher import EncodeResult, MicroBatcher, SearchSpec
from dprscope.errors import InvalidArgument, ReindexRequired
from dprscope.index.vector_index import SearchParams
from dprscope.jobs import Deadline
from dprscope.metrics import Metrics
from dprscope.models.registry import Lease, ModelRegistry
from dprscope.settings import Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """Per-request knobs shared by Search and BatchSearch."""

    top_k: int = 0
    score_threshold: float | None = None
    model_version: str = ""
    omit_text: bool = False
    params: SearchParams = field(default_factory=SearchParams)


@dataclass(frozen=True)
class Hit:
    passage_id: str
    title: str
    text: str
    score: float
    rank: int


@dataclass(frozen=True)
class Timings:
    queue_ms: float = 0.0
    encode_ms: float = 0.0
    search_ms: float = 0.0
    fetch_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[Hit]
    model_version: str
    index_version: str
    timings: Timings


@dataclass(frozen=True)
class PassageLookup:
    passages: list[Hit]
    missing_ids: list[str]


@dataclass(frozen=True)
class IndexDescription:
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
    dprscope_version: str
    format_version: int


class RetrievalService:
    """Search, BatchSearch, GetPassages and GetIndexInfo as plain method calls."""

    def __init__(self, registry: ModelRegistry, batcher: MicroBatcher, limits: Limits,
                 metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.batcher = batcher
        self.limits = limits
        self.metrics = metrics

    # --- validation -------------------------------------------------------------
    def _check_query(self, query: str, what: str = "query") -> str:
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgument(f"{what} is empty; send the question text")
        size = len(query.encode("utf-8", errors="surrogatepass"))
        if size > self.limits.max_query_bytes:
            raise InvalidArgument(f"{what} is {size} bytes; the limit is {self.limits.max_query_bytes} bytes")
        if "\x00" in query:
            raise InvalidArgument(f"{what} contains a NUL character")
        return query

    def _resolve_top_k(self, top_k: int) -> int:
        if top_k == 0:
            return self.limits.default_top_k
        if top_k < 0 or top_k > self.limits.max_top_k:
            raise InvalidArgument(f"top_k={top_k} is out of range; allowed 1..{self.limits.max_top_k} "
                                  f"(0 means the default, {self.limits.default_top_k})")
        return top_k

    def _check_params(self, options: SearchOptions) -> None:
        p = options.params
        if p.ef_search < 0 or p.ef_search > 65536:
            raise InvalidArgument(f"ef_search={p.ef_search} is out of range; allowed 0..65536 (0 = index default)")
        if p.nprobe < 0 or p.nprobe > 65536:
            raise InvalidArgument(f"nprobe={p.nprobe} is out of range; allowed 0..65536 (0 = index default)")
        if options.score_threshold is not None and not np.isfinite(options.score_threshold):
            raise InvalidArgument(f"score_threshold={options.score_threshold} is not a finite number")

    # --- core --------------------------------------------------------------------
    def search(self, query: str, options: SearchOptions, deadline: Deadline | None = None) -> SearchOutcome:
        return self.batch_search([query], options, deadline, single=True)[0]

    async def search_async(self, query: str, options: SearchOptions,
                           deadline: Deadline | None = None) -> SearchOutcome:
        return (await self.batch_search_async([query], options, deadline, single=True))[0]

    def batch_search(self, queries: Sequence[str], options: SearchOptions, deadline: Deadline | None = None,
                     single: bool = False) -> list[SearchOutcome]:
        """Encode all queries as one batch, then search and fetch each; results in order."""
        started = time.perf_counter()
        deadline = deadline or Deadline()
        k = self._admit(queries, options, deadline, single)
        with self.registry.lease(options.model_version or None) as lease:
            encoded = self.batcher.encode(*self._encode_args(lease, queries, k, options, deadline))
        return self._outcomes(lease, len(queries), encoded, started)

    async def batch_search_async(self, queries: Sequence[str], options: SearchOptions,
                                 deadline: Deadline | None = None, single: bool = False) -> list[SearchOutcome]:
        """``batch_search`` for an event loop: the same steps, awaiting the encoder thread."""
        started = time.perf_counter()
        deadline = deadline or Deadline()
        k = self._admit(queries, options, deadline, single)
        with self.registry.lease(options.model_version or None) as lease:
            encoded = await self.batcher.encode_async(*self._encode_args(lease, queries, k, options, deadline))
        return self._outcomes(lease, len(queries), encoded, started)

    def _admit(self, queries: Sequence[str], options: SearchOptions, deadline: Deadline, single: bool) -> int:
        """Validate a request before it costs anything; returns the resolved ``top_k``."""
        if not single:
            if len(queries) == 0:
                raise InvalidArgument("queries is empty; send at least one query")
            if len(queries) > self.limits.max_batch_queries:
                raise InvalidArgument(f"{len(queries)} queries in one batch; the limit is "
                                      f"{self.limits.max_batch_queries}")
        for i, q in enumerate(queries):
            self._check_query(q, "query" if single else f"queries[{i}]")
        k = self._resolve_top_k(options.top_k)
        self._check_params(options)
        deadline.check("query encoding")
        return k

    def _encode_args(self, lease: Lease, queries: Sequence[str], k: int, options: SearchOptions,
                     deadline: Deadline) -> tuple:
        if options.model_version:
            self._check_pinned_pair(lease)
        return (lease.encoder.query, list(queries), deadline,
                SearchSpec(lease.index, k, options.params,
                           finish=lambda scores, rows: self._hits(lease, scores, rows, options)))

    def _outcomes(self, lease: Lease, n_queries: int, encoded: EncodeResult, started: float) -> list[SearchOutcome]:
        outcomes_hits: list[list[Hit]] = encoded.finished
        total_s = time.perf_counter() - started
        timings = Timings(queue_ms=encoded.queue_s * 1e3, encode_ms=encoded.encode_s * 1e3,
                          search_ms=encoded.search_s * 1e3, fetch_ms=encoded.finish_s * 1e3, total_ms=total_s * 1e3)
        if self.metrics is not None:
            m = self.metrics.stage_duration
            m.labels("queue").observe(encoded.queue_s)
            m.labels("encode").observe(encoded.encode_s)
            m.labels("search").observe(encoded.search_s)
            m.labels("fetch").observe(encoded.finish_s)
            self.metrics.version_requests.labels(lease.version).inc(n_queries)
        index_version = lease.index.manifest.index_version
        return [SearchOutcome(hits, lease.version, index_version, timings) for hits in outcomes_hits]

    def _check_pinned_pair(self, lease: Lease) -> None:
        """A pinned, not-yet-active version must not search an index built by another context encoder.

        Its query vectors would live in a different space than the index's passage vectors,
        so results would look fine and be wrong. The active version is exempt: activation
        already decided (re-index, or an operator's explicit ``allow_stale_index``).
        """
        if lease.version == self.registry.active_name:
            return
        version = self.registry.get(lease.version)
        if version.stale_index:
            return
        if lease.encoder.context_fingerprint != lease.index.manifest.encoder_fingerprint:
            raise ReindexRequired(
                f"model_version {lease.version!r} changes the context encoder and its index is not built yet; "
                "activate it (which re-indexes) or wait for its re-index to finish")

    def _hits(self, lease: Lease, scores: np.ndarray, rows: np.ndarray, options: SearchOptions) -> list[list[Hit]]:
        wanted: list[list[tuple[int, float]]] = []
        all_rows: list[int] = []
        for score_row, id_row in zip(scores, rows, strict=True):
            kept = [(int(r), float(s)) for s, r in zip(score_row, id_row, strict=True) if r >= 0
                    and (options.score_threshold is None or s >= options.score_threshold)]
            wanted.append(kept)
            all_rows.extend(r for r, _ in kept)
        records = {rec.row: rec for rec in lease.index.store.get_rows(sorted(set(all_rows)))} if all_rows else {}
        result: list[list[Hit]] = []
        for kept in wanted:
            hits = []
            for rank, (row, score) in enumerate(kept, start=1):
                rec = records.get(row)
                if rec is None:  # index and store disagree: never invent a passage
                    log.error("index row %d has no stored passage", row)
                    continue
                hits.append(Hit(rec.passage_id, "" if options.omit_text else rec.title,
                                "" if options.omit_text else rec.text, score, rank))
            result.append(hits)
        return result

    def get_passages(self, ids: Sequence[str]) -> PassageLookup:
        if not ids:
            raise InvalidArgument("ids is empty; send at least one passage id")
        if len(ids) > self.limits.max_passage_ids:
            raise InvalidArgument(f"{len(ids)} ids requested; the limit is {self.limits.max_passage_ids}")
        for i, pid in enumerate(ids):
            if not pid or len(pid) > 512:
                raise InvalidArgument(f"ids[{i}] must be 1..512 characters")
        with self.registry.lease(None) as lease:
            found = lease.index.store.get_ids(list(ids))
        passages = [Hit(found[i].passage_id, found[i].title, found[i].text, 0.0, 0) for i in ids if i in found]
        missing = [i for i in ids if i not in found]
        return PassageLookup(passages, missing)

    def index_info(self, model_version: str = "") -> IndexDescription:
        with self.registry.lease(model_version or None) as lease:
            m = lease.index.manifest
            version = self.registry.get(lease.version)
            stale = version.stale_index or lease.encoder.context_fingerprint != m.encoder_fingerprint
            return IndexDescription(
                passages=int(m.passages), dim=int(m.dim), metric=m.metric, index_type=m.index_type,
                encoder_fingerprint=m.encoder_fingerprint, model_version=lease.version, built_at=m.built_at,
                index_version=m.index_version, index_params=dict(m.index_params), corpus_sha256=m.corpus_sha256,
                stale=bool(stale), dprscope_version=m.dprscope_version, format_version=int(m.format_version))
