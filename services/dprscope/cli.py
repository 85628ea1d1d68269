"""The ``dprscope`` command line: serve, build-index, import-embeddings, search, demo, ...

Every ``serve`` flag has a ``DPRSCOPE_<FLAG>`` environment counterpart (``--metrics-port``
-> ``DPRSCOPE_METRICS_PORT``); a flag on the command line wins over the environment.
This is the only module that reads the environment or configures logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dprscope import settings as S  # noqa: N812 - S.DEFAULT_* reads like a table

log = logging.getLogger("dprscope.cli")

OPTIONAL_COMMAND_MODULES = ("dprscope.commands.admin", "dprscope.commands.analysis")
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_DEMO_DIR = Path("demo-index")
# Mirrors dprscope.index.INDEX_TYPE_CHOICES (a test keeps them equal) so that parsing
# arguments does not import faiss.
INDEX_TYPE_CHOICES = ("auto", "flat", "hnsw", "ivfpq")
AUTO_INDEX_TYPE = "auto"
INDEX_TYPE_HELP = ("auto (default): exact flat up to 200,000 passages, IVF-PQ with exact re-ranking "
                   "beyond; see docs/scale.md")


def _quantize(choice: str) -> str | None:
    """The ``--quantize`` choice as the runtime takes it: ``none`` means no quantisation."""
    return None if choice == "none" else choice


def _env(name: str, default: Any, cast: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get("DPRSCOPE_" + name)
    if raw is None or raw == "":
        return default
    return cast(raw)


def _bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _optional_path(raw: str | None) -> Path | None:
    return Path(raw) if raw else None


def _add_serve_flags(p: argparse.ArgumentParser, index_required: bool = True) -> None:
    """Flags shared by ``serve`` and ``demo``; defaults come from DPRSCOPE_* variables."""
    if index_required:
        index_default = _env("INDEX", None)
        p.add_argument("--index", type=Path, default=index_default, required=index_default is None,
                       help="index directory to serve [DPRSCOPE_INDEX]")
    p.add_argument("--model", default=_env("MODEL", S.DEFAULT_MODEL),
                   help="'default', a sentence-transformers or HF dir, or 'dpr:QDIR,CDIR' [DPRSCOPE_MODEL]")
    p.add_argument("--pooling", choices=("mean", "cls"), default=_env("POOLING", None),
                   help="pooling for a plain HF BERT directory [DPRSCOPE_POOLING]")
    p.add_argument("--model-version", default=_env("MODEL_VERSION", S.DEFAULT_MODEL_VERSION),
                   help="name of the initial model version [DPRSCOPE_MODEL_VERSION]")
    p.add_argument("--backend", choices=S.BACKENDS, default=_env("BACKEND", S.DEFAULT_BACKEND),
                   help="encoder runtime [DPRSCOPE_BACKEND]")
    p.add_argument("--quantize", choices=S.QUANTIZE_MODES, default=_env("QUANTIZE", "none"),
                   help="int8: ONNX outlier-smoothed per-channel int8 (needs --backend onnx); bf16: torch "
                        "autocast on AMX/AVX512-BF16 CPUs and GPUs (needs --backend torch) [DPRSCOPE_QUANTIZE]")
    p.add_argument("--device", default=_env("DEVICE", S.DEFAULT_DEVICE),
                   help="auto, cpu or cuda[:N]; auto picks cuda when present [DPRSCOPE_DEVICE]")
    p.add_argument("--onnx-cache-dir", type=Path, default=_env("ONNX_CACHE_DIR", None, Path),
                   help="where ONNX exports are cached (default ~/.cache/dprscope/onnx) [DPRSCOPE_ONNX_CACHE_DIR]")
    p.add_argument("--host", default=_env("HOST", S.DEFAULT_HOST), help="bind address [DPRSCOPE_HOST]")
    p.add_argument("--port", type=int, default=_env("PORT", S.DEFAULT_PORT, int),
                   help="Retriever + ModelAdmin gRPC port [DPRSCOPE_PORT]")
    p.add_argument("--analysis-port", type=int, default=_env("ANALYSIS_PORT", S.DEFAULT_ANALYSIS_PORT, int),
                   help="Analysis sidecar gRPC port; 0 disables it [DPRSCOPE_ANALYSIS_PORT]")
    p.add_argument("--metrics-port", type=int, default=_env("METRICS_PORT", S.DEFAULT_METRICS_PORT, int),
                   help="Prometheus /metrics HTTP port; 0 disables it [DPRSCOPE_METRICS_PORT]")
    p.add_argument("--admin-token-file", type=Path, default=_optional_path(_env("ADMIN_TOKEN_FILE", None)),
                   help="file holding the ModelAdmin bearer token [DPRSCOPE_ADMIN_TOKEN_FILE; "
                        "or the token itself in DPRSCOPE_ADMIN_TOKEN]")
    p.add_argument("--checkpoint-root", type=Path, default=_optional_path(_env("CHECKPOINT_ROOT", None)),
                   help="LoadCheckpoint paths must resolve inside this directory [DPRSCOPE_CHECKPOINT_ROOT]")
    p.add_argument("--data-root", type=Path, default=_optional_path(_env("DATA_ROOT", None)),
                   help="Probe/ActivationStats data_path must resolve inside this directory [DPRSCOPE_DATA_ROOT]")
    p.add_argument("--reindex-dir", type=Path, default=_optional_path(_env("REINDEX_DIR", None)),
                   help="where shadow indexes are built (default: beside the index) [DPRSCOPE_REINDEX_DIR]")
    p.add_argument("--canary-file", type=Path, default=_optional_path(_env("CANARY_FILE", None)),
                   help="canary queries (one per line) used to validate checkpoints [DPRSCOPE_CANARY_FILE]")
    p.add_argument("--keep-previous", type=int, default=_env("KEEP_PREVIOUS", S.DEFAULT_KEEP_PREVIOUS, int),
                   help="previously active versions kept loaded for rollback [DPRSCOPE_KEEP_PREVIOUS]")
    p.add_argument("--tls-cert", type=Path, default=_optional_path(_env("TLS_CERT", None)),
                   help="PEM server certificate [DPRSCOPE_TLS_CERT]")
    p.add_argument("--tls-key", type=Path, default=_optional_path(_env("TLS_KEY", None)),
                   help="PEM server key [DPRSCOPE_TLS_KEY]")
    p.add_argument("--tls-client-ca", type=Path, default=_optional_path(_env("TLS_CLIENT_CA", None)),
                   help="PEM CA that client certificates must chain to (enables mTLS) [DPRSCOPE_TLS_CLIENT_CA]")
    limits = p.add_argument_group("limits")
    limits.add_argument("--default-top-k", type=int, default=_env("DEFAULT_TOP_K", S.DEFAULT_TOP_K, int),
                        help="top_k used when a request sends 0 [DPRSCOPE_DEFAULT_TOP_K]")
    limits.add_argument("--max-top-k", type=int, default=_env("MAX_TOP_K", S.DEFAULT_MAX_TOP_K, int),
                        help="largest top_k accepted [DPRSCOPE_MAX_TOP_K]")
    limits.add_argument("--max-query-bytes", type=int,
                        default=_env("MAX_QUERY_BYTES", S.DEFAULT_MAX_QUERY_BYTES, int),
                        help="largest query in UTF-8 bytes [DPRSCOPE_MAX_QUERY_BYTES]")
    limits.add_argument("--max-batch-queries", type=int,
                        default=_env("MAX_BATCH_QUERIES", S.DEFAULT_MAX_BATCH_QUERIES, int),
                        help="most queries in one BatchSearch [DPRSCOPE_MAX_BATCH_QUERIES]")
    limits.add_argument("--max-passage-ids", type=int,
                        default=_env("MAX_PASSAGE_IDS", S.DEFAULT_MAX_PASSAGE_IDS, int),
                        help="most ids in one GetPassages [DPRSCOPE_MAX_PASSAGE_IDS]")
    limits.add_argument("--max-message-bytes", type=int,
                        default=_env("MAX_MESSAGE_BYTES", S.DEFAULT_MAX_MESSAGE_BYTES, int),
                        help="largest gRPC message either way [DPRSCOPE_MAX_MESSAGE_BYTES]")
    limits.add_argument("--encode-max-batch", type=int,
                        default=_env("ENCODE_MAX_BATCH", S.DEFAULT_ENCODE_MAX_BATCH, int),
                        help="most queries per encoder forward pass [DPRSCOPE_ENCODE_MAX_BATCH]")
    limits.add_argument("--encode-max-wait-ms", type=float,
                        default=_env("ENCODE_MAX_WAIT_MS", S.DEFAULT_ENCODE_MAX_WAIT_MS, float),
                        help="longest wait to fill a batch under load [DPRSCOPE_ENCODE_MAX_WAIT_MS]")
    limits.add_argument("--queue-size", type=int, default=_env("QUEUE_SIZE", S.DEFAULT_QUEUE_SIZE, int),
                        help="encode queue length; beyond it RESOURCE_EXHAUSTED [DPRSCOPE_QUEUE_SIZE]")
    limits.add_argument("--max-inflight", type=int, default=_env("MAX_INFLIGHT", S.DEFAULT_MAX_INFLIGHT, int),
                        help="concurrent requests per server before RESOURCE_EXHAUSTED [DPRSCOPE_MAX_INFLIGHT]")
    limits.add_argument("--grpc-workers", type=int, default=_env("GRPC_WORKERS", S.DEFAULT_GRPC_WORKERS, int),
                        help="threads for blocking handlers (ModelAdmin, GetPassages, health); "
                             "Search runs on the event loop [DPRSCOPE_GRPC_WORKERS]")
    limits.add_argument("--analysis-concurrency", type=int,
                        default=_env("ANALYSIS_CONCURRENCY", S.DEFAULT_ANALYSIS_CONCURRENCY, int),
                        help="analysis jobs running at once [DPRSCOPE_ANALYSIS_CONCURRENCY]")
    limits.add_argument("--analysis-queue", type=int, default=_env("ANALYSIS_QUEUE", S.DEFAULT_ANALYSIS_QUEUE, int),
                        help="analysis jobs waiting before RESOURCE_EXHAUSTED [DPRSCOPE_ANALYSIS_QUEUE]")
    limits.add_argument("--analysis-yield", action=argparse.BooleanOptionalAction,
                        default=_env("ANALYSIS_YIELD", S.DEFAULT_ANALYSIS_YIELD, _bool),
                        help="let Search go first: analysis threads run at lower OS priority and pause "
                             "between chunks while Search is busy [DPRSCOPE_ANALYSIS_YIELD]")
    limits.add_argument("--gil-switch-ms", type=float,
                        default=_env("GIL_SWITCH_MS", S.DEFAULT_GIL_SWITCH_MS, float),
                        help="Python GIL switch interval of the serving process; shorter lets the encoder "
                             "thread run between request threads sooner [DPRSCOPE_GIL_SWITCH_MS]")
    limits.add_argument("--omp-spincount", type=int,
                        default=_env("OMP_SPINCOUNT", S.DEFAULT_OMP_SPINCOUNT, int),
                        help="spin-wait iterations before an idle OpenMP worker of the encoder sleeps "
                             "(GOMP_SPINCOUNT; 3,000,000 is ~80 ms here): keeps the worker awake between "
                             "requests; 0 leaves the OpenMP default; a GOMP_SPINCOUNT or OMP_WAIT_POLICY "
                             "already in the environment wins [DPRSCOPE_OMP_SPINCOUNT]")
    limits.add_argument("--drain-seconds", type=float, default=_env("DRAIN_SECONDS", S.DEFAULT_DRAIN_S, float),
                        help="NOT_SERVING time before stopping on SIGTERM [DPRSCOPE_DRAIN_SECONDS]")
    limits.add_argument("--grace-seconds", type=float, default=_env("GRACE_SECONDS", S.DEFAULT_GRACE_S, float),
                        help="time in-flight requests get to finish on stop [DPRSCOPE_GRACE_SECONDS]")


def settings_from_args(args: argparse.Namespace, index_dir: Path | None = None) -> S.Settings:
    token = None
    if args.admin_token_file is not None:
        token = args.admin_token_file.read_text().strip() or None
    token = token or _env("ADMIN_TOKEN", None)
    limits = S.Limits(default_top_k=args.default_top_k, max_top_k=args.max_top_k,
                      max_query_bytes=args.max_query_bytes, max_batch_queries=args.max_batch_queries,
                      max_passage_ids=args.max_passage_ids, max_message_bytes=args.max_message_bytes)
    return S.Settings(
        index_dir=index_dir or args.index, model=args.model, model_version=args.model_version,
        pooling=args.pooling, backend=args.backend,
        quantize=_quantize(args.quantize), device=args.device,
        onnx_cache_dir=args.onnx_cache_dir, host=args.host, port=args.port,
        analysis_port=args.analysis_port or None, metrics_port=args.metrics_port or None, limits=limits,
        encode_max_batch=args.encode_max_batch, encode_max_wait_ms=args.encode_max_wait_ms,
        queue_size=args.queue_size, grpc_workers=args.grpc_workers, max_inflight=args.max_inflight,
        drain_s=args.drain_seconds, grace_s=args.grace_seconds, admin_token=token,
        checkpoint_root=args.checkpoint_root, data_root=args.data_root, keep_previous=args.keep_previous,
        canary_file=args.canary_file, analysis_concurrency=args.analysis_concurrency,
        analysis_queue=args.analysis_queue, analysis_yield=args.analysis_yield,
        gil_switch_ms=args.gil_switch_ms, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca, reindex_dir=args.reindex_dir)


def apply_omp_spincount(spincount: int) -> str | None:
    """Set libgomp's spin count for this process, before torch (and faiss) load libgomp.

    Why: between two requests the encoder's OpenMP worker spins for libgomp's default
    300,000 iterations (~9 ms here) and then sleeps. A Search at concurrency 1 comes back
    after about that long (search, reply, the client's next call), so the next forward pass
    often starts by waking a sleeping worker — and on a shared VM a vCPU that went idle
    can take milliseconds to get back. 3,000,000 (~80 ms) keeps it awake between requests
    and lets it sleep soon after traffic stops (Intel's OpenMP waits 200 ms by default).
    The cost is CPU: under sparse traffic one core spins up to that long after each request.

    Returns the value now in effect, or None where this left libgomp's default alone.
    """
    if spincount < 0:
        from dprscope.errors import InvalidArgument

        raise InvalidArgument(f"--omp-spincount must be >= 0, got {spincount}")
    explicit = {k: os.environ[k] for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if k in os.environ}
    if explicit:
        log.info("OpenMP spinning as set in the environment (%s); --omp-spincount not applied", explicit)
        return os.environ.get("GOMP_SPINCOUNT")
    if spincount == 0:
        return None
    if "torch" in sys.modules or "faiss" in sys.modules:
        log.warning("--omp-spincount %d not applied: OpenMP is already loaded in this process", spincount)
        return None
    os.environ["GOMP_SPINCOUNT"] = str(spincount)
    return os.environ["GOMP_SPINCOUNT"]


# --- commands -------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    apply_omp_spincount(args.omp_spincount)
    from dprscope.server import serve

    return serve(settings_from_args(args))


def _build(corpus: Path, out: Path, model: str, pooling: str | None, index_type: str, batch_size: int,
           split_words: int | None, shard_size: int, keep_shards: bool, quantize: str = "none") -> None:
    from dprscope.encoders.loading import load_bi_encoder
    from dprscope.encoders.runtime import apply_backend
    from dprscope.index.builder import build_index
    from dprscope.progress_bar import ProgressBar

    encoder = apply_backend(load_bi_encoder(model, pooling=pooling), backend="torch",
                            quantize=_quantize(quantize), device="cpu")
    bar = ProgressBar(unit="passages")
    try:
        manifest = build_index(corpus, out, encoder, index_type=index_type, batch_size=batch_size,
                               shard_size=shard_size, split_words=split_words, keep_shards=keep_shards,
                               progress=bar)
    finally:
        bar.close()
    print(f"index {manifest.index_version}: {manifest.passages} passages, dim {manifest.dim}, "
          f"{manifest.index_type} -> {out}")


def cmd_build_index(args: argparse.Namespace) -> int:
    if args.engine == "local" and args.device in ("auto", "cpu"):
        _build(args.corpus, args.out, args.model, args.pooling, args.index_type, args.batch_size,
               args.split_words, args.shard_size, args.keep_shards, args.quantize)
        return 0
    from dprscope.progress_bar import ProgressBar

    bar = ProgressBar(unit="passages")
    kwargs = {"index_type": args.index_type, "batch_size": args.batch_size, "shard_size": args.shard_size,
                  "split_words": args.split_words, "keep_shards": args.keep_shards, "progress": bar}
    try:
        if args.engine == "ray":
            from dprscope.distributed.ray_build import RayEncodeConfig, build_index_ray

            config = RayEncodeConfig(model=args.model, pooling=args.pooling, device=args.device, actors=args.actors,
                                     quantize=_quantize(args.quantize))
            manifest = build_index_ray(args.corpus, args.out, config, **kwargs)
        else:
            from dprscope.encoders.runtime import build_encoder
            from dprscope.index.builder import build_index

            encoder = build_encoder(args.model, pooling=args.pooling, device=args.device,
                                    quantize=_quantize(args.quantize))
            manifest = build_index(args.corpus, args.out, encoder, **kwargs)
    finally:
        bar.close()
    print(f"index {manifest.index_version}: {manifest.passages} passages, dim {manifest.dim}, "
          f"{manifest.index_type} -> {args.out}")
    return 0


def cmd_import_embeddings(args: argparse.Namespace) -> int:
    from dprscope.index.importer import import_embeddings
    from dprscope.progress_bar import ProgressBar

    bar = ProgressBar(unit="vectors")
    try:
        manifest = import_embeddings(args.embeddings, args.corpus, args.out, index_type=args.index_type,
                                     trust_pickle=args.trust_pickle, progress=bar)
    finally:
        bar.close()
    print(f"index {manifest.index_version}: {manifest.passages} passages imported -> {args.out}")
    return 0


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_search(args: argparse.Namespace) -> int:
    from dprscope_client import RetrieverClient

    with RetrieverClient(args.target, timeout=args.timeout, tls=args.tls, root_certificates=args.ca) as client:
        result = client.search(args.question, top_k=args.k, ef_search=args.ef_search, nprobe=args.nprobe,
                               exact=args.exact, model_version=args.model_version)
    if args.json:
        import json

        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"model {result.model_version} · index {result.index_version} · "
          f"{result.total_ms:.1f} ms (encode {result.encode_ms:.1f}, search {result.search_ms:.1f})")
    print(f"{'rank':>4}  {'score':>7}  {'id':<12}  {'title':<28}  text")
    for hit in result.hits:
        print(f"{hit.rank:>4}  {hit.score:7.4f}  {_shorten(hit.passage_id, 12):<12}  "
              f"{_shorten(hit.title, 28):<28}  {_shorten(hit.text, 80)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    apply_omp_spincount(args.omp_spincount)
    from dprscope.demo import DEMO_SPLIT_WORDS, write_demo_corpus
    from dprscope.server import serve

    index_dir: Path = args.index_dir
    if not (index_dir / "manifest.json").exists():
        index_dir.mkdir(parents=True, exist_ok=True)
        corpus = index_dir.parent / (index_dir.name + ".corpus.jsonl")
        if not corpus.exists():
            write_demo_corpus(corpus)
        print(f"building the demo index in {index_dir} (one-off; resumes if interrupted)", flush=True)
        _build(corpus, index_dir, args.model, args.pooling, args.index_type, args.batch_size,
               DEMO_SPLIT_WORDS, 2048, False)
    return serve(settings_from_args(args, index_dir=index_dir))


def build_parser() -> argparse.ArgumentParser:
    from dprscope import __version__

    parser = argparse.ArgumentParser(prog="dprscope", description="Dense passage retrieval that can explain itself.")
    parser.add_argument("--version", action="version", version=f"dprscope {__version__}")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="[DPRSCOPE_LOG_LEVEL]")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve an index over gRPC (+ analysis sidecar, metrics)")
    _add_serve_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("build-index", help="encode a corpus into an index directory (resumable)")
    p.add_argument("--corpus", type=Path, required=True, help="psgs_w100-style TSV or JSONL (optionally .gz)")
    p.add_argument("--out", type=Path, required=True, help="index directory to write")
    p.add_argument("--model", default=S.DEFAULT_MODEL)
    p.add_argument("--pooling", choices=("mean", "cls"), default=None)
    p.add_argument("--index-type", choices=INDEX_TYPE_CHOICES, default=AUTO_INDEX_TYPE, help=INDEX_TYPE_HELP)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=2048, help="passages per resumable shard")
    p.add_argument("--split-words", type=int, default=None,
                   help="split raw articles into passages of at most N words (DPR uses 100)")
    p.add_argument("--keep-shards", action="store_true", help="keep shards/ after the build")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where passages are encoded: here, or a Ray Data actor pool (extra [distributed])")
    p.add_argument("--device", default=S.DEFAULT_DEVICE, help="auto, cpu or cuda[:N] for the encoder")
    p.add_argument("--actors", type=int, default=2, help="--engine ray: encoder actors (one model each)")
    p.add_argument("--quantize", choices=("none", "bf16"), default="none",
                   help="bf16: torch autocast where the CPU (AMX/AVX512-BF16) or GPU computes bf16 natively; "
                        "2-3x passages/s, cosine >= 0.9999 to fp32 (fp32 with a warning elsewhere)")
    p.set_defaults(func=cmd_build_index)

    p = sub.add_parser("import-embeddings", help="build an index from DPR's pre-computed passage embeddings")
    p.add_argument("embeddings", type=Path, nargs="+", help="pickled (id, vector) shard files")
    p.add_argument("--corpus", type=Path, required=True, help="psgs_w100.tsv with the passages' text")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--index-type", choices=INDEX_TYPE_CHOICES, default=AUTO_INDEX_TYPE, help=INDEX_TYPE_HELP)
    p.add_argument("--trust-pickle", action="store_true",
                   help="required: these files are Python pickles and can run code when loaded")
    p.set_defaults(func=cmd_import_embeddings)

    p = sub.add_parser("search", help="query a running server and print a table")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--target", default=_env("TARGET", DEFAULT_TARGET), help="HOST:PORT [DPRSCOPE_TARGET]")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--model-version", default="")
    p.add_argument("--ef-search", type=int, default=0)
    p.add_argument("--nprobe", type=int, default=0)
    p.add_argument("--exact", action="store_true")
    p.add_argument("--tls", action="store_true", help="use TLS")
    p.add_argument("--ca", type=Path, default=None, help="PEM root certificates for TLS")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("demo", help="build the demo index (Wikipedia vital articles) if missing, then serve it")
    p.add_argument("--index-dir", type=Path, default=_env("DEMO_DIR", DEFAULT_DEMO_DIR, Path),
                   help="where the demo index lives [DPRSCOPE_DEMO_DIR]")
    p.add_argument("--index-type", choices=INDEX_TYPE_CHOICES, default=AUTO_INDEX_TYPE, help=INDEX_TYPE_HELP)
    p.add_argument("--batch-size", type=int, default=32)
    _add_serve_flags(p, index_required=False)
    p.set_defaults(func=cmd_demo)

    for module_name in OPTIONAL_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dprscope.errors import DprscopeError

    try:
        return int(args.func(args) or 0)
    except DprscopeError as exc:
        print(f"dprscope: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ == "RetrieverError":  # the client's error: status + message, no traceback
            print(f"dprscope: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("dprscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
