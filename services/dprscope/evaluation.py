"""Retrieval accuracy as DPR measures it: is an answer string inside a top-k passage?

DPR's ``has_answer`` tokenizes the passage and the answers the same way (lowercased,
accents stripped, word tokens) and looks for the answer's token sequence inside the
passage's; top-k accuracy is the share of questions with such a passage in the top k.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return _TOKEN.findall(text.lower())


def has_answer(passage: str, answers: Iterable[str]) -> bool:
    """True when any answer's token sequence occurs contiguously in the passage."""
    words = _tokens(passage)
    for answer in answers:
        needle = _tokens(answer)
        if not needle:
            continue
        n = len(needle)
        for i in range(len(words) - n + 1):
            if words[i:i + n] == needle:
                return True
    return False


@dataclass(frozen=True)
class TopKAccuracy:
    questions: int
    accuracy: dict[int, float]

    def row(self) -> str:
        return "  ".join(f"top-{k}: {v * 100:5.1f}%" for k, v in sorted(self.accuracy.items()))


def top_k_accuracy(retrieved: Sequence[Sequence[str]], answers: Sequence[Sequence[str]],
                   ks: Sequence[int] = (1, 5, 20)) -> TopKAccuracy:
    """``retrieved[i]`` are question i's passage texts in rank order; answers likewise."""
    if len(retrieved) != len(answers):
        raise ValueError(f"{len(retrieved)} result lists for {len(answers)} answer lists")
    first_hit: list[int | None] = []
    for texts, golds in zip(retrieved, answers, strict=True):
        rank = next((i for i, t in enumerate(texts) if has_answer(t, golds)), None)
        first_hit.append(rank)
    n = max(len(first_hit), 1)
    acc = {k: sum(1 for r in first_hit if r is not None and r < k) / n for k in ks}
    return TopKAccuracy(len(first_hit), acc)
