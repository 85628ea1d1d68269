"""One side of a bi-encoder: a transformer backbone, a pooling rule and a tokenizer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from dprscope.compute_thread import run_in_fresh_thread
from dprscope.encoders.fingerprint import state_dict_fingerprint
from dprscope.encoders.packed_forward import PackedBertForward
from dprscope.encoders.pooling import POOLING_MODES, pool

log = logging.getLogger(__name__)

PASSAGE_FORMATS = ("pair", "concat")
DEFAULT_ENCODE_BATCH = 32
# Texts of different lengths, so the check below exercises padding and the attention mask.
PACKED_CHECK_TEXTS = ("packed forward check",
                      "a longer packed forward check sentence, so that the first one is padded in the batch")
PACKED_CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class EncoderConfig:
    """What decides the vectors besides the weights; stamped into manifests."""

    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 256
    passage_format: str = "concat"

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling {self.pooling!r} is not one of {POOLING_MODES}")
        if self.passage_format not in PASSAGE_FORMATS:
            raise ValueError(f"passage_format {self.passage_format!r} is not one of {PASSAGE_FORMATS}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")


class TextEncoder:
    """Encodes texts (or title/text pairs) into float32 vectors with a torch backbone.

    ``model`` is what runs forward (a ``BertModel`` or a DPR encoder whose output has a
    ``pooler_output``); ``backbone`` is the plain BERT inside it, which the analysis
    room hooks into. Inputs are sorted by length before batching and restored after, so
    one long passage does not pad a whole batch.

    ``encode`` runs ``infer``: the padding-free forward of ``dprscope.encoders.packed_forward``
    where the model is one it reproduces and it agrees with the library forward on a check
    batch, else ``forward_features``. ``packed_forward_enabled = False`` turns it off (A/B runs).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, config: EncoderConfig,
                 backbone: torch.nn.Module | None = None, name: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.backbone = backbone if backbone is not None else model
        self.name = name
        # Tokenizers from the Rust library are not safe to share across threads mid-call.
        self._tokenizer_lock = threading.Lock()
        self.packed_forward_enabled = True

    @cached_property
    def fingerprint(self) -> str:
        return state_dict_fingerprint(self.model)

    @cached_property
    def dim(self) -> int:
        # Asked for on the main thread at start-up: probe off it (see dprscope.compute_thread).
        probe = run_in_fresh_thread(lambda: self.encode(["dimension probe"]), "dprscope-dim-probe")
        return int(probe.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    def tokenize(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Tokenize as the model expects: DPR encodes ``title [SEP] text`` as a pair."""
        with self._tokenizer_lock:
            if titles is not None and self.config.passage_format == "pair":
                return self.tokenizer(list(titles), list(texts), padding=True, truncation="longest_first",
                                      max_length=self.config.max_length, return_tensors="pt")
            if titles is not None:
                texts = [f"{t}: {x}" if t else x for t, x in zip(titles, texts, strict=True)]
            return self.tokenizer(list(texts), padding=True, truncation=True,
                                  max_length=self.config.max_length, return_tensors="pt")

    def prepare(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Put tokenized features where the model runs (the CPU here; subclasses move them)."""
        return features

    def forward_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on tokenized features and pool; gradients follow the caller's mode.

        The library forward, with the ``[batch, tokens, ...]`` shapes analysis hooks rely on.
        """
        out = self.model(**features)
        hidden = getattr(out, "last_hidden_state", None)
        pooled = getattr(out, "pooler_output", None)
        if hidden is None and self.config.pooling != "pooler":
            raise ValueError(f"model returns no token states for pooling {self.config.pooling!r}")
        return self._pool(hidden, features["attention_mask"], pooled)

    def infer(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Vectors for tokenized features at inference (no gradients, no hooks): what ``encode`` runs."""
        features = self.prepare(features)
        packed = self._packed_forward if self.packed_forward_enabled else None
        if packed is None:
            return self.forward_features(features)
        hidden, pooled = packed(features, want_pooled=self.config.pooling == "pooler")
        return self._pool(hidden, features["attention_mask"], pooled)

    @property
    def uses_packed_forward(self) -> bool:
        """Whether ``encode`` runs the padding-free forward (checks it on first use)."""
        with torch.inference_mode():
            return self.packed_forward_enabled and self._packed_forward is not None

    @cached_property
    def _packed_forward(self) -> PackedBertForward | None:
        packed = PackedBertForward.for_model(self.model)
        if packed is None:
            log.info("%s: %s has no padding-free forward here; encoding with the library forward",
                     self.name or "encoder", type(self.model).__name__)
            return None
        features = self.prepare(self.tokenize(list(PACKED_CHECK_TEXTS)))
        with torch.inference_mode():
            reference = self.forward_features(features)
            hidden, pooled = packed(features, want_pooled=self.config.pooling == "pooler")
            candidate = self._pool(hidden, features["attention_mask"], pooled)
        error = float((candidate - reference).abs().max())
        if not error <= PACKED_CHECK_TOLERANCE:
            log.warning("%s: the padding-free forward differs from the library forward by %.3g; "
                        "encoding with the library forward", self.name or "encoder", error)
            return None
        log.info("%s: encoding with the padding-free forward (checked: max difference %.2g)",
                 self.name or "encoder", error)
        return packed

    def _pool(self, hidden: torch.Tensor | None, attention_mask: torch.Tensor,
              pooled: torch.Tensor | None) -> torch.Tensor:
        vectors = pool(self.config.pooling, hidden, attention_mask, pooled)
        if self.config.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None,
               batch_size: int = DEFAULT_ENCODE_BATCH) -> np.ndarray:
        """Encode texts; with ``titles`` they are passages. Returns ``[n, dim]`` float32."""
        if titles is not None and len(titles) != len(texts):
            raise ValueError(f"{len(titles)} titles for {len(texts)} texts")
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = [len(t) + (len(titles[i]) if titles is not None else 0) for i, t in enumerate(texts)]
        order = sorted(range(n), key=lambda i: -lengths[i])
        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                batch_titles = [titles[i] for i in idx] if titles is not None else None
                features = self.tokenize([texts[i] for i in idx], batch_titles)
                chunks.append(self.infer(features).float().cpu().numpy())
        stacked = np.concatenate(chunks, axis=0)
        result = np.empty_like(stacked)
        result[np.asarray(order)] = stacked
        return np.ascontiguousarray(result, dtype=np.float32)
