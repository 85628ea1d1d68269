"""The blocking Analysis client: attribution, probes and activation statistics.

Each analysis is a server stream (progress events, then one result). ``*_events``
methods yield ``AnalysisProgress`` items and finally the result; the plain methods
consume that stream, hand each progress item to ``progress`` (e.g. a progress bar) and
return the result. Results are frozen dataclasses (``dataclasses.asdict`` gives JSON).
Closing the client, or abandoning a ``*_events`` generator, cancels the call and with
it the server-side job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from dprscope.v1 import analysis_pb2 as pb
from dprscope.v1 import analysis_pb2_grpc as pb_grpc
from dprscope_client import _requests as rq
from dprscope_client.errors import RetrieverError

DEFAULT_ANALYSIS_TIMEOUT_S = 3600.0
_REQ = pb.AttributeRequest


@dataclass(frozen=True)
class AnalysisProgress:
    stage: str
    done: int
    total: int | None
    message: str
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


@dataclass(frozen=True)
class NeuronScore:
    index: int
    attribution: float


@dataclass(frozen=True)
class LayerAttribution:
    layer: int
    sublayer: str  # "intermediate" | "output"
    neurons: int
    count_above_threshold: int
    top_neurons: tuple[NeuronScore, ...]
    scores: tuple[float, ...]  # empty unless return_scores
    max_attribution: float
    sum_attribution: float
    target_delta: float
    completeness_gap: float


@dataclass(frozen=True)
class AttributeResult:
    model_version: str
    target_value: float
    layers: tuple[LayerAttribution, ...]
    steps: int
    method: str
    threshold: float
    seconds: float

    def layer(self, layer: int, sublayer: str = "intermediate") -> LayerAttribution:
        for entry in self.layers:
            if entry.layer == layer and entry.sublayer == sublayer:
                return entry
        raise KeyError((layer, sublayer))


@dataclass(frozen=True)
class ProbeScore:
    n_passages: int
    layer: int
    accuracy: float
    untrained_accuracy: float
    chance: float
    train_examples: int
    test_examples: int


@dataclass(frozen=True)
class ProbeResult:
    model_version: str
    scores: tuple[ProbeScore, ...]
    records_used: int
    seconds: float

    def accuracy(self, n_passages: int, layer: int) -> float:
        for s in self.scores:
            if s.n_passages == n_passages and s.layer == layer:
                return s.accuracy
        raise KeyError((n_passages, layer))


@dataclass(frozen=True)
class LayerActivationStats:
    layer: int
    sublayer: str
    neurons_active: int
    neurons: int
    fire_count_histogram: tuple[int, ...]


@dataclass(frozen=True)
class ActivationStatsResult:
    model_version: str
    examples: int
    layers: tuple[LayerActivationStats, ...]
    threshold: float
    seconds: float


# ----------------------------------------------------------------------------- conversion


def _progress(p: pb.Progress) -> AnalysisProgress:
    return AnalysisProgress(p.stage, p.done, p.total or None, p.message, p.elapsed_s)


def _sublayer(value: int) -> str:
    return _REQ.Sublayer.Name(value).lower()


def _attribute_result(r: pb.AttributeResult) -> AttributeResult:
    layers = tuple(LayerAttribution(
        layer=e.layer, sublayer=_sublayer(e.sublayer), neurons=e.neurons, count_above_threshold=e.count_above_threshold,
        top_neurons=tuple(NeuronScore(n.index, n.attribution) for n in e.top_neurons), scores=tuple(e.scores),
        max_attribution=e.max_attribution, sum_attribution=e.sum_attribution, target_delta=e.target_delta,
        completeness_gap=e.completeness_gap) for e in r.layers)
    return AttributeResult(r.model_version, r.target_value, layers, r.steps, _REQ.Method.Name(r.method).lower(),
                           r.threshold, r.seconds)


def _probe_result(r: pb.ProbeResult) -> ProbeResult:
    scores = tuple(ProbeScore(s.n_passages, s.layer, s.accuracy, s.untrained_accuracy, s.chance, s.train_examples,
                              s.test_examples) for s in r.scores)
    return ProbeResult(r.model_version, scores, r.records_used, r.seconds)


def _stats_result(r: pb.ActivationStatsResult) -> ActivationStatsResult:
    layers = tuple(LayerActivationStats(s.layer, _sublayer(s.sublayer), s.neurons_active, s.neurons,
                                        tuple(s.fire_count_histogram)) for s in r.layers)
    return ActivationStatsResult(r.model_version, r.examples, layers, r.threshold, r.seconds)


def _passage(p: str | tuple[str, str] | Mapping[str, Any]) -> pb.PassageInput:
    """A passage as text, ``(title, text)`` or a ``{"title", "text"}`` dict."""
    if isinstance(p, str):
        return pb.PassageInput(text=p)
    if isinstance(p, Mapping):
        return pb.PassageInput(title=str(p.get("title") or ""), text=str(p.get("text") or ""))
    title, text = p
    return pb.PassageInput(title=title, text=text)


def _ctx(c: Mapping[str, Any]) -> pb.ProbeContext:
    return pb.ProbeContext(title=str(c.get("title") or ""), text=str(c.get("text") or ""),
                           passage_id=str(c.get("passage_id") or c.get("id") or ""))


def _record(r: Mapping[str, Any]) -> pb.ProbeRecord:
    """A DPR-format dict (question, positive_ctxs, hard_negative_ctxs, negative_ctxs)."""
    return pb.ProbeRecord(question=str(r.get("question") or ""),
                          positive_ctxs=[_ctx(c) for c in r.get("positive_ctxs") or ()],
                          hard_negative_ctxs=[_ctx(c) for c in r.get("hard_negative_ctxs") or ()],
                          negative_ctxs=[_ctx(c) for c in r.get("negative_ctxs") or ()])


def _enum(enum: Any, name: str | None, field: str) -> int:
    if not name:
        return 0
    try:
        return enum.Value(name.upper())
    except ValueError:
        allowed = [n.lower() for n, v in enum.items() if v]
        raise ValueError(f"{field} {name!r} is not one of {allowed}") from None


# ----------------------------------------------------------------------------- the client


class AnalysisClient:
    """Talks to a dprscope Analysis sidecar (default port 50052); failures raise ``RetrieverError``.

    >>> with AnalysisClient("127.0.0.1:50052") as a:
    ...     r = a.attribute("who wrote hamlet", ["Hamlet is a tragedy by William Shakespeare."], steps=20)
    ...     [(e.layer, e.count_above_threshold) for e in r.layers]
    """

    def __init__(self, target: str, *, timeout: float = DEFAULT_ANALYSIS_TIMEOUT_S, tls: bool = False,
                 root_certificates: bytes | str | Path | None = None, client_cert: bytes | str | Path | None = None,
                 client_key: bytes | str | Path | None = None, metadata: Sequence[tuple[str, str]] = ()) -> None:
        creds = rq.credentials(tls, root_certificates, client_cert, client_key)
        options = rq.channel_options()
        self.channel = (grpc.secure_channel(target, creds, options) if creds is not None
                        else grpc.insecure_channel(target, options))
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self._stub = pb_grpc.AnalysisStub(self.channel)

    # --- streams ------------------------------------------------------------------------
    def _events(self, method, request, timeout: float | None, convert: Callable) -> Iterator[Any]:
        call = method(request, timeout=self.timeout if timeout is None else timeout, metadata=self.metadata)
        try:
            for event in call:
                if event.WhichOneof("event") == "progress":
                    yield _progress(event.progress)
                else:
                    yield convert(event.result)
        except grpc.RpcError as exc:
            raise RetrieverError.from_rpc_error(exc) from None
        finally:
            call.cancel()  # no-op when the stream already ended; stops the job when abandoned

    @staticmethod
    def _drain(events: Iterator[Any], progress: Callable[[AnalysisProgress], None] | None) -> Any:
        result = None
        for item in events:
            if isinstance(item, AnalysisProgress):
                if progress is not None:
                    progress(item)
            else:
                result = item
        if result is None:
            raise RetrieverError(grpc.StatusCode.UNKNOWN, "the stream ended without a result")
        return result

    def attribute_events(self, query: str, passages: Sequence[str | tuple[str, str] | Mapping[str, Any]] = (), *,
                         passage_ids: Sequence[str] = (), model_version: str = "", target: str = "score",
                         side: str = "query", layers: Sequence[int] = (), sublayer: str = "intermediate",
                         steps: int = 20, method: str = "riemann_right", positions: str = "all",
                         threshold: float | None = None, top_neurons: int = 20, return_scores: bool = False,
                         internal_batch_size: int = 0,
                         timeout: float | None = None) -> Iterator[AnalysisProgress | AttributeResult]:
        """Knowledge-neuron attribution (positive passage first); yields progress, then the result."""
        request = pb.AttributeRequest(
            query=query, passages=[_passage(p) for p in passages], passage_ids=list(passage_ids),
            model_version=model_version, target=_enum(_REQ.Target, target, "target"),
            side=_enum(_REQ.Side, side, "side"), layers=list(layers),
            sublayer=_enum(_REQ.Sublayer, sublayer, "sublayer"), steps=steps,
            method=_enum(_REQ.Method, method, "method"), positions=_enum(_REQ.Positions, positions, "positions"),
            top_neurons=top_neurons, return_scores=return_scores, internal_batch_size=internal_batch_size)
        if threshold is not None:
            request.threshold = threshold
        return self._events(self._stub.Attribute, request, timeout, _attribute_result)

    def attribute(self, query: str, passages: Sequence[str | tuple[str, str] | Mapping[str, Any]] = (), *,
                  progress: Callable[[AnalysisProgress], None] | None = None, **kwargs: Any) -> AttributeResult:
        """``attribute_events`` run to the end; ``progress`` gets each progress event."""
        return self._drain(self.attribute_events(query, passages, **kwargs), progress)

    def probe_events(self, records: Iterable[Mapping[str, Any]] = (), *, data_path: str = "",
                     n_passages: Sequence[int] = (2, 3, 4, 5), layers: Sequence[int] = (), features: str = "cls",
                     test_fraction: float | None = None, seed: int = 0, model_version: str = "",
                     max_records: int = 0, timeout: float | None = None) -> Iterator[AnalysisProgress | ProbeResult]:
        """Linear probes per (N, layer) over DPR-format dicts or a server-side ``data_path``."""
        request = pb.ProbeRequest(records=[_record(r) for r in records], data_path=data_path,
                                  n_passages=list(n_passages), layers=list(layers),
                                  features=_enum(pb.ProbeRequest.Features, features, "features"), seed=seed,
                                  model_version=model_version, max_records=max_records)
        if test_fraction is not None:
            request.test_fraction = test_fraction
        return self._events(self._stub.Probe, request, timeout, _probe_result)

    def probe(self, records: Iterable[Mapping[str, Any]] = (), *,
              progress: Callable[[AnalysisProgress], None] | None = None, **kwargs: Any) -> ProbeResult:
        return self._drain(self.probe_events(records, **kwargs), progress)

    def activation_stats_events(self, pairs: Iterable[tuple[str, str | tuple[str, str] | Mapping[str, Any]]] = (), *,
                                data_path: str = "", model_version: str = "", layers: Sequence[int] = (),
                                sublayer: str = "intermediate", threshold: float | None = None, steps: int = 20,
                                target: str = "score", side: str = "query", max_records: int = 0,
                                timeout: float | None = None
                                ) -> Iterator[AnalysisProgress | ActivationStatsResult]:
        """Per-layer strongly-activated neuron counts over (query, positive) pairs or a DPR file."""
        request = pb.ActivationStatsRequest(
            pairs=[pb.QueryPassagePair(query=q, passage=_passage(p)) for q, p in pairs], data_path=data_path,
            model_version=model_version, layers=list(layers), sublayer=_enum(_REQ.Sublayer, sublayer, "sublayer"),
            steps=steps, target=_enum(_REQ.Target, target, "target"), side=_enum(_REQ.Side, side, "side"),
            max_records=max_records)
        if threshold is not None:
            request.threshold = threshold
        return self._events(self._stub.ActivationStats, request, timeout, _stats_result)

    def activation_stats(self, pairs: Iterable[tuple[str, str | tuple[str, str] | Mapping[str, Any]]] = (), *,
                         progress: Callable[[AnalysisProgress], None] | None = None,
                         **kwargs: Any) -> ActivationStatsResult:
        return self._drain(self.activation_stats_events(pairs, **kwargs), progress)

    # --- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AnalysisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
