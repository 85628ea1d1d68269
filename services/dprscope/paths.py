"""Confining caller-supplied paths to a configured root directory.

Checkpoint paths (ModelAdmin) and data paths (Analysis) both arrive over RPC and must
never reach outside their root, through ``..``, an absolute path or a symlink.
"""

from __future__ import annotations

from pathlib import Path

from dprscope.errors import NotFound, PermissionDenied


def resolve_inside(path: str, root: Path, *, outside: str, missing: str) -> Path:
    """Resolve ``path`` (relative to, or absolute inside, ``root``) with symlinks followed.

    It resolves first without ``strict`` (so a ``..`` escape to a missing path is refused
    as an escape, not reported as missing), then strictly (symlinks followed all the way).

    Raises:
        PermissionDenied: with ``outside`` when the path or a symlink in it leaves ``root``.
        NotFound: with ``missing`` when the path is inside ``root`` but does not exist.
    """
    real_root = Path(root).resolve(strict=True)
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = real_root / candidate
    if not candidate.resolve(strict=False).is_relative_to(real_root):
        raise PermissionDenied(outside)
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise NotFound(missing) from None
    if not resolved.is_relative_to(real_root):
        raise PermissionDenied(outside)
    return resolved
