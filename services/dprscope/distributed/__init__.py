"""Encoding a corpus on a cluster: engines that plug into ``index.builder.build_index``.

Only the encode stage is distributed; the driver keeps writing shards, the passage store
and the index exactly as the local build does, so a Ray build and a local build of the
same inputs produce the same directory and a killed Ray build resumes like a local one.
"""

from __future__ import annotations
