"""``manifest.json``: what an index directory holds, and proof that it is complete.

The builder writes the manifest last, atomically, so "a manifest exists" means "the index
and the store beside it are complete and agree". It stamps the format version and the
dprscope version that wrote it; a newer format is refused with a message naming that
version, rather than misread.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dprscope import __version__
from dprscope.errors import FailedPrecondition, NoIndex

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.faiss"
STORE_NAME = "passages.sqlite"
SHARDS_DIR = "shards"


@dataclass
class Manifest:
    """Everything a server needs to trust an index directory without re-reading it."""

    index_version: str
    encoder: dict[str, Any]
    encoder_fingerprint: str
    query_fingerprint: str
    dim: int
    metric: str
    index_type: str
    index_params: dict[str, Any]
    passages: int
    corpus_path: str
    corpus_sha256: str
    built_at: str
    split_words: int | None = None
    format_version: int = FORMAT_VERSION
    dprscope_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_index_version(context_fingerprint: str) -> str:
    """Unique per build: fingerprint prefix, UTC timestamp, and a short random suffix."""
    prefix = (context_fingerprint.split(":")[-1] or "unknown")[:8]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path``, fsync, rename over it, fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: not every filesystem allows fsync on a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Atomically write ``directory/manifest.json``: readers see the old file or the new one."""
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(Path(directory) / MANIFEST_NAME, text.encode("utf-8"))


def read_manifest(directory: Path) -> Manifest:
    """Read and check ``directory/manifest.json``.

    Raises:
        NoIndex: no manifest (nothing built there, or a build that never finished).
        FailedPrecondition: unreadable JSON, missing fields, or a format newer than this
            dprscope understands (the message names the version that wrote it).
    """
    path = Path(directory) / MANIFEST_NAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NoIndex(f"no index at {directory}: {MANIFEST_NAME} is missing (build one first)") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(f"{path} is corrupt: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise FailedPrecondition(f"{path} is corrupt: expected a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise FailedPrecondition(f"{path} has no integer format_version")
    if version > FORMAT_VERSION:
        raise FailedPrecondition(
            f"{path} has format version {version}, written by dprscope "
            f"{data.get('dprscope_version', 'unknown')}; this dprscope ({__version__}) reads up to "
            f"version {FORMAT_VERSION}: upgrade dprscope or rebuild the index"
        )
    known = {f.name for f in fields(Manifest)}
    required = {f.name for f in fields(Manifest) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - data.keys())
    if missing:
        raise FailedPrecondition(f"{path} is missing fields: {', '.join(missing)}")
    return Manifest(**{k: v for k, v in data.items() if k in known})
