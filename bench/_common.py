"""Shared helpers for the benchmarks: data paths, a bench index, a server subprocess, tables."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
PSGS = SHARED / "wikipedia-passages-combined" / "psgs.tsv"
NQ_DEV = SHARED / "nq-open" / "NQ-open.dev.jsonl"


def nq_questions(n: int) -> list[str]:
    out = []
    with NQ_DEV.open(encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["question"])
            if len(out) >= n:
                break
    return out


def psgs_head(out: Path, rows: int) -> Path:
    """The first ``rows`` passages of the combined corpus, as a psgs_w100-style TSV."""
    csv.field_size_limit(sys.maxsize)
    with PSGS.open(newline="", encoding="utf-8") as src, out.open("w", newline="", encoding="utf-8") as dst:
        reader, writer = csv.reader(src, delimiter="\t"), csv.writer(dst, delimiter="\t", lineterminator="\n")
        writer.writerow(next(reader))
        for i, row in enumerate(reader):
            if i >= rows:
                break
            writer.writerow(row)
    return out


def ensure_index(index_dir: Path, passages: int, index_type: str = "flat") -> Path:
    """Build (or resume, or reuse) a bench index of the first ``passages`` real passages."""
    from dprscope.encoders import load_bi_encoder
    from dprscope.index.builder import build_index
    from dprscope.progress_bar import ProgressBar

    if (index_dir / "manifest.json").exists():
        return index_dir
    index_dir.mkdir(parents=True, exist_ok=True)
    corpus = psgs_head(index_dir.parent / f"{index_dir.name}.tsv", passages)
    build_index(corpus, index_dir, load_bi_encoder("default"), index_type=index_type, progress=ProgressBar("passages"))
    return index_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_process(index_dir: Path, *extra: str, env_overrides: dict[str, str] | None = None
                         ) -> tuple[subprocess.Popen, int]:
    """``dprscope serve`` in its own process (so client threads don't share its GIL).

    ``env_overrides`` reach the server only (e.g. OpenMP knobs, read when its runtime loads).
    """
    port = free_port()
    env = {**os.environ, **(env_overrides or {})}
    proc = subprocess.Popen([sys.executable, "-m", "dprscope.cli", "--log-level", "WARNING", "serve", "--index",
                             str(index_dir), "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
                             "--analysis-port", "0", "--drain-seconds", "0", *extra], env=env)
    from dprscope_client import RetrieverClient

    with RetrieverClient(f"127.0.0.1:{port}") as c:
        c.wait_until_serving(timeout=300)
    return proc, port


def percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(samples_s) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
