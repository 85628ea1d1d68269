"""The index as the server holds it: manifest + vector index + read-only passage store.

Opening checks that the three agree (vector count == manifest passages == store rows), so
a half-copied or mismatched directory fails at load time with a clear message rather than
returning wrong passages at query time.

``open(..., device=...)`` then hands the vectors to ``index.gpu.place_index``: the default
``"cpu"`` keeps today's behaviour; ``"auto"``/``"cuda"`` move flat and IVF-PQ indexes to
a GPU when FAISS has one and fall back to the CPU otherwise. Where the index ended up and
why is kept as ``placement`` (and logged), because a silent CPU fallback on a GPU host
is the kind of slowness nobody finds from the outside.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dprscope.errors import DimensionMismatch, FailedPrecondition
from dprscope.index.gpu import Placement, place_index
from dprscope.index.manifest import INDEX_NAME, STORE_NAME, Manifest, read_manifest
from dprscope.index.vector_index import SearchParams, VectorIndex
from dprscope.store import PassageRecord, PassageStore

log = logging.getLogger(__name__)


class ServingIndex:
    """One deployed index directory, opened read-only; safe to search from many threads."""

    def __init__(self, directory: Path, manifest: Manifest, vectors: VectorIndex, store: PassageStore,
                 placement: Placement = Placement("cpu", "cpu requested")):
        self.directory = directory
        self.manifest = manifest
        self.vectors = vectors
        self.store = store
        self.placement = placement

    @classmethod
    def open(cls, directory: Path, mmap: bool = True, device: str = "cpu") -> ServingIndex:
        """Open ``directory`` for serving, with the vectors on ``device`` when possible.

        ``device`` is ``"cpu"`` (default), ``"auto"`` or ``"cuda[:N]"``; a GPU that is not
        there (or a copy that fails) leaves the index on the CPU, see ``placement``.

        Raises:
            NoIndex: no ``manifest.json`` (nothing built, or the build never finished).
            FailedPrecondition: files missing or disagreeing with the manifest.
            ValueError: an unknown device name.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        vectors = VectorIndex.load(
            directory / INDEX_NAME, manifest.index_type, manifest.metric, manifest.index_params, mmap=mmap
        )
        if vectors.dim != manifest.dim:
            raise FailedPrecondition(f"{directory}: index.faiss has dim {vectors.dim}, manifest says {manifest.dim}")
        store_path = directory / STORE_NAME
        if not store_path.is_file():
            raise FailedPrecondition(f"{directory}: {STORE_NAME} is missing")
        store = PassageStore.open_readonly(store_path)
        counts = (vectors.ntotal, manifest.passages, len(store))
        if len(set(counts)) != 1:
            store.close()
            raise FailedPrecondition(
                f"{directory} is inconsistent: index holds {counts[0]} vectors, manifest says "
                f"{counts[1]} passages, store holds {counts[2]} rows; rebuild it"
            )
        try:
            vectors, placement = place_index(vectors, device)
        except ValueError:
            store.close()
            raise
        log.info(
            "opened index %s at %s (%s, %d passages) on %s (%s)",
            manifest.index_version,
            directory,
            manifest.index_type,
            manifest.passages,
            placement.device,
            placement.reason,
        )
        return cls(directory, manifest, vectors, store, placement)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def search(
        self, query_vectors: np.ndarray, k: int, params: SearchParams = SearchParams()
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n,k], rows [n,k]) with row -1 where the index had fewer than k hits."""
        q = np.asarray(query_vectors)
        width = q.shape[-1] if q.ndim else 0
        if width != self.manifest.dim:
            raise DimensionMismatch(
                f"query vectors have dim {width}, index {self.manifest.index_version} has dim {self.manifest.dim}"
            )
        return self.vectors.search(q, k, params)

    def passages(self, rows: np.ndarray) -> list[PassageRecord]:
        """Records for one query's row array, skipping the -1 padding."""
        return self.store.get_rows([int(r) for r in np.asarray(rows).ravel() if r >= 0])

    def close(self) -> None:
        self.store.close()
