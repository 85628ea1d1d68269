"""Choosing the encoder runtime: torch (CPU or CUDA) or ONNX Runtime (fp32 or int8).

``server.py`` and the build commands call ``apply_backend`` on whatever ``BiEncoder`` they
loaded, so the runtime is one decision in one place. It never mutates its input: a
session-wide torch encoder can be wrapped for one server and stay torch for the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.device import DEFAULT_DEVICE, bi_encoder_on_device
from dprscope.encoders.loading import load_bi_encoder

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")


def apply_backend(
    bi: BiEncoder,
    backend: str = "torch",
    quantize: str | None = None,
    device: str = DEFAULT_DEVICE,
    cache_dir: Path | None = None,
    intra_op_threads: int = 0,
) -> BiEncoder:
    """Return ``bi`` running on ``backend`` (``bi`` itself for torch on the CPU).

    Raises:
        ValueError: an unknown backend, or ``quantize`` without the onnx backend (torch has
            no int8 path here that keeps retrieval quality; the ORT int8 recipe does).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    mode = (quantize or "none").lower()
    if backend == "torch":
        if mode != "none":
            raise ValueError(f"quantize {quantize!r} needs backend 'onnx' (torch serves fp32 only)")
        return bi_encoder_on_device(bi, device)
    from dprscope.encoders.onnx_backend import OrtOptions, to_onnx

    return to_onnx(bi, OrtOptions(intra_op_threads=intra_op_threads, device=device, quantize=quantize,
                                  cache_dir=cache_dir))


def build_encoder(
    spec: str,
    pooling: str | None = None,
    backend: str = "torch",
    quantize: str | None = None,
    device: str = DEFAULT_DEVICE,
    cache_dir: Path | None = None,
    max_length: int | None = None,
) -> BiEncoder:
    """Load ``spec`` (see ``load_bi_encoder``) and put it on the chosen runtime."""
    return apply_backend(load_bi_encoder(spec, pooling=pooling, max_length=max_length), backend=backend,
                         quantize=quantize, device=device, cache_dir=cache_dir)
