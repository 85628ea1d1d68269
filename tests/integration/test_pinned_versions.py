"""Requests pinned to a loaded version: the right encoder, and never a mismatched index."""

from __future__ import annotations

import copy

import grpc
import pytest
import torch

from dprscope.models.registry import ModelVersion, VersionState
from dprscope_client import RetrieverClient, RetrieverError


def _edited(encoder):
    """A shared-weight copy of the embedded model with one FFN scaled (both sides change)."""
    from dprscope.encoders.bi_encoder import BiEncoder
    from dprscope.encoders.text_encoder import TextEncoder

    model = copy.deepcopy(encoder.query.model)
    with torch.no_grad():
        model.encoder.layer[2].intermediate.dense.weight.mul_(1.5)
    side = TextEncoder(model, encoder.query.tokenizer, encoder.query.config)
    return BiEncoder(query=side, context=side, kind=encoder.kind, source="edited")


def test_pinned_version_with_a_new_context_encoder_is_refused_until_reindexed(start_server, encoder):
    handle = start_server()
    index = handle.registry.get("v1").index
    edited = _edited(encoder)
    assert edited.context_fingerprint != index.manifest.encoder_fingerprint
    handle.registry.add(ModelVersion(name="edited", encoder=edited, index=index, state=VersionState.READY))
    with RetrieverClient(handle.target) as client:
        with pytest.raises(RetrieverError) as info:
            client.search("who wrote hamlet", model_version="edited")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "re-index" in info.value.details
        handle.registry.update("edited", stale_index=True)  # an operator's explicit allow_stale_index
        assert client.search("who wrote hamlet", model_version="edited").model_version == "edited"
        assert client.search("who wrote hamlet").model_version == "v1"
