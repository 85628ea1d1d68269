"""The Dockerfiles, checked by parsing (no Docker engine here) and the healthcheck, run for real.

What a broken image would get wrong first: running as root, a COPY of a path that moved,
an entrypoint that is not the real CLI, configuration that the CLI does not read, volumes
that do not match the directories the server is told to use.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import socket
import tomllib
from pathlib import Path

import pytest

from tests.deploy._files import DEPLOY, REPO, Instruction, cli_env_names, env_of, parse_dockerfile, stages

DOCKERFILES = sorted(p for p in (DEPLOY / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")


def _final(path: Path) -> list[Instruction]:
    return stages(parse_dockerfile(path))[-1]


def _one(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def test_both_dockerfiles_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_non_root_user(path):
    stage = _final(path)
    users = [i for i in stage if i.keyword == "USER"]
    assert users, "the final stage never switches away from root"
    user = users[-1].raw.split(":")[0]
    assert user not in ("root", "0")
    keywords = [i.keyword for i in stage]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    # the user is created in the image, with a fixed uid that k8s runAsUser can name
    assert any(i.keyword == "RUN" and "useradd" in i.raw and user in i.raw and "--uid 10001" in i.raw
               for i in stage)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_the_real_cli_and_cmd_a_real_subcommand(path):
    from dprscope.cli import build_parser

    stage = _final(path)
    entrypoint = _one(stage, "ENTRYPOINT").exec_form()
    cmd = _one(stage, "CMD").exec_form()
    assert entrypoint == ["dprscope"], "exec form, so SIGTERM reaches dprscope (PID 1) and drains"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dprscope"] == "dprscope.cli:main"
    assert cmd and cmd[0] == "serve"
    assert _one(stage, "STOPSIGNAL").raw == "SIGTERM"
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert cmd[0] in subcommands


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_configuration_is_environment_the_cli_understands(path, monkeypatch):
    """Every DPRSCOPE_* ENV is a variable the CLI reads, and `serve` parses with only them."""
    from dprscope.cli import build_parser, settings_from_args

    env = env_of(_final(path))
    ours = {k: v for k, v in env.items() if k.startswith("DPRSCOPE_")}
    unknown = set(ours) - cli_env_names() - {"DPRSCOPE_LOG_LEVEL"}
    assert not unknown, f"ENV the CLI never reads: {sorted(unknown)}"
    for key in [k for k in os.environ if k.startswith("DPRSCOPE_")]:
        monkeypatch.delenv(key)
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    cmd = _one(_final(path), "CMD").exec_form()
    settings = settings_from_args(build_parser().parse_args(cmd))  # no --index: it comes from ENV
    assert str(settings.index_dir) == ours["DPRSCOPE_INDEX"]
    assert str(settings.checkpoint_root) == ours["DPRSCOPE_CHECKPOINT_ROOT"]
    assert settings.host == "0.0.0.0" and settings.port == int(ours["DPRSCOPE_PORT"])
    assert settings.metrics_port == int(ours["DPRSCOPE_METRICS_PORT"])
    assert settings.analysis_port == int(ours["DPRSCOPE_ANALYSIS_PORT"])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_index_and_checkpoint_root_are_volumes_and_ports_exposed(path):
    stage = _final(path)
    env = env_of(stage)
    volumes = set(_one(stage, "VOLUME").exec_form() or [])
    for key in ("DPRSCOPE_INDEX", "DPRSCOPE_CHECKPOINT_ROOT", "DPRSCOPE_REINDEX_DIR"):
        assert env[key] in volumes, key
    exposed = {int(p.split("/")[0]) for p in _one(stage, "EXPOSE").raw.split()}
    assert exposed == {int(env["DPRSCOPE_PORT"]), int(env["DPRSCOPE_ANALYSIS_PORT"]),
                       int(env["DPRSCOPE_METRICS_PORT"])}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_healthcheck_runs_the_copied_script(path):
    stage = _final(path)
    health = _one(stage, "HEALTHCHECK")
    flags, words = health.flags_and_args()
    assert words[0] == "CMD" and {"interval", "timeout", "start-period", "retries"} <= set(flags)
    command = Instruction("CMD", health.raw[health.raw.index("CMD") + 3:]).exec_form()
    assert command is not None and command[0] == "python"
    copied = {}
    for ins in stage:
        if ins.keyword == "COPY":
            flags, words = ins.flags_and_args()
            if "from" not in flags:
                copied[words[-1]] = words[:-1]
    assert copied[command[1]] == ["deploy/docker/healthcheck.py"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_and_survives_the_dockerignore(path):
    ignore = (path.parent / f"{path.name}.dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in ignore if p.strip() and not p.startswith("#")]
    stage_names = set()
    sources = []
    for stage in stages(parse_dockerfile(path)):
        words = stage[0].raw.split()
        if len(words) == 3 and words[1].upper() == "AS":
            stage_names.add(words[2])
        for ins in stage:
            assert ins.keyword != "ADD", "use COPY (ADD fetches URLs and unpacks archives implicitly)"
            if ins.keyword == "COPY":
                flags, words = ins.flags_and_args()
                if "from" in flags:
                    assert flags["from"] in stage_names, f"COPY --from={flags['from']} names no stage"
                    continue
                sources.extend(words[:-1])
    assert sources
    for source in sources:
        target = REPO / source
        assert target.exists(), f"{path.name}: COPY source {source} does not exist in the repository"
        # BuildKit semantics: the last matching pattern wins; "**" first excludes everything.
        kept = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!")
            if fnmatch.fnmatch(source.rstrip("/"), glob.removesuffix("/**")) or fnmatch.fnmatch(source, glob):
                kept = negate
        assert kept, f"{path.name}: {source} is excluded by its .dockerignore"


def test_gpu_image_installs_the_gpu_extra_on_cuda():
    path = DEPLOY / "docker" / "Dockerfile.gpu"
    text = path.read_text()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"faiss-gpu-cu12", "onnxruntime-gpu"} <= set(extras["gpu"])
    assert 'pip install ".[gpu]"' in text
    first = stages(parse_dockerfile(path))[0][0]
    assert "CUDA_IMAGE" in first.raw and "nvidia/cuda:12" in text


def _healthcheck_module():
    spec = importlib.util.spec_from_file_location("dprscope_healthcheck", DEPLOY / "docker" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_script_against_a_live_server(server, capsys, monkeypatch):
    """The script the image runs: 0 when SERVING, 1 when nothing listens."""
    health = _healthcheck_module()
    assert health.main([server.target]) == 0
    assert "SERVING" in capsys.readouterr().out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("DPRSCOPE_HEALTH_TIMEOUT", "1")
    assert health.main([f"127.0.0.1:{closed}"]) == 1
    assert "health check failed" in capsys.readouterr().out
