"""Readers for the deploy/ files, shared by the deploy tests.

Docker cannot run on the CI machine, so the Dockerfiles are checked by parsing them
(hadolint-style): this module turns a Dockerfile into (instruction, arguments) pairs the
way the Docker builder does — comments dropped, backslash continuations joined, JSON
("exec") form decoded.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
METRIC_NAME = re.compile(r"\bdprscope_[a-z0-9_]+")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: ``keyword`` upper-cased, ``raw`` the joined argument text."""

    keyword: str
    raw: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/VOLUME, or None for shell form."""
        text = self.raw.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.raw
        return value

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """``--flag=value`` options and the remaining words (COPY/ADD/HEALTHCHECK)."""
        flags: dict[str, str] = {}
        words = shlex.split(self.raw)
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


def parse_dockerfile(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by the builder
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions split per ``FROM`` (global ARGs before the first FROM are dropped)."""
    out: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """ENV key=value pairs of a stage (both the ``k=v`` and the legacy ``k v`` forms)."""
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.raw)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def cli_env_names() -> set[str]:
    """Every DPRSCOPE_* variable the CLI reads (flags' twins plus the token itself)."""
    source = (REPO / "services" / "dprscope" / "cli.py").read_text(encoding="utf-8")
    return {"DPRSCOPE_" + name for name in re.findall(r'_env\("([A-Z_]+)"', source)}


def exposed_sample_names() -> dict[str, set[str]]:
    """Sample name -> label names for everything ``Metrics`` exposes, with every labelled
    family touched once so its samples appear (prometheus_client hides unlabelled children)."""
    from prometheus_client.parser import text_string_to_metric_families

    from dprscope.metrics import Metrics

    metrics = Metrics()
    for value in vars(metrics).values():
        names = getattr(value, "_labelnames", None)
        if names:
            value.labels(*["x"] * len(names))
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(k for k in sample.labels if k != "le")
    return samples
