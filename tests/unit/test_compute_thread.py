"""One-off torch work runs on a thread that ends, never on the long-lived caller."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from dprscope.compute_thread import run_in_fresh_thread


def test_result_and_thread():
    caller = threading.get_ident()
    seen: list[int] = []

    def work() -> str:
        seen.append(threading.get_ident())
        return "done"

    assert run_in_fresh_thread(work) == "done"
    assert seen and seen[0] != caller
    assert not any(t.ident == seen[0] for t in threading.enumerate())  # it has exited


def test_exception_comes_back_to_the_caller():
    def boom() -> None:
        raise ValueError("bad checkpoint")

    with pytest.raises(ValueError, match="bad checkpoint"):
        run_in_fresh_thread(boom)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux behaviour")
def test_the_fresh_thread_inherits_a_lowered_priority():
    from dprscope.analysis.service import lower_thread_priority

    out: dict[str, int] = {}

    def niced_caller() -> None:
        lower_thread_priority(3)
        out["caller"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        out["fresh"] = run_in_fresh_thread(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=niced_caller)
    t.start()
    t.join()
    assert out["fresh"] == out["caller"]


def test_dimension_probe_runs_off_the_calling_thread(encoder):
    from dprscope.encoders.text_encoder import TextEncoder

    fresh = TextEncoder(encoder.query.model, encoder.query.tokenizer, encoder.query.config)
    threads: list[str] = []
    real_encode = fresh.encode

    def spy(texts, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_encode(texts, *args, **kwargs)

    fresh.encode = spy  # type: ignore[method-assign]
    assert fresh.dim == encoder.dim
    assert threads == ["dprscope-dim-probe"]
