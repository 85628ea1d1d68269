"""DPR-format record loading: JSON array, JSON lines, gzipped JSON lines, both id spellings."""

from __future__ import annotations

import gzip
import json

import pytest

from dprscope.analysis import load_dpr_records, records_from_dicts
from dprscope.errors import InvalidArgument, NotFound
from tests.shared_data import shared_data_dir

RAW = {"question": "q?", "answers": ["a"],
       "positive_ctxs": [{"title": "T", "text": "pos", "passage_id": "7"}],
       "hard_negative_ctxs": [{"title": "", "text": "neg", "psg_id": 9}], "negative_ctxs": []}


def test_real_files_in_all_three_layouts():
    data = shared_data_dir()
    as_list = load_dpr_records(data / "dpr-original-samples" / "nq-dev-5.dpr.json")
    as_lines = load_dpr_records(data / "dpr-original-samples" / "nq-dev-10.dpr.jsonl")
    assert len(as_list) == 5 and len(as_lines) == 10
    assert as_list == as_lines[:5]  # the same records in DPR's two layouts
    assert as_lines[0].question == "who sings does he love me with reba"
    assert as_lines[0].positive_ctxs[0].passage_id == "11828866"
    gz = load_dpr_records(data / "nq-open-oracle-dpr-bm25" / "nq-open-oracle.dpr.jsonl.gz", max_records=7)
    assert len(gz) == 7 and all(len(r.hard_negative_ctxs) >= 7 for r in gz)
    squad1 = load_dpr_records(data / "dpr-original-samples" / "squad1-dev-10.dpr.jsonl", max_records=2)
    assert squad1[0].positive_ctxs[0].passage_id  # SQuAD1 spells it psg_id


@pytest.mark.parametrize("layout", ["json", "jsonl", "jsonl.gz"])
def test_layouts_roundtrip(tmp_path, layout):
    path = tmp_path / f"r.{layout}"
    if layout == "json":
        path.write_text(json.dumps([RAW, RAW]))
    elif layout == "jsonl":
        path.write_text(json.dumps(RAW) + "\n\n" + json.dumps(RAW) + "\n")
    else:
        with gzip.open(path, "wt") as fh:
            fh.write(json.dumps(RAW) + "\n" + json.dumps(RAW) + "\n")
    records = load_dpr_records(path)
    assert len(records) == 2
    assert records[0].hard_negative_ctxs[0].passage_id == "9"
    assert records[0].positive_ctxs[0].title == "T"
    assert load_dpr_records(path, max_records=1) == records[:1]


def test_bad_files(tmp_path):
    with pytest.raises(NotFound):
        load_dpr_records(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RAW) + "\n{not json\n")
    with pytest.raises(InvalidArgument, match="line 2"):
        load_dpr_records(bad)
    no_q = tmp_path / "noq.jsonl"
    no_q.write_text(json.dumps({"positive_ctxs": []}) + "\n")
    with pytest.raises(InvalidArgument, match="question"):
        load_dpr_records(no_q)
    with pytest.raises(InvalidArgument, match="max_records"):
        load_dpr_records(bad, max_records=-1)


def test_records_from_dicts_validates():
    assert records_from_dicts([RAW], max_records=5)[0].answers == ("a",)
    with pytest.raises(InvalidArgument, match="hard_negative_ctxs"):
        records_from_dicts([{**RAW, "hard_negative_ctxs": "nope"}])
    with pytest.raises(InvalidArgument, match="text"):
        records_from_dicts([{**RAW, "positive_ctxs": [{"title": "x"}]}])
