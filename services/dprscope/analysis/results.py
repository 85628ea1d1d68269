"""Plain result types of the analysis room.

The servicer converts these to protobuf and the CLI to JSON/CSV; neither reaches into
tensors. Field names follow ``protos/dprscope/v1/analysis.proto`` so the conversion is a
rename-free copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TARGETS = ("score", "positive_prob")
SIDES = ("query", "passage")
SUBLAYERS = ("intermediate", "output")
SUBLAYER_CHOICES = ("intermediate", "output", "both")
METHODS = ("riemann_right", "gauss_legendre")
POSITIONS = ("all", "cls")
PROBE_FEATURES = ("cls", "mean")


@dataclass(frozen=True)
class NeuronScore:
    """One neuron and its attribution."""

    index: int
    attribution: float


@dataclass(frozen=True)
class LayerAttribution:
    """Integrated-gradients attribution of one FFN sublayer of one transformer layer.

    Attributes:
        layer: 0-based transformer layer.
        sublayer: ``"intermediate"`` (keys) or ``"output"`` (values).
        neurons: number of neurons in the sublayer.
        count_above_threshold: neurons with ``attr > threshold * max_attribution``
            (0 when no attribution is positive): Dai et al.'s "strongly activated".
        top_neurons: the highest attributions, best first.
        scores: the full per-neuron attribution vector when asked for, else ``None``.
        max_attribution: ``max_i attr_i``.
        sum_attribution: ``sum_i attr_i``.
        baseline_value: P with this sublayer's (selected positions') activations zeroed.
        target_delta: ``P(x) - baseline_value``.
        completeness_gap: ``sum_attribution - target_delta``; goes to 0 as steps grow.
    """

    layer: int
    sublayer: str
    neurons: int
    count_above_threshold: int
    top_neurons: tuple[NeuronScore, ...]
    scores: np.ndarray | None
    max_attribution: float
    sum_attribution: float
    baseline_value: float
    target_delta: float
    completeness_gap: float


@dataclass(frozen=True)
class AttributionResult:
    """What ``attribute`` returns for one query and its passages."""

    target: str
    side: str
    target_value: float
    layers: tuple[LayerAttribution, ...]
    n_steps: int
    method: str
    positions: str
    threshold: float
    tokens: int
    seconds: float

    def layer(self, layer: int, sublayer: str = "intermediate") -> LayerAttribution:
        """The entry for ``(layer, sublayer)``; ``KeyError`` when it was not requested."""
        for entry in self.layers:
            if entry.layer == layer and entry.sublayer == sublayer:
                return entry
        raise KeyError((layer, sublayer))


@dataclass(frozen=True)
class ProbeScore:
    """Held-out accuracy of the linear probe for one (N, layer)."""

    n_passages: int
    layer: int
    accuracy: float
    untrained_accuracy: float
    chance: float
    train_examples: int
    test_examples: int


@dataclass(frozen=True)
class ProbeResult:
    """What ``probe`` returns: one score per (N, layer), N-major."""

    scores: tuple[ProbeScore, ...]
    records_used: int
    features: str
    seconds: float

    def accuracy(self, n_passages: int, layer: int) -> float:
        for s in self.scores:
            if s.n_passages == n_passages and s.layer == layer:
                return s.accuracy
        raise KeyError((n_passages, layer))


@dataclass(frozen=True)
class LayerActivationStats:
    """How often each neuron of one sublayer is strongly activated across examples.

    ``fire_count_histogram[k]`` is the number of neurons above threshold for exactly
    ``k`` examples (k = 0..examples), so it sums to ``neurons``.
    """

    layer: int
    sublayer: str
    neurons_active: int
    neurons: int
    fire_count_histogram: tuple[int, ...]


@dataclass(frozen=True)
class ActivationStatsResult:
    """What ``activation_stats`` returns."""

    examples: int
    layers: tuple[LayerActivationStats, ...]
    threshold: float
    n_steps: int
    target: str
    side: str
    seconds: float
    per_example_counts: tuple[dict[tuple[int, str], int], ...] = field(default=())
