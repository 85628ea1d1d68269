"""Protobuf <-> plain types for the Analysis service.

Requests become the plain job dataclasses of ``dprscope.analysis.service`` (enum numbers
to the domain's lower-case names, proto3 zeros to the documented defaults); results and
``Progress`` become messages. Range checks stay in the domain, which names the valid
range in its message; only what protobuf alone can get wrong (an enum number this
server does not know) is refused here.
"""

from __future__ import annotations

from typing import Any

from dprscope.analysis.activation_stats import QueryPassagePair
from dprscope.analysis.attribution import DEFAULT_N_STEPS, DEFAULT_THRESHOLD, DEFAULT_TOP_NEURONS
from dprscope.analysis.data import Context, DprRecord
from dprscope.analysis.probing import DEFAULT_N_PASSAGES, DEFAULT_TEST_FRACTION
from dprscope.analysis.results import ActivationStatsResult, AttributionResult, ProbeResult
from dprscope.analysis.service import ActivationStatsJob, AttributeJob, ProbeJob
from dprscope.errors import InvalidArgument
from dprscope.jobs import Progress
from dprscope.v1 import analysis_pb2 as pb

_REQ = pb.AttributeRequest


def enum_name(enum: Any, value: int, field: str, default: str) -> str:
    """Lower-case domain name of a known enum number; 0 (UNSPECIFIED) is ``default``.

    proto3 keeps unknown numbers, so a client built from a newer proto could send one;
    that is the caller's error, not a silent default.
    """
    if not value:
        return default
    if value not in enum.values():
        allowed = [name for name, number in enum.items() if number]
        raise InvalidArgument(f"{field}={value} is not a known value; expected one of {allowed}")
    return enum.Name(value).lower()


def enum_value(enum: Any, name: str) -> int:
    return enum.Value(name.upper())


def _int_or_default(value: int, default: int) -> int:
    """proto3 cannot tell 0 from unset: 0 means the default; negatives reach the domain's check."""
    return default if value == 0 else int(value)


def _context(p: Any) -> Context:
    return Context(text=p.text, title=p.title, passage_id=getattr(p, "passage_id", ""))


# ----------------------------------------------------------------------------- requests


def attribute_job(request: pb.AttributeRequest) -> AttributeJob:
    return AttributeJob(
        query=request.query,
        passages=tuple(_context(p) for p in request.passages),
        passage_ids=tuple(request.passage_ids),
        target=enum_name(_REQ.Target, request.target, "target", "score"),
        side=enum_name(_REQ.Side, request.side, "side", "query"),
        layers=tuple(int(x) for x in request.layers),
        sublayer=enum_name(_REQ.Sublayer, request.sublayer, "sublayer", "intermediate"),
        n_steps=_int_or_default(request.steps, DEFAULT_N_STEPS),
        method=enum_name(_REQ.Method, request.method, "method", "riemann_right"),
        positions=enum_name(_REQ.Positions, request.positions, "positions", "all"),
        threshold=request.threshold if request.HasField("threshold") else DEFAULT_THRESHOLD,
        top_neurons=_int_or_default(request.top_neurons, DEFAULT_TOP_NEURONS),
        return_scores=request.return_scores,
        internal_batch_size=int(request.internal_batch_size),
    )


def _record(r: pb.ProbeRecord) -> DprRecord:
    return DprRecord(question=r.question, positive_ctxs=tuple(_context(c) for c in r.positive_ctxs),
                     hard_negative_ctxs=tuple(_context(c) for c in r.hard_negative_ctxs),
                     negative_ctxs=tuple(_context(c) for c in r.negative_ctxs))


def probe_job(request: pb.ProbeRequest) -> ProbeJob:
    if request.max_records < 0:
        raise InvalidArgument(f"max_records must be >= 0 (0 = all), got {request.max_records}")
    for i, r in enumerate(request.records):
        if not r.question.strip():
            raise InvalidArgument(f"records[{i}]: missing or empty 'question'")
    return ProbeJob(
        records=tuple(_record(r) for r in request.records),
        data_path=request.data_path,
        n_passages=tuple(int(n) for n in request.n_passages) or DEFAULT_N_PASSAGES,
        layers=tuple(int(x) for x in request.layers),
        features=enum_name(pb.ProbeRequest.Features, request.features, "features", "cls"),
        test_fraction=request.test_fraction if request.HasField("test_fraction") else DEFAULT_TEST_FRACTION,
        seed=int(request.seed),
        max_records=int(request.max_records),
    )


def activation_stats_job(request: pb.ActivationStatsRequest) -> ActivationStatsJob:
    if request.max_records < 0:
        raise InvalidArgument(f"max_records must be >= 0 (0 = all), got {request.max_records}")
    pairs = []
    for i, p in enumerate(request.pairs):
        if not p.query.strip() or not p.passage.text.strip():
            raise InvalidArgument(f"pairs[{i}]: both the query and the passage text are required")
        pairs.append(QueryPassagePair(p.query, _context(p.passage)))
    return ActivationStatsJob(
        pairs=tuple(pairs),
        data_path=request.data_path,
        layers=tuple(int(x) for x in request.layers),
        sublayer=enum_name(_REQ.Sublayer, request.sublayer, "sublayer", "intermediate"),
        threshold=request.threshold if request.HasField("threshold") else DEFAULT_THRESHOLD,
        n_steps=_int_or_default(request.steps, DEFAULT_N_STEPS),
        target=enum_name(_REQ.Target, request.target, "target", "score"),
        side=enum_name(_REQ.Side, request.side, "side", "query"),
        max_records=int(request.max_records),
    )


# ----------------------------------------------------------------------------- results


def progress(p: Progress) -> pb.Progress:
    return pb.Progress(stage=p.stage, done=int(p.done), total=int(p.total or 0), message=p.message,
                       elapsed_s=float(p.elapsed_s))


def attribute_result(model_version: str, r: AttributionResult) -> pb.AttributeResult:
    layers = []
    for e in r.layers:
        layers.append(pb.LayerAttribution(
            layer=e.layer, sublayer=enum_value(_REQ.Sublayer, e.sublayer),
            count_above_threshold=e.count_above_threshold,
            top_neurons=[pb.NeuronScore(index=n.index, attribution=n.attribution) for n in e.top_neurons],
            scores=e.scores.tolist() if e.scores is not None else [],
            max_attribution=e.max_attribution, sum_attribution=e.sum_attribution, target_delta=e.target_delta,
            completeness_gap=e.completeness_gap, neurons=e.neurons))
    return pb.AttributeResult(model_version=model_version, target_value=r.target_value, layers=layers,
                              steps=r.n_steps, method=enum_value(_REQ.Method, r.method), threshold=r.threshold,
                              seconds=r.seconds)


def probe_result(model_version: str, r: ProbeResult) -> pb.ProbeResult:
    scores = [pb.ProbeScore(n_passages=s.n_passages, layer=s.layer, accuracy=s.accuracy,
                            untrained_accuracy=s.untrained_accuracy, chance=s.chance,
                            train_examples=s.train_examples, test_examples=s.test_examples) for s in r.scores]
    return pb.ProbeResult(model_version=model_version, scores=scores, records_used=r.records_used,
                          seconds=r.seconds)


def activation_stats_result(model_version: str, r: ActivationStatsResult) -> pb.ActivationStatsResult:
    layers = [pb.LayerActivationStats(layer=s.layer, sublayer=enum_value(_REQ.Sublayer, s.sublayer),
                                      neurons_active=s.neurons_active, neurons=s.neurons,
                                      fire_count_histogram=list(s.fire_count_histogram)) for s in r.layers]
    return pb.ActivationStatsResult(model_version=model_version, examples=r.examples, layers=layers,
                                    threshold=r.threshold, seconds=r.seconds)
