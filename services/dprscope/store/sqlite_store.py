"""``passages.sqlite``: the text behind every vector row of an index.

Row numbers are the FAISS ids: row ``r`` of the store is vector ``r`` of ``index.faiss``,
so a search result needs no id mapping, only a primary-key lookup.

Two modes, because building and serving want opposite things:

- ``create``: one writer, WAL journal while rows stream in, explicit ``commit`` so the
  builder can commit a shard's rows together with the shard file (resume depends on it);
  ``finalize`` checkpoints and switches back to a rollback journal so the finished file
  is a single self-contained file that can be opened ``immutable``.
- ``open_readonly``: ``mode=ro&immutable=1`` so serving never takes locks or writes
  ``-wal``/``-shm`` files; one connection per thread so concurrent requests read in
  parallel.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dprscope.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passages (
    row INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    title TEXT,
    text TEXT
)
"""
# SQLite's default limit on bound parameters is 32766 nowadays, but stay well below it.
_IN_CHUNK = 500


@dataclass(frozen=True)
class PassageRecord:
    """One passage as stored: its vector row, its corpus id, title and text."""

    row: int
    passage_id: str
    title: str
    text: str


class PassageStore:
    """Passage text keyed by vector row, with a unique index on the corpus id."""

    def __init__(self, path: Path, *, readonly: bool, conn: sqlite3.Connection | None = None) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._writer = conn
        self._closed = False
        self._count: int | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: Path) -> PassageStore:
        """Open (creating if needed) a store for writing; existing rows are kept for resume."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        store = cls(path, readonly=False, conn=conn)
        conn.execute("BEGIN")
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> PassageStore:
        """Open a finished store for serving: read-only, lock-free, safe from many threads."""
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"passage store {path} does not exist")
        store = cls(path, readonly=True)
        conn = store._conn()  # fail now, not on the first request, if the file is unusable
        try:
            conn.execute("SELECT 1 FROM passages LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            store.close()
            raise FailedPrecondition(f"passage store {path} is not a dprscope store: {exc}") from exc
        return store

    def _uri(self) -> str:
        quoted = urllib.parse.quote(str(self.path.resolve()))
        return f"file:{quoted}?mode=ro&immutable=1"

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise FailedPrecondition(f"passage store {self.path} is closed")
        if self._writer is not None:
            return self._writer
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._uri(), uri=True, check_same_thread=False)
            self._local.conn = conn
            with self._lock:
                self._all_conns.append(conn)
        return conn

    # ------------------------------------------------------------------ writing
    def _require_writer(self) -> sqlite3.Connection:
        if self._writer is None:
            raise FailedPrecondition(f"passage store {self.path} is open read-only")
        if self._closed:
            raise FailedPrecondition(f"passage store {self.path} is closed")
        return self._writer

    def add(self, records: Sequence[PassageRecord]) -> None:
        """Insert rows into the open transaction; a duplicate passage id is refused by name."""
        conn = self._require_writer()
        if not records:
            return
        ids = [r.passage_id for r in records]
        seen: set[str] = set()
        for pid in ids:
            if pid in seen:
                raise InvalidArgument(f"duplicate passage id {pid!r}")
            seen.add(pid)
        with self._lock:
            try:
                conn.executemany(
                    "INSERT INTO passages(row, id, title, text) VALUES (?, ?, ?, ?)",
                    [(r.row, r.passage_id, r.title, r.text) for r in records],
                )
            except sqlite3.IntegrityError as exc:
                dup = self._find_existing(conn, ids)
                what = f"duplicate passage id {dup!r}" if dup else f"duplicate row or id ({exc})"
                raise InvalidArgument(what) from exc
            self._count = None

    @staticmethod
    def _find_existing(conn: sqlite3.Connection, ids: Sequence[str]) -> str | None:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            hit = conn.execute(f"SELECT id FROM passages WHERE id IN ({marks}) LIMIT 1", chunk).fetchone()
            if hit:
                return str(hit[0])
        return None

    def commit(self) -> None:
        """Make every row added so far durable, and open the next transaction."""
        conn = self._require_writer()
        with self._lock:
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.execute("BEGIN")

    def rollback(self) -> None:
        """Drop rows added since the last commit."""
        conn = self._require_writer()
        with self._lock:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            self._count = None

    def truncate_from(self, row: int) -> None:
        """Delete rows ``>= row`` and commit: a resumed build drops rows of unfinished shards."""
        conn = self._require_writer()
        with self._lock:
            deleted = conn.execute("DELETE FROM passages WHERE row >= ?", (int(row),)).rowcount
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.execute("BEGIN")
            self._count = None
        if deleted:
            log.info("dropped %d passage rows from row %d of %s", deleted, row, self.path)

    def finalize(self) -> None:
        """Commit, checkpoint the WAL and switch to a rollback journal: one self-contained file."""
        conn = self._require_writer()
        with self._lock:
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("BEGIN")

    def backup_to(self, dest: Path) -> None:
        """Copy the committed rows into a new single-file store at ``dest`` (atomic rename).

        Uses SQLite's online backup, so it is consistent even while other threads read.
        """
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        if self._writer is not None:
            src, own = self._require_writer(), False
        else:
            src, own = sqlite3.connect(self._uri(), uri=True), True
        try:
            dst = sqlite3.connect(str(tmp))
            try:
                with self._lock:
                    src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            if own:
                src.close()
        os.replace(tmp, dest)

    # ------------------------------------------------------------------ reading
    def get_rows(self, rows: Sequence[int]) -> list[PassageRecord]:
        """Records for ``rows`` in the order given; a row that does not exist is NotFound."""
        found = self._select("row", [int(r) for r in rows])
        by_row = {rec.row: rec for rec in found}
        out = []
        for r in rows:
            rec = by_row.get(int(r))
            if rec is None:
                raise NotFound(f"no passage at row {int(r)} (store holds {len(self)} rows)")
            out.append(rec)
        return out

    def get_ids(self, ids: Sequence[str]) -> dict[str, PassageRecord]:
        """Records by corpus id; ids that do not exist are simply absent from the result."""
        return {rec.passage_id: rec for rec in self._select("id", [str(i) for i in ids])}

    def _select(self, column: str, keys: list) -> list[PassageRecord]:
        if not keys:
            return []
        conn = self._conn()
        unique = list(dict.fromkeys(keys))
        out: list[PassageRecord] = []
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT row, id, title, text FROM passages WHERE {column} IN ({marks})"
            if self._writer is not None:
                with self._lock:
                    fetched = conn.execute(sql, chunk).fetchall()
            else:
                fetched = conn.execute(sql, chunk).fetchall()
            out.extend(PassageRecord(int(r), str(i), t or "", x or "") for r, i, t, x in fetched)
        return out

    def iter_batches(self, batch_size: int = 1024, start_row: int = 0) -> Iterator[list[PassageRecord]]:
        """Every record by row order, ``batch_size`` at a time (keyset paging, constant memory)."""
        if batch_size <= 0:
            raise InvalidArgument(f"batch_size must be > 0, got {batch_size}")
        conn = self._conn()
        last = int(start_row) - 1
        while True:
            fetched = conn.execute(
                "SELECT row, id, title, text FROM passages WHERE row > ? ORDER BY row LIMIT ?",
                (last, batch_size),
            ).fetchall()
            if not fetched:
                return
            batch = [PassageRecord(int(r), str(i), t or "", x or "") for r, i, t, x in fetched]
            last = batch[-1].row
            yield batch

    def max_row(self) -> int:
        """The highest row number, or -1 for an empty store."""
        (value,) = self._conn().execute("SELECT MAX(row) FROM passages").fetchone()
        return -1 if value is None else int(value)

    def __len__(self) -> int:
        if self.readonly and self._count is not None:
            return self._count
        (count,) = self._conn().execute("SELECT COUNT(*) FROM passages").fetchone()
        if self.readonly:
            self._count = int(count)
        return int(count)

    def close(self) -> None:
        """Close every connection (the writer rolls back anything not committed)."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            if self._writer is not None:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                self._writer.close()
            for conn in self._all_conns:
                conn.close()
            self._all_conns.clear()

    def __enter__(self) -> PassageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
