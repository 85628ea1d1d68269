"""The rooms keep their import direction: domain code never imports gRPC or the API."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "dprscope"
DOMAIN_ROOMS = ("encoders", "models", "index", "store", "analysis")
DOMAIN_MODULES = ("retrieval.py", "errors.py", "jobs.py", "settings.py", "metrics.py", "paths.py")
FORBIDDEN = ("grpc", "grpc_health", "grpc_reflection", "dprscope.v1", "dprscope.api", "dprscope.server",
             "dprscope.cli")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _domain_files() -> list[Path]:
    files = [PACKAGE / m for m in DOMAIN_MODULES]
    for room in DOMAIN_ROOMS:
        files.extend((PACKAGE / room).rglob("*.py"))
    return [f for f in files if f.exists()]


def test_domain_rooms_never_import_grpc_or_the_api():
    violations = []
    for path in _domain_files():
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                violations.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not violations, "\n".join(violations)


def test_only_the_cli_reads_the_environment():
    readers = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py" or "commands" in path.parts or "v1" in path.parts:
            continue
        source = path.read_text()
        if "os.environ.get(" in source or "os.getenv(" in source or "os.environ[" in source:
            readers.append(str(path.relative_to(PACKAGE)))
    assert not readers, f"configuration must come from Settings, not the environment: {readers}"
