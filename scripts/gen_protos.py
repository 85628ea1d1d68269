"""Regenerate the protobuf/gRPC modules: the one command that writes ``services/dprscope/v1``.

Run from the repository root::

    python scripts/gen_protos.py            # write into services/
    python scripts/gen_protos.py --out DIR  # write elsewhere (the staleness test diffs it)

Protos are compiled with ``-I protos`` into the source root, so the generated modules
import each other as ``dprscope.v1.*_pb2`` without any rewriting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path) -> list[Path]:
    """Compile every proto under ``protos/dprscope/v1`` into ``out_root/dprscope/v1``."""
    from grpc_tools import protoc  # dev-only dependency, imported lazily

    protos = sorted((PROTO_ROOT / "dprscope" / "v1").glob("*.proto"))
    out_root.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package_init = out_root / "dprscope" / "v1" / "__init__.py"
    package_init.touch()
    return sorted((out_root / "dprscope" / "v1").glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "services")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
