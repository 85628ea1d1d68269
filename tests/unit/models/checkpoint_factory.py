"""Builders for the checkpoints hot-swap tests load: edited copies, deltas, patches, tiny BERTs.

Shared by the unit tests here and the ModelAdmin integration tests, so both exercise the
same files an edit pipeline would ship.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dprscope.encoders.loading import default_model_dir

EDIT_LAYER = "encoder.layer.5.output.dense.weight"
# Questions the hot-swap tests ask before and after a swap (real NQ-style questions).
SWAP_QUESTIONS = ["who wrote the declaration of independence", "what is the capital of australia",
                  "when did the first world war start", "how many legs does a spider have"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def copy_embedded_model(dest: Path) -> Path:
    """A writable copy of the embedded sentence-transformers directory."""
    shutil.copytree(default_model_dir(), dest)
    return dest


def edited_state(scale: float = 1.5, key: str = EDIT_LAYER) -> dict[str, torch.Tensor]:
    """The embedded model's weights with one tensor scaled: a measurable, deterministic edit."""
    state = load_file(str(default_model_dir() / "model.safetensors"))
    state[key] = (state[key] * scale).contiguous()
    return state


def write_edited_model(dest: Path, scale: float = 1.5, key: str = EDIT_LAYER) -> Path:
    """A full edited sentence-transformers directory (FULL checkpoint)."""
    copy_embedded_model(dest)
    save_file(edited_state(scale, key), str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def write_delta(path: Path, scale: float = 1.5, key: str = EDIT_LAYER) -> Path:
    """A DELTA file holding only the scaled tensor."""
    save_file({key: edited_state(scale, key)[key]}, str(path))
    return path


def write_nan_delta(path: Path, key: str = EDIT_LAYER) -> Path:
    tensor = edited_state(1.0, key)[key].clone()
    tensor[0, 0] = float("nan")
    save_file({key: tensor}, str(path))
    return path


def patch_tensors(layer: int, extra: int, hidden: int = 384, seed: int = 0,
                  scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Transformer-Patcher tensors for ``layer`` with ``extra`` neurons."""
    g = torch.Generator().manual_seed(seed)
    prefix = f"encoder.layer.{layer}"
    return {
        f"{prefix}.intermediate.dense.weight": torch.randn(extra, hidden, generator=g) * scale,
        f"{prefix}.intermediate.dense.bias": torch.randn(extra, generator=g) * scale,
        f"{prefix}.output.dense.weight": torch.randn(hidden, extra, generator=g) * scale,
    }


def write_patch(path: Path, layer: int = 3, extra: int = 4, seed: int = 0) -> Path:
    save_file(patch_tensors(layer, extra, seed=seed), str(path))
    return path


def write_tiny_bert(dest: Path, hidden: int = 32) -> Path:
    """A random BERT with a small hidden size plus the embedded tokenizer (wrong-dim checkpoint)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(dest))
    for name in TOKENIZER_FILES:
        source = default_model_dir() / name
        if source.exists():
            shutil.copy(source, dest / name)
    return dest


def widened_model(base: torch.nn.Module, layer: int, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The equivalent full model of a patch: every FFN widened by ``extra``, zero-padded except ``layer``.

    Zero rows in ``intermediate.dense`` give act(0) = 0 for GELU and zero columns in
    ``output.dense`` multiply it away, so unpatched layers compute exactly what they did.
    """
    from transformers import BertModel

    prefix = f"encoder.layer.{layer}"
    w_in = tensors[f"{prefix}.intermediate.dense.weight"]
    extra = w_in.shape[0]
    config = base.config.__class__.from_dict(base.config.to_dict())
    config.intermediate_size = base.config.intermediate_size + extra
    wide = BertModel(config, add_pooling_layer=getattr(base, "pooler", None) is not None).eval()
    state = base.state_dict()
    new_state = {}
    for key, value in wide.state_dict().items():
        old = state[key]
        if old.shape == value.shape:
            new_state[key] = old
            continue
        padded = torch.zeros_like(value)
        if key.endswith("intermediate.dense.weight"):
            padded[: old.shape[0]] = old
            if key.startswith(prefix + "."):
                padded[old.shape[0]:] = w_in
        elif key.endswith("intermediate.dense.bias"):
            padded[: old.shape[0]] = old
            if key.startswith(prefix + "."):
                padded[old.shape[0]:] = tensors[f"{prefix}.intermediate.dense.bias"]
        elif key.endswith("output.dense.weight"):
            padded[:, : old.shape[1]] = old
            if key.startswith(prefix + "."):
                padded[:, old.shape[1]:] = tensors[f"{prefix}.output.dense.weight"]
        else:
            raise AssertionError(f"unexpected shape change in {key}")
        new_state[key] = padded
    wide.load_state_dict(new_state)
    return wide
