"""Embedding shards: the resumable middle of every index build.

A build writes ``shards/shard_00000.npy``, ``shard_00001.npy``, ... each exactly
``shard_size`` rows except the last, each renamed into place only after the passage rows
of that shard were committed to the store. So after a crash at any instant:

- every complete shard file has its rows committed in the store;
- the store may hold extra rows (committed, shard not yet renamed): resume drops them;
- a short shard can only be the last one and means encoding finished.

``build.json`` beside the shards pins the inputs (source hash, encoder fingerprint,
split, shard size) so a resume never mixes vectors from two different runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dprscope.errors import FailedPrecondition, InvalidArgument
from dprscope.index.manifest import atomic_write_bytes, fsync_dir
from dprscope.store import PassageRecord, PassageStore

log = logging.getLogger(__name__)

BUILD_STATE = "build.json"
_SHARD_RE = re.compile(r"^shard_(\d{5,})\.npy$")


def shard_path(shards_dir: Path, i: int) -> Path:
    return shards_dir / f"shard_{i:05d}.npy"


def read_build_state(shards_dir: Path) -> dict[str, Any] | None:
    path = shards_dir / BUILD_STATE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(f"{path} is corrupt ({exc.msg}); delete the directory and rebuild") from exc


def write_build_state(shards_dir: Path, state: dict[str, Any]) -> None:
    shards_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(shards_dir / BUILD_STATE, text.encode("utf-8"))


@dataclass(frozen=True)
class ShardScan:
    """What a previous run left: complete shards, their rows, whether encoding had finished."""

    shards: int
    rows: int
    finished: bool


def scan_shards(shards_dir: Path, shard_size: int, dim: int) -> ShardScan:
    """Count the usable shards and delete anything after the first gap or bad file."""
    if not shards_dir.is_dir():
        return ShardScan(0, 0, False)
    for stray in shards_dir.glob(".*.tmp-*"):
        stray.unlink(missing_ok=True)
    numbered = sorted((int(m.group(1)), p) for p in shards_dir.iterdir() if (m := _SHARD_RE.match(p.name)))
    shards = rows = 0
    finished = False
    for i, path in numbered:
        usable = i == shards and not finished
        if usable:
            try:
                arr = np.load(path, mmap_mode="r")
                usable = arr.ndim == 2 and arr.shape[1] == dim and 0 < arr.shape[0] <= shard_size
                count = int(arr.shape[0]) if usable else 0
                del arr
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable shard %s: %s", path, exc)
                usable = False
        if not usable:
            log.info("removing shard %s left by an interrupted build", path.name)
            path.unlink()
            continue
        shards += 1
        rows += count
        finished = count < shard_size
    return ShardScan(shards, rows, finished)


def truncate_shards(shards_dir: Path, keep: int) -> None:
    """Delete shard files numbered ``>= keep``."""
    for p in list(shards_dir.iterdir()):
        m = _SHARD_RE.match(p.name)
        if m and int(m.group(1)) >= keep:
            p.unlink()


class ShardWriter:
    """Cuts a stream of (vectors, records) into fixed-size shards, committed with the store."""

    def __init__(
        self,
        shards_dir: Path,
        shard_size: int,
        dim: int,
        store: PassageStore | None,
        start_shard: int = 0,
    ) -> None:
        if shard_size <= 0:
            raise InvalidArgument(f"shard_size must be > 0, got {shard_size}")
        self.shards_dir = shards_dir
        self.shard_size = shard_size
        self.dim = dim
        self.store = store
        self.next_shard = start_shard
        self._vecs: list[np.ndarray] = []
        self._recs: list[PassageRecord] = []
        self._buffered = 0

    def add(self, vectors: np.ndarray, records: Sequence[PassageRecord] | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise FailedPrecondition(f"encoder returned shape {vectors.shape}, expected [n, {self.dim}]")
        if records is not None and len(records) != len(vectors):
            raise FailedPrecondition(f"{len(vectors)} vectors for {len(records)} passages")
        self._vecs.append(vectors)
        if records is not None:
            self._recs.extend(records)
        self._buffered += len(vectors)
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def finish(self) -> None:
        """Write the last, short shard (if any rows are left)."""
        if self._buffered:
            self._flush(self._buffered)

    def _flush(self, count: int) -> None:
        allv = np.concatenate(self._vecs) if len(self._vecs) > 1 else self._vecs[0]
        shard, rest = allv[:count], allv[count:]
        self._vecs = [rest] if len(rest) else []
        self._buffered = len(rest)
        final = shard_path(self.shards_dir, self.next_shard)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(shard))
            fh.flush()
            os.fsync(fh.fileno())
        if self.store is not None:
            recs, self._recs = self._recs[:count], self._recs[count:]
            self.store.add(recs)
            self.store.commit()
        os.replace(tmp, final)
        fsync_dir(self.shards_dir)
        self.next_shard += 1


class ShardReader:
    """Re-iterable over the shard arrays (memory-mapped), so IVF training can take two passes."""

    def __init__(self, shards_dir: Path, count: int) -> None:
        self.paths = [shard_path(shards_dir, i) for i in range(count)]

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths:
            yield np.load(p, mmap_mode="r")
