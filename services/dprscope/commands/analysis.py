"""``dprscope attribute``, ``dprscope probe`` and ``dprscope activation-stats`` against a running sidecar.

Each command streams its job's progress to a progress bar and writes three files next
to ``--out PREFIX``: ``PREFIX.json`` (everything the server returned), ``PREFIX.csv``
(one row per layer, or per (N, layer)) and ``PREFIX.png`` (the plot a person looks at:
strongly-activated-neuron counts per layer as bars, or probe accuracy against layer with
one line per N and the chance levels). ``--versions a,b`` runs the same analysis on two
loaded model versions (e.g. a pre-trained base loaded through ModelAdmin and the DPR
model) and draws them side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

DEFAULT_ANALYSIS_TARGET = "127.0.0.1:50052"


# ----------------------------------------------------------------------------- helpers


def _client(args: argparse.Namespace):
    from dprscope_client.analysis import AnalysisClient

    return AnalysisClient(args.target, timeout=args.timeout, tls=args.tls, root_certificates=args.ca,
                          client_cert=args.client_cert, client_key=args.client_key)


def _versions(args: argparse.Namespace) -> list[str]:
    """``--versions a,b`` -> ['a', 'b']; none given -> [''] (the active version)."""
    names = [v.strip() for v in (args.versions or "").split(",") if v.strip()]
    return names or [""]


def _progress(args: argparse.Namespace, unit: str):
    if args.quiet:
        return None, lambda: None
    from dprscope.jobs import Progress
    from dprscope.progress_bar import ProgressBar

    bar = ProgressBar(unit=unit)

    def show(p: Any) -> None:
        bar(Progress(p.stage, p.done, p.total, p.message, p.elapsed_s))
    return show, bar.close


def _local_records(path: Path, limit: int, negatives: int) -> list[dict[str, Any]]:
    """DPR records from a local file as plain dicts, hard negatives trimmed to what is used."""
    from dprscope.analysis.data import load_dpr_records

    records = load_dpr_records(path, max_records=limit or None)

    def ctx(c: Any) -> dict[str, str]:
        return {"title": c.title, "text": c.text, "passage_id": c.passage_id}
    return [{"question": r.question, "positive_ctxs": [ctx(c) for c in r.positive_ctxs[:1]],
             "hard_negative_ctxs": [ctx(c) for c in r.hard_negative_ctxs[:negatives]]}
            for r in records if r.positive_ctxs]


def _label(version: str, result: Any) -> str:
    return version or getattr(result, "model_version", "") or "active"


def _write(out: Path, payload: dict[str, Any], header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out.with_suffix(".json"), out.with_suffix(".csv")
    json_path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return [json_path, csv_path]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _count_bars(path: Path, title: str, series: dict[str, dict[tuple[int, str], float]], ylabel: str) -> Path:
    """Bars per layer, one panel per sublayer, one bar group per version (side by side)."""
    plt = _pyplot()
    sublayers = sorted({sub for values in series.values() for (_, sub) in values},
                       key=lambda s: ("intermediate", "output").index(s) if s in ("intermediate", "output") else 9)
    fig, axes = plt.subplots(1, len(sublayers), figsize=(5.5 * len(sublayers), 3.8), squeeze=False)
    width = 0.8 / max(1, len(series))
    for ax, sub in zip(axes[0], sublayers, strict=True):
        for i, (label, values) in enumerate(series.items()):
            layers = sorted(layer for (layer, s) in values if s == sub)
            xs = [layer + (i - (len(series) - 1) / 2) * width for layer in layers]
            ax.bar(xs, [values[(layer, sub)] for layer in layers], width=width, label=label)
        ax.set_title(f"FFN {sub} ({'keys' if sub == 'intermediate' else 'values'})")
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.set_xticks(sorted({layer for values in series.values() for (layer, s) in values if s == sub}))
        if len(series) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- attribute


def cmd_attribute(args: argparse.Namespace) -> int:
    if args.records is not None:
        records = _local_records(args.records, args.limit, args.negatives)
        examples = [(r["question"], [r["positive_ctxs"][0], *r["hard_negative_ctxs"]], []) for r in records]
    elif args.query:
        examples = [(args.query, [{"title": "", "text": t} for t in args.passage], list(args.passage_id))]
    else:
        print("give --query with --passage/--passage-id, or --records FILE", file=sys.stderr)
        return 2
    show, close = _progress(args, "chunks")
    payload: dict[str, Any] = {"command": "attribute", "versions": {}}
    series: dict[str, dict[tuple[int, str], float]] = {}
    rows: list[list[Any]] = []
    try:
        with _client(args) as client:
            for version in _versions(args):
                results = []
                for query, passages, ids in examples:
                    results.append(client.attribute(
                        query, passages, passage_ids=ids, model_version=version, target=args.objective,
                        side=args.side, layers=args.layers, sublayer=args.sublayer, steps=args.steps,
                        method=args.method, positions=args.positions, threshold=args.threshold,
                        top_neurons=args.top_neurons, return_scores=args.return_scores, progress=show))
                label = _label(version, results[0])
                payload["versions"][label] = [asdict(r) for r in results]
                means: dict[tuple[int, str], float] = {}
                for entry in results[0].layers:
                    key = (entry.layer, entry.sublayer)
                    counts = [r.layer(*key).count_above_threshold for r in results]
                    gaps = [r.layer(*key).completeness_gap for r in results]
                    means[key] = sum(counts) / len(counts)
                    rows.append([label, entry.layer, entry.sublayer, len(results), f"{means[key]:.2f}",
                                 min(counts), max(counts), entry.neurons,
                                 f"{sum(abs(g) for g in gaps) / len(gaps):.4g}"])
                series[label] = means
    finally:
        close()
    out = Path(args.out)
    files = _write(out, payload, ["version", "layer", "sublayer", "examples", "mean_count", "min_count",
                                  "max_count", "neurons", "mean_abs_completeness_gap"], rows)
    files.append(_count_bars(out.with_suffix(".png"), f"strongly activated neurons (attr > {args.threshold or 0.1:g}"
                             f" x max), mean over {len(examples)} example(s), m={args.steps}", series,
                             "neurons above threshold"))
    _print_rows(["version", "layer", "sublayer", "examples", "mean", "min", "max", "neurons", "|gap|"], rows)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


# ----------------------------------------------------------------------------- activation-stats


def cmd_activation_stats(args: argparse.Namespace) -> int:
    source: dict[str, Any] = {}
    if args.records is not None:
        records = _local_records(args.records, args.limit, 1 if args.objective == "positive_prob" else 0)
        if args.objective == "positive_prob":
            print("note: --records sends (query, positive) pairs; positive_prob needs --data-path", file=sys.stderr)
        source["pairs"] = [(r["question"], r["positive_ctxs"][0]) for r in records]
    elif args.data_path:
        source.update(data_path=args.data_path, max_records=args.limit)
    else:
        print("give --records FILE (local) or --data-path PATH (inside the server's --data-root)", file=sys.stderr)
        return 2
    show, close = _progress(args, "examples")
    payload: dict[str, Any] = {"command": "activation-stats", "versions": {}}
    union: dict[str, dict[tuple[int, str], float]] = {}
    rows: list[list[Any]] = []
    try:
        with _client(args) as client:
            for version in _versions(args):
                result = client.activation_stats(
                    source.get("pairs", ()), data_path=source.get("data_path", ""),
                    max_records=source.get("max_records", 0), model_version=version, layers=args.layers,
                    sublayer=args.sublayer, threshold=args.threshold, steps=args.steps, target=args.objective,
                    side=args.side, progress=show)
                label = _label(version, result)
                payload["versions"][label] = asdict(result)
                union[label] = {}
                for s in result.layers:
                    mean = sum(k * h for k, h in enumerate(s.fire_count_histogram)) / max(1, result.examples)
                    union[label][(s.layer, s.sublayer)] = s.neurons_active
                    rows.append([label, s.layer, s.sublayer, result.examples, s.neurons_active, f"{mean:.2f}",
                                 s.neurons])
    finally:
        close()
    out = Path(args.out)
    files = _write(out, payload, ["version", "layer", "sublayer", "examples", "neurons_active_any",
                                  "mean_per_example", "neurons"], rows)
    files.append(_count_bars(out.with_suffix(".png"), "neurons strongly activated for at least one example",
                             union, "neurons active (any example)"))
    _print_rows(["version", "layer", "sublayer", "examples", "active(any)", "mean/example", "neurons"], rows)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


# ----------------------------------------------------------------------------- probe


def cmd_probe(args: argparse.Namespace) -> int:
    ns = args.n or [2, 3, 4, 5]
    source: dict[str, Any] = {}
    if args.records is not None:
        source["records"] = _local_records(args.records, args.limit, max(ns) - 1)
    elif args.data_path:
        source.update(data_path=args.data_path, max_records=args.limit)
    else:
        print("give --records FILE (local) or --data-path PATH (inside the server's --data-root)", file=sys.stderr)
        return 2
    show, close = _progress(args, "steps")
    payload: dict[str, Any] = {"command": "probe", "versions": {}}
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    try:
        with _client(args) as client:
            for version in _versions(args):
                result = client.probe(source.get("records", ()), data_path=source.get("data_path", ""),
                                      max_records=source.get("max_records", 0), n_passages=ns, layers=args.layers,
                                      features=args.features, test_fraction=args.test_fraction, seed=args.seed,
                                      model_version=version, progress=show)
                label = _label(version, result)
                results[label] = result
                payload["versions"][label] = asdict(result)
                rows.extend([label, s.n_passages, s.layer, f"{s.accuracy:.4f}", f"{s.untrained_accuracy:.4f}",
                             f"{s.chance:.4f}", s.train_examples, s.test_examples] for s in result.scores)
    finally:
        close()
    out = Path(args.out)
    files = _write(out, payload, ["version", "n_passages", "layer", "accuracy", "untrained_accuracy", "chance",
                                  "train_examples", "test_examples"], rows)
    files.append(_probe_plot(out.with_suffix(".png"), results, args.features))
    _print_rows(["version", "N", "layer", "accuracy", "untrained", "chance", "train", "test"], rows)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _probe_plot(path: Path, results: dict[str, Any], features: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ns: list[int] = []
    for v, (label, result) in enumerate(results.items()):
        for i, n in enumerate(sorted({s.n_passages for s in result.scores})):
            scores = sorted((s for s in result.scores if s.n_passages == n), key=lambda s: s.layer)
            suffix = f" ({label})" if len(results) > 1 else ""
            ax.plot([s.layer for s in scores], [s.accuracy for s in scores], styles[v % len(styles)], marker="o",
                    color=colors[i % len(colors)], label=f"N={n}{suffix}")
            if n not in ns:
                ns.append(n)
                ax.axhline(1.0 / n, color=colors[i % len(colors)], linewidth=0.8, alpha=0.5, linestyle=(0, (2, 3)))
    ax.set_xlabel("layer (hidden state; 0 = embeddings)")
    ax.set_ylabel("held-out probe accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"linear probe: which of N passages is the positive ({features} features)\n"
                 "faint dotted lines: chance 1/N")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _print_rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


# ----------------------------------------------------------------------------- registration


def _csv_ints(raw: str) -> list[int]:
    try:
        return [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {raw!r}") from None


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--target", default=os.environ.get("DPRSCOPE_ANALYSIS_TARGET") or DEFAULT_ANALYSIS_TARGET,
                   help="HOST:PORT of the analysis sidecar [DPRSCOPE_ANALYSIS_TARGET]")
    p.add_argument("--versions", default="", help="comma-separated model versions to compare (default: active)")
    p.add_argument("--layers", type=_csv_ints, default=[], help="comma-separated layers (default: all)")
    p.add_argument("--out", default=default_out, help="output prefix: writes PREFIX.json, .csv and .png")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tls", action="store_true", help="use TLS")
    p.add_argument("--ca", type=Path, default=None, help="PEM root certificates for TLS")
    p.add_argument("--client-cert", type=Path, default=None, help="PEM client certificate (mTLS)")
    p.add_argument("--client-key", type=Path, default=None, help="PEM client key (mTLS)")


def _attribution_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", choices=("score", "positive_prob"), default="score",
                   help="what is attributed: the query-positive score or the softmax prob of the positive")
    p.add_argument("--side", choices=("query", "passage"), default="query")
    p.add_argument("--sublayer", choices=("intermediate", "output", "both"), default="intermediate")
    p.add_argument("--steps", type=int, default=20, help="integration steps m (1..512)")
    p.add_argument("--threshold", type=float, default=None, help="fraction of the max attribution (default 0.1)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attribute", help="knowledge-neuron attribution per layer (Analysis sidecar)")
    p.add_argument("--query", default="", help="the question")
    p.add_argument("--passage", action="append", default=[], help="passage text; the first is the positive")
    p.add_argument("--passage-id", action="append", default=[], help="passage id in the serving index")
    p.add_argument("--records", type=Path, default=None, help="local DPR file: attribute each record")
    p.add_argument("--limit", type=int, default=20, help="records to use from --records (0 = all)")
    p.add_argument("--negatives", type=int, default=1, help="hard negatives per record sent with the positive")
    p.add_argument("--method", choices=("riemann_right", "gauss_legendre"), default="riemann_right")
    p.add_argument("--positions", choices=("all", "cls"), default="all")
    p.add_argument("--top-neurons", type=int, default=20)
    p.add_argument("--return-scores", action="store_true", help="keep the full per-neuron vectors in the JSON")
    _attribution_flags(p)
    _common(p, "attribution")
    p.set_defaults(func=cmd_attribute)

    p = subparsers.add_parser("activation-stats",
                              help="neurons strongly activated for any example, per layer (paper Figure 1)")
    p.add_argument("--records", type=Path, default=None, help="local DPR file (sent as (query, positive) pairs)")
    p.add_argument("--data-path", default="", help="DPR file inside the server's --data-root")
    p.add_argument("--limit", type=int, default=20, help="records to use (0 = all)")
    _attribution_flags(p)
    _common(p, "activation-stats")
    p.set_defaults(func=cmd_activation_stats)

    p = subparsers.add_parser("probe", help="linear probe accuracy per layer for N passages (paper Table 1)")
    p.add_argument("--records", type=Path, default=None, help="local DPR file (sent inline)")
    p.add_argument("--data-path", default="", help="DPR file inside the server's --data-root")
    p.add_argument("--limit", type=int, default=0, help="records to use (0 = all)")
    p.add_argument("--n", type=_csv_ints, default=[2, 3, 4, 5], help="comma-separated Ns (default 2,3,4,5)")
    p.add_argument("--features", choices=("cls", "mean"), default="cls")
    p.add_argument("--test-fraction", type=float, default=None, help="held-out share (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    _common(p, "probe")
    p.set_defaults(func=cmd_probe)
