"""Choosing the encoder runtime: torch (CPU or CUDA; fp32 or bf16) or ONNX Runtime (fp32 or int8).

``server.py`` and the build commands call ``apply_backend`` on whatever ``BiEncoder`` they
loaded, so the runtime is one decision in one place. It never mutates its input: a
session-wide torch encoder can be wrapped for one server and stay torch for the rest.

``EncoderRuntime`` is that decision as a value, so the hot-swap manager can apply the
server's runtime to every version it loads later (otherwise a checkpoint loaded through
ModelAdmin on an ``--backend onnx`` server would quietly serve on torch), and
``torch_side`` gets back the torch weights behind a converted encoder, which validation
compares against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.device import DEFAULT_DEVICE, bi_encoder_on_device, resolve_device
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
        ValueError: an unknown backend; ``int8`` without the onnx backend (torch has no int8
            path here that keeps retrieval quality; the ORT int8 recipe does); ``bf16``
            without the torch backend (ONNX Runtime's CPU provider has no bf16 BERT kernels).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    mode = (quantize or "none").lower()
    if backend == "torch":
        if mode not in ("none", "bf16"):
            raise ValueError(f"quantize {quantize!r} needs backend 'onnx' (torch serves fp32 or bf16)")
        target = resolve_device(device)
        placed = bi_encoder_on_device(bi, target)
        if mode == "bf16":
            from dprscope.encoders.mixed_precision import bi_encoder_bf16

            return bi_encoder_bf16(placed, target)
        return placed
    if mode == "bf16":
        raise ValueError("quantize 'bf16' needs backend 'torch' (ONNX Runtime's CPU provider has no bf16 kernels "
                         "for BERT)")
    from dprscope.encoders.onnx_backend import OrtOptions, to_onnx

    return to_onnx(bi, OrtOptions(intra_op_threads=intra_op_threads, device=device, quantize=quantize,
                                  cache_dir=cache_dir))


@dataclass(frozen=True)
class EncoderRuntime:
    """Backend, quantisation, device and ONNX cache of a server, applied the same way to every version."""

    backend: str = "torch"
    quantize: str | None = None
    device: str = DEFAULT_DEVICE
    cache_dir: Path | None = None
    intra_op_threads: int = 0

    def apply(self, bi: BiEncoder) -> BiEncoder:
        """``apply_backend`` with these settings (``bi`` itself for torch on the CPU)."""
        return apply_backend(bi, backend=self.backend, quantize=self.quantize, device=self.device,
                             cache_dir=self.cache_dir, intra_op_threads=self.intra_op_threads)

    @property
    def is_identity(self) -> bool:
        """True when ``apply`` returns its input unchanged (fp32 torch on the CPU): nothing to check."""
        return self.backend == "torch" and self.precision == "fp32" and resolve_device(self.device) == "cpu"

    @property
    def precision(self) -> str:
        """``int8``, ``bf16`` or ``fp32``: how closely served vectors should follow the torch weights."""
        mode = (self.quantize or "none").lower()
        if self.backend == "onnx" and mode == "int8":
            return "int8"
        if self.backend == "torch" and mode == "bf16":
            return "bf16"
        return "fp32"


def _fp32_torch(encoder):
    from dprscope.encoders.mixed_precision import AutocastTextEncoder
    from dprscope.encoders.onnx_backend import OnnxTextEncoder

    if isinstance(encoder, OnnxTextEncoder):
        return encoder.torch_encoder
    if isinstance(encoder, AutocastTextEncoder):
        return encoder.source
    return encoder


def torch_side(bi: BiEncoder) -> BiEncoder:
    """The fp32 torch encoders behind ``bi`` (ONNX and bf16 encoders keep theirs); ``bi`` itself if all fp32 torch."""
    unwrapped = {id(e): _fp32_torch(e) for e in (bi.query, bi.context)}
    query, context = unwrapped[id(bi.query)], unwrapped[id(bi.context)]
    if query is bi.query and context is bi.context:
        return bi
    extra = {k: v for k, v in bi.extra.items() if k not in ("backend", "precision")}
    return BiEncoder(query=query, context=context, kind=bi.kind, source=bi.source, metric=bi.metric, extra=extra)


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
