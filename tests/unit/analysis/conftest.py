"""Fixtures for the analysis tests: a tiny BERT bi-encoder built from a config.

The tiny model is built once per session (seeded) and deep-copied per test, as
sentence-transformers' tests do, so a test that misbehaves cannot poison the next one.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.text_encoder import EncoderConfig, TextEncoder

TINY_QUERY = "who wrote the song does he love you"
TINY_PASSAGES = [
    "Does He Love You is a song written by Sandy Knox and Billy Stritch.",
    "Paris is the capital and largest city of France.",
    "The first Nobel Prize in Physics was awarded to Wilhelm Röntgen.",
]


def make_tiny_bi(dtype: torch.dtype = torch.float32, seed: int = 0, normalize: bool = False,
                 shared: bool = True) -> BiEncoder:
    """A 2-layer, hidden-32, intermediate-37 BERT wrapped as a bi-encoder (mean pooling)."""
    from transformers import AutoTokenizer

    from dprscope.encoders.loading import default_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)

    def build(s: int) -> TextEncoder:
        torch.manual_seed(s)
        cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=37, vocab_size=30522, max_position_embeddings=128)
        model = transformers.BertModel(cfg).to(dtype).eval()
        return TextEncoder(model, tokenizer, EncoderConfig(pooling="mean", normalize=normalize, max_length=64),
                           name=f"tiny-{s}")

    query = build(seed)
    context = query if shared else build(seed + 1)
    return BiEncoder(query=query, context=context, kind="tiny", source="tiny")


def copy_bi(bi: BiEncoder) -> BiEncoder:
    """A deep copy of the weights, re-wrapped (TextEncoder holds a lock, which cannot be copied)."""

    def copy_encoder(enc: TextEncoder) -> TextEncoder:
        return TextEncoder(copy.deepcopy(enc.model), enc.tokenizer, enc.config, name=enc.name)

    query = copy_encoder(bi.query)
    context = query if bi.shared else copy_encoder(bi.context)
    return BiEncoder(query=query, context=context, kind=bi.kind, source=bi.source)


@pytest.fixture(scope="session")
def _tiny_session() -> BiEncoder:
    return make_tiny_bi()


@pytest.fixture
def tiny_bi(_tiny_session) -> BiEncoder:
    return copy_bi(_tiny_session)


@pytest.fixture(scope="session")
def _tiny64_session() -> BiEncoder:
    return make_tiny_bi(torch.float64)


@pytest.fixture
def tiny_bi64(_tiny64_session) -> BiEncoder:
    """The same tiny model in float64, for convergence checks below float32 noise."""
    return copy_bi(_tiny64_session)


@pytest.fixture(scope="session")
def tiny_dpr_pair() -> BiEncoder:
    """Two different tiny encoders (DPR-style unshared query/context weights)."""
    return make_tiny_bi(seed=3, shared=False)
