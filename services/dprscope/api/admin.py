"""The ModelAdmin servicer: protobuf <-> ``SwapManager`` calls, nothing more.

Authentication happens before any of this (``AdminAuthInterceptor``), and error codes
come from the one table (``ServingInterceptor``); each method converts its request,
calls one domain method and converts the result. ``attach_admin`` is what ``server.py``
calls to put the service on the retrieval port.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import grpc

from dprscope.encoders.runtime import EncoderRuntime
from dprscope.errors import InvalidArgument
from dprscope.metrics import Metrics
from dprscope.models.registry import ModelRegistry
from dprscope.models.swap import LoadRequest, ModelListing, SwapManager, VersionView
from dprscope.settings import Settings
from dprscope.v1 import admin_pb2 as pb
from dprscope.v1 import admin_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_KIND = pb.LoadCheckpointRequest.Kind
_ROLE = pb.LoadCheckpointRequest.Role
_STATE = pb.ModelVersion.State


# --- converters ---------------------------------------------------------------------------
def _enum_name(enum, value: int, field: str, default: str) -> str:
    """Name of a known enum value; an unknown number (proto3 keeps them) is the caller's error."""
    if not value:
        return default
    if value not in enum.values():
        allowed = [name for name, number in enum.items() if number]
        raise InvalidArgument(f"{field}={value} is not a known value; expected one of {allowed}")
    return enum.Name(value)


def load_request(request: pb.LoadCheckpointRequest) -> LoadRequest:
    kind = _enum_name(_KIND, request.kind, "kind", "FULL")
    role = _enum_name(_ROLE, request.role, "role", "BOTH")
    return LoadRequest(path=request.path, version=request.version, kind=kind, role=role,
                       base_version=request.base_version, pooling=request.pooling)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else ""


def model_version(view: VersionView) -> pb.ModelVersion:
    message = pb.ModelVersion(
        version=view.name, state=_STATE.Value(view.state), query_fingerprint=view.query_fingerprint,
        context_fingerprint=view.context_fingerprint, differs_from_index=list(view.differs_from_index),
        needs_reindex=view.needs_reindex, load_seconds=view.load_seconds, error=view.error,
        kind=_KIND.Value(view.kind), role=_ROLE.Value(view.role), base_version=view.base_version,
        source=view.source, dim=view.dim, reindex_progress=view.reindex_progress, stale_index=view.stale_index,
        loaded_at=_iso(view.loaded_at))
    if view.canary is not None:
        c = view.canary
        message.canary.CopyFrom(pb.CanaryReport(queries=c.queries, k=c.k, mean_topk_overlap=c.mean_topk_overlap,
                                                min_topk_overlap=c.min_topk_overlap))
    return message


def list_response(listing: ModelListing) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(versions=[model_version(v) for v in listing.versions],
                                 active_version=listing.active, previous_version=listing.previous)


# --- servicer -------------------------------------------------------------------------------
class ModelAdminServicer(pb_grpc.ModelAdminServicer):
    """Translates ModelAdmin RPCs to ``SwapManager`` calls (blocking calls run in the handler thread)."""

    def __init__(self, manager: SwapManager) -> None:
        self.manager = manager

    def LoadCheckpoint(self, request: pb.LoadCheckpointRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        return model_version(self.manager.load(load_request(request)))

    def Activate(self, request: pb.ActivateRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        return model_version(self.manager.activate(request.version, allow_stale_index=request.allow_stale_index,
                                                   wait=request.wait))

    def Rollback(self, request: pb.RollbackRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        return model_version(self.manager.rollback())

    def Unload(self, request: pb.UnloadRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        return model_version(self.manager.unload(request.version))

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return list_response(self.manager.list())


def attach_admin(server: grpc.aio.Server, settings: Settings, registry: ModelRegistry, metrics: Metrics,
                 extras: dict[str, Any]) -> bool:
    """Register ModelAdmin on ``server`` (the retrieval port); the manager is closed at shutdown."""
    runtime = EncoderRuntime(backend=settings.backend, quantize=settings.quantize, device=settings.device,
                             cache_dir=settings.onnx_cache_dir)  # as server.start applies it to the first model
    manager = SwapManager(registry, metrics, checkpoint_root=settings.checkpoint_root,
                          canary_file=settings.canary_file, reindex_dir=settings.reindex_dir,
                          mmap_index=settings.mmap_index, index_device=settings.device, runtime=runtime)
    pb_grpc.add_ModelAdminServicer_to_server(ModelAdminServicer(manager), server)
    extras["swap_manager"] = manager
    extras.setdefault("closers", []).append(manager.close)
    if settings.admin_token is None:
        log.info("ModelAdmin is registered but disabled: no admin token configured")
    return True
