"""A padding-free BERT forward pass for inference (``TextEncoder.encode``).

Why it exists: a micro-batch of queries is padded to its longest member. NQ questions are
10-19 tokens, so about a third of the rows of every padded batch-32 matmul are padding,
and the linear layers are most of the encoder's time. Those layers (QKV, attention output,
feed-forward, LayerNorm) act on each token alone, so they run here on the real tokens
only, packed into one ``[tokens, hidden]`` matrix; only attention needs the
``[batch, heads, length, length]`` layout, and gets it back for that one call. The same
pass also skips the library forward's per-call mask building and dispatch, which is a
large share of a one-query encode on a CPU. ``bench/packed_forward.py`` (2 cores,
all-MiniLM-L6-v2, 5 interleaved rounds): NQ queries 1.25x faster at batch 1, 1.54x at 8,
1.27x at 32; passages 1.33x at batch 32; identical vectors.

Why it is safe: it calls the model's own submodules, so edited weights, DELTA swaps and
Transformer-Patcher's widened feed-forward layers run exactly as loaded. It accepts only
the exact module types whose forward it reproduces (``for_model``), and ``TextEncoder``
checks it against the library forward once per model before using it; any other model,
or one that disagrees, runs the library forward. Analysis never comes here: its hooks
need the library's ``[batch, tokens, ...]`` shapes, so it keeps ``forward_features``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.functional import scaled_dot_product_attention

Features = dict[str, torch.Tensor]


def _bert_types() -> dict[str, type]:
    from transformers.models.bert import modeling_bert as mb

    return {name: getattr(mb, name) for name in ("BertModel", "BertEmbeddings", "BertLayer", "BertAttention",
                                                   "BertSelfAttention", "BertSelfOutput", "BertIntermediate",
                                                   "BertOutput", "BertPooler")}


def _supported_bert(bert: torch.nn.Module) -> bool:
    """Whether ``bert`` is a plain encoder-only BERT whose forward ``PackedBertForward`` reproduces."""
    types = _bert_types()
    if type(bert) is not types["BertModel"] or type(bert.embeddings) is not types["BertEmbeddings"]:
        return False
    config = bert.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if bert.pooler is not None and type(bert.pooler) is not types["BertPooler"]:
        return False
    for layer in bert.encoder.layer:
        parts = {"BertLayer": layer, "BertAttention": layer.attention, "BertSelfAttention": layer.attention.self,
                 "BertSelfOutput": layer.attention.output, "BertIntermediate": layer.intermediate,
                 "BertOutput": layer.output}
        if any(type(module) is not types[name] for name, module in parts.items()):
            return False
        if getattr(layer, "chunk_size_feed_forward", 0) or getattr(layer, "is_decoder", False):
            return False
    return True


@dataclass(frozen=True)
class PackedBertForward:
    """Last hidden states (zero at padding) and the pooled output of a BERT encoder, without padding work.

    ``pooled`` maps the last hidden states to what the library calls ``pooler_output``:
    ``BertPooler`` for a plain BERT, the (optionally projected) CLS state for a DPR encoder.
    """

    bert: torch.nn.Module
    pooled: Callable[[torch.Tensor], torch.Tensor | None]

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> PackedBertForward | None:
        """The packed forward of ``model`` (a ``BertModel`` or a DPR encoder), or None when unsupported."""
        types = _bert_types()
        if type(model) is types["BertModel"]:
            if not _supported_bert(model):
                return None
            return cls(bert=model, pooled=lambda hidden: model.pooler(hidden) if model.pooler is not None else None)
        inner = getattr(model, "question_encoder", None) or getattr(model, "ctx_encoder", None)
        bert = getattr(inner, "bert_model", None)
        if bert is None or not _supported_bert(bert):
            return None
        projection = inner.encode_proj if getattr(inner, "projection_dim", 0) > 0 else None

        def dpr_pooled(hidden: torch.Tensor) -> torch.Tensor:
            cls_state = hidden[:, 0, :]
            return projection(cls_state) if projection is not None else cls_state

        return cls(bert=bert, pooled=dpr_pooled)

    def __call__(self, features: Features, want_pooled: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the encoder on tokenized, padded ``features``; returns ``(hidden [B, L, H], pooled or None)``."""
        input_ids, mask = features["input_ids"], features["attention_mask"]
        layout = _Layout(mask)
        embedded = self.bert.embeddings(input_ids=input_ids, token_type_ids=features.get("token_type_ids"))
        hidden = layout.pack(embedded)
        for layer in self.bert.encoder.layer:
            attention = layer.attention.self
            heads, head_size = attention.num_attention_heads, attention.attention_head_size
            query, key, value = layout.heads([attention.query(hidden), attention.key(hidden),
                                              attention.value(hidden)], heads, head_size)
            context = scaled_dot_product_attention(query, key, value, attn_mask=layout.attend,
                                                   scale=getattr(attention, "scaling", head_size ** -0.5))
            attended = layer.attention.output(layout.merge_heads(context), hidden)
            hidden = layer.output(layer.intermediate(attended), attended)
        last = layout.unpack(hidden)
        return last, (self.pooled(last) if want_pooled else None)


class _Layout:
    """Moves rows between the padded ``[batch, length, ...]`` layout and the packed ``[tokens, ...]`` one.

    A batch without padding (one query, or equal lengths) packs by a reshape and attends
    with no mask at all.
    """

    def __init__(self, attention_mask: torch.Tensor) -> None:
        self.batch, self.length = attention_mask.shape
        if bool((attention_mask == 0).any()):
            self.keep: torch.Tensor | None = attention_mask.reshape(-1).nonzero().squeeze(1)
            self.attend: torch.Tensor | None = attention_mask.bool()[:, None, None, :]
        else:
            self.keep, self.attend = None, None
        # One zeroed padded buffer for the attention inputs of every layer: only real-token
        # rows are ever written, so padding rows stay zero without re-zeroing per layer.
        self._attention_inputs: torch.Tensor | None = None

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        rows = padded.reshape(self.batch * self.length, padded.shape[-1])
        return rows if self.keep is None else rows.index_select(0, self.keep)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        if self.keep is None:
            return rows.reshape(self.batch, self.length, rows.shape[-1])
        full = rows.new_zeros(self.batch * self.length, rows.shape[-1])
        full.index_copy_(0, self.keep, rows)
        return full.view(self.batch, self.length, rows.shape[-1])

    def heads(self, projections: list[torch.Tensor], heads: int, head_size: int) -> list[torch.Tensor]:
        """Packed ``[tokens, heads * size]`` projections -> padded ``[batch, heads, length, size]`` each.

        The views share one buffer that the next layer overwrites: use them before that.
        """
        width = heads * head_size
        if self.keep is None:
            return [p.view(self.batch, self.length, heads, head_size).transpose(1, 2) for p in projections]
        shape = (self.batch * self.length, len(projections), width)
        first = projections[0]
        if self._attention_inputs is None or self._attention_inputs.shape != shape:
            self._attention_inputs = first.new_zeros(shape)
        buffer = self._attention_inputs
        for i, rows in enumerate(projections):
            buffer[:, i].index_copy_(0, self.keep, rows)
        return [buffer[:, i].view(self.batch, self.length, heads, head_size).transpose(1, 2)
                for i in range(len(projections))]

    def merge_heads(self, context: torch.Tensor) -> torch.Tensor:
        """Attention's ``[batch, heads, length, size]`` -> packed ``[tokens, heads * size]``."""
        merged = context.transpose(1, 2).reshape(self.batch, self.length, -1)
        return self.pack(merged)
