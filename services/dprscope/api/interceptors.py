"""Cross-cutting request handling: admission, error mapping, metrics, authentication.

Servicers raise domain errors and never decide status codes or touch metrics; the
interceptors here do, once, for every method of every service.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import grpc

from dprscope.api.errors import status_for
from dprscope.errors import DprscopeError
from dprscope.metrics import Metrics

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"
# Status messages travel in the grpc-message trailer, and peers drop trailers above 8 KiB
# (the client then sees RESOURCE_EXHAUSTED "Stream removed" instead of our status). Domain
# messages quote the caller's values, so an oversized value must not turn an
# INVALID_ARGUMENT into that: clip them.
MAX_STATUS_MESSAGE_CHARS = 1024


def _clip(message: str) -> str:
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    return message[: MAX_STATUS_MESSAGE_CHARS - 16] + " ...(truncated)"


def _method_name(full: str) -> str:
    return full.rsplit("/", 1)[-1]


class _Undecodable:
    """Stands in for a request body that is not a valid protobuf message.

    grpc answers a deserializer exception with INTERNAL ("Exception deserializing
    request!"), which blames the server for the client's bytes; returning this marker
    instead lets the handler answer INVALID_ARGUMENT.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable | None) -> Callable | None:
    if deserializer is None:
        return None

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return _Undecodable(type(exc).__name__)
    return parse


def _wrap(handler: grpc.RpcMethodHandler, wrap_unary: Callable, wrap_stream: Callable) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary),
                                                   _tolerant(handler.request_deserializer),
                                                   handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream),
                                                    _tolerant(handler.request_deserializer),
                                                    handler.response_serializer)
    return handler  # client-streaming shapes are not used by dprscope


def _code_of(context) -> grpc.StatusCode | None:
    """The status a handler already set, where the context can say (a sync-in-aio one cannot)."""
    getter = getattr(context, "code", None)
    return getter() if callable(getter) else None


class _Serving:
    """Bounded admission, one error table, request metrics — shared by both server kinds.

    ``max_inflight`` caps requests being handled at once; the next one gets
    RESOURCE_EXHAUSTED immediately instead of queueing without bound in grpc's executor.
    Health and reflection calls bypass the cap so probes work under overload.
    """

    def __init__(self, metrics: Metrics, server_name: str, max_inflight: int,
                 exempt_prefixes: tuple[str, ...] = ("/grpc.health.", "/grpc.reflection.")) -> None:
        self.metrics = metrics
        self.server_name = server_name
        self._slots = threading.BoundedSemaphore(max_inflight)
        self.max_inflight = max_inflight
        self._exempt = exempt_prefixes

    def _refusal(self, method: str, request: object) -> tuple[grpc.StatusCode, str] | None:
        """Why this call is refused before it runs, or None with an in-flight slot taken."""
        if isinstance(request, _Undecodable):
            self._record(method, grpc.StatusCode.INVALID_ARGUMENT, 0.0)
            return (grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request body is not a valid {method} request message ({request.reason})")
        if not self._slots.acquire(blocking=False):
            self._record(method, grpc.StatusCode.RESOURCE_EXHAUSTED, 0.0)
            return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server is at its limit of {self.max_inflight} concurrent requests; retry with backoff")
        return None

    def _record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.metrics.requests.labels(method, code.name).inc()
        if code != grpc.StatusCode.OK:
            self.metrics.request_failures.labels(method, code.name).inc()
        self.metrics.request_duration.labels(method).observe(seconds)

    def _fail(self, method: str, exc: BaseException, context) -> grpc.StatusCode:
        if isinstance(exc, DprscopeError):
            return status_for(exc)
        existing = _code_of(context)
        if existing is not None and existing != grpc.StatusCode.OK:
            return existing  # the servicer aborted on purpose
        if isinstance(exc, grpc.aio.AbortError):  # aborted on purpose, through a context that hides the code
            return grpc.StatusCode.UNKNOWN
        log.exception("unhandled error in %s", method)
        return grpc.StatusCode.INTERNAL

    def _finished(self, method: str, code: grpc.StatusCode, started: float) -> None:
        self.metrics.inflight.labels(self.server_name).dec()
        self._slots.release()
        self._record(method, code, time.perf_counter() - started)

    @contextmanager
    def _handling(self, method: str, request, context: grpc.ServicerContext) -> Iterator[None]:
        """Admission, in-flight gauge, status mapping and request metrics around one blocking call."""
        refusal = self._refusal(method, request)
        if refusal is not None:
            context.abort(*refusal)
        self.metrics.inflight.labels(self.server_name).inc()
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
        except Exception as exc:
            code = self._fail(method, exc, context)
            if isinstance(exc, DprscopeError):
                context.abort(code, _clip(str(exc)))
            if code == grpc.StatusCode.INTERNAL and _code_of(context) in (None, grpc.StatusCode.OK):
                context.abort(code, INTERNAL_MESSAGE)
            raise
        finally:
            self._finished(method, code, started)

    def _unary(self, method: str, fn: Callable) -> Callable:
        def handle(request, context):
            with self._handling(method, request, context):
                return fn(request, context)
        return handle

    def _stream(self, method: str, fn: Callable) -> Callable:
        def handle(request, context) -> Iterable:
            with self._handling(method, request, context):
                yield from fn(request, context)
        return handle


class ServingInterceptor(_Serving, grpc.ServerInterceptor):
    """``_Serving`` for a thread-per-request ``grpc.server`` (the Analysis sidecar)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or full.startswith(self._exempt):
            return handler
        method = _method_name(full)
        return _wrap(handler, lambda fn: self._unary(method, fn), lambda fn: self._stream(method, fn))


class AsyncServingInterceptor(_Serving, grpc.aio.ServerInterceptor):
    """``_Serving`` for the event-loop server (the retrieval port).

    Coroutine handlers (Search, BatchSearch) are wrapped by a coroutine; plain ones (ModelAdmin,
    GetPassages) run on the server's thread pool and keep the blocking wrapper.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or full.startswith(self._exempt):
            return handler
        method = _method_name(full)
        return _wrap(handler, lambda fn: self._unary_any(method, fn), lambda fn: self._stream_sync_only(method, fn))

    def _unary_any(self, method: str, fn: Callable) -> Callable:
        return self._unary_async(method, fn) if inspect.iscoroutinefunction(fn) else self._unary(method, fn)

    def _stream_sync_only(self, method: str, fn: Callable) -> Callable:
        if inspect.isasyncgenfunction(fn):
            raise TypeError(f"{method}: asyncio streaming handlers are not wrapped; serve them unary or blocking")
        return self._stream(method, fn)

    def _unary_async(self, method: str, fn: Callable) -> Callable:
        async def handle(request, context: grpc.aio.ServicerContext):
            refusal = self._refusal(method, request)
            if refusal is not None:
                await context.abort(*refusal)
            self.metrics.inflight.labels(self.server_name).inc()
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await fn(request, context)
            except asyncio.CancelledError:  # the client cancelled or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = self._fail(method, exc, context)
                if isinstance(exc, DprscopeError):
                    await context.abort(code, _clip(str(exc)))
                if code == grpc.StatusCode.INTERNAL and _code_of(context) in (None, grpc.StatusCode.OK):
                    await context.abort(code, INTERNAL_MESSAGE)
                raise
            finally:
                self._finished(method, code, started)
        return handle


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):
    """Guards one service prefix with a bearer token compared in constant time.

    No token configured: every call is PERMISSION_DENIED (admin is off, not open).
    Missing or wrong token: UNAUTHENTICATED. Servicers never see the token.
    """

    def __init__(self, token: str | None, prefix: str = "/dprscope.v1.ModelAdmin/") -> None:
        self._token = token.encode() if token else None
        self._prefix = prefix

    async def intercept_service(self, continuation, handler_call_details):
        if not handler_call_details.method.startswith(self._prefix):
            return await continuation(handler_call_details)
        if self._token is None:
            return _deny(grpc.StatusCode.PERMISSION_DENIED,
                         "ModelAdmin is disabled: the server has no admin token configured")
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization", "")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), self._token):
            return _deny(grpc.StatusCode.UNAUTHENTICATED,
                         "missing or wrong admin token; send 'authorization: Bearer <token>' metadata")
        return await continuation(handler_call_details)


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request, context: grpc.aio.ServicerContext):
        await context.abort(code, message)
    return grpc.unary_unary_rpc_method_handler(abort)
