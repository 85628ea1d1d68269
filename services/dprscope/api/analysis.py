"""The Analysis servicer and the sidecar server that hosts it.

The servicer only translates: request -> plain job (``convert_analysis``) -> a stream
from ``AnalysisService`` -> messages. Admission, leases, cancellation and data-root
checks are the service's; status codes come from the one table in ``ServingInterceptor``.

``attach_analysis`` is what ``server.py`` calls: the sidecar gets its own gRPC server,
port and thread pool, so a long attribution never occupies a Retriever worker, and its
own interceptor instance, so its admission cap and metrics are separate from Search's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dprscope.analysis.service import AnalysisService, Finished
from dprscope.api import convert_analysis as convert
from dprscope.api.context import cancel_token_of, deadline_of
from dprscope.api.interceptors import ServingInterceptor
from dprscope.jobs import Progress
from dprscope.v1 import analysis_pb2 as pb
from dprscope.v1 import analysis_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from dprscope.server import ServerHandle

log = logging.getLogger(__name__)

ANALYSIS_SERVICE = pb.DESCRIPTOR.services_by_name["Analysis"].full_name
_SPARE_WORKERS = 4
"""Handler threads beyond running + queued jobs: health, reflection and prompt refusals."""


class AnalysisServicer(pb_grpc.AnalysisServicer):
    """Translates Analysis RPCs to ``AnalysisService`` streams."""

    def __init__(self, service: AnalysisService) -> None:
        self.service = service

    def Attribute(self, request: pb.AttributeRequest, context: grpc.ServicerContext) -> Iterator[pb.AttributeEvent]:
        stream = self.service.attribute(convert.attribute_job(request), model_version=request.model_version,
                                        cancel=cancel_token_of(context), deadline=deadline_of(context))
        for item in stream:
            if isinstance(item, Progress):
                yield pb.AttributeEvent(progress=convert.progress(item))
            elif isinstance(item, Finished):
                yield pb.AttributeEvent(result=convert.attribute_result(item.model_version, item.result))

    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> Iterator[pb.ProbeEvent]:
        stream = self.service.probe(convert.probe_job(request), model_version=request.model_version,
                                    cancel=cancel_token_of(context), deadline=deadline_of(context))
        for item in stream:
            if isinstance(item, Progress):
                yield pb.ProbeEvent(progress=convert.progress(item))
            elif isinstance(item, Finished):
                yield pb.ProbeEvent(result=convert.probe_result(item.model_version, item.result))

    def ActivationStats(self, request: pb.ActivationStatsRequest,
                        context: grpc.ServicerContext) -> Iterator[pb.ActivationStatsEvent]:
        stream = self.service.activation_stats(convert.activation_stats_job(request),
                                               model_version=request.model_version,
                                               cancel=cancel_token_of(context), deadline=deadline_of(context))
        for item in stream:
            if isinstance(item, Progress):
                yield pb.ActivationStatsEvent(progress=convert.progress(item))
            elif isinstance(item, Finished):
                yield pb.ActivationStatsEvent(result=convert.activation_stats_result(item.model_version,
                                                                                     item.result))


def attach_analysis(handle: ServerHandle) -> None:
    """Start the Analysis server on ``settings.analysis_port`` and record it on ``handle``.

    Health starts NOT_SERVING; ``server.start`` flips it to SERVING after warm-up, and
    ``ServerHandle.stop`` drains and stops this server with the Retriever one.
    """
    from dprscope.server import _bind, _server_options  # the same TLS and message limits as Search

    settings = handle.settings
    service = AnalysisService(handle.registry, handle.metrics, concurrency=settings.analysis_concurrency,
                              queue_size=settings.analysis_queue, data_root=settings.data_root,
                              serving_busy=lambda: handle.batcher.busy, yield_to_serving=settings.analysis_yield)
    # The gate refuses beyond running + queued with its own clear message; the
    # interceptor's cap only has to bound handler threads above that.
    inflight = settings.analysis_concurrency + settings.analysis_queue + _SPARE_WORKERS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=inflight + _SPARE_WORKERS, thread_name_prefix="dprscope-analysis-rpc"),
        interceptors=[ServingInterceptor(handle.metrics, "analysis", inflight)],
        options=_server_options(settings),
    )
    pb_grpc.add_AnalysisServicer_to_server(AnalysisServicer(service), server)
    analysis_health = health.HealthServicer(experimental_non_blocking=True,
                                            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1))
    for name in ("", ANALYSIS_SERVICE):
        analysis_health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(analysis_health, server)
    reflection.enable_server_reflection([ANALYSIS_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = _bind(server, settings, settings.analysis_port or 0)
    server.start()
    handle.analysis_server = server
    handle.analysis_health = analysis_health
    handle.analysis_port = port
    handle.extras["analysis_service"] = service
    handle.extras.setdefault("closers", []).append(service.close)
    log.info("analysis sidecar on %s:%d (concurrency %d, queue %d, data root %s)", settings.host, port,
             settings.analysis_concurrency, settings.analysis_queue, settings.data_root)
