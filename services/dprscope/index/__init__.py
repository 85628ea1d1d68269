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
    INDEX_TYPES,
    SearchParams,
    VectorIndex,
    build_vector_index,
    default_index_params,
)

__all__ = [
    "FORMAT_VERSION",
    "INDEX_TYPES",
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
    "write_manifest",
]
