"""Corpus -> index directory, streaming and resumable.

Stages: ``encode`` (corpus batches -> vectors -> shards + store rows, committed together per
shard) then ``index`` (shards -> FAISS index -> ``index.faiss``) then ``manifest.json``,
written last so its presence means the directory is complete. A build killed at any point
leaves a directory that either resumes (same inputs) or has no manifest; see ``shards.py``
for the invariants that make that true.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dprscope import __version__
from dprscope.encoders import BiEncoder
from dprscope.errors import FailedPrecondition, InvalidArgument, NoIndex
from dprscope.index.corpus import CorpusPassage, count_corpus, file_sha256, read_corpus
from dprscope.index.manifest import (
    INDEX_NAME,
    MANIFEST_NAME,
    SHARDS_DIR,
    STORE_NAME,
    Manifest,
    new_index_version,
    read_manifest,
    utc_now_iso,
    write_manifest,
)
from dprscope.index.shards import (
    ShardReader,
    ShardWriter,
    read_build_state,
    scan_shards,
    truncate_shards,
    write_build_state,
)
from dprscope.index.vector_index import build_vector_index, check_index_type, same_index_type
from dprscope.jobs import CancelToken, ProgressFn, ProgressTicker
from dprscope.store import PassageRecord, PassageStore

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_SHARD_SIZE = 2048


def _validate(index_type: str, batch_size: int, shard_size: int, split_words: int | None) -> None:
    check_index_type(index_type)
    if batch_size <= 0:
        raise InvalidArgument(f"batch_size must be > 0, got {batch_size}")
    if shard_size <= 0:
        raise InvalidArgument(f"shard_size must be > 0, got {shard_size}")
    if split_words is not None and split_words <= 0:
        raise InvalidArgument(f"split_words must be > 0, got {split_words}")


def wipe_index_dir(out_dir: Path) -> None:
    """Remove what a build writes (and nothing else) so a fresh build can start."""
    for name in (MANIFEST_NAME, INDEX_NAME, STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / SHARDS_DIR, ignore_errors=True)


def _matches(manifest: Manifest, state: dict[str, Any], index_type: str, index_params: dict | None) -> bool:
    if not same_index_type(index_type, manifest.index_type, manifest.passages):
        return False
    if index_params and any(manifest.index_params.get(k) != v for k, v in index_params.items()):
        return False
    return (
        manifest.corpus_sha256 == state["source_sha256"]
        and manifest.encoder_fingerprint == state["encoder_fingerprint"]
        and manifest.split_words == state["split_words"]
    )


def _existing_manifest(out_dir: Path) -> Manifest | None:
    try:
        return read_manifest(out_dir)
    except NoIndex:
        return None


def _prepare(
    out_dir: Path, state: dict[str, Any], index_type: str, index_params: dict | None, overwrite: bool
) -> Manifest | None:
    """Decide between: finished already (return its manifest), resume, fresh start, or refuse."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shards_dir = out_dir / SHARDS_DIR
    manifest = _existing_manifest(out_dir)
    if manifest is not None:
        if _matches(manifest, state, index_type, index_params) and not overwrite:
            log.info("index at %s is already built from these inputs (%s)", out_dir, manifest.index_version)
            return manifest
        if not overwrite:
            raise FailedPrecondition(
                f"{out_dir} already holds a finished index built from other inputs "
                f"(index {manifest.index_version}); use a fresh output directory, delete it, "
                "or pass overwrite"
            )
        wipe_index_dir(out_dir)
    previous = read_build_state(shards_dir)
    if previous is not None and previous != state:
        if not overwrite:
            changed = sorted(k for k in set(previous) | set(state) if previous.get(k) != state.get(k))
            raise FailedPrecondition(
                f"{out_dir} holds an unfinished build from other inputs (differs in: "
                f"{', '.join(changed)}); use a fresh output directory, delete it, or pass overwrite"
            )
        wipe_index_dir(out_dir)
    elif previous is None and (out_dir / STORE_NAME).exists():
        if not overwrite:
            raise FailedPrecondition(
                f"{out_dir} holds a {STORE_NAME} that no build here wrote; use a fresh output "
                "directory, delete it, or pass overwrite"
            )
        wipe_index_dir(out_dir)
    write_build_state(shards_dir, state)
    return None


def _resume_point(out_dir: Path, shard_size: int, dim: int, store: PassageStore | None):
    """Reconcile shards and store; return the ShardScan to continue from."""
    shards_dir = out_dir / SHARDS_DIR
    scan = scan_shards(shards_dir, shard_size, dim)
    if store is not None:
        stored = store.max_row() + 1
        if stored < scan.rows:  # the store lost rows a shard claims: redo from the store's state
            keep = stored // shard_size
            log.warning("store has %d rows but shards cover %d; keeping %d shards", stored, scan.rows, keep)
            truncate_shards(shards_dir, keep)
            scan = scan_shards(shards_dir, shard_size, dim)
        store.truncate_from(scan.rows)
    if scan.rows:
        log.info("resuming build in %s after %d passages (%d shards)", out_dir, scan.rows, scan.shards)
    return scan


Passage = tuple[str, str, str]
EncodeBatches = Callable[[Iterator[Passage], int], Iterator[tuple[list[Passage], np.ndarray]]]
"""An encode engine: (id, title, text) stream + batch size -> (batch, vectors) in input order."""


def _local_batches(
    encoder: BiEncoder, passages: Iterator[Passage], batch_size: int, cancel: CancelToken | None
) -> Iterator[tuple[list[Passage], np.ndarray]]:
    """The in-process engine: this encoder, one batch at a time."""
    while True:
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = list(itertools.islice(passages, batch_size))
        if not batch:
            return
        yield batch, encoder.encode_passages([b[1] for b in batch], [b[2] for b in batch], batch_size=batch_size)


def _encode_stream(
    passages: Iterator[tuple[str, str, str]],
    start_row: int,
    encoder: BiEncoder,
    writer: ShardWriter,
    batch_size: int,
    ticker: ProgressTicker,
    cancel: CancelToken | None,
    keep_records: bool,
    encode_batches: EncodeBatches | None = None,
) -> int:
    """Encode (id, title, text) triples batch by batch into the writer; return rows done.

    ``encode_batches`` swaps the engine (e.g. a Ray actor pool) but must yield the batches
    in input order; shards, store rows and resume stay this function's job either way.
    """
    row = start_row
    ticker.update(row, "encoding", force=True)
    if encode_batches is None:
        source = _local_batches(encoder, passages, batch_size, cancel)
    else:
        source = encode_batches(passages, batch_size)
    for batch, vectors in source:
        if cancel is not None:
            cancel.raise_if_cancelled()
        records = (
            [PassageRecord(row + i, pid, title, text) for i, (pid, title, text) in enumerate(batch)]
            if keep_records
            else None
        )
        writer.add(vectors, records)
        row += len(batch)
        ticker.update(row)
    if cancel is not None:
        cancel.raise_if_cancelled()
    writer.finish()
    ticker.update(row, force=True)
    return row


def finish_build(
    out_dir: Path,
    total: int,
    shard_count: int,
    dim: int,
    index_type: str,
    index_params: dict | None,
    progress: ProgressFn | None,
    keep_shards: bool,
    make_manifest: Callable[[Any], Manifest],
) -> Manifest:
    """Shards -> index.faiss -> manifest.json (last) -> drop shards."""
    shards_dir = out_dir / SHARDS_DIR
    vindex = build_vector_index(
        index_type, ShardReader(shards_dir, shard_count), dim, total, index_params, progress=progress
    )
    vindex.save(out_dir / INDEX_NAME)
    manifest = make_manifest(vindex)
    write_manifest(out_dir, manifest)
    if not keep_shards:
        shutil.rmtree(shards_dir, ignore_errors=True)
    log.info("index %s ready at %s: %d passages, %s", manifest.index_version, out_dir, total, vindex.index_type)
    return manifest


def _skip_checked(
    passages: Iterator[CorpusPassage], skip: int, store: PassageStore, corpus: Path
) -> Iterator[tuple[str, str, str]]:
    """Skip what a previous run encoded, checking that the corpus still lines up with the store."""
    last = None
    for passage in itertools.islice(passages, skip):
        last = passage
    if skip:
        if last is None:
            raise FailedPrecondition(f"{corpus} is shorter than the {skip} passages already built")
        (stored,) = store.get_rows([skip - 1])
        if stored.passage_id != last.passage_id:
            raise FailedPrecondition(
                f"resume mismatch at row {skip - 1}: store has {stored.passage_id!r}, corpus has "
                f"{last.passage_id!r}; delete the output directory and rebuild"
            )
    for p in passages:
        yield p.passage_id, p.title, p.text


def encoder_manifest(encoder: BiEncoder, index_type: str, index_params: dict, passages: int, corpus_path: str,
                     corpus_sha256: str, split_words: int | None, extra: dict[str, Any] | None = None) -> Manifest:
    """The manifest of an index whose vectors ``encoder`` computed (a build or a re-index)."""
    return Manifest(
        index_version=new_index_version(encoder.context_fingerprint),
        encoder=dict(encoder.describe()),
        encoder_fingerprint=encoder.context_fingerprint,
        query_fingerprint=encoder.query_fingerprint,
        dim=encoder.dim,
        metric=encoder.metric,
        index_type=index_type,
        index_params=index_params,
        passages=passages,
        corpus_path=corpus_path,
        corpus_sha256=corpus_sha256,
        built_at=utc_now_iso(),
        split_words=split_words,
        dprscope_version=__version__,
        extra=extra or {},
    )


def build_index(
    corpus: Path,
    out_dir: Path,
    encoder: BiEncoder,
    index_type: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_size: int = DEFAULT_SHARD_SIZE,
    split_words: int | None = None,
    index_params: dict | None = None,
    keep_shards: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    overwrite: bool = False,
    encode_batches: EncodeBatches | None = None,
) -> Manifest:
    """Build (or resume, or return) the index directory for ``corpus`` under ``out_dir``.

    Args:
        corpus: DPR TSV or JSONL (optionally gzipped), streamed.
        out_dir: the index directory; created if needed.
        encoder: its context side encodes the passages; its fingerprints go into the manifest.
        index_type: one of ``INDEX_TYPES`` or ``auto`` (by corpus size, decided once the
            passages are counted); ``index_params`` override the defaults.
        shard_size: rows per embedding shard, the unit of resume.
        split_words: split records into passages of at most this many words (DPR: 100).
        keep_shards: keep ``shards/`` after success (to rebuild other index types cheaply).
        progress, cancel: stage ``encode`` then ``index``; cancel is checked between batches.
        overwrite: wipe a directory built (or half-built) from other inputs instead of refusing.
        encode_batches: another encode engine (``dprscope.distributed``); ``None`` encodes here.

    Raises:
        FailedPrecondition: ``out_dir`` holds a build from other inputs and not ``overwrite``.
        Cancelled: ``cancel`` fired; the directory stays resumable.
    """
    corpus, out_dir = Path(corpus), Path(out_dir)
    _validate(index_type, batch_size, shard_size, split_words)
    corpus_sha = file_sha256(corpus)
    state = {
        "source": "corpus",
        "source_sha256": corpus_sha,
        "encoder_fingerprint": encoder.context_fingerprint,
        "split_words": split_words,
        "shard_size": shard_size,
        "dim": encoder.dim,
    }
    done = _prepare(out_dir, state, index_type, index_params, overwrite)
    if done is not None:
        if not keep_shards:
            shutil.rmtree(out_dir / SHARDS_DIR, ignore_errors=True)
        return done
    store = PassageStore.create(out_dir / STORE_NAME)
    try:
        scan = _resume_point(out_dir, shard_size, encoder.dim, store)
        total_rows = scan.rows
        if not scan.finished:
            total = count_corpus(corpus, split_words)
            if total == 0:
                raise InvalidArgument(f"{corpus} holds no passages")
            ticker = ProgressTicker("encode", total, progress, every_s=0.2)
            writer = ShardWriter(out_dir / SHARDS_DIR, shard_size, encoder.dim, store, scan.shards)
            stream = _skip_checked(read_corpus(corpus, split_words), scan.rows, store, corpus)
            total_rows = _encode_stream(
                stream, scan.rows, encoder, writer, batch_size, ticker, cancel, keep_records=True,
                encode_batches=encode_batches,
            )
            shard_count = writer.next_shard
        else:
            shard_count = scan.shards
        if len(store) != total_rows:
            raise FailedPrecondition(f"store holds {len(store)} rows, shards {total_rows}; rebuild")
        store.finalize()
    finally:
        store.close()

    def make_manifest(vindex) -> Manifest:
        return encoder_manifest(encoder, vindex.index_type, vindex.params, total_rows, str(corpus.resolve()),
                                corpus_sha, split_words)

    return finish_build(
        out_dir,
        total_rows,
        shard_count,
        encoder.dim,
        index_type,
        index_params,
        progress,
        keep_shards,
        make_manifest,
    )


def reindex_from_store(
    store: PassageStore,
    out_dir: Path,
    encoder: BiEncoder,
    index_type: str = "auto",
    index_params: dict | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    keep_shards: bool = False,
    overwrite: bool = False,
) -> Manifest:
    """Re-encode every passage of ``store`` with ``encoder`` into a new index directory.

    Used when the context encoder changes (hot swap): the text is already clean and
    ordered, so no corpus is needed. The new directory gets its own copy of the store, so
    the old index can be deleted independently. Corpus fields of the manifest are carried
    over from the store's own index directory when it has a manifest.
    """
    out_dir = Path(out_dir)
    _validate(index_type, batch_size, shard_size, None)
    if out_dir.resolve() == store.path.resolve().parent:
        raise InvalidArgument(f"re-index output {out_dir} must differ from the source index directory")
    source_manifest = _existing_manifest(store.path.parent)
    source_sha = file_sha256(store.path)
    state = {
        "source": "store",
        "source_sha256": source_sha,
        "encoder_fingerprint": encoder.context_fingerprint,
        "split_words": None,
        "shard_size": shard_size,
        "dim": encoder.dim,
    }
    corpus_sha = source_manifest.corpus_sha256 if source_manifest else source_sha
    manifest_state = {**state, "source_sha256": corpus_sha}
    if source_manifest:
        manifest_state["split_words"] = source_manifest.split_words
    existing = _existing_manifest(out_dir)
    if existing is not None and not overwrite:
        if _matches(existing, manifest_state, index_type, index_params):
            return existing
        raise FailedPrecondition(
            f"{out_dir} already holds a finished index built from other inputs; use a fresh "
            "output directory, delete it, or pass overwrite"
        )
    if existing is not None:
        wipe_index_dir(out_dir)
    _prepare(out_dir, state, index_type, index_params, overwrite)
    scan = _resume_point(out_dir, shard_size, encoder.dim, None)
    total = len(store)
    if total == 0:
        raise InvalidArgument(f"store {store.path} holds no passages")
    shard_count, rows = scan.shards, scan.rows
    if not scan.finished and rows < total:
        ticker = ProgressTicker("encode", total, progress, every_s=0.2)
        writer = ShardWriter(out_dir / SHARDS_DIR, shard_size, encoder.dim, None, scan.shards)
        stream = (
            (rec.passage_id, rec.title, rec.text)
            for batch in store.iter_batches(max(batch_size, 256), start_row=rows)
            for rec in batch
        )
        rows = _encode_stream(stream, rows, encoder, writer, batch_size, ticker, cancel, keep_records=False)
        shard_count = writer.next_shard
    if rows != total:
        raise FailedPrecondition(f"re-encoded {rows} passages but the store holds {total}")
    store.backup_to(out_dir / STORE_NAME)

    def make_manifest(vindex) -> Manifest:
        return encoder_manifest(
            encoder, vindex.index_type, vindex.params, total,
            source_manifest.corpus_path if source_manifest else str(store.path), corpus_sha,
            source_manifest.split_words if source_manifest else None,
            extra={"reindexed_from": str(store.path.parent)},
        )

    return finish_build(
        out_dir,
        total,
        shard_count,
        encoder.dim,
        index_type,
        index_params,
        progress,
        keep_shards,
        make_manifest,
    )
