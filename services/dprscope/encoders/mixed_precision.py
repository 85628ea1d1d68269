"""bf16 for the torch encoder (``--quantize bf16``): autocast, not converted weights.

Why bf16 exists beside the ONNX int8 recipe: int8 speeds up the linear layers only, and at
passage length (~190 tokens) the fp32 attention around them is half of ORT's time, so int8
passages stay at ~1.3x torch fp32 (bench/RESULTS.md "Encoder backends"). On CPUs with
AMX-BF16 or AVX512-BF16 (Sapphire Rapids and later) and on GPUs, torch's bf16 autocast runs
every matmul, attention included, in bf16: 1.7-2.5x passage throughput at batch 64 over the
padding-free fp32 forward (2 / 1 threads; 2.1-3.0x over the library forward), cosine >= 0.9999
to fp32, top-10 overlap 0.993. Converting the weights themselves
to bf16 measured faster (2.3x) but cosine 0.996, so weights stay fp32 and only the compute drops to bf16; fingerprints,
analysis hooks and checkpoints see the same fp32 model.

Where the hardware has no native bf16, autocast is emulated and slower than fp32: then the
encoder stays fp32 and the reason is logged (chosen, never assumed), as the device fallback does.
"""

from __future__ import annotations

import logging

import torch

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.text_encoder import TextEncoder

log = logging.getLogger(__name__)


def native_bf16(device: str) -> tuple[bool, str]:
    """Whether ``device`` (``cpu`` or ``cuda[:N]``) computes bf16 natively, and why not."""
    if device.startswith("cuda"):
        try:
            ok = bool(torch.cuda.is_bf16_supported())
        except Exception as exc:  # broken driver installs raise instead of answering
            return False, f"torch.cuda.is_bf16_supported() failed: {exc}"
        return ok, "" if ok else "this GPU has no native bf16 (pre-Ampere)"
    amx = torch.cpu._is_amx_tile_supported()
    avx512_bf16 = torch.cpu._is_avx512_bf16_supported()
    if amx or avx512_bf16:
        return True, ""
    return False, "this CPU has neither AMX nor AVX512-BF16, so bf16 would be emulated and slower than fp32"


class AutocastTextEncoder(TextEncoder):
    """Runs ``source``'s forward pass under bf16 autocast; everything else is ``source``'s."""

    def __init__(self, source: TextEncoder, device_type: str) -> None:
        super().__init__(source.model, source.tokenizer, source.config, backbone=source.backbone,
                         name=source.name)
        self.source = source
        self._tokenizer_lock = source._tokenizer_lock  # one tokenizer, one lock (torch_side shares it)
        self.device_type = device_type
        self.precision = "bf16"

    def forward_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            vectors = self.source.forward_features(features)
        return vectors.float()

    def infer(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            vectors = self.source.infer(features)
        return vectors.float()

    @property
    def uses_packed_forward(self) -> bool:
        return self.source.uses_packed_forward


def bi_encoder_bf16(bi: BiEncoder, device: str) -> BiEncoder:
    """``bi`` computing in bf16 on ``device`` (already placed there), or ``bi`` itself where
    the hardware has no native bf16 (logged as a warning)."""
    ok, why = native_bf16(device)
    if not ok:
        log.warning("--quantize bf16: serving fp32 instead: %s", why)
        return bi
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    wrapped: dict[int, TextEncoder] = {}
    for enc in (bi.query, bi.context):
        if id(enc) not in wrapped:
            wrapped[id(enc)] = AutocastTextEncoder(enc, device_type)
    return BiEncoder(query=wrapped[id(bi.query)], context=wrapped[id(bi.context)], kind=bi.kind,
                     source=bi.source, metric=bi.metric, extra={**bi.extra, "precision": "bf16"})


def bf16_in_use(bi: BiEncoder) -> bool:
    """Whether ``bi``'s encoders compute in bf16 (False after a fallback to fp32)."""
    return all(isinstance(e, AutocastTextEncoder) for e in (bi.query, bi.context))
