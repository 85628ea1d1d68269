"""Locate ``/work/shared/data`` (the ``shared`` directory beside the repository root).

Tests that need the real corpora call ``shared_data_dir()``: it skips with a reason when
the data is absent, or fails when ``DPRSCOPE_REQUIRE_SHARED_DATA=1`` (CI that must run them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE_ENV = "DPRSCOPE_REQUIRE_SHARED_DATA"


def shared_data_dir() -> Path:
    """The shared data directory, or skip/fail the calling test when it is missing."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
    if path.is_dir():
        return path
    reason = f"shared data directory {path} is absent (real corpora live beside the repo root)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it")
    pytest.skip(reason)


def real_passages(n: int, offset: int = 0) -> list[tuple[str, str, str]]:
    """``n`` real (id, text, title) rows from the combined Wikipedia passages TSV."""
    import csv
    import itertools

    src = shared_data_dir() / "wikipedia-passages-combined" / "psgs.tsv"
    csv.field_size_limit(1 << 30)
    with open(src, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader)
        return [(r[0], r[1], r[2]) for r in itertools.islice(reader, offset, offset + n)]


def write_tsv(path: Path, rows: list[tuple[str, str, str]], header: bool = True) -> Path:
    """Write rows in DPR's psgs_w100 layout (csv quoting, tab-separated)."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        if header:
            writer.writerow(["id", "text", "title"])
        writer.writerows(rows)
    return path
