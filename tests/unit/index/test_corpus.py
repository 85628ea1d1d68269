from __future__ import annotations

import gzip
import json
import logging

import pytest

from dprscope.errors import InvalidArgument, NotFound
from dprscope.index.corpus import count_corpus, file_sha256, read_corpus
from tests.shared_data import real_passages as real_rows
from tests.shared_data import write_tsv


@pytest.mark.parametrize("header", [True, False])
def test_tsv_with_and_without_header(tmp_path, header):
    rows = real_rows(30)
    path = write_tsv(tmp_path / "c.tsv", rows, header=header)
    got = list(read_corpus(path))
    assert [(p.passage_id, p.text, p.title) for p in got] == rows
    assert count_corpus(path) == 30


def test_tsv_dpr_quoting(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('id\ttext\ttitle\n1\t"say ""hi""\tthere"\tT\n', encoding="utf-8")
    (p,) = read_corpus(path)
    assert p.text == 'say "hi"\tthere'


def test_jsonl_and_flashrag_contents(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [
        {"id": "a", "title": "A", "text": "alpha text"},
        {"id": 7, "contents": '"Evan Morris"\nEvan Morris was a lobbyist.'},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    got = list(read_corpus(path))
    assert [(p.passage_id, p.title, p.text) for p in got] == [
        ("a", "A", "alpha text"),
        ("7", "Evan Morris", "Evan Morris was a lobbyist."),
    ]


def test_gz_variants(tmp_path):
    rows = real_rows(10)
    plain = write_tsv(tmp_path / "c.tsv", rows)
    gz = tmp_path / "c.tsv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(read_corpus(gz)) == list(read_corpus(plain))
    jgz = tmp_path / "c.jsonl.gz"
    jgz.write_bytes(gzip.compress(b'{"id": "x", "title": "t", "text": "hello"}\n'))
    assert [p.passage_id for p in read_corpus(jgz)] == ["x"]


def test_format_sniffed_without_extension(tmp_path):
    path = tmp_path / "corpus"
    path.write_text('{"id": "x", "title": "t", "text": "hello"}\n')
    assert [p.text for p in read_corpus(path)] == ["hello"]


def test_split_words_dpr_style(tmp_path):
    words = [f"w{i}" for i in range(250)]
    path = write_tsv(tmp_path / "s.tsv", [("9", " ".join(words), "Doc"), ("10", "short one", "D2")])
    got = list(read_corpus(path, split_words=100))
    assert [p.passage_id for p in got] == ["9-0", "9-1", "9-2", "10-0"]
    assert [len(p.text.split()) for p in got] == [100, 100, 50, 2]
    assert got[1].text.split()[0] == "w100"
    assert {p.title for p in got[:3]} == {"Doc"}
    assert count_corpus(path, split_words=100) == 4


def test_real_articles_split_into_100_words(tmp_path):
    rows = real_rows(20)
    joined = [("doc", " ".join(r[1] for r in rows), "Everything")]
    path = write_tsv(tmp_path / "doc.tsv", joined)
    got = list(read_corpus(path, split_words=100))
    total_words = len(joined[0][1].split())
    assert len(got) == -(-total_words // 100)
    assert all(len(p.text.split()) <= 100 for p in got)


def test_empty_text_skipped_with_warning(tmp_path, caplog):
    path = write_tsv(tmp_path / "e.tsv", [("1", "text", "t"), ("2", "  ", "t"), ("3", "more", "t")])
    with caplog.at_level(logging.WARNING):
        assert [p.passage_id for p in read_corpus(path)] == ["1", "3"]
    assert "skipped 1 rows with empty text" in caplog.text


def test_bad_row_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("id\ttext\ttitle\n1\tok\tT\n2\tmissing title\n", encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"bad\.tsv: line 3: expected 3"):
        list(read_corpus(path))


def test_bad_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "text": "x"}\n{not json\n')
    with pytest.raises(InvalidArgument, match="line 2"):
        list(read_corpus(path))
    path.write_text('{"title": "no id", "text": "x"}\n')
    with pytest.raises(InvalidArgument, match="line 1"):
        list(read_corpus(path))


def test_missing_file_and_bad_split(tmp_path):
    with pytest.raises(NotFound):
        list(read_corpus(tmp_path / "nope.tsv"))
    path = write_tsv(tmp_path / "c.tsv", [("1", "a", "b")])
    with pytest.raises(InvalidArgument):
        list(read_corpus(path, split_words=0))


def test_file_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
