"""The real CLI as an operator runs it: build-index, serve, search, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from dprscope_client import RetrieverClient, RetrieverError

DPRSCOPE = [sys.executable, "-m", "dprscope.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_corpus(small_corpus: Path, out: Path, rows: int) -> Path:
    lines = small_corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, small_corpus) -> Path:
    root = tmp_path_factory.mktemp("cli")
    corpus = _head_corpus(small_corpus, root / "corpus.tsv", 120)
    out = root / "index"
    done = subprocess.run([*DPRSCOPE, "build-index", "--corpus", str(corpus), "--out", str(out),
                           "--index-type", "hnsw", "--batch-size", "16", "--shard-size", "32"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "120 passages" in done.stdout
    assert "[encode]" in done.stderr and "/s" in done.stderr  # progress with a rate
    return out


@pytest.mark.slow
def test_serve_search_and_drain_on_sigterm(cli_index):
    port, metrics_port = _free_port(), _free_port()
    proc = subprocess.Popen([*DPRSCOPE, "serve", "--index", str(cli_index), "--host", "127.0.0.1",
                             "--port", str(port), "--metrics-port", str(metrics_port), "--analysis-port", "0",
                             "--drain-seconds", "1", "--grace-seconds", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with RetrieverClient(f"127.0.0.1:{port}", timeout=30) as client:
            client.wait_until_serving(timeout=120)
            table = subprocess.run([*DPRSCOPE, "search", "who got the first nobel prize in physics", "-k", "3",
                                    "--target", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
            assert table.returncode == 0, table.stderr
            assert "rank" in table.stdout and "score" in table.stdout
            assert len([ln for ln in table.stdout.splitlines() if ln.strip()[:1].isdigit()]) == 3

            results: list[tuple[float, str]] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        client.search("what is the speed of light", top_k=3)
                        results.append((started, "OK"))
                    except RetrieverError as exc:
                        results.append((started, exc.code.name))
                    time.sleep(0.005)

            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(1.0)
            sigterm_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            stop.set()
            for w in workers:
                w.join(30)
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        before = [code for started, code in results if started < sigterm_at]
        after = {code for started, code in results if started >= sigterm_at}
        assert len(before) > 10 and set(before) == {"OK"}  # everything sent before SIGTERM finished
        # Sent during the drain: served or refused. A call racing grpc's own shutdown can end
        # CANCELLED instead of UNAVAILABLE; never INTERNAL/UNKNOWN.
        assert after <= {"OK", "UNAVAILABLE", "CANCELLED"}, after
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_search_cli_reports_errors_readably(tmp_path):
    port = _free_port()
    done = subprocess.run([*DPRSCOPE, "search", "hello", "--target", f"127.0.0.1:{port}", "--timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr or "DEADLINE_EXCEEDED" in done.stderr
    assert "Traceback" not in done.stderr


def test_build_index_refuses_a_missing_corpus(tmp_path):
    done = subprocess.run([*DPRSCOPE, "build-index", "--corpus", str(tmp_path / "nope.tsv"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "nope.tsv" in done.stderr and "Traceback" not in done.stderr


def test_env_counterparts_configure_serve():
    from dprscope.cli import build_parser, settings_from_args

    old = dict(os.environ)
    try:
        os.environ.update({"DPRSCOPE_PORT": "6000", "DPRSCOPE_MAX_TOP_K": "50", "DPRSCOPE_ADMIN_TOKEN": "s3cret",
                           "DPRSCOPE_ANALYSIS_PORT": "0"})
        args = build_parser().parse_args(["serve", "--index", "/tmp/x", "--queue-size", "7"])
        settings = settings_from_args(args)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert settings.port == 6000 and settings.limits.max_top_k == 50 and settings.queue_size == 7
    assert settings.admin_token == "s3cret" and settings.analysis_port is None
    assert grpc  # the CLI speaks gRPC through the client only
