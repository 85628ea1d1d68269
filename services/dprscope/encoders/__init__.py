"""Turning text into vectors: backbones, pooling, bi-encoder pairs and micro-batching."""

from __future__ import annotations

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.loading import DEFAULT_MODEL_SPEC, load_bi_encoder
from dprscope.encoders.text_encoder import TextEncoder

__all__ = ["DEFAULT_MODEL_SPEC", "BiEncoder", "TextEncoder", "load_bi_encoder"]
