"""Looking inside the serving weights: knowledge-neuron attribution, linear probes, statistics.

Plain functions over a loaded ``BiEncoder`` (no gRPC here; ``dprscope.api`` translates).
Every long verb takes ``progress`` and ``cancel`` and shares captum's argument names
(``n_steps``, ``internal_batch_size``, ``threshold``, ``layers``).
"""

from __future__ import annotations

from dprscope.analysis.activation_stats import QueryPassagePair, activation_stats, pairs_from_records
from dprscope.analysis.attribution import (
    DEFAULT_N_STEPS,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_NEURONS,
    MAX_N_STEPS,
    approximation_parameters,
    attribute,
)
from dprscope.analysis.data import Context, DprRecord, load_dpr_records, records_from_dicts
from dprscope.analysis.probing import DEFAULT_N_PASSAGES, probe
from dprscope.analysis.results import (
    ActivationStatsResult,
    AttributionResult,
    LayerActivationStats,
    LayerAttribution,
    NeuronScore,
    ProbeResult,
    ProbeScore,
)

__all__ = [
    "DEFAULT_N_PASSAGES",
    "DEFAULT_N_STEPS",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TOP_NEURONS",
    "MAX_N_STEPS",
    "ActivationStatsResult",
    "AttributionResult",
    "Context",
    "DprRecord",
    "LayerActivationStats",
    "LayerAttribution",
    "NeuronScore",
    "ProbeResult",
    "ProbeScore",
    "QueryPassagePair",
    "activation_stats",
    "approximation_parameters",
    "attribute",
    "load_dpr_records",
    "pairs_from_records",
    "probe",
    "records_from_dicts",
]
