"""Where the torch encoder runs: ``auto`` picks CUDA when torch sees a GPU, else the CPU.

The torch ``TextEncoder`` tokenizes on the CPU and hands the features to its model; when
the model lives on a GPU the features must follow it. ``DeviceTextEncoder`` adds exactly
that move and nothing else, so analysis hooks and fingerprints behave as on the CPU.
"""

from __future__ import annotations

import logging

import torch

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.text_encoder import TextEncoder

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"


def cuda_available() -> bool:
    """True when torch can use a CUDA device (False on CPU-only wheels)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # broken driver installs raise instead of returning False
        return False


def resolve_device(device: str = DEFAULT_DEVICE) -> str:
    """Map ``auto|cpu|cuda[:N]`` to a concrete torch device string.

    Raises:
        ValueError: an unknown device name, or ``cuda`` asked for where there is none
            (asking explicitly for a GPU and silently getting the CPU hides a broken node).
    """
    name = (device or DEFAULT_DEVICE).strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES} (optionally cuda:N)")
    if base == "auto":
        chosen = "cuda" if cuda_available() else "cpu"
        log.info("device auto -> %s", chosen)
        return chosen
    if base == "cuda" and not cuda_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    return name


class DeviceTextEncoder(TextEncoder):
    """A ``TextEncoder`` whose model sits on ``device``; inputs are moved there per batch."""

    def __init__(self, source: TextEncoder, device: str) -> None:
        super().__init__(source.model.to(device), source.tokenizer, source.config,
                         backbone=source.backbone, name=source.name)
        self.device = torch.device(device)

    def prepare(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in features.items()}

    def forward_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().forward_features(self.prepare(features))


def bi_encoder_on_device(bi: BiEncoder, device: str = DEFAULT_DEVICE) -> BiEncoder:
    """Return ``bi`` with its torch models on ``device`` (``bi`` itself when that is the CPU)."""
    target = resolve_device(device)
    if target == "cpu":
        return bi
    moved: dict[int, TextEncoder] = {}
    for enc in (bi.query, bi.context):
        if id(enc) not in moved:
            moved[id(enc)] = DeviceTextEncoder(enc, target)
    return BiEncoder(query=moved[id(bi.query)], context=moved[id(bi.context)], kind=bi.kind,
                     source=bi.source, metric=bi.metric, extra={**bi.extra, "device": target})
