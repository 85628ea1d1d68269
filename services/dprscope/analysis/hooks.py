"""Forward hooks that only ever act on the analysis thread, and are always removed.

The analysis sidecar runs on the very modules that are serving ``Search`` from other
threads. A plain forward hook would fire on *every* forward of the module, so an
attribution job would silently change concurrent search results. Every hook installed
here is therefore *thread-scoped*: it records the id of the thread that installed it
and returns ``None`` (leave the output alone) on any other thread. Serving forwards pass
through untouched; only the analysis thread's own forwards are observed or rewritten.

Hooks are only installed through ``thread_scoped_hooks``, a context manager that
removes every handle in ``finally`` (as captum's ``_forward_layer_eval`` does), so an
exception, a cancel or a failed backward never leaves a hook behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

HookFn = Callable[[torch.nn.Module, tuple[object, ...], object], object]


def _scoped(fn: HookFn, owner: int) -> HookFn:
    def hook(module: torch.nn.Module, inputs: tuple[object, ...], output: object) -> object:
        if threading.get_ident() != owner:
            return None  # a serving thread: never observe or modify its forward
        return fn(module, inputs, output)

    return hook


@contextmanager
def thread_scoped_hooks(hooks: Sequence[tuple[torch.nn.Module, HookFn]]) -> Iterator[None]:
    """Install forward hooks that act only on the calling thread; remove them on exit.

    Args:
        hooks: ``(module, fn)`` pairs. ``fn(module, inputs, output)`` may return a
            replacement output (as for ``register_forward_hook``) or ``None``.
    """
    owner = threading.get_ident()
    handles = []
    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(_scoped(fn, owner)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_outputs(modules: Sequence[torch.nn.Module]) -> Iterator[dict[int, torch.Tensor]]:
    """Record the (detached) output of each module on this thread's forwards.

    Yields a dict filled during the ``with`` body, keyed by position in ``modules``.
    """
    captured: dict[int, torch.Tensor] = {}

    def make(i: int) -> HookFn:
        def fn(_m: torch.nn.Module, _inputs: tuple[object, ...], output: object) -> None:
            if isinstance(output, torch.Tensor):
                captured[i] = output.detach()
            return None

        return fn

    with thread_scoped_hooks([(m, make(i)) for i, m in enumerate(modules)]):
        yield captured


@contextmanager
def replace_output(module: torch.nn.Module, replacement: Callable[[torch.Tensor], torch.Tensor]
                   ) -> Iterator[None]:
    """Replace ``module``'s output on this thread by ``replacement(original_output)``.

    This is how an activation is scaled (``alpha * w``) or swapped for a tensor that
    requires grad: the intercepted tensor, never a weight, carries the gradient.
    """

    def fn(_m: torch.nn.Module, _inputs: tuple[object, ...], output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"cannot replace a non-tensor output of {type(_m).__name__}")
        return replacement(output)

    with thread_scoped_hooks([(module, fn)]):
        yield
