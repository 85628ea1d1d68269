"""Search first: analysis jobs wait between chunks while Search is busy (no timing assertions).

A fake busy signal, clock and sleep make every check deterministic: the hook is called
once per chunk, it waits only while busy and never past its bound, it changes no result,
and the service wires it into attribution jobs (and leaves it out when disabled).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dprscope.analysis import attribute
from dprscope.analysis.data import Context
from dprscope.analysis.service import AnalysisService, AttributeJob, Finished, ServingYield, lower_thread_priority
from dprscope.encoders.batcher import MicroBatcher
from dprscope.metrics import Metrics
from dprscope.models.registry import ModelRegistry, ModelVersion, VersionState
from tests.unit.analysis.conftest import TINY_PASSAGES, TINY_QUERY


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _yield(busy, clock: FakeClock, max_wait_s: float = 0.05, poll_s: float = 0.002) -> ServingYield:
    return ServingYield(busy, max_wait_s=max_wait_s, poll_s=poll_s, sleep=clock.sleep, clock=clock)


def test_idle_serving_costs_no_wait():
    clock = FakeClock()
    hook = _yield(lambda: False, clock)
    assert hook() == 0.0
    assert clock.sleeps == [] and hook.yields == 0


def test_waits_while_busy_then_goes_on():
    clock = FakeClock()
    answers = iter([True, True, True, False])
    hook = _yield(lambda: next(answers), clock)
    waited = hook()
    assert clock.sleeps == [0.002, 0.002]
    assert waited == pytest.approx(0.004)
    assert hook.yields == 1 and hook.waited_s == pytest.approx(0.004)


def test_wait_is_bounded_when_serving_stays_busy():
    clock = FakeClock()
    hook = _yield(lambda: True, clock, max_wait_s=0.05, poll_s=0.02)
    assert hook() == pytest.approx(0.05)
    assert clock.sleeps == pytest.approx([0.02, 0.02, 0.01])  # never sleeps past the bound


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        ServingYield(lambda: True, max_wait_s=-1)
    with pytest.raises(ValueError):
        ServingYield(lambda: True, poll_s=0)


def test_attribute_calls_the_hook_once_per_chunk_and_results_do_not_change(tiny_bi):
    kwargs = {"layers": [0, 1], "sublayer": "both", "n_steps": 6, "internal_batch_size": 3, "return_scores": True}
    plain = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES[:2], **kwargs)
    calls = []
    clock = FakeClock()
    busy = iter([True, True, False] * 100)  # per chunk: busy, one poll later still busy, then free
    hook = _yield(lambda: next(busy), clock)
    yielded = attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES[:2], between_chunks=lambda: calls.append(hook()),
                        **kwargs)
    # 2 layers x 2 sublayers x ceil((6 steps + baseline) / 3) chunks
    assert len(calls) == 2 * 2 * 3
    assert hook.yields == len(calls) and len(clock.sleeps) == len(calls)
    for a, b in zip(plain.layers, yielded.layers, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.baseline_value == b.baseline_value


def _service(tiny_bi, **kwargs) -> AnalysisService:
    registry = ModelRegistry()
    registry.add(ModelVersion(name="v1", encoder=tiny_bi, index=object(), state=VersionState.READY))  # unused
    registry.activate("v1")
    return AnalysisService(registry, Metrics(), **kwargs)


def _run_attribute(service: AnalysisService) -> Finished:
    job = AttributeJob(query=TINY_QUERY, passages=(Context(TINY_PASSAGES[0]),), layers=(0,), n_steps=4,
                       internal_batch_size=2)
    items = list(service.attribute(job))
    assert isinstance(items[-1], Finished)
    return items[-1]


def test_service_jobs_wait_for_busy_serving(tiny_bi):
    checks = []

    def busy() -> bool:
        checks.append(threading.current_thread().name)
        return False

    service = _service(tiny_bi, serving_busy=busy)
    try:
        assert service.serving_yield is not None
        _run_attribute(service)
    finally:
        service.close()
    # ceil((4 steps + baseline) / 2) = 3 chunks, each checked on the job's own thread
    assert len(checks) == 3
    assert all(name.startswith("dprscope-analysis") for name in checks)


def test_service_without_yield_never_asks(tiny_bi):
    def busy() -> bool:
        raise AssertionError("serving_busy must not be polled with yield_to_serving=False")

    service = _service(tiny_bi, serving_busy=busy, yield_to_serving=False)
    try:
        assert service.serving_yield is None
        _run_attribute(service)
    finally:
        service.close()


def test_lower_thread_priority_is_per_thread():
    """On Linux the nice value changes for the calling thread only."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        assert lower_thread_priority(5) is False
        return
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["ok"] = lower_thread_priority(5)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["ok"] and seen["nice"] == min(19, before + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    assert lower_thread_priority(0) is False


def test_batcher_busy_is_false_when_idle():
    batcher = MicroBatcher()
    try:
        assert batcher.busy is False
    finally:
        batcher.stop()
