from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadCheckpointRequest(_message.Message):
    __slots__ = ("path", "version", "kind", "role", "base_version", "pooling")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[LoadCheckpointRequest.Kind]
        FULL: _ClassVar[LoadCheckpointRequest.Kind]
        DELTA: _ClassVar[LoadCheckpointRequest.Kind]
        PATCH: _ClassVar[LoadCheckpointRequest.Kind]
    KIND_UNSPECIFIED: LoadCheckpointRequest.Kind
    FULL: LoadCheckpointRequest.Kind
    DELTA: LoadCheckpointRequest.Kind
    PATCH: LoadCheckpointRequest.Kind
    class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROLE_UNSPECIFIED: _ClassVar[LoadCheckpointRequest.Role]
        BOTH: _ClassVar[LoadCheckpointRequest.Role]
        QUERY: _ClassVar[LoadCheckpointRequest.Role]
        CONTEXT: _ClassVar[LoadCheckpointRequest.Role]
    ROLE_UNSPECIFIED: LoadCheckpointRequest.Role
    BOTH: LoadCheckpointRequest.Role
    QUERY: LoadCheckpointRequest.Role
    CONTEXT: LoadCheckpointRequest.Role
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    path: str
    version: str
    kind: LoadCheckpointRequest.Kind
    role: LoadCheckpointRequest.Role
    base_version: str
    pooling: str
    def __init__(self, path: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[_Union[LoadCheckpointRequest.Kind, str]] = ..., role: _Optional[_Union[LoadCheckpointRequest.Role, str]] = ..., base_version: _Optional[str] = ..., pooling: _Optional[str] = ...) -> None: ...

class CanaryReport(_message.Message):
    __slots__ = ("queries", "mean_topk_overlap", "min_topk_overlap", "k")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    MEAN_TOPK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    MIN_TOPK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    queries: int
    mean_topk_overlap: float
    min_topk_overlap: float
    k: int
    def __init__(self, queries: _Optional[int] = ..., mean_topk_overlap: _Optional[float] = ..., min_topk_overlap: _Optional[float] = ..., k: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "state", "query_fingerprint", "context_fingerprint", "differs_from_index", "needs_reindex", "load_seconds", "error", "kind", "role", "base_version", "source", "dim", "canary", "reindex_progress", "stale_index", "loaded_at")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ModelVersion.State]
        LOADING: _ClassVar[ModelVersion.State]
        READY: _ClassVar[ModelVersion.State]
        ACTIVE: _ClassVar[ModelVersion.State]
        FAILED: _ClassVar[ModelVersion.State]
        REINDEXING: _ClassVar[ModelVersion.State]
    STATE_UNSPECIFIED: ModelVersion.State
    LOADING: ModelVersion.State
    READY: ModelVersion.State
    ACTIVE: ModelVersion.State
    FAILED: ModelVersion.State
    REINDEXING: ModelVersion.State
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DIFFERS_FROM_INDEX_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REINDEX_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    REINDEX_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STALE_INDEX_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: ModelVersion.State
    query_fingerprint: str
    context_fingerprint: str
    differs_from_index: _containers.RepeatedScalarFieldContainer[str]
    needs_reindex: bool
    load_seconds: float
    error: str
    kind: LoadCheckpointRequest.Kind
    role: LoadCheckpointRequest.Role
    base_version: str
    source: str
    dim: int
    canary: CanaryReport
    reindex_progress: float
    stale_index: bool
    loaded_at: str
    def __init__(self, version: _Optional[str] = ..., state: _Optional[_Union[ModelVersion.State, str]] = ..., query_fingerprint: _Optional[str] = ..., context_fingerprint: _Optional[str] = ..., differs_from_index: _Optional[_Iterable[str]] = ..., needs_reindex: _Optional[bool] = ..., load_seconds: _Optional[float] = ..., error: _Optional[str] = ..., kind: _Optional[_Union[LoadCheckpointRequest.Kind, str]] = ..., role: _Optional[_Union[LoadCheckpointRequest.Role, str]] = ..., base_version: _Optional[str] = ..., source: _Optional[str] = ..., dim: _Optional[int] = ..., canary: _Optional[_Union[CanaryReport, _Mapping]] = ..., reindex_progress: _Optional[float] = ..., stale_index: _Optional[bool] = ..., loaded_at: _Optional[str] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("version", "allow_stale_index", "wait")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_STALE_INDEX_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    version: str
    allow_stale_index: bool
    wait: bool
    def __init__(self, version: _Optional[str] = ..., allow_stale_index: _Optional[bool] = ..., wait: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnloadRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("versions", "active_version", "previous_version")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    active_version: str
    previous_version: str
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., active_version: _Optional[str] = ..., previous_version: _Optional[str] = ...) -> None: ...
