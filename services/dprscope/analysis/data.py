"""Reading DPR-format retriever records (question, positive / hard-negative / negative contexts).

DPR released its training data as one JSON array per split; later tooling uses JSON lines,
often gzipped. All three layouts hold the same record shape, so one loader reads them and
turns them into small frozen dataclasses: analysis code never indexes raw dicts, and a
malformed file fails here with the line that broke it instead of deep inside a probe.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprscope.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

DPR_SUFFIXES = (".json", ".jsonl", ".jsonl.gz", ".json.gz")


@dataclass(frozen=True)
class Context:
    """One passage: what the context encoder sees (``title`` and ``text``) plus its id."""

    text: str
    title: str = ""
    passage_id: str = ""


@dataclass(frozen=True)
class DprRecord:
    """One DPR retriever record; ``positive_ctxs[0]`` is the gold passage."""

    question: str
    positive_ctxs: tuple[Context, ...] = ()
    hard_negative_ctxs: tuple[Context, ...] = ()
    negative_ctxs: tuple[Context, ...] = ()
    answers: tuple[str, ...] = ()


def _context(raw: Any, where: str) -> Context:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{where}: a context must be an object with title/text, got {type(raw).__name__}")
    text = raw.get("text")
    if not isinstance(text, str):
        raise InvalidArgument(f"{where}: context has no string 'text'")
    # NQ records name the id passage_id, SQuAD1 records psg_id; DPR's own code accepts both.
    pid = raw.get("passage_id", raw.get("psg_id", raw.get("id", "")))
    return Context(text=text, title=str(raw.get("title") or ""), passage_id="" if pid is None else str(pid))


def record_from_dict(raw: Any, where: str = "record") -> DprRecord:
    """Validate one raw DPR record (a dict) and convert it.

    Raises:
        InvalidArgument: the record has no question or a context list is not a list.
    """
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{where}: expected a JSON object, got {type(raw).__name__}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidArgument(f"{where}: missing or empty 'question'")

    def ctxs(key: str) -> tuple[Context, ...]:
        items = raw.get(key) or []
        if not isinstance(items, list):
            raise InvalidArgument(f"{where}: '{key}' must be a list, got {type(items).__name__}")
        return tuple(_context(c, f"{where}.{key}[{i}]") for i, c in enumerate(items))

    answers = raw.get("answers") or []
    return DprRecord(
        question=question,
        positive_ctxs=ctxs("positive_ctxs"),
        hard_negative_ctxs=ctxs("hard_negative_ctxs"),
        negative_ctxs=ctxs("negative_ctxs"),
        answers=tuple(str(a) for a in answers) if isinstance(answers, list) else (),
    )


def records_from_dicts(raws: Iterable[Any], max_records: int | None = None) -> list[DprRecord]:
    """Convert already-parsed records (e.g. from a request), stopping at ``max_records``."""
    out: list[DprRecord] = []
    for i, raw in enumerate(raws):
        if max_records is not None and len(out) >= max_records:
            break
        out.append(record_from_dict(raw, f"record {i}"))
    return out


def _iter_raw(path: Path) -> Iterator[tuple[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        head = ""
        while True:
            ch = fh.read(1)
            if not ch or not ch.isspace():
                head = ch
                break
        fh.seek(0)
        if head == "[":
            # DPR's original layout: one JSON array for the whole split.
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
            for i, raw in enumerate(data):
                yield f"{path.name} record {i}", raw
            return
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path.name} line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"{path.name} line {lineno}: not valid JSON ({exc.msg})") from exc


def load_dpr_records(path: str | Path, max_records: int | None = None) -> list[DprRecord]:
    """Read DPR-format records from a JSON array, JSON lines or gzipped JSON lines file.

    The layout is sniffed from the first non-blank character (``[`` means an array), not
    from the suffix, because DPR files are commonly renamed.

    Args:
        path: the file.
        max_records: stop after this many records (``None`` or 0 = all). JSON lines are
            streamed, so a cap on a large file reads only what it needs.

    Raises:
        NotFound: the file does not exist.
        InvalidArgument: ``max_records`` is negative or the content is not DPR-format.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"DPR data file {path} does not exist")
    if max_records is not None and max_records < 0:
        raise InvalidArgument(f"max_records must be >= 0 (0 = all), got {max_records}")
    cap = max_records or None
    out: list[DprRecord] = []
    for where, raw in _iter_raw(path):
        if cap is not None and len(out) >= cap:
            break
        out.append(record_from_dict(raw, where))
    log.info("read %d DPR records from %s", len(out), path)
    return out
