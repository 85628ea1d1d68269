"""Process-wide knobs of ``dprscope serve``: parsed, validated, applied only by serve()."""

from __future__ import annotations

import sys

import pytest

from dprscope import cli, server
from dprscope.settings import DEFAULT_GIL_SWITCH_MS, Settings


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
