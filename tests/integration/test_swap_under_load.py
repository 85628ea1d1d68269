"""Zero failed requests and no mixed versions while versions flip under 16 concurrent clients."""

from __future__ import annotations

import threading
import time

from dprscope_client import AdminClient, RetrieverClient
from tests.unit.models import checkpoint_factory as cf

TOKEN = "swap-token"
CLIENTS = 16
SWAPS = 12
SCORE_TOL = 2e-4  # batch padding moves scores by ~1e-6; the two versions differ by far more


def test_activate_and_rollback_under_load_lose_nothing(start_server, tmp_path, nq_records):
    root = tmp_path / "ckpt"
    root.mkdir()
    cf.write_delta(root / "edit.safetensors", scale=1.5)
    handle = start_server(admin_token=TOKEN, checkpoint_root=root, grpc_workers=32)
    admin = AdminClient(handle.target, TOKEN, timeout=120)
    probe = RetrieverClient(handle.target, timeout=30)
    admin.load("edit.safetensors", version="v2", kind="DELTA", role="QUERY")

    # Each version's top-1 (passage, score) for each query, through the pinned-version path.
    expected: dict[str, dict[str, tuple[str, float]]] = {"v1": {}, "v2": {}}
    queries = []
    for record in nq_records:
        q = record["question"]
        tops = {v: probe.search(q, top_k=1, model_version=v, omit_text=True).hits[0] for v in expected}
        if abs(tops["v1"].score - tops["v2"].score) > 10 * SCORE_TOL:
            queries.append(q)
            for v, hit in tops.items():
                expected[v][q] = (hit.passage_id, hit.score)
        if len(queries) >= 24:
            break
    assert len(queries) >= 8, "the edit must move scores measurably"

    stop = threading.Event()
    results: list[tuple[str, str, float]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with RetrieverClient(handle.target, timeout=30) as client:
            n = i
            while not stop.is_set():
                q = queries[n % len(queries)]
                n += 1
                try:
                    r = client.search(q, top_k=3, omit_text=True)
                    with lock:
                        results.append((q, r.model_version, r.hits[0].score))
                except BaseException as exc:
                    with lock:
                        errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with admin:
        for i in range(SWAPS):
            if i % 2 == 0:
                assert admin.activate("v2").state == "ACTIVE"
            else:
                assert admin.rollback().version == "v1"
            time.sleep(0.25)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert admin.list_models().active_version == "v1"
    probe.close()

    assert not errors, f"{len(errors)} failed requests, first: {errors[0]!r}"
    served = {v for _, v, _ in results}
    assert served == {"v1", "v2"}, served
    mismatched = [(q, v, s) for q, v, s in results if abs(s - expected[v][q][1]) > SCORE_TOL]
    assert not mismatched, f"{len(mismatched)} of {len(results)} responses mix versions: {mismatched[:3]}"
    assert len(results) > 100
    text = handle.metrics.exposition().decode()
    assert f'dprscope_swaps_total{{action="activate",result="success"}} {SWAPS // 2}.0' in text
