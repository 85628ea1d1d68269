"""Index directories: corpora in, FAISS index + passage store + manifest out, and serving them.

Imports here are light on purpose except for faiss/numpy; the builder pulls in the
encoder package only for type use.
"""

from __future__ import annotations

from dprscope.index.builder import build_index, reindex_from_store
from dprscope.index.corpus import CorpusPassage, count_corpus, file_sha256, read_corpus
from dprscope.index.importer import import_embeddings
from dprscope.index.manifest import FORMAT_VERSION, Manifest, read_manifest, write_manifest
from dprscope.index.serving import ServingIndex
from dprscope.index.vector_index import (
    AUTO_INDEX_TYPE,
    INDEX_TYPE_CHOICES,
    INDEX_TYPES,
    SearchParams,
    VectorIndex,
    build_vector_index,
    default_index_params,
    resolve_index_type,
)

__all__ = [
    "AUTO_INDEX_TYPE",
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "INDEX_TYPE_CHOICES",
    "CorpusPassage",
    "Manifest",
    "SearchParams",
    "ServingIndex",
    "VectorIndex",
    "build_index",
    "build_vector_index",
    "count_corpus",
    "default_index_params",
    "file_sha256",
    "import_embeddings",
    "read_corpus",
    "read_manifest",
    "reindex_from_store",
    "resolve_index_type",
    "write_manifest",
]
