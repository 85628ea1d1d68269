"""``dprscope admin load|activate|rollback|list|unload`` and ``dprscope delta make``.

The admin commands are thin wrappers over ``AdminClient``; the token comes from
``--token-file`` or ``DPRSCOPE_ADMIN_TOKEN`` (this is a CLI module, so it may read the
environment). ``delta make`` writes only the tensors an edit changed, so an edit pipeline
ships megabytes instead of the whole model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "127.0.0.1:50051"
DELTA_FORMAT = "dprscope-delta"
DELTA_FORMAT_VERSION = "1"


# --- admin ---------------------------------------------------------------------------
def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        return args.token_file.read_text().strip() or None
    return os.environ.get("DPRSCOPE_ADMIN_TOKEN") or None


def _client(args: argparse.Namespace):
    from dprscope_client.admin import AdminClient

    return AdminClient(args.target, _token(args), timeout=args.timeout, tls=args.tls, root_certificates=args.ca,
                       client_cert=args.client_cert, client_key=args.client_key)


def _print_versions(versions: list[Any], active: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(v) for v in versions], indent=2, default=str))
        return
    header = f"{'':1} {'version':<16} {'state':<11} {'kind':<6} {'role':<8} {'dim':>5} {'query fp':<12} " \
             f"{'context fp':<12} {'reindex':<8} {'overlap':>7}  error"
    print(header)
    print("-" * len(header))
    for v in versions:
        overlap = f"{v.canary.mean_topk_overlap:.2f}" if v.canary else "-"
        reindex = (f"{v.reindex_progress:.0%}" if v.state == "REINDEXING"
                   else ("stale" if v.stale_index else ("needed" if v.needs_reindex else "-")))
        mark = "*" if v.version == active else ""
        print(f"{mark:1} {v.version:<16} {v.state:<11} {v.kind:<6} {v.role:<8} {v.dim:>5} "
              f"{v.query_fingerprint[:12]:<12} {v.context_fingerprint[:12]:<12} {reindex:<8} {overlap:>7}  {v.error}")


def cmd_admin(args: argparse.Namespace) -> int:
    with _client(args) as admin:
        if args.action == "load":
            info = admin.load(args.path, version=args.version, kind=args.kind, role=args.role,
                              base_version=args.base_version, pooling=args.pooling)
            _print_versions([info], "", args.json)
        elif args.action == "activate":
            info = admin.activate(args.version, allow_stale_index=args.allow_stale_index, wait=args.wait)
            _print_versions([info], info.version if info.state == "ACTIVE" else "", args.json)
        elif args.action == "rollback":
            info = admin.rollback()
            _print_versions([info], info.version, args.json)
        elif args.action == "unload":
            info = admin.unload(args.version)
            _print_versions([info], "", args.json)
        else:
            listing = admin.list_models()
            _print_versions(listing.versions, listing.active_version, args.json)
            if not args.json:
                print(f"\nactive: {listing.active_version or '-'}   previous: {listing.previous_version or '-'}")
    return 0


def _add_connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=os.environ.get("DPRSCOPE_TARGET") or DEFAULT_TARGET,
                   help="HOST:PORT of the server [DPRSCOPE_TARGET]")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the admin token (default: DPRSCOPE_ADMIN_TOKEN)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per call (loads can be slow)")
    p.add_argument("--tls", action="store_true", help="use TLS")
    p.add_argument("--ca", type=Path, default=None, help="PEM root certificates for TLS")
    p.add_argument("--client-cert", type=Path, default=None, help="PEM client certificate (mTLS)")
    p.add_argument("--client-key", type=Path, default=None, help="PEM client key (mTLS)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


# --- delta make ------------------------------------------------------------------------
def _state_dicts(model_dir: Path) -> dict[str, dict]:
    """{'both': sd} for a shared-weight model, {'query': sd, 'context': sd} for a DPR pair."""
    from dprscope.encoders.loading import load_bi_encoder

    bi = load_bi_encoder(str(model_dir))
    if bi.shared:
        return {"both": bi.query.model.state_dict()}
    return {"query": bi.query.model.state_dict(), "context": bi.context.model.state_dict()}


def make_delta(base_dir: Path, edited_dir: Path, out: Path, side: str | None = None) -> dict[str, Any]:
    """Write the tensors of ``edited_dir`` that differ from ``base_dir`` to ``out`` (safetensors).

    For a two-tower (DPR) pair the names carry ``query.``/``context.`` prefixes, unless
    ``side`` picks one tower (then load the file with that role).
    """
    from safetensors.torch import save_file

    from dprscope import __version__
    from dprscope.errors import InvalidArgument
    from dprscope.models.checkpoints import delta_size_bytes, diff_state_dicts

    base, edited = _state_dicts(base_dir), _state_dicts(edited_dir)
    if set(base) != set(edited):
        raise InvalidArgument(f"{base_dir} and {edited_dir} are different model kinds (shared vs two-tower)")
    changed: dict[str, Any] = {}
    if "both" in base:
        changed = diff_state_dicts(base["both"], edited["both"])
    elif side is not None:
        changed = diff_state_dicts(base[side], edited[side])
    else:
        for tower in ("query", "context"):
            for key, tensor in diff_state_dicts(base[tower], edited[tower]).items():
                changed[f"{tower}.{key}"] = tensor
    if not changed:
        raise InvalidArgument(f"{edited_dir} has the same weights as {base_dir}; nothing to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": DELTA_FORMAT, "format_version": DELTA_FORMAT_VERSION, "dprscope_version": __version__,
                "base": base_dir.name, "edited": edited_dir.name}
    save_file(changed, str(out), metadata=metadata)
    total = sum(len(sd) for sd in edited.values())
    return {"tensors": len(changed), "of": total, "bytes": delta_size_bytes(changed.values()), "out": str(out)}


def cmd_delta_make(args: argparse.Namespace) -> int:
    summary = make_delta(args.base_dir, args.edited_dir, args.out, args.side)
    print(f"wrote {summary['tensors']} of {summary['of']} tensors ({summary['bytes'] / 2**20:.1f} MiB) "
          f"to {summary['out']}", file=sys.stdout)
    return 0


# --- registration --------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    admin = subparsers.add_parser("admin", help="hot-swap checkpoints on a running server (ModelAdmin)")
    actions = admin.add_subparsers(dest="action", required=True)

    p = actions.add_parser("load", help="load and validate a checkpoint beside the active version")
    p.add_argument("path", help="checkpoint path inside the server's --checkpoint-root")
    p.add_argument("--version", default="", help="name for the new version (default: picked by the server)")
    p.add_argument("--kind", choices=("FULL", "DELTA", "PATCH"), type=str.upper, default="FULL")
    p.add_argument("--role", choices=("BOTH", "QUERY", "CONTEXT"), type=str.upper, default="BOTH")
    p.add_argument("--base-version", default="", help="version a DELTA/PATCH applies on (default: active)")
    p.add_argument("--pooling", choices=("mean", "cls"), default="", help="for plain HF directories")
    _add_connection_flags(p)

    p = actions.add_parser("activate", help="make a loaded version serve (may re-index in the background)")
    p.add_argument("version")
    p.add_argument("--allow-stale-index", action="store_true",
                   help="swap a context encoder without re-indexing (labelled stale)")
    p.add_argument("--wait", action="store_true", help="wait for a background re-index to finish")
    _add_connection_flags(p)

    p = actions.add_parser("rollback", help="return to the previously active version")
    _add_connection_flags(p)

    p = actions.add_parser("list", help="list loaded versions")
    _add_connection_flags(p)

    p = actions.add_parser("unload", help="free a loaded, non-active version")
    p.add_argument("version")
    _add_connection_flags(p)
    admin.set_defaults(func=cmd_admin)

    delta = subparsers.add_parser("delta", help="weight deltas for DELTA checkpoints")
    delta_actions = delta.add_subparsers(dest="delta_action", required=True)
    p = delta_actions.add_parser("make", help="write only the tensors EDITED_DIR changed relative to BASE_DIR")
    p.add_argument("base_dir", type=Path, metavar="BASE_DIR")
    p.add_argument("edited_dir", type=Path, metavar="EDITED_DIR")
    p.add_argument("out", type=Path, metavar="OUT.safetensors")
    p.add_argument("--side", choices=("query", "context"), default=None,
                   help="two-tower models: diff one tower only (load with --role QUERY/CONTEXT)")
    p.set_defaults(func=cmd_delta_make)
