"""Reading checkpoints operators hand us, and turning them into new encoders.

Three kinds arrive over ``LoadCheckpoint``:

- ``FULL``: a whole model directory (HF, sentence-transformers or DPR), loaded with the
  encoders room's loaders;
- ``DELTA``: a safetensors file holding only the tensors an edit changed (MEND, MALMEN,
  ROME-style rank-one edits), applied onto a *copy* of a base encoder;
- ``PATCH``: Transformer-Patcher extra FFN neurons: for a layer ``i`` the tensors
  ``encoder.layer.{i}.intermediate.dense.weight`` ``[extra, hidden]``,
  ``encoder.layer.{i}.intermediate.dense.bias`` ``[extra]`` and
  ``encoder.layer.{i}.output.dense.weight`` ``[hidden, extra]``; that layer's FFN becomes
  wider than the config says.

The base may be serving while we build the new version, so every change happens on a
deep copy: the base's parameters are never touched. Only safetensors and
``torch.load(weights_only=True)`` are read — nothing arriving over RPC is unpickled.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from dprscope.encoders.text_encoder import TextEncoder
from dprscope.errors import InvalidArgument, PermissionDenied
from dprscope.paths import resolve_inside

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
PATCH_KEY = re.compile(r"^(?P<prefix>.*?)(?P<layer>encoder\.layer\.(?P<index>\d+))\."
                       r"(?P<part>intermediate\.dense\.weight|intermediate\.dense\.bias|output\.dense\.weight)$")


# --- paths ---------------------------------------------------------------------------
def confine(path: str, root: Path | None) -> Path:
    """Resolve ``path`` (relative to, or absolute inside, ``root``) with symlinks followed.

    Raises:
        PermissionDenied: no root configured, or the resolved path leaves the root (``..``,
            an absolute path elsewhere, or a symlink pointing outside).
        NotFound: the path is inside the root but does not exist.
        InvalidArgument: empty path.
    """
    if root is None:
        raise PermissionDenied("the server has no --checkpoint-root configured; loading checkpoints is disabled")
    if not path or not path.strip():
        raise InvalidArgument("path is empty; give a checkpoint path inside the checkpoint root")
    if "\x00" in path:
        raise InvalidArgument("path contains a NUL character")
    return resolve_inside(path, root, outside=f"checkpoint path {path!r} is outside the checkpoint root",
                          missing=f"checkpoint {path!r} does not exist under the checkpoint root")


# --- reading tensors -------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` file: safetensors, or a torch file with weights_only.

    Raises:
        InvalidArgument: unsupported suffix, a directory, or a file that does not parse.
    """
    if path.is_dir():
        raise InvalidArgument(f"{path.name} is a directory; DELTA and PATCH checkpoints are single files")
    suffix = path.suffix.lower()
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            tensors = load_file(str(path), device="cpu")
        elif suffix in TORCH_SUFFIXES:
            tensors = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise InvalidArgument(f"{path.name}: unsupported checkpoint file type {suffix!r}; "
                                  f"use {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}")
    except InvalidArgument:
        raise
    except Exception as exc:  # safetensors/torch raise many types for a corrupt file
        raise InvalidArgument(f"{path.name} is not a readable {suffix} checkpoint: {type(exc).__name__}") from exc
    if not isinstance(tensors, Mapping) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise InvalidArgument(f"{path.name} must hold a flat mapping of tensor names to tensors")
    if not tensors:
        raise InvalidArgument(f"{path.name} holds no tensors")
    return dict(tensors)


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse NaN/Inf weights before they ever run (the canary would catch most, not all)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InvalidArgument(f"{what}: tensor {name!r} holds {bad} non-finite values (NaN/Inf)")


def ensure_safe_model_dir(path: Path) -> None:
    """A FULL directory must carry its weights as safetensors or plain torch tensors.

    transformers reads ``*.bin`` with ``weights_only=True``; anything else (pickled
    ``*.pkl``, remote code) is refused so that a model directory stays data.
    """
    if not path.is_dir():
        raise InvalidArgument(f"{path.name} is not a directory; a FULL checkpoint is a model directory")
    files = [p for p in path.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix.lower() in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES]
    if not weights:
        raise InvalidArgument(f"{path.name} holds no weights (*.safetensors or *.bin)")
    risky = [p for p in files if p.suffix.lower() in (".pkl", ".pickle", ".py")]
    if risky:
        raise InvalidArgument(f"{path.name} contains {risky[0].name}: pickles and code are not loaded")


# --- copies of encoders ----------------------------------------------------------------
def _module_path(root: torch.nn.Module, target: torch.nn.Module) -> str | None:
    for name, module in root.named_modules():
        if module is target:
            return name
    return None


def copy_encoder(base: TextEncoder, name: str = "") -> TextEncoder:
    """A deep copy of ``base`` (weights and tokenizer) that can be edited freely.

    The tokenizer is copied too: each TextEncoder serialises its own tokenizer with its
    own lock, so two encoders must not share one Rust tokenizer.
    """
    model = copy.deepcopy(base.model)
    backbone = model
    if base.backbone is not base.model:
        path = _module_path(base.model, base.backbone)
        backbone = model.get_submodule(path) if path else model
    return TextEncoder(model, copy.deepcopy(base.tokenizer), base.config, backbone=backbone,
                       name=name or base.name)


def split_by_role(tensors: Mapping[str, torch.Tensor], shared: bool) -> dict[str, dict[str, torch.Tensor]]:
    """Group a BOTH-role file by side: ``query.*`` / ``context.*`` for a two-tower base.

    For a shared-weight base the names are the model's own, applied once.
    """
    if shared:
        if any(k.startswith(("query.", "context.")) for k in tensors):
            raise InvalidArgument("the base shares one model for both sides; tensor names must not carry "
                                  "'query.'/'context.' prefixes")
        return {"both": dict(tensors)}
    groups: dict[str, dict[str, torch.Tensor]] = {"query": {}, "context": {}}
    for key, tensor in tensors.items():
        side, _, rest = key.partition(".")
        if side not in groups or not rest:
            raise InvalidArgument(f"tensor {key!r}: a BOTH-role checkpoint for a two-tower base names tensors "
                                  "'query.<name>' or 'context.<name>'")
        groups[side][rest] = tensor
    return {k: v for k, v in groups.items() if v}


def apply_delta(base: TextEncoder, tensors: Mapping[str, torch.Tensor], name: str = "") -> TextEncoder:
    """A copy of ``base`` with ``tensors`` replacing same-named parameters/buffers.

    Raises:
        InvalidArgument: an unknown tensor name or a shape that differs from the base.
    """
    state = base.model.state_dict()
    for key, tensor in tensors.items():
        if key not in state:
            sample = ", ".join(sorted(state)[:3])
            raise InvalidArgument(f"delta tensor {key!r} is not in the base model ({len(state)} tensors, "
                                  f"e.g. {sample})")
        if tuple(tensor.shape) != tuple(state[key].shape):
            raise InvalidArgument(f"delta tensor {key!r} has shape {tuple(tensor.shape)}; the base has "
                                  f"{tuple(state[key].shape)}")
        if tensor.is_floating_point() != state[key].is_floating_point():
            raise InvalidArgument(f"delta tensor {key!r} is {tensor.dtype}; the base has {state[key].dtype}")
    edited = copy_encoder(base, name)
    new_state = edited.model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, tensor in tensors.items():
            target = new_state[key]
            target.copy_(tensor.to(dtype=target.dtype))
    return edited


def _group_patch(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = PATCH_KEY.match(key)
        if match is None:
            raise InvalidArgument(f"patch tensor {key!r} is not a Transformer-Patcher tensor; expected "
                                  "'encoder.layer.<i>.intermediate.dense.weight|bias' or "
                                  "'encoder.layer.<i>.output.dense.weight'")
        layer = match.group("prefix") + match.group("layer")
        layers.setdefault(layer, {})[match.group("part")] = tensor
    return layers


def apply_patch(base: TextEncoder, tensors: Mapping[str, torch.Tensor], name: str = "") -> tuple[TextEncoder, int]:
    """A copy of ``base`` whose patched layers' FFNs carry the extra neurons.

    For layer ``i`` with ``e`` extra neurons, ``intermediate.dense`` becomes
    ``Linear(hidden, I + e)`` (old rows then the new ones) and ``output.dense`` becomes
    ``Linear(I + e, hidden)`` (old columns then the new ones, bias unchanged), so the layer
    computes its old FFN plus ``W_out_new · act(W_in_new · x + b_new)``.

    Returns:
        (patched encoder, total extra neurons).

    Raises:
        InvalidArgument: missing parts, a layer the base lacks, or inconsistent shapes.
    """
    layers = _group_patch(tensors)
    plans: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for layer, parts in sorted(layers.items()):
        missing = {"intermediate.dense.weight", "intermediate.dense.bias", "output.dense.weight"} - set(parts)
        if missing:
            raise InvalidArgument(f"patch for {layer} lacks {sorted(missing)}")
        try:
            inter = base.model.get_submodule(f"{layer}.intermediate.dense")
            out = base.model.get_submodule(f"{layer}.output.dense")
        except AttributeError:
            raise InvalidArgument(f"patch names {layer}, which the base model does not have") from None
        if not isinstance(inter, torch.nn.Linear) or not isinstance(out, torch.nn.Linear):
            raise InvalidArgument(f"{layer} FFN is not made of Linear layers; cannot patch it")
        w_in, b_in, w_out = (parts["intermediate.dense.weight"], parts["intermediate.dense.bias"],
                             parts["output.dense.weight"])
        extra = w_in.shape[0] if w_in.dim() == 2 else -1
        hidden = inter.in_features
        if w_in.dim() != 2 or w_in.shape[1] != hidden or extra < 1:
            raise InvalidArgument(f"{layer}.intermediate.dense.weight has shape {tuple(w_in.shape)}; "
                                  f"expected [extra>=1, {hidden}]")
        if tuple(b_in.shape) != (extra,):
            raise InvalidArgument(f"{layer}.intermediate.dense.bias has shape {tuple(b_in.shape)}; expected [{extra}]")
        if tuple(w_out.shape) != (out.out_features, extra):
            raise InvalidArgument(f"{layer}.output.dense.weight has shape {tuple(w_out.shape)}; "
                                  f"expected [{out.out_features}, {extra}]")
        plans.append((layer, w_in, b_in, w_out))
    edited = copy_encoder(base, name)
    total = 0
    with torch.no_grad():
        for layer, w_in, b_in, w_out in plans:
            inter = edited.model.get_submodule(f"{layer}.intermediate.dense")
            out = edited.model.get_submodule(f"{layer}.output.dense")
            extra = w_in.shape[0]
            wide_in = torch.nn.Linear(inter.in_features, inter.out_features + extra, bias=inter.bias is not None,
                                      dtype=inter.weight.dtype)
            wide_in.weight.copy_(torch.cat([inter.weight, w_in.to(inter.weight.dtype)], dim=0))
            if inter.bias is not None:
                wide_in.bias.copy_(torch.cat([inter.bias, b_in.to(inter.bias.dtype)], dim=0))
            wide_out = torch.nn.Linear(out.in_features + extra, out.out_features, bias=out.bias is not None,
                                       dtype=out.weight.dtype)
            wide_out.weight.copy_(torch.cat([out.weight, w_out.to(out.weight.dtype)], dim=1))
            if out.bias is not None:
                wide_out.bias.copy_(out.bias)
            _set_submodule(edited.model, f"{layer}.intermediate.dense", wide_in.eval())
            _set_submodule(edited.model, f"{layer}.output.dense", wide_out.eval())
            total += extra
    edited.model.eval()
    return edited, total


def _set_submodule(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, module)


# --- making deltas ---------------------------------------------------------------------
def diff_state_dicts(base: Mapping[str, torch.Tensor], edited: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``edited`` that differ from ``base`` (bitwise), for ``delta make``.

    Raises:
        InvalidArgument: the two models do not have the same tensor names and shapes.
    """
    if set(base) != set(edited):
        only_base = sorted(set(base) - set(edited))[:3]
        only_edit = sorted(set(edited) - set(base))[:3]
        raise InvalidArgument(f"the models differ in tensor names (only in base: {only_base}, only in edited: "
                              f"{only_edit}); a delta needs the same architecture")
    changed: dict[str, torch.Tensor] = {}
    for key in sorted(base):
        a, b = base[key], edited[key]
        if tuple(a.shape) != tuple(b.shape):
            raise InvalidArgument(f"tensor {key!r} changed shape {tuple(a.shape)} -> {tuple(b.shape)}; "
                                  "a delta cannot change shapes (use PATCH for extra neurons)")
        if a.dtype != b.dtype or not torch.equal(a, b):
            changed[key] = b.detach().contiguous().clone()
    return changed


def delta_size_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
