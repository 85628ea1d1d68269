"""The blocking ModelAdmin client: load, activate, roll back, list and unload checkpoints.

Every call carries ``authorization: Bearer <token>``; TLS options match
``RetrieverClient``'s, so an operator script holds one of each against the same port.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from dprscope.v1 import admin_pb2 as pb
from dprscope.v1 import admin_pb2_grpc as pb_grpc
from dprscope_client import _requests as rq
from dprscope_client.errors import RetrieverError

DEFAULT_ADMIN_TIMEOUT_S = 600.0  # loading a checkpoint can take minutes on a big model
KINDS = ("FULL", "DELTA", "PATCH")
ROLES = ("BOTH", "QUERY", "CONTEXT")


@dataclass(frozen=True)
class CanaryReport:
    queries: int
    k: int
    mean_topk_overlap: float
    min_topk_overlap: float


@dataclass(frozen=True)
class ModelVersionInfo:
    """One model version as the server reports it."""

    version: str
    state: str
    query_fingerprint: str
    context_fingerprint: str
    differs_from_index: tuple[str, ...]
    needs_reindex: bool
    load_seconds: float
    error: str
    kind: str
    role: str
    base_version: str
    source: str
    dim: int
    canary: CanaryReport | None
    reindex_progress: float
    stale_index: bool
    loaded_at: str

    @classmethod
    def from_pb(cls, m: pb.ModelVersion) -> ModelVersionInfo:
        canary = (CanaryReport(m.canary.queries, m.canary.k, m.canary.mean_topk_overlap, m.canary.min_topk_overlap)
                  if m.HasField("canary") else None)
        return cls(version=m.version, state=pb.ModelVersion.State.Name(m.state),
                   query_fingerprint=m.query_fingerprint, context_fingerprint=m.context_fingerprint,
                   differs_from_index=tuple(m.differs_from_index), needs_reindex=m.needs_reindex,
                   load_seconds=m.load_seconds, error=m.error, kind=pb.LoadCheckpointRequest.Kind.Name(m.kind),
                   role=pb.LoadCheckpointRequest.Role.Name(m.role), base_version=m.base_version, source=m.source,
                   dim=m.dim, canary=canary, reindex_progress=m.reindex_progress, stale_index=m.stale_index,
                   loaded_at=m.loaded_at)


@dataclass(frozen=True)
class ModelList:
    versions: list[ModelVersionInfo]
    active_version: str
    previous_version: str

    def get(self, version: str) -> ModelVersionInfo | None:
        return next((v for v in self.versions if v.version == version), None)


class AdminClient:
    """Talks to a dprscope ModelAdmin; every call raises ``RetrieverError`` on failure.

    >>> with AdminClient("127.0.0.1:50051", token="s3cret") as admin:
    ...     admin.load("edits/rome-42.safetensors", version="v2", kind="DELTA", role="QUERY")
    ...     admin.activate("v2")
    """

    def __init__(self, target: str, token: str | None = None, *, timeout: float = DEFAULT_ADMIN_TIMEOUT_S,
                 tls: bool = False, root_certificates: bytes | str | Path | None = None,
                 client_cert: bytes | str | Path | None = None, client_key: bytes | str | Path | None = None,
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        creds = rq.credentials(tls, root_certificates, client_cert, client_key)
        options = rq.channel_options()
        self.channel = (grpc.secure_channel(target, creds, options) if creds is not None
                        else grpc.insecure_channel(target, options))
        self.timeout = timeout
        auth = (("authorization", f"Bearer {token}"),) if token else ()
        self.metadata = tuple(metadata) + auth
        self._stub = pb_grpc.ModelAdminStub(self.channel)

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise RetrieverError.from_rpc_error(exc) from None

    def load(self, path: str, *, version: str = "", kind: str = "FULL", role: str = "BOTH", base_version: str = "",
             pooling: str = "", timeout: float | None = None) -> ModelVersionInfo:
        """Load and validate a checkpoint (``path`` inside the server's checkpoint root)."""
        kind, role = kind.upper(), role.upper()
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {KINDS}")
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {ROLES}")
        request = pb.LoadCheckpointRequest(path=path, version=version, kind=pb.LoadCheckpointRequest.Kind.Value(kind),
                                           role=pb.LoadCheckpointRequest.Role.Value(role), base_version=base_version,
                                           pooling=pooling)
        return ModelVersionInfo.from_pb(self._call(self._stub.LoadCheckpoint, request, timeout))

    def activate(self, version: str, *, allow_stale_index: bool = False, wait: bool = False,
                 timeout: float | None = None) -> ModelVersionInfo:
        request = pb.ActivateRequest(version=version, allow_stale_index=allow_stale_index, wait=wait)
        return ModelVersionInfo.from_pb(self._call(self._stub.Activate, request, timeout))

    def rollback(self, *, timeout: float | None = None) -> ModelVersionInfo:
        return ModelVersionInfo.from_pb(self._call(self._stub.Rollback, pb.RollbackRequest(), timeout))

    def unload(self, version: str, *, timeout: float | None = None) -> ModelVersionInfo:
        return ModelVersionInfo.from_pb(self._call(self._stub.Unload, pb.UnloadRequest(version=version), timeout))

    def list_models(self, *, timeout: float | None = None) -> ModelList:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return ModelList([ModelVersionInfo.from_pb(v) for v in response.versions], response.active_version,
                         response.previous_version)

    def wait_until_active(self, version: str, timeout: float = 300.0, poll_s: float = 0.2) -> ModelVersionInfo:
        """Poll ListModels until ``version`` is ACTIVE (after a background re-index)."""
        deadline = time.monotonic() + timeout
        while True:
            listing = self.list_models()
            info = listing.get(version)
            if info is not None and listing.active_version == version and info.state == "ACTIVE":
                return info
            if info is not None and info.state in ("READY", "FAILED") and info.error:
                raise RuntimeError(f"{version} did not activate: {info.error}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{version} not ACTIVE within {timeout}s (state: {info and info.state})")
            time.sleep(poll_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
