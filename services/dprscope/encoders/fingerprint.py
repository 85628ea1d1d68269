"""Content fingerprints of weights: the identity that ties an index to its encoder."""

from __future__ import annotations

import hashlib

import torch


def state_dict_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order.

    Hashing the tensors rather than the files makes the fingerprint independent of the
    file format (safetensors vs bin, sharded or not) and lets a delta-patched model
    prove it equals the full edited checkpoint.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
