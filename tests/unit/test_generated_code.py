"""Generated protobuf code is never stale: regenerate into a temp dir and diff."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_protos(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = {p.name: p.read_text() for p in (tmp_path / "dprscope" / "v1").glob("*_pb2*.py*")}
    committed = {p.name: p.read_text() for p in (ROOT / "services" / "dprscope" / "v1").glob("*_pb2*.py*")}
    assert set(fresh) == set(committed), "run: python scripts/gen_protos.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}; run: python scripts/gen_protos.py"
