"""Model versions: loading, validating, activating, leasing and rolling back checkpoints."""

from __future__ import annotations

from dprscope.models.registry import Lease, ModelRegistry, ModelVersion, VersionState

__all__ = ["Lease", "ModelRegistry", "ModelVersion", "VersionState"]
