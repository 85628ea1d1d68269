from __future__ import annotations

import json
import os

import pytest

from dprscope.errors import FailedPrecondition, NoIndex
from dprscope.index.manifest import FORMAT_VERSION, Manifest, new_index_version, read_manifest, write_manifest


def _manifest(**kw) -> Manifest:
    base = {
        "index_version": new_index_version("abcdef0123456789"),
        "encoder": {"kind": "st"},
        "encoder_fingerprint": "abcdef0123456789",
        "query_fingerprint": "abcdef0123456789",
        "dim": 384,
        "metric": "ip",
        "index_type": "flat",
        "index_params": {},
        "passages": 10,
        "corpus_path": "/x/psgs.tsv",
        "corpus_sha256": "00" * 32,
        "built_at": "2026-01-01T00:00:00Z",
        "split_words": 100,
    }
    base.update(kw)
    return Manifest(**base)


def test_round_trip(tmp_path):
    m = _manifest()
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    assert m.index_version.startswith("abcdef01-")
    assert new_index_version("abcdef0123456789") != new_index_version("abcdef0123456789")


def test_missing_is_no_index(tmp_path):
    with pytest.raises(NoIndex):
        read_manifest(tmp_path)


def test_newer_format_refused_naming_writer(tmp_path):
    data = _manifest().to_dict() | {"format_version": FORMAT_VERSION + 1, "dprscope_version": "9.9.9"}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(FailedPrecondition, match=r"9\.9\.9"):
        read_manifest(tmp_path)


def test_corrupt_and_incomplete(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "dim": ')
    with pytest.raises(FailedPrecondition, match="corrupt"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(FailedPrecondition, match="missing fields"):
        read_manifest(tmp_path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    old = _manifest(passages=1)
    write_manifest(tmp_path, old)

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        write_manifest(tmp_path, _manifest(passages=2))
    monkeypatch.undo()
    assert read_manifest(tmp_path).passages == 1
    # the only other file is the temp the failed write left; no partial manifest.json
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "manifest.json")[0].startswith(".manifest")


def test_unknown_fields_ignored(tmp_path):
    data = _manifest().to_dict() | {"future_field": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(tmp_path).dim == 384
