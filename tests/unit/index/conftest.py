"""Fixtures for index tests: the real encoder (loaded once) and a small real corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shared_data import real_passages, write_tsv

N_PASSAGES = 96


@pytest.fixture(scope="session")
def encoder():
    from dprscope.encoders import load_bi_encoder

    return load_bi_encoder("default")


@pytest.fixture(scope="session")
def corpus_tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("corpus") / "psgs.tsv", real_passages(N_PASSAGES))


@pytest.fixture(scope="session")
def baseline_index(tmp_path_factory, corpus_tsv, encoder) -> Path:
    """An uninterrupted flat build every resume test compares against."""
    from dprscope.index import build_index

    out = tmp_path_factory.mktemp("baseline") / "idx"
    build_index(corpus_tsv, out, encoder, batch_size=16, shard_size=32)
    return out
