"""Passage text by row and id: one SQLite file inside the index directory."""

from __future__ import annotations

from dprscope.store.sqlite_store import PassageRecord, PassageStore

__all__ = ["PassageRecord", "PassageStore"]
