"""FAISS on a GPU when there is one, the CPU index otherwise: chosen, never assumed.

``place_index`` takes a built (or loaded) ``VectorIndex`` and returns it on the device the
caller asked for, together with a ``Placement`` that says what happened and why; the
fallback to the CPU is the normal path on CPU-only builds (``faiss-cpu`` has no
``StandardGpuResources``) and on machines without a visible GPU, and it is logged once.

What moves: flat and IVF-PQ indexes (``index_cpu_to_gpu``; IVF-PQ codes need a GPU-side
lookup table, so ``useFloat16LookupTables`` is set for code sizes above 48 bytes).
What stays: HNSW (FAISS has no GPU HNSW) and the exact re-ranking store of a refined
IVF-PQ (its base moves, the full vectors stay memory-mapped on the host). The CPU index is
kept as the placed index's ``cpu_twin``: searches past FAISS GPU's selection limit (top_k x
k_factor > 2048, or nprobe > 2048) are answered from it instead of failing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faiss

from dprscope.index.vector_index import VectorIndex

log = logging.getLogger(__name__)

GPU_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Placement:
    """Where an index ended up and the reason, for logs, metrics and ``GetIndexInfo``."""

    device: str  # "cpu" or "cuda:N"
    reason: str


def faiss_gpu_count() -> int:
    """GPUs FAISS can use: 0 on faiss-cpu wheels or when no device is visible."""
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception as exc:  # a broken CUDA runtime must not take serving down
        log.warning("faiss.get_num_gpus() failed (%s); using the CPU", exc)
        return 0


_resources: dict[int, Any] = {}


def _gpu_resources(gpu: int) -> Any:
    """One ``StandardGpuResources`` per GPU per process (it owns scratch memory and streams)."""
    if gpu not in _resources:
        _resources[gpu] = faiss.StandardGpuResources()
    return _resources[gpu]


def _to_gpu(index: faiss.Index, gpu: int) -> faiss.Index:
    options = faiss.GpuClonerOptions()
    options.useFloat16LookupTables = True  # PQ with > 48 sub-quantizers needs fp16 tables in shared memory
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexRefine):
        base = faiss.index_cpu_to_gpu(_gpu_resources(gpu), gpu, top.base_index, options)
        refined = faiss.IndexRefine(base, top.refine_index)
        refined.k_factor = top.k_factor
        refined._keep = (base, top)  # SWIG: keep the parts alive as long as the wrapper
        return refined
    return faiss.index_cpu_to_gpu(_gpu_resources(gpu), gpu, index, options)


def place_index(vindex: VectorIndex, device: str = "auto") -> tuple[VectorIndex, Placement]:
    """Move ``vindex`` to a GPU when asked for (or ``auto``) and possible; else keep it.

    Raises:
        ValueError: an unknown device name.
    """
    name = (device or "auto").strip().lower()
    base, _, ordinal = name.partition(":")
    if base not in GPU_DEVICES:
        raise ValueError(f"device {device!r} is not one of {GPU_DEVICES} (optionally cuda:N)")
    if base == "cpu":
        return vindex, Placement("cpu", "cpu requested")
    count = faiss_gpu_count()
    if count == 0:
        why = ("faiss has no GPU support (faiss-cpu build)" if not hasattr(faiss, "StandardGpuResources")
               else "no GPU visible to faiss")
        level = logging.WARNING if base == "cuda" else logging.INFO
        log.log(level, "FAISS index stays on the CPU: %s", why)
        return vindex, Placement("cpu", why)
    gpu = int(ordinal) if ordinal else 0
    if gpu >= count:
        raise ValueError(f"device {device!r}: faiss sees only {count} GPU(s)")
    if vindex.index_type == "hnsw":
        log.info("FAISS index stays on the CPU: HNSW has no GPU implementation")
        return vindex, Placement("cpu", "hnsw has no GPU implementation")
    try:
        moved = _to_gpu(vindex.faiss_index, gpu)
    except Exception as exc:  # out of GPU memory, unsupported code size, ...
        log.warning("moving the %s index to cuda:%d failed (%s); serving from the CPU", vindex.index_type, gpu, exc)
        return vindex, Placement("cpu", f"gpu copy failed: {exc}")
    log.info("FAISS %s index on cuda:%d (%d vectors)", vindex.index_type, gpu, vindex.ntotal)
    placed = VectorIndex(moved, vindex.index_type, vindex.params, vindex.metric, cpu_twin=vindex)
    return placed, Placement(f"cuda:{gpu}", "gpu")
