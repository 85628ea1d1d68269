"""Top-k retrieval accuracy on NQ-open with the full combined Wikipedia corpus.

Builds (or reuses) an index of all 18,751 passages of
``../shared/data/wikipedia-passages-combined/psgs.tsv`` with the chosen model and asks
the 1,750 NQ-open dev questions of ``nq-open-oracle-gold``; a question counts as answered
at k when an answer string occurs in one of its top-k passages (DPR's rule).

    python bench/retrieval_quality.py [--questions 1750] [--index-type flat] [--model default]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from _common import PSGS, ROOT, SHARED, print_table

from dprscope.encoders import load_bi_encoder
from dprscope.evaluation import top_k_accuracy
from dprscope.index.builder import build_index
from dprscope.index.serving import ServingIndex
from dprscope.index.vector_index import SearchParams
from dprscope.progress_bar import ProgressBar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1750)
    parser.add_argument("--index-type", default="flat", choices=("flat", "hnsw", "ivfpq"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--index-dir", type=Path, default=ROOT / "out" / "quality-index")
    args = parser.parse_args()

    encoder = load_bi_encoder(args.model)
    index_dir = args.index_dir / args.index_type
    if not (index_dir / "manifest.json").exists():
        bar = ProgressBar("passages")
        build_index(PSGS, index_dir, encoder, index_type=args.index_type, progress=bar)
        bar.close()
    index = ServingIndex.open(index_dir)
    records = []
    with gzip.open(SHARED / "nq-open-oracle-gold" / "nq-open-oracle.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            records.append(json.loads(line))
            if len(records) >= args.questions:
                break
    started = time.perf_counter()
    vectors = encoder.encode_queries([r["question"] for r in records])
    _, rows = index.search(vectors, 20, SearchParams())
    elapsed = time.perf_counter() - started
    texts = [[p.text for p in index.passages(r)] for r in rows]
    acc = top_k_accuracy(texts, [r["answers"] for r in records], ks=(1, 5, 20, ))
    print(f"\n{len(records)} NQ-open questions, {index.manifest.passages} passages, {args.index_type}, "
          f"{args.model}; {elapsed:.1f}s to encode + search\n")
    print_table(["k", "top-k accuracy"], [[k, f"{v * 100:.1f}%"] for k, v in sorted(acc.accuracy.items())])


if __name__ == "__main__":
    main()
