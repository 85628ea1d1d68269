"""Process-wide knobs of ``dprscope serve``: parsed, validated, applied only by serve()."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dprscope import cli, server
from dprscope.errors import InvalidArgument
from dprscope.settings import DEFAULT_GIL_SWITCH_MS, DEFAULT_OMP_SPINCOUNT, Settings


def _settings(argv: list[str], monkeypatch, env: dict[str, str] | None = None) -> Settings:
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    args = cli.build_parser().parse_args(argv)
    return cli.settings_from_args(args)


def test_gil_switch_interval_from_flag_env_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv("DPRSCOPE_GIL_SWITCH_MS", raising=False)
    assert _settings(["serve", "--index", str(tmp_path)], monkeypatch).gil_switch_ms == DEFAULT_GIL_SWITCH_MS
    assert _settings(["serve", "--index", str(tmp_path), "--gil-switch-ms", "0.5"], monkeypatch).gil_switch_ms == 0.5
    assert _settings(["serve", "--index", str(tmp_path)], monkeypatch,
                     {"DPRSCOPE_GIL_SWITCH_MS": "2"}).gil_switch_ms == 2.0


@pytest.mark.parametrize("bad", [0.0, -1.0, 1000.0])
def test_gil_switch_interval_out_of_range_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="gil_switch_ms"):
        Settings(index_dir=tmp_path, gil_switch_ms=bad)


def test_serve_applies_the_interval_before_starting(monkeypatch, tmp_path):
    seen: list[float] = []

    def fake_start(settings):
        seen.append(sys.getswitchinterval())
        raise RuntimeError("stop here")

    before = sys.getswitchinterval()
    monkeypatch.setattr(server, "start", fake_start)
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            server.serve(Settings(index_dir=tmp_path, gil_switch_ms=0.5))
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(0.0005)]


# --- OpenMP spin count --------------------------------------------------------------------
# What the value does is libgomp's business, so the subprocess tests below measure it: CPU
# time an idle OpenMP worker burns after a parallel region is its spin count times the cost
# of one spin, whatever else the machine is doing (a descheduled spinner burns nothing).
SPIN_PROBE = """
import os, resource, sys, threading, time
from dprscope import cli
applied = cli.apply_omp_spincount(int(sys.argv[1]))
import torch
torch.set_num_threads(2)

def probe():
    x = torch.randn(256, 256)
    for _ in range(20):
        x @ x
    x @ x
    used = resource.getrusage(resource.RUSAGE_SELF)
    before = used.ru_utime + used.ru_stime
    time.sleep(0.5)
    used = resource.getrusage(resource.RUSAGE_SELF)
    print(applied, os.environ.get("GOMP_SPINCOUNT"), (used.ru_utime + used.ru_stime - before) * 1e3)

worker = threading.Thread(target=probe)
worker.start()
worker.join()
"""


def _spin_probe(spincount: int, **env: str) -> tuple[str, str, float]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", SPIN_PROBE, str(spincount)], env={**clean, **env},
                         capture_output=True, text=True, timeout=300, check=True)
    applied, in_env, burned_ms = out.stdout.split()
    return applied, in_env, float(burned_ms)


def test_omp_spincount_from_flag_env_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv("DPRSCOPE_OMP_SPINCOUNT", raising=False)
    args = cli.build_parser().parse_args(["serve", "--index", str(tmp_path)])
    assert args.omp_spincount == DEFAULT_OMP_SPINCOUNT == 3_000_000
    monkeypatch.setenv("DPRSCOPE_OMP_SPINCOUNT", "0")
    assert cli.build_parser().parse_args(["serve", "--index", str(tmp_path)]).omp_spincount == 0
    assert cli.build_parser().parse_args(["demo", "--omp-spincount", "5"]).omp_spincount == 5


def test_omp_spincount_keeps_the_worker_spinning_longer_and_is_really_applied():
    applied, in_env, kept_awake_ms = _spin_probe(DEFAULT_OMP_SPINCOUNT)
    assert applied == in_env == str(DEFAULT_OMP_SPINCOUNT)
    applied, in_env, default_ms = _spin_probe(0)  # 0: libgomp's own default
    assert applied == in_env == "None"
    assert kept_awake_ms > 3 * default_ms, (kept_awake_ms, default_ms)


def test_an_openmp_setting_in_the_environment_wins():
    assert _spin_probe(DEFAULT_OMP_SPINCOUNT, GOMP_SPINCOUNT="777")[:2] == ("777", "777")
    assert _spin_probe(DEFAULT_OMP_SPINCOUNT, OMP_WAIT_POLICY="passive")[:2] == ("None", "None")


def test_omp_spincount_after_openmp_loaded_changes_nothing_and_says_so(monkeypatch, caplog):
    import torch  # noqa: F401 - loaded in this test process already; made explicit

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with caplog.at_level("WARNING", logger="dprscope.cli"):
        assert cli.apply_omp_spincount(DEFAULT_OMP_SPINCOUNT) is None
    assert "GOMP_SPINCOUNT" not in os.environ
    assert "already loaded" in caplog.text


def test_a_negative_omp_spincount_is_refused():
    with pytest.raises(InvalidArgument, match="omp-spincount"):
        cli.apply_omp_spincount(-1)
