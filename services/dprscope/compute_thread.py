"""Run one-off torch work on a thread that ends with it.

libgomp (torch's OpenMP runtime) gives every thread that runs a parallel region its own
worker pool, kept until that thread exits. Once a process holds more pool threads than
cores, every pool throttles its spin-waits, and the serving encoder thread's forward
passes get slower: one "dimension probe" encode on the main thread made the encoder
thread's batch-1 encode 14.1 -> 19.0 ms in one run (+10-35 % over repeated runs). Long-lived threads
(the main thread, gRPC handler threads, the analysis executor) therefore never run torch
themselves; they hand such work to a short-lived thread, whose pool dies with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_in_fresh_thread(fn: Callable[[], T], name: str = "dprscope-compute") -> T:
    """``fn()`` on a new thread that exits afterwards; its result or exception comes back here.

    The new thread inherits the caller's scheduling priority (Linux threads inherit nice),
    so niced analysis work stays niced.
    """
    outcome: list = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller, re-raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
