"""A checkpoint load killed halfway leaves nothing half-active.

The server is killed with SIGKILL while a FULL checkpoint (a copy of the embedded model) is
loading and validating; the restarted server serves its configured version, bit-identical
answers, and lists no trace of the half-loaded one. Versions live only in memory and the
index directory is never written by a load, so there is nothing to half-apply.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

from dprscope.encoders.loading import default_model_dir
from dprscope_client import AdminClient, RetrieverClient
from tests.reliability._harness import ServeProcess

TOKEN = "reliability-admin-token"


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_sigkill_during_load_checkpoint_leaves_the_old_version_serving(small_index, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(default_model_dir(), root / "full-copy")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    index_before = _tree_digest(small_index)
    args = ("--admin-token-file", str(token_file), "--checkpoint-root", str(root))

    server = ServeProcess(small_index, tmp_path / "serve-1.log", *args)
    try:
        server.wait_serving()
        with RetrieverClient(server.target, timeout=30) as client:
            before = client.search("who got the first nobel prize in physics", top_k=5)
        loader = threading.Thread(target=_load_ignoring_errors, args=(server.target,), daemon=True)
        loader.start()
        seen = _wait_until_loading(server.target)
        server.proc.kill()
        print(f"\nkilled the server while the checkpoint was {seen}")
        server.proc.wait(30)
        loader.join(30)
    finally:
        server.close()

    assert _tree_digest(small_index) == index_before  # a load never writes the serving index

    restarted = ServeProcess(small_index, tmp_path / "serve-2.log", *args)
    try:
        restarted.wait_serving()
        with RetrieverClient(restarted.target, timeout=30) as client, \
                AdminClient(restarted.target, TOKEN, timeout=30) as admin:
            after = client.search("who got the first nobel prize in physics", top_k=5)
            listing = admin.list_models()
        assert [h.passage_id for h in after.hits] == [h.passage_id for h in before.hits]
        assert [h.score for h in after.hits] == [h.score for h in before.hits]
        assert after.model_version == before.model_version == "v1"
        assert [v.version for v in listing.versions] == ["v1"]
        assert listing.active_version == "v1"
    finally:
        restarted.close()


def _load_ignoring_errors(target: str) -> None:
    try:
        with AdminClient(target, TOKEN, timeout=120) as admin:
            admin.load("full-copy", version="half-loaded", kind="FULL", role="BOTH")
    except Exception:  # the server dies under this call: that is the point
        pass


def _wait_until_loading(target: str, timeout: float = 60.0) -> str:
    """Return once the server lists the new version as LOADING (or after a short grace)."""
    deadline = time.monotonic() + timeout
    with AdminClient(target, TOKEN, timeout=5) as admin:
        while time.monotonic() < deadline:
            try:
                version = admin.list_models().get("half-loaded")
            except Exception:
                version = None
            if version is not None:  # LOADING here; READY only on a machine faster than the poll
                return version.state
            time.sleep(0.01)
    return "not listed yet"
