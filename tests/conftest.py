"""Session fixtures: the real embedded model, a small real-Wikipedia index, real servers.

The model is loaded once per session (as sentence-transformers' own tests do) and the
small index is built once from real passages of ``../shared/data``: NQ questions' gold
passages plus their BM25 hard negatives, so retrieval in tests is non-trivial.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.shared_data import shared_data_dir

csv.field_size_limit(sys.maxsize)

SMALL_INDEX_QUESTIONS = 40


def load_nq_records(limit: int | None = None) -> list[dict]:
    """NQ-open questions with gold passage + BM25 hard negatives (ids into psgs.tsv)."""
    path = shared_data_dir() / "nq-open-oracle-dpr-bm25" / "nq-open-oracle.dpr.jsonl.gz"
    records = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            records.append(json.loads(line))
            if limit is not None and len(records) >= limit:
                break
    return records


def write_psgs_subset(ids: set[str], out: Path, extra: int = 0) -> int:
    """Copy rows of the shared psgs.tsv whose id is in ``ids`` (+ the first ``extra`` others)."""
    source = shared_data_dir() / "wikipedia-passages-combined" / "psgs.tsv"
    written = 0
    others = 0
    with source.open(newline="", encoding="utf-8") as src, out.open("w", newline="", encoding="utf-8") as dst:
        reader = csv.reader(src, delimiter="\t")
        writer = csv.writer(dst, delimiter="\t", lineterminator="\n")
        writer.writerow(next(reader))
        for row in reader:
            if row[0] in ids:
                writer.writerow(row)
                written += 1
            elif others < extra:
                writer.writerow(row)
                written += 1
                others += 1
    return written


@pytest.fixture(scope="session")
def encoder():
    from dprscope.encoders import load_bi_encoder

    return load_bi_encoder("default")


@pytest.fixture(scope="session")
def nq_records() -> list[dict]:
    return load_nq_records(SMALL_INDEX_QUESTIONS)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, nq_records) -> Path:
    ids = set()
    for record in nq_records:
        for ctx in record["positive_ctxs"] + record["hard_negative_ctxs"]:
            ids.add(str(ctx["passage_id"]))
    out = tmp_path_factory.mktemp("corpus") / "small.tsv"
    write_psgs_subset(ids, out)
    return out


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, small_corpus, encoder) -> Path:
    from dprscope.index.builder import build_index

    out = tmp_path_factory.mktemp("index") / "small"
    build_index(small_corpus, out, encoder, index_type="flat", batch_size=32, shard_size=128)
    return out


def _settings(index_dir: Path, **overrides):
    from dprscope.settings import Settings

    base = Settings(index_dir=index_dir, host="127.0.0.1", port=0, analysis_port=None, metrics_port=0,
                    drain_s=0.0, grace_s=2.0)
    return replace(base, **overrides)


@pytest.fixture
def start_server(small_index, encoder) -> Iterator[Callable]:
    """``start_server(**settings_overrides) -> ServerHandle`` on 127.0.0.1:0, stopped at teardown."""
    from dprscope.server import start

    handles = []

    def _start(encoder_override=None, **overrides):
        overrides.setdefault("index_dir", small_index)
        settings = _settings(**overrides)
        handle = start(settings, encoder=encoder_override or encoder)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop(grace=0, drain=0)


@pytest.fixture(scope="module")
def server(small_index, encoder):
    """One running server per test module, for read-only tests."""
    from dprscope.server import start

    handle = start(_settings(small_index), encoder=encoder)
    yield handle
    handle.stop(grace=0, drain=0)


@pytest.fixture
def client(server):
    from dprscope_client import RetrieverClient

    with RetrieverClient(server.target, timeout=30) as c:
        yield c
