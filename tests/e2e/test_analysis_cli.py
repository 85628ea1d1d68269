"""``dprscope attribute`` / ``probe`` as an operator runs them against a real sidecar: JSON, CSV and PNG."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tests.shared_data import shared_data_dir

DPRSCOPE = [sys.executable, "-m", "dprscope.cli"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sidecar(start_server):
    return start_server(analysis_port=0)


def _run(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*DPRSCOPE, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_attribute_and_probe_write_json_csv_and_png(sidecar, tmp_path):
    target = f"127.0.0.1:{sidecar.analysis_port}"
    out = tmp_path / "attr"
    done = _run("attribute", "--target", target, "--query", "who wrote hamlet", "--passage",
                "Hamlet is a tragedy written by William Shakespeare.", "--layers", "0,5", "--sublayer", "both",
                "--steps", "3", "--out", str(out))
    assert "[attribute]" in done.stderr  # the progress bar saw streamed events
    payload = json.loads(out.with_suffix(".json").read_text())
    (results,) = payload["versions"].values()
    assert len(results[0]["layers"]) == 4
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [(r["layer"], r["sublayer"]) for r in rows] == [("0", "intermediate"), ("0", "output"),
                                                           ("5", "intermediate"), ("5", "output")]
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC

    records = shared_data_dir() / "dpr-original-samples" / "nq-dev-10.dpr.jsonl"
    out = tmp_path / "probe"
    _run("probe", "--target", target, "--records", str(records), "--n", "2,3", "--layers", "0,6", "--out", str(out),
         "--quiet")
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [(r["n_passages"], r["layer"]) for r in rows] == [("2", "0"), ("2", "6"), ("3", "0"), ("3", "6")]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
