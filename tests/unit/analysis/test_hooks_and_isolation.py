"""Hook hygiene and serving isolation: nothing left behind, nothing changed, Search unharmed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from dprscope.analysis import attribute
from dprscope.analysis.hooks import replace_output, thread_scoped_hooks
from dprscope.errors import Cancelled
from dprscope.jobs import CancelToken
from tests.unit.analysis.conftest import TINY_PASSAGES, TINY_QUERY

SERVING_TEXTS = ["who sings does he love me with reba", "capital of france", "nobel prize physics 1901"]


def _no_hooks_anywhere(bi) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in bi.query.model.modules())


def _snapshot(bi) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in bi.query.model.state_dict().items()}


def test_no_hooks_no_weight_change_no_grads_and_identical_outputs(tiny_bi):
    before_state = _snapshot(tiny_bi)
    before_out = tiny_bi.encode_queries(SERVING_TEXTS)
    attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, target="positive_prob", sublayer="both", n_steps=6)
    attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, side="passage", sublayer="both", n_steps=6, positions="cls")
    assert _no_hooks_anywhere(tiny_bi)
    after_state = tiny_bi.query.model.state_dict()
    for key, value in before_state.items():
        assert torch.equal(value, after_state[key]), key
    assert all(p.grad is None for p in tiny_bi.query.model.parameters())
    assert np.array_equal(before_out, tiny_bi.encode_queries(SERVING_TEXTS))
    assert torch.is_grad_enabled()  # pytest's default; analysis must not leave it off


def test_hooks_removed_after_cancel_midway(tiny_bi):
    token = CancelToken()
    seen = []

    def progress(p):
        seen.append(p.done)
        if p.done >= 1:
            token.cancel("user hung up")

    with pytest.raises(Cancelled, match="user hung up"):
        attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, sublayer="both", n_steps=40, internal_batch_size=2,
                  progress=progress, cancel=token)
    assert seen and seen[0] == 1
    assert _no_hooks_anywhere(tiny_bi)


def test_hooks_removed_when_forward_raises_inside_the_hook_context(tiny_bi, monkeypatch):
    calls = {"n": 0}
    original = tiny_bi.query.forward_features

    def flaky(features):
        calls["n"] += 1
        if calls["n"] == 4:  # passages, capture, chunk 1, then fail in chunk 2 (hook installed)
            assert not _no_hooks_anywhere(tiny_bi)
            raise RuntimeError("boom")
        return original(features)

    monkeypatch.setattr(tiny_bi.query, "forward_features", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, sublayer="both", n_steps=8, internal_batch_size=3)
    assert _no_hooks_anywhere(tiny_bi)


def test_pre_cancelled_token_stops_before_any_work(tiny_bi):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, cancel=token)
    assert _no_hooks_anywhere(tiny_bi)


def test_thread_scoped_hook_acts_only_on_its_own_thread(tiny_bi):
    module = tiny_bi.query.backbone.encoder.layer[1].intermediate
    baseline = tiny_bi.encode_queries(SERVING_TEXTS)
    other: dict[str, np.ndarray] = {}
    with replace_output(module, torch.zeros_like):
        changed = tiny_bi.encode_queries(SERVING_TEXTS)  # this thread: hooked
        t = threading.Thread(target=lambda: other.setdefault("out", tiny_bi.encode_queries(SERVING_TEXTS)))
        t.start()
        t.join()
    assert not np.allclose(changed, baseline)  # the hook really does something...
    assert np.array_equal(other["out"], baseline)  # ...but never to another thread
    assert not module._forward_hooks


def test_thread_scoped_hooks_removed_on_exception(tiny_bi):
    module = tiny_bi.query.backbone.encoder.layer[0].intermediate
    with pytest.raises(ValueError, match="inside"), thread_scoped_hooks([(module, lambda *_: None)]):
        assert module._forward_hooks
        raise ValueError("inside")
    assert not module._forward_hooks


def test_concurrent_serving_is_identical_while_attribution_runs(tiny_bi):
    baseline = tiny_bi.encode_queries(SERVING_TEXTS)
    baseline_passages = tiny_bi.encode_passages([""] * 3, TINY_PASSAGES)
    errors: list[BaseException] = []
    done = threading.Event()
    chunks = {"n": 0}

    def count(_p) -> None:
        chunks["n"] += 1

    def job() -> None:
        try:
            for side in ("query", "passage"):
                attribute(tiny_bi, TINY_QUERY, TINY_PASSAGES, side=side, sublayer="both", n_steps=150,
                          internal_batch_size=2, target="positive_prob", progress=count)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=job)
    worker.start()
    served_during = 0
    while not done.is_set():
        assert np.array_equal(tiny_bi.encode_queries(SERVING_TEXTS), baseline)
        assert np.array_equal(tiny_bi.encode_passages([""] * 3, TINY_PASSAGES), baseline_passages)
        served_during += 1
    worker.join()
    assert not errors, errors
    assert served_during >= 3  # the two really overlapped
    assert _no_hooks_anywhere(tiny_bi)
