"""Streaming corpus readers: DPR ``psgs_w100.tsv`` and JSONL, plain or gzipped.

Corpora are tens of gigabytes (DPR's Wikipedia is 21M passages), so everything here is a
generator over an open file: nothing is read whole. The format is decided from the name
(``.tsv``/``.jsonl``/``.json`` with optional ``.gz``) and, when the name says nothing, from
the first non-blank character (``{`` means JSONL).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dprscope.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

FORMATS = ("tsv", "jsonl")


@dataclass(frozen=True)
class CorpusPassage:
    """One passage as read from a corpus file (after optional word splitting)."""

    passage_id: str
    title: str
    text: str


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def detect_format(path: Path) -> str:
    """``tsv`` or ``jsonl``, from the extension or else the first non-blank character."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    with _open_text(path) as fh:
        for line in fh:
            stripped = line.strip()
            if stripped:
                return "jsonl" if stripped.startswith("{") else "tsv"
    return "tsv"


def _check_exists(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"corpus file {path} does not exist")
    return path


def _iter_tsv(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line number, id, title, text) per data row; a header row ``id text title`` is skipped."""
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 3:
                raise InvalidArgument(
                    f"{path}: line {line}: expected 3 tab-separated columns (id, text, title), got {len(row)}"
                )
            pid, text, title = row
            if line == 1 and pid.strip().lower() == "id" and text.strip().lower() == "text":
                continue
            yield line, pid.strip(), title, text


def _split_contents(contents: str) -> tuple[str, str]:
    """FlashRAG's ``"Title"\\ntext`` into (title, text)."""
    head, sep, rest = contents.partition("\n")
    if not sep:
        return "", contents
    title = head.strip()
    if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
        title = title[1:-1]
    return title, rest


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str, str, str]]:
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"{path}: line {line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or "id" not in obj:
                raise InvalidArgument(f'{path}: line {line_no}: expected an object with an "id" field')
            if "text" in obj:
                title, text = str(obj.get("title") or ""), str(obj.get("text") or "")
            elif "contents" in obj:
                title, text = _split_contents(str(obj.get("contents") or ""))
                if obj.get("title"):
                    title = str(obj["title"])
            else:
                raise InvalidArgument(f'{path}: line {line_no}: expected a "text" or "contents" field')
            yield line_no, str(obj["id"]).strip(), title, text


def _split_words(text: str, n: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + n]) for i in range(0, len(words), n)]


def read_corpus(path: Path, split_words: int | None = None) -> Iterator[CorpusPassage]:
    """Stream passages from a corpus file.

    Args:
        path: a DPR TSV (``id\\ttext\\ttitle``, header optional) or JSONL file, optionally ``.gz``.
        split_words: when set, split each record's text into consecutive blocks of at most
            this many whitespace-separated words (DPR's 100-word passages); block ``k`` gets
            the id ``f"{id}-{k}"`` and the record's title.

    Raises:
        NotFound: the file does not exist.
        InvalidArgument: a malformed row (named by file and line), or a bad ``split_words``.
    """
    path = _check_exists(path)
    if split_words is not None and split_words <= 0:
        raise InvalidArgument(f"split_words must be a positive word count, got {split_words}")
    rows = _iter_tsv(path) if detect_format(path) == "tsv" else _iter_jsonl(path)
    empty = 0
    for line, pid, title, text in rows:
        if not pid:
            raise InvalidArgument(f"{path}: line {line}: empty passage id")
        if not text.strip():
            empty += 1
            continue
        if split_words is None:
            yield CorpusPassage(pid, title, text)
        else:
            for k, block in enumerate(_split_words(text, split_words)):
                yield CorpusPassage(f"{pid}-{k}", title, block)
    if empty:
        log.warning("%s: skipped %d rows with empty text", path, empty)


def count_corpus(path: Path, split_words: int | None = None) -> int:
    """How many passages ``read_corpus`` will yield: a pre-pass for progress ETA.

    Without splitting this counts rows and skips the text work; with splitting the word
    count is needed, so it is close to a full read (still streaming).
    """
    n = 0
    for _ in read_corpus(path, split_words):
        n += 1
    return n


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (identifies a corpus for resume and manifests)."""
    path = _check_exists(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
