from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Progress(_message.Message):
    __slots__ = ("stage", "done", "total", "message", "elapsed_s")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    message: str
    elapsed_s: float
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ..., elapsed_s: _Optional[float] = ...) -> None: ...

class PassageInput(_message.Message):
    __slots__ = ("title", "text")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    title: str
    text: str
    def __init__(self, title: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class AttributeRequest(_message.Message):
    __slots__ = ("query", "passages", "passage_ids", "model_version", "target", "side", "layers", "sublayer", "steps", "method", "positions", "threshold", "top_neurons", "return_scores", "internal_batch_size")
    class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TARGET_UNSPECIFIED: _ClassVar[AttributeRequest.Target]
        SCORE: _ClassVar[AttributeRequest.Target]
        POSITIVE_PROB: _ClassVar[AttributeRequest.Target]
    TARGET_UNSPECIFIED: AttributeRequest.Target
    SCORE: AttributeRequest.Target
    POSITIVE_PROB: AttributeRequest.Target
    class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SIDE_UNSPECIFIED: _ClassVar[AttributeRequest.Side]
        QUERY: _ClassVar[AttributeRequest.Side]
        PASSAGE: _ClassVar[AttributeRequest.Side]
    SIDE_UNSPECIFIED: AttributeRequest.Side
    QUERY: AttributeRequest.Side
    PASSAGE: AttributeRequest.Side
    class Sublayer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SUBLAYER_UNSPECIFIED: _ClassVar[AttributeRequest.Sublayer]
        INTERMEDIATE: _ClassVar[AttributeRequest.Sublayer]
        OUTPUT: _ClassVar[AttributeRequest.Sublayer]
        BOTH: _ClassVar[AttributeRequest.Sublayer]
    SUBLAYER_UNSPECIFIED: AttributeRequest.Sublayer
    INTERMEDIATE: AttributeRequest.Sublayer
    OUTPUT: AttributeRequest.Sublayer
    BOTH: AttributeRequest.Sublayer
    class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        METHOD_UNSPECIFIED: _ClassVar[AttributeRequest.Method]
        RIEMANN_RIGHT: _ClassVar[AttributeRequest.Method]
        GAUSS_LEGENDRE: _ClassVar[AttributeRequest.Method]
    METHOD_UNSPECIFIED: AttributeRequest.Method
    RIEMANN_RIGHT: AttributeRequest.Method
    GAUSS_LEGENDRE: AttributeRequest.Method
    class Positions(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        POSITIONS_UNSPECIFIED: _ClassVar[AttributeRequest.Positions]
        ALL: _ClassVar[AttributeRequest.Positions]
        CLS: _ClassVar[AttributeRequest.Positions]
    POSITIONS_UNSPECIFIED: AttributeRequest.Positions
    ALL: AttributeRequest.Positions
    CLS: AttributeRequest.Positions
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SUBLAYER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_NEURONS_FIELD_NUMBER: _ClassVar[int]
    RETURN_SCORES_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    query: str
    passages: _containers.RepeatedCompositeFieldContainer[PassageInput]
    passage_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    target: AttributeRequest.Target
    side: AttributeRequest.Side
    layers: _containers.RepeatedScalarFieldContainer[int]
    sublayer: AttributeRequest.Sublayer
    steps: int
    method: AttributeRequest.Method
    positions: AttributeRequest.Positions
    threshold: float
    top_neurons: int
    return_scores: bool
    internal_batch_size: int
    def __init__(self, query: _Optional[str] = ..., passages: _Optional[_Iterable[_Union[PassageInput, _Mapping]]] = ..., passage_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., target: _Optional[_Union[AttributeRequest.Target, str]] = ..., side: _Optional[_Union[AttributeRequest.Side, str]] = ..., layers: _Optional[_Iterable[int]] = ..., sublayer: _Optional[_Union[AttributeRequest.Sublayer, str]] = ..., steps: _Optional[int] = ..., method: _Optional[_Union[AttributeRequest.Method, str]] = ..., positions: _Optional[_Union[AttributeRequest.Positions, str]] = ..., threshold: _Optional[float] = ..., top_neurons: _Optional[int] = ..., return_scores: _Optional[bool] = ..., internal_batch_size: _Optional[int] = ...) -> None: ...

class NeuronScore(_message.Message):
    __slots__ = ("index", "attribution")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    index: int
    attribution: float
    def __init__(self, index: _Optional[int] = ..., attribution: _Optional[float] = ...) -> None: ...

class LayerAttribution(_message.Message):
    __slots__ = ("layer", "sublayer", "count_above_threshold", "top_neurons", "scores", "max_attribution", "sum_attribution", "target_delta", "completeness_gap", "neurons")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SUBLAYER_FIELD_NUMBER: _ClassVar[int]
    COUNT_ABOVE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_NEURONS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SUM_ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_DELTA_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_GAP_FIELD_NUMBER: _ClassVar[int]
    NEURONS_FIELD_NUMBER: _ClassVar[int]
    layer: int
    sublayer: AttributeRequest.Sublayer
    count_above_threshold: int
    top_neurons: _containers.RepeatedCompositeFieldContainer[NeuronScore]
    scores: _containers.RepeatedScalarFieldContainer[float]
    max_attribution: float
    sum_attribution: float
    target_delta: float
    completeness_gap: float
    neurons: int
    def __init__(self, layer: _Optional[int] = ..., sublayer: _Optional[_Union[AttributeRequest.Sublayer, str]] = ..., count_above_threshold: _Optional[int] = ..., top_neurons: _Optional[_Iterable[_Union[NeuronScore, _Mapping]]] = ..., scores: _Optional[_Iterable[float]] = ..., max_attribution: _Optional[float] = ..., sum_attribution: _Optional[float] = ..., target_delta: _Optional[float] = ..., completeness_gap: _Optional[float] = ..., neurons: _Optional[int] = ...) -> None: ...

class AttributeResult(_message.Message):
    __slots__ = ("model_version", "target_value", "layers", "steps", "method", "threshold", "seconds")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_VALUE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    target_value: float
    layers: _containers.RepeatedCompositeFieldContainer[LayerAttribution]
    steps: int
    method: AttributeRequest.Method
    threshold: float
    seconds: float
    def __init__(self, model_version: _Optional[str] = ..., target_value: _Optional[float] = ..., layers: _Optional[_Iterable[_Union[LayerAttribution, _Mapping]]] = ..., steps: _Optional[int] = ..., method: _Optional[_Union[AttributeRequest.Method, str]] = ..., threshold: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class AttributeEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: AttributeResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[AttributeResult, _Mapping]] = ...) -> None: ...

class ProbeContext(_message.Message):
    __slots__ = ("title", "text", "passage_id")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    title: str
    text: str
    passage_id: str
    def __init__(self, title: _Optional[str] = ..., text: _Optional[str] = ..., passage_id: _Optional[str] = ...) -> None: ...

class ProbeRecord(_message.Message):
    __slots__ = ("question", "positive_ctxs", "hard_negative_ctxs", "negative_ctxs")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_CTXS_FIELD_NUMBER: _ClassVar[int]
    HARD_NEGATIVE_CTXS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_CTXS_FIELD_NUMBER: _ClassVar[int]
    question: str
    positive_ctxs: _containers.RepeatedCompositeFieldContainer[ProbeContext]
    hard_negative_ctxs: _containers.RepeatedCompositeFieldContainer[ProbeContext]
    negative_ctxs: _containers.RepeatedCompositeFieldContainer[ProbeContext]
    def __init__(self, question: _Optional[str] = ..., positive_ctxs: _Optional[_Iterable[_Union[ProbeContext, _Mapping]]] = ..., hard_negative_ctxs: _Optional[_Iterable[_Union[ProbeContext, _Mapping]]] = ..., negative_ctxs: _Optional[_Iterable[_Union[ProbeContext, _Mapping]]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("records", "data_path", "n_passages", "layers", "features", "test_fraction", "seed", "model_version", "max_records")
    class Features(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FEATURES_UNSPECIFIED: _ClassVar[ProbeRequest.Features]
        CLS: _ClassVar[ProbeRequest.Features]
        MEAN: _ClassVar[ProbeRequest.Features]
    FEATURES_UNSPECIFIED: ProbeRequest.Features
    CLS: ProbeRequest.Features
    MEAN: ProbeRequest.Features
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    N_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ProbeRecord]
    data_path: str
    n_passages: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedScalarFieldContainer[int]
    features: ProbeRequest.Features
    test_fraction: float
    seed: int
    model_version: str
    max_records: int
    def __init__(self, records: _Optional[_Iterable[_Union[ProbeRecord, _Mapping]]] = ..., data_path: _Optional[str] = ..., n_passages: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[int]] = ..., features: _Optional[_Union[ProbeRequest.Features, str]] = ..., test_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., model_version: _Optional[str] = ..., max_records: _Optional[int] = ...) -> None: ...

class ProbeScore(_message.Message):
    __slots__ = ("n_passages", "layer", "accuracy", "untrained_accuracy", "chance", "train_examples", "test_examples")
    N_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    UNTRAINED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CHANCE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEST_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    n_passages: int
    layer: int
    accuracy: float
    untrained_accuracy: float
    chance: float
    train_examples: int
    test_examples: int
    def __init__(self, n_passages: _Optional[int] = ..., layer: _Optional[int] = ..., accuracy: _Optional[float] = ..., untrained_accuracy: _Optional[float] = ..., chance: _Optional[float] = ..., train_examples: _Optional[int] = ..., test_examples: _Optional[int] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("model_version", "scores", "records_used", "seconds")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_USED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    scores: _containers.RepeatedCompositeFieldContainer[ProbeScore]
    records_used: int
    seconds: float
    def __init__(self, model_version: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[ProbeScore, _Mapping]]] = ..., records_used: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ProbeEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: ProbeResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[ProbeResult, _Mapping]] = ...) -> None: ...

class QueryPassagePair(_message.Message):
    __slots__ = ("query", "passage")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    query: str
    passage: PassageInput
    def __init__(self, query: _Optional[str] = ..., passage: _Optional[_Union[PassageInput, _Mapping]] = ...) -> None: ...

class ActivationStatsRequest(_message.Message):
    __slots__ = ("pairs", "data_path", "model_version", "layers", "sublayer", "threshold", "steps", "target", "side", "max_records")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    DATA_PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SUBLAYER_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[QueryPassagePair]
    data_path: str
    model_version: str
    layers: _containers.RepeatedScalarFieldContainer[int]
    sublayer: AttributeRequest.Sublayer
    threshold: float
    steps: int
    target: AttributeRequest.Target
    side: AttributeRequest.Side
    max_records: int
    def __init__(self, pairs: _Optional[_Iterable[_Union[QueryPassagePair, _Mapping]]] = ..., data_path: _Optional[str] = ..., model_version: _Optional[str] = ..., layers: _Optional[_Iterable[int]] = ..., sublayer: _Optional[_Union[AttributeRequest.Sublayer, str]] = ..., threshold: _Optional[float] = ..., steps: _Optional[int] = ..., target: _Optional[_Union[AttributeRequest.Target, str]] = ..., side: _Optional[_Union[AttributeRequest.Side, str]] = ..., max_records: _Optional[int] = ...) -> None: ...

class LayerActivationStats(_message.Message):
    __slots__ = ("layer", "sublayer", "neurons_active", "neurons", "fire_count_histogram")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SUBLAYER_FIELD_NUMBER: _ClassVar[int]
    NEURONS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    NEURONS_FIELD_NUMBER: _ClassVar[int]
    FIRE_COUNT_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    layer: int
    sublayer: AttributeRequest.Sublayer
    neurons_active: int
    neurons: int
    fire_count_histogram: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, layer: _Optional[int] = ..., sublayer: _Optional[_Union[AttributeRequest.Sublayer, str]] = ..., neurons_active: _Optional[int] = ..., neurons: _Optional[int] = ..., fire_count_histogram: _Optional[_Iterable[int]] = ...) -> None: ...

class ActivationStatsResult(_message.Message):
    __slots__ = ("model_version", "examples", "layers", "threshold", "seconds")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    examples: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerActivationStats]
    threshold: float
    seconds: float
    def __init__(self, model_version: _Optional[str] = ..., examples: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerActivationStats, _Mapping]]] = ..., threshold: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class ActivationStatsEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: ActivationStatsResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[ActivationStatsResult, _Mapping]] = ...) -> None: ...
