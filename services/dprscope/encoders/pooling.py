"""Pooling token states into one vector, exactly as the model was trained to."""

from __future__ import annotations

import torch

POOLING_MODES = ("mean", "cls", "pooler")


def pool(mode: str, hidden: torch.Tensor, attention_mask: torch.Tensor,
         pooler_output: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce ``[batch, tokens, dim]`` states to ``[batch, dim]``.

    ``mean`` averages only real tokens (padding excluded), matching
    sentence-transformers' ``Pooling(pooling_mode_mean_tokens=True)``; ``cls`` takes the
    first token; ``pooler`` uses the model's own pooled output (DPR's projection-aware
    CLS vector).
    """
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return summed / counts
    if mode == "cls":
        return hidden[:, 0]
    if mode == "pooler":
        if pooler_output is None:
            raise ValueError("pooling 'pooler' needs a model that returns pooler_output")
        return pooler_output
    raise ValueError(f"unknown pooling mode {mode!r}; expected one of {POOLING_MODES}")
