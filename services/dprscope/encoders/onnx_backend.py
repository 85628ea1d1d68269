"""ONNX Runtime encoder backend: the same vectors as torch, 2-4x faster on a CPU.

Each distinct ``TextEncoder`` (one for sentence-transformers models, two for a DPR pair)
is exported once with ``torch.onnx.export``, pooling and normalisation included in the
graph, so ONNX Runtime returns the final ``sentence_embedding``. (The output is not called
``embedding``: that name clashes with an internal value and ORT refuses the file.)

Exports are cached as ``<cache_dir>/<fingerprint>-<pooling>[-norm]-<precision>.onnx``: the
weight fingerprint plus what else is baked into the graph, so a different checkpoint or
pooling can never pick up a stale file. Every file is written to a temp name and renamed,
so two processes exporting at once each see a whole file. ``int8`` is the recipe in
``quantization.py`` (outlier smoothing calibrated on built-in texts, then dynamic
per-channel int8): plain per-channel int8 reached cosine 0.993 but top-10 overlap only
0.91, the per-tensor default 0.95 / 0.78 (STACK-NOTES.md). The int8 file name carries the
recipe (``-int8-<recipe>``), so changing the recipe never reuses an old quantised file.

``OnnxTextEncoder`` keeps the torch encoder it came from: ``model``, ``backbone`` and
``fingerprint`` are the torch ones, because manifests, hot-swap validation and the
analysis sidecar all need real weights; only ``encode`` runs on ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dprscope.encoders.bi_encoder import BiEncoder
from dprscope.encoders.text_encoder import DEFAULT_ENCODE_BATCH, EncoderConfig, TextEncoder

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("none", "int8")
OUTPUT_NAME = "sentence_embedding"
EXPORT_FORMAT = 1  # bump when the exported graph changes meaning; part of the cache key
OPSET = 18


def default_cache_dir() -> Path:
    """``~/.cache/dprscope/onnx``: per user, never inside site-packages or the model dir."""
    return Path.home() / ".cache" / "dprscope" / "onnx"


def _normalize_quantize(quantize: str | None) -> str:
    mode = (quantize or "none").strip().lower()
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize {quantize!r} is not one of {QUANTIZE_MODES}")
    return mode


class _Pooled(torch.nn.Module):
    """The encoder's forward + pooling + normalisation as one traceable module."""

    def __init__(self, encoder: TextEncoder, model: torch.nn.Module, with_token_types: bool) -> None:
        super().__init__()
        self.model = model
        self.config = encoder.config
        self.with_token_types = with_token_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        from dprscope.encoders.pooling import pool

        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        hidden = getattr(out, "last_hidden_state", None)
        pooled = getattr(out, "pooler_output", None)
        vectors = pool(self.config.pooling, hidden, attention_mask, pooled)
        if self.config.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors


def cache_key(encoder: TextEncoder, precision: str) -> str:
    cfg = encoder.config
    norm = "-norm" if cfg.normalize else ""
    return f"{encoder.fingerprint}-{cfg.pooling}{norm}-v{EXPORT_FORMAT}-{precision}"


def _eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy with eager attention: ORT fuses attention only in eager exports."""
    clone = copy.deepcopy(model).to("cpu").eval()
    setter = getattr(clone, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter("eager")
        else:
            clone.config._attn_implementation = "eager"
    except Exception as exc:  # older/odd models: sdpa still exports, just unfused
        log.debug("could not switch %s to eager attention: %s", type(model).__name__, exc)
    return clone


def _atomic_move(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    try:
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def export_onnx(encoder: TextEncoder, path: Path) -> Path:
    """Export ``encoder`` (forward + pooling + normalize) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = encoder.tokenize(["a short probe", "a somewhat longer probe sentence for shapes"],
                              ["t", "title"] if encoder.config.passage_format == "pair" else None)
    with_types = "token_type_ids" in sample
    module = _Pooled(encoder, _eager_copy(encoder.model), with_types).eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        # Tracing HF models always warns (python bools from shapes); the dynamic axes are
        # declared, and the fp32 test pins the export to torch at cosine 0.9999.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, args, str(tmp_file), input_names=names, output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        _inline_external_data(tmp_file)
        _atomic_move(tmp_file, path)
    log.info("exported %s (%s) to %s", encoder.name or "encoder", encoder.fingerprint[:12], path)
    return path


def _inline_external_data(path: Path) -> None:
    """Make the export one self-contained file (external data would break the atomic rename)."""
    siblings = [p for p in path.parent.iterdir() if p != path]
    if not siblings:
        return
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    onnx.save_model(model, str(path), save_as_external_data=False)


def int8_precision() -> str:
    """The int8 part of the cache key: precision plus the quantisation recipe."""
    from dprscope.encoders.quantization import RECIPE

    return f"int8-{RECIPE}"


def calibration_feeds(encoder: TextEncoder) -> list[dict[str, np.ndarray]]:
    """The built-in calibration texts as ``encoder`` feeds them: one at a time and padded.

    The padded batches matter: serving encodes micro-batches, and the [PAD] positions of
    a batch carry outlier channels of their own; calibrating without them left batched
    queries at top-10 overlap 0.947 instead of 0.954 (500 NQ questions).
    """
    from dprscope.encoders.calibration import calibration_inputs

    questions, passages = calibration_inputs()
    titles, texts = [t for t, _ in passages], [x for _, x in passages]
    feeds = [encoder.tokenize([q]) for q in questions]
    feeds += [encoder.tokenize([text], [title]) for title, text in passages]
    feeds += [encoder.tokenize(questions), encoder.tokenize(texts, titles), encoder.tokenize(questions + texts)]
    return [{k: v.numpy().astype(np.int64) for k, v in f.items()} for f in feeds]


def quantize_int8(fp32_path: Path, path: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """The int8 recipe (``quantization.py``) calibrated on ``feeds``, written atomically."""
    from dprscope.encoders.quantization import RECIPE, quantize_smoothed_int8

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".quant-") as tmp:
        tmp_file = Path(tmp) / "model.int8.onnx"
        with _quiet_root_info():
            quantize_smoothed_int8(fp32_path, tmp_file, feeds)
        _atomic_move(tmp_file, path)
    log.info("quantized %s -> %s (int8 recipe %s)", fp32_path.name, path.name, RECIPE)
    return path


class _DropRootInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_root_info() -> Iterator[None]:
    """The quantizer logs one INFO line per tensor on the root logger; keep server logs readable."""
    root = logging.getLogger()
    drop = _DropRootInfo()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


_export_lock = threading.Lock()


def ensure_onnx(encoder: TextEncoder, quantize: str | None = None, cache_dir: Path | None = None) -> Path:
    """Return the cached ONNX file for ``encoder`` (exporting/quantising it first if missing)."""
    mode = _normalize_quantize(quantize)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fp32 = cache / f"{cache_key(encoder, 'fp32')}.onnx"
    with _export_lock:
        if not fp32.is_file():
            export_onnx(encoder, fp32)
        else:
            log.info("reusing cached ONNX export %s", fp32)
        if mode == "none":
            return fp32
        int8 = cache / f"{cache_key(encoder, int8_precision())}.onnx"
        if not int8.is_file():
            quantize_int8(fp32, int8, calibration_feeds(encoder))
        return int8


def ort_providers(device: str = "auto") -> list[str]:
    """Execution providers for ``device``: CUDA first when asked for (or auto) and available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    base = (device or "auto").split(":", 1)[0].lower()
    if base == "cuda" and "CUDAExecutionProvider" not in available:
        raise ValueError("device 'cuda' requested but onnxruntime has no CUDAExecutionProvider "
                         "(install the [gpu] extra on a CUDA machine)")
    if base in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class OrtOptions:
    """How sessions run: threads per op (0 = ORT's default, one per physical core), device."""

    intra_op_threads: int = 0
    device: str = "auto"
    quantize: str | None = None
    cache_dir: Path | None = None


class OnnxTextEncoder(TextEncoder):
    """A ``TextEncoder`` whose ``encode`` runs an ONNX Runtime session.

    Tokenisation returns numpy directly (no torch tensors on the query path) and inputs
    keep the length-sorted batching of the torch encoder. ``InferenceSession.run`` is
    thread-safe, so one session serves every thread.
    """

    def __init__(self, source: TextEncoder, options: OrtOptions = OrtOptions()) -> None:
        import onnxruntime as ort

        super().__init__(source.model, source.tokenizer, source.config, backbone=source.backbone,
                         name=source.name)
        self.torch_encoder = source
        self._tokenizer_lock = source._tokenizer_lock  # one Rust tokenizer, one lock
        self.options = options
        self.precision = "int8" if _normalize_quantize(options.quantize) == "int8" else "fp32"
        self.onnx_path = ensure_onnx(source, options.quantize, options.cache_dir)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.intra_op_threads:
            so.intra_op_num_threads = int(options.intra_op_threads)
        so.log_severity_level = 3
        # ORT's idle intra-op threads busy-spin by default; beside FAISS and gRPC threads on a
        # few cores that spinning steals the CPU the next request needs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = ort_providers(options.device)
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=so, providers=self.providers)
        self._input_names = [i.name for i in self.session.get_inputs()]
        log.info("ORT session for %s: %s, %s, providers %s", source.name or "encoder", self.onnx_path.name,
                 self.precision, self.session.get_providers())

    @property
    def config(self) -> EncoderConfig:
        return self.torch_encoder.config

    @config.setter
    def config(self, value: EncoderConfig) -> None:
        # TextEncoder.__init__ assigns config; later writes (max_length) go to the source.
        if hasattr(self, "torch_encoder"):
            self.torch_encoder.config = value

    @property
    def fingerprint(self) -> str:  # type: ignore[override]
        return self.torch_encoder.fingerprint

    @property
    def uses_packed_forward(self) -> bool:
        return False  # the session runs its own graph

    def tokenize_numpy(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Tokenize straight to int64 numpy, as the session wants it."""
        cfg = self.config
        with self._tokenizer_lock:
            if titles is not None and cfg.passage_format == "pair":
                enc = self.tokenizer(list(titles), list(texts), padding=True, truncation="longest_first",
                                     max_length=cfg.max_length, return_tensors="np")
            else:
                if titles is not None:
                    texts = [f"{t}: {x}" if t else x for t, x in zip(titles, texts, strict=True)]
                enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=cfg.max_length,
                                     return_tensors="np")
        feeds = {}
        for name in self._input_names:
            arr = enc[name] if name in enc else np.zeros_like(enc["input_ids"])
            feeds[name] = arr.astype(np.int64, copy=False)
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One session call on tokenized feeds -> ``[n, dim]`` float32."""
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None,
               batch_size: int = DEFAULT_ENCODE_BATCH) -> np.ndarray:
        """Encode texts (with ``titles``: passages) on ONNX Runtime; ``[n, dim]`` float32."""
        if titles is not None and len(titles) != len(texts):
            raise ValueError(f"{len(titles)} titles for {len(texts)} texts")
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if n == 1:  # the query fast path: no sorting, no scatter
            feeds = self.tokenize_numpy(texts, titles)
            return np.ascontiguousarray(self.run(feeds), dtype=np.float32)
        lengths = [len(t) + (len(titles[i]) if titles is not None else 0) for i, t in enumerate(texts)]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        result: np.ndarray | None = None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch_titles = [titles[i] for i in idx] if titles is not None else None
            out = self.run(self.tokenize_numpy([texts[i] for i in idx], batch_titles))
            if result is None:
                result = np.empty((n, out.shape[1]), dtype=np.float32)
            result[idx] = out
        return result if result is not None else np.zeros((0, self.dim), dtype=np.float32)


def to_onnx(bi: BiEncoder, options: OrtOptions = OrtOptions()) -> BiEncoder:
    """The same ``BiEncoder`` with ORT encoders; shared weights are exported (and run) once."""
    converted: dict[int, TextEncoder] = {}
    for enc in (bi.query, bi.context):
        if id(enc) in converted:
            continue
        if isinstance(enc, OnnxTextEncoder):
            converted[id(enc)] = enc
            continue
        converted[id(enc)] = OnnxTextEncoder(enc, options)
    extra = {**bi.extra, "backend": "onnx", "precision": _normalize_quantize(options.quantize)}
    return BiEncoder(query=converted[id(bi.query)], context=converted[id(bi.context)], kind=bi.kind,
                     source=bi.source, metric=bi.metric, extra=extra)


def clear_cache(cache_dir: Path | None = None) -> None:
    """Delete every cached export (operators' escape hatch; exports rebuild on next start)."""
    shutil.rmtree(Path(cache_dir) if cache_dir else default_cache_dir(), ignore_errors=True)
