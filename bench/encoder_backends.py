"""Encoder backends side by side: torch fp32 vs ONNX Runtime fp32 vs ORT int8 vs torch bf16.

Per backend: query latency at batch 1 (median over NQ questions), passage throughput at
batch 64 (real Wikipedia passages), cosine agreement with torch fp32, and top-10 overlap
of retrieval over real passage embeddings (index built with torch, as deployed). Quality
is measured on queries encoded in batches of 64, as the micro-batcher serves them.

"ort int8" is the served recipe (``encoders/quantization.py``: outlier smoothing + dynamic
per-channel int8); with ``--plain-int8`` the old plain per-channel ``quantize_dynamic``
file is measured beside it, for the comparison in bench/RESULTS.md. "torch bf16" (autocast,
``--quantize bf16``) is measured where the CPU has native bf16 (AMX or AVX512-BF16).

    python bench/encoder_backends.py [--questions 200] [--passages 256] [--threads 2] [--plain-int8]

Target (issue 6): int8 >= 2x torch fp32 speed, cosine >= 0.99, top-10 overlap >= 0.95.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faiss
import torch
from _common import ROOT, nq_questions, print_table
from index_scale import base_embeddings, real_passage_rows

from dprscope.encoders import BiEncoder, load_bi_encoder
from dprscope.encoders.mixed_precision import bf16_in_use
from dprscope.encoders.onnx_backend import OrtOptions, int8_precision, to_onnx
from dprscope.encoders.runtime import apply_backend


def plain_int8(recipe_bi: BiEncoder, cache: Path, threads: int) -> BiEncoder:
    """The pre-recipe int8 (plain per-channel quantize_dynamic) behind the same encoder code."""
    import copy

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    enc = recipe_bi.query
    fp32 = enc.onnx_path.with_name(enc.onnx_path.name.replace(f"-{int8_precision()}.onnx", "-fp32.onnx"))
    path = cache / f"{fp32.stem}-plain-int8-pc.onnx"
    if not path.is_file():
        quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8)
    plain = copy.copy(enc)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    plain.session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    plain.onnx_path = path
    return BiEncoder(query=plain, context=plain, kind=recipe_bi.kind, source=recipe_bi.source,
                     metric=recipe_bi.metric, extra=dict(recipe_bi.extra))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--passages", type=int, default=256, help="passages for the batch-64 throughput")
    p.add_argument("--threads", type=int, default=2, help="torch threads and ORT intra-op threads")
    p.add_argument("--plain-int8", action="store_true", help="also measure plain per-channel int8 (no smoothing)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cache = ROOT / "out" / "onnx-cache"
    torch_bi = load_bi_encoder("default")
    backends = {
        "torch fp32": torch_bi,
        "ort fp32": to_onnx(torch_bi, OrtOptions(cache_dir=cache, intra_op_threads=args.threads)),
        "ort int8": to_onnx(torch_bi, OrtOptions(cache_dir=cache, intra_op_threads=args.threads, quantize="int8")),
    }
    if args.plain_int8:
        backends["ort int8 plain per-channel"] = plain_int8(backends["ort int8"], cache, args.threads)
    bf16 = apply_backend(torch_bi, backend="torch", quantize="bf16", device="cpu")
    if bf16_in_use(bf16):  # native bf16 only (AMX / AVX512-BF16); elsewhere it would be fp32 again
        backends["torch bf16 (autocast)"] = bf16
    questions = nq_questions(args.questions)
    rows = real_passage_rows(args.passages)
    index = faiss.IndexFlatIP(384)
    index.add(base_embeddings())  # 4000 real passages (ORT fp32 == torch to 1e-5)
    ref = torch_bi.encode_queries(questions)
    _, ref_top = index.search(ref, 10)
    table = []
    base_q = base_p = None
    for name, bi in backends.items():
        bi.encode_queries(questions[:4])
        lat = []
        for q in questions:
            t = time.perf_counter()
            bi.encode_queries([q], batch_size=1)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        bi.encode_passages([r[2] for r in rows], [r[1] for r in rows], batch_size=64)
        pps = len(rows) / (time.perf_counter() - t)
        got = bi.encode_queries(questions)
        cos = (ref * got).sum(1)
        _, top = index.search(got, 10)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref_top, top, strict=True)])
        q_ms = float(np.median(lat)) * 1e3
        base_q = base_q or q_ms
        base_p = base_p or pps
        table.append([name, f"{q_ms:.2f}", f"{base_q / q_ms:.1f}x", f"{pps:.0f}", f"{pps / base_p:.1f}x",
                      f"{cos.mean():.4f}", f"{cos.min():.4f}", f"{overlap:.3f}"])
    print(f"# {len(questions)} NQ dev questions, {len(rows)} passages at batch 64, {args.threads} threads")
    print_table(["backend", "query b1 ms (p50)", "speedup", "passages/s b64", "speedup", "cos mean", "cos min",
                 "top-10 overlap"], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
