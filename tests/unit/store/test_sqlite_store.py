from __future__ import annotations

import sqlite3
import threading

import pytest

from dprscope.errors import FailedPrecondition, InvalidArgument, NotFound
from dprscope.store import PassageRecord, PassageStore


def _records(n: int, start: int = 0) -> list[PassageRecord]:
    return [PassageRecord(i, f"p{i}", f"title {i}", f"text {i}") for i in range(start, start + n)]


@pytest.fixture
def store_path(tmp_path):
    store = PassageStore.create(tmp_path / "passages.sqlite")
    store.add(_records(50))
    store.commit()
    store.finalize()
    store.close()
    return tmp_path / "passages.sqlite"


def test_get_rows_in_given_order(store_path):
    store = PassageStore.open_readonly(store_path)
    got = store.get_rows([7, 3, 49, 3])
    assert [r.row for r in got] == [7, 3, 49, 3]
    assert got[0] == PassageRecord(7, "p7", "title 7", "text 7")
    assert len(store) == 50
    store.close()


def test_get_rows_missing_is_not_found(store_path):
    with PassageStore.open_readonly(store_path) as store, pytest.raises(NotFound, match="row 99"):
        store.get_rows([1, 99])


def test_get_ids(store_path):
    with PassageStore.open_readonly(store_path) as store:
        got = store.get_ids(["p4", "nope", "p0"])
    assert set(got) == {"p4", "p0"}
    assert got["p4"].row == 4


def test_readonly_refuses_writes(store_path):
    with PassageStore.open_readonly(store_path) as store:
        with pytest.raises(FailedPrecondition, match="read-only"):
            store.add(_records(1, start=100))
        with pytest.raises(sqlite3.OperationalError):
            store._conn().execute("DELETE FROM passages")
    assert not (store_path.parent / "passages.sqlite-wal").exists()


def test_readonly_missing_file(tmp_path):
    with pytest.raises(NotFound):
        PassageStore.open_readonly(tmp_path / "none.sqlite")


def test_duplicate_ids_named(tmp_path):
    store = PassageStore.create(tmp_path / "s.sqlite")
    store.add(_records(3))
    store.commit()
    with pytest.raises(InvalidArgument, match="'p1'"):
        store.add([PassageRecord(10, "p1", "t", "x")])
    with pytest.raises(InvalidArgument, match="'dup'"):
        store.add([PassageRecord(11, "dup", "", "a"), PassageRecord(12, "dup", "", "b")])
    store.close()


def test_uncommitted_rows_are_lost_and_resume_keeps_committed(tmp_path):
    path = tmp_path / "s.sqlite"
    store = PassageStore.create(path)
    store.add(_records(5))
    store.commit()
    store.add(_records(5, start=5))
    store.close()  # never committed
    store = PassageStore.create(path)
    assert len(store) == 5
    store.add(_records(5, start=5))
    store.commit()
    store.truncate_from(7)
    assert len(store) == 7
    assert store.max_row() == 6
    store.close()


def test_iter_batches_by_row(store_path):
    with PassageStore.open_readonly(store_path) as store:
        batches = list(store.iter_batches(batch_size=16))
        rest = [r.row for b in store.iter_batches(batch_size=16, start_row=40) for r in b]
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert [r.row for b in batches for r in b] == list(range(50))
    assert rest == list(range(40, 50))
    with PassageStore.open_readonly(store_path) as store, pytest.raises(InvalidArgument):
        list(store.iter_batches(0))


def test_concurrent_reads(store_path):
    store = PassageStore.open_readonly(store_path)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(200):
                row = (seed * 7 + i) % 50
                assert store.get_rows([row])[0].passage_id == f"p{row}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert not errors


def test_backup_to(store_path, tmp_path):
    with PassageStore.open_readonly(store_path) as store:
        store.backup_to(tmp_path / "copy.sqlite")
    with PassageStore.open_readonly(tmp_path / "copy.sqlite") as copy:
        assert len(copy) == 50
        assert copy.get_rows([12])[0].passage_id == "p12"
