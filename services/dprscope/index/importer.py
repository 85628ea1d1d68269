"""Import DPR's released pre-computed passage embeddings instead of re-encoding.

DPR ships ``wikipedia_passages_*`` files: each a pickled list of ``(id, vector)`` pairs
(ids like ``"123"`` or ``"wiki:123"``). Unpickling runs arbitrary code from the file, so it
is refused unless the operator says they trust the files. Passage text is joined from the
corpus TSV through a temporary SQLite table, so neither side is held in memory whole.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dprscope import __version__
from dprscope.errors import FailedPrecondition, InvalidArgument, NoIndex, NotFound, PermissionDenied
from dprscope.index.builder import finish_build, wipe_index_dir
from dprscope.index.corpus import file_sha256, read_corpus
from dprscope.index.manifest import (
    SHARDS_DIR,
    STORE_NAME,
    Manifest,
    new_index_version,
    read_manifest,
    utc_now_iso,
)
from dprscope.index.shards import ShardWriter
from dprscope.index.vector_index import check_index_type, same_index_type
from dprscope.jobs import CancelToken, ProgressFn, ProgressTicker
from dprscope.store import PassageRecord, PassageStore

log = logging.getLogger(__name__)

_STAGING = "import_staging.sqlite"
_LOOKUP_CHUNK = 500


def _strip_id(raw: Any) -> str:
    pid = str(raw)
    return pid[5:] if pid.startswith("wiki:") else pid


def _embeddings_sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(file_sha256(p).encode())
    return digest.hexdigest()


def _load_pairs(path: Path) -> list[tuple[str, np.ndarray]]:
    with open(path, "rb") as fh:
        data = pickle.load(fh)
    if not isinstance(data, list | tuple):
        kind = type(data).__name__
        raise InvalidArgument(f"{path}: expected a pickled list of (id, vector) pairs, got {kind}")
    try:
        return [(_strip_id(pid), np.asarray(vec, dtype=np.float32).ravel()) for pid, vec in data]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{path}: expected (id, vector) pairs: {exc}") from exc


def _stage_corpus(corpus: Path, staging: Path) -> sqlite3.Connection:
    staging.unlink(missing_ok=True)
    conn = sqlite3.connect(str(staging))
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE corpus(id TEXT PRIMARY KEY, title TEXT, text TEXT)")
    batch: list[tuple[str, str, str]] = []
    for p in read_corpus(corpus):
        batch.append((p.passage_id, p.title, p.text))
        if len(batch) >= 10_000:
            conn.executemany("INSERT OR IGNORE INTO corpus VALUES (?, ?, ?)", batch)
            batch.clear()
    conn.executemany("INSERT OR IGNORE INTO corpus VALUES (?, ?, ?)", batch)
    conn.commit()
    return conn


def _lookup(conn: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, title, text FROM corpus WHERE id IN ({marks})"
        for pid, title, text in conn.execute(sql, chunk):
            out[pid] = (title, text)
    return out


def import_embeddings(
    embedding_files: Sequence[Path],
    corpus: Path,
    out_dir: Path,
    index_type: str = "auto",
    encoder_info: dict | None = None,
    trust_pickle: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    index_params: dict | None = None,
    shard_size: int = 65536,
    overwrite: bool = False,
) -> Manifest:
    """Build an index directory from pre-computed embeddings plus the corpus text.

    Args:
        embedding_files: pickled ``[(id, vector), ...]`` shards, imported in the order given.
        corpus: the DPR TSV (or JSONL) the embeddings were computed from; joined by id.
        encoder_info: ``BiEncoder.describe()``-like dict of the encoder that made them; its
            ``context_fingerprint``/``query_fingerprint`` go into the manifest. Unknown:
            the fingerprint is ``imported:<sha256 of the embedding files>``.
        trust_pickle: must be True: unpickling can run code from the file.

    Raises:
        PermissionDenied: ``trust_pickle`` is false.
        InvalidArgument: no embedding files, ragged dims, or no id found in the corpus.
        FailedPrecondition: ``out_dir`` already holds another index (and not ``overwrite``).
    """
    out_dir, corpus = Path(out_dir), Path(corpus)
    paths = [Path(p) for p in embedding_files]
    if not paths:
        raise InvalidArgument("no embedding files given")
    check_index_type(index_type)
    for p in paths:
        if not p.is_file():
            raise NotFound(f"embedding file {p} does not exist")
    if not trust_pickle:
        raise PermissionDenied(
            f"refusing to unpickle {len(paths)} embedding file(s): pickle can run arbitrary code; "
            "pass --trust-pickle (trust_pickle=True) if you trust their source"
        )
    info = dict(encoder_info or {})
    emb_sha = _embeddings_sha256(paths)
    fingerprint = str(info.get("context_fingerprint") or f"imported:{emb_sha}")
    corpus_sha = file_sha256(corpus)
    try:
        existing = read_manifest(out_dir)
    except NoIndex:
        existing = None
    if existing is not None:
        same = (
            existing.extra.get("embeddings_sha256") == emb_sha
            and existing.corpus_sha256 == corpus_sha
            and same_index_type(index_type, existing.index_type, existing.passages)
        )
        if same and not overwrite:
            return existing
        if not overwrite:
            raise FailedPrecondition(
                f"{out_dir} already holds index {existing.index_version}; use a fresh output "
                "directory, delete it, or pass overwrite"
            )
    # Import is not resumable (no encoding to save): any half-finished state is redone.
    out_dir.mkdir(parents=True, exist_ok=True)
    wipe_index_dir(out_dir)
    shards_dir = out_dir / SHARDS_DIR
    shards_dir.mkdir()
    staging_path = out_dir / _STAGING
    staging = _stage_corpus(corpus, staging_path)
    store = PassageStore.create(out_dir / STORE_NAME)
    writer: ShardWriter | None = None
    ticker = ProgressTicker("import", None, progress, every_s=0.2)
    rows = missing = 0
    dim = 0
    try:
        for path in paths:
            if cancel is not None:
                cancel.raise_if_cancelled()
            pairs = _load_pairs(path)
            for start in range(0, len(pairs), _LOOKUP_CHUNK):
                chunk = pairs[start : start + _LOOKUP_CHUNK]
                found = _lookup(staging, [pid for pid, _ in chunk])
                keep = [(pid, vec) for pid, vec in chunk if pid in found]
                missing += len(chunk) - len(keep)
                if not keep:
                    continue
                vectors = np.stack([vec for _, vec in keep])
                if writer is None:
                    dim = int(vectors.shape[1])
                    writer = ShardWriter(shards_dir, shard_size, dim, store)
                records = [PassageRecord(rows + i, pid, *found[pid]) for i, (pid, _) in enumerate(keep)]
                writer.add(vectors, records)
                rows += len(keep)
                ticker.update(rows)
            log.info("imported %s (%d pairs)", path, len(pairs))
        if writer is None:
            raise InvalidArgument(
                f"none of the {missing} embedding ids occur in {corpus}: wrong corpus for these embeddings?"
            )
        if missing:
            log.warning("skipped %d embeddings whose ids are not in %s", missing, corpus)
        writer.finish()
        store.finalize()
    finally:
        store.close()
        staging.close()
        staging_path.unlink(missing_ok=True)
    ticker.update(rows, force=True)
    params_given = index_params
    if info.get("dim") not in (None, dim):
        raise InvalidArgument(f"encoder_info says dim {info.get('dim')} but the embeddings have dim {dim}")

    def make_manifest(vindex) -> Manifest:
        return Manifest(
            index_version=new_index_version(fingerprint),
            encoder=info,
            encoder_fingerprint=fingerprint,
            query_fingerprint=str(info.get("query_fingerprint") or ""),
            dim=dim,
            metric=str(info.get("metric") or "ip"),
            index_type=vindex.index_type,
            index_params=vindex.params,
            passages=rows,
            corpus_path=str(corpus.resolve()),
            corpus_sha256=corpus_sha,
            built_at=utc_now_iso(),
            split_words=None,
            dprscope_version=__version__,
            extra={
                "imported_from": [str(p.resolve()) for p in paths],
                "embeddings_sha256": emb_sha,
                "skipped_missing_ids": missing,
            },
        )

    try:
        return finish_build(
            out_dir, rows, writer.next_shard, dim, index_type, params_given, progress, False, make_manifest
        )
    finally:
        shutil.rmtree(shards_dir, ignore_errors=True)
