#!/usr/bin/env python3
"""Container healthcheck: exit 0 only when dprscope's gRPC health says SERVING.

Docker's HEALTHCHECK (and anything else without a native gRPC probe) runs this inside
the container. It asks ``grpc.health.v1.Health/Check`` for the Retriever service on the
local port, so a container is healthy only after the model, index and warm-up are done,
and turns unhealthy while it drains. Configuration comes from the same ``DPRSCOPE_*``
variables the server reads: ``DPRSCOPE_PORT`` (50051) and, optionally,
``DPRSCOPE_HEALTH_SERVICE`` ("" asks for the whole server) and ``DPRSCOPE_HEALTH_TIMEOUT``.
"""

from __future__ import annotations

import os
import sys

DEFAULT_SERVICE = "dprscope.v1.Retriever"


def check(target: str, service: str, timeout: float) -> tuple[int, str]:
    """(exit code, one-line reason) for one health check against ``target``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return 1, f"health check failed: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return (0 if status == "SERVING" else 1), f"{service or '<server>'}: {status}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else f"127.0.0.1:{os.environ.get('DPRSCOPE_PORT') or 50051}"
    service = os.environ.get("DPRSCOPE_HEALTH_SERVICE", DEFAULT_SERVICE)
    timeout = float(os.environ.get("DPRSCOPE_HEALTH_TIMEOUT") or 3.0)
    code, reason = check(target, service, timeout)
    print(reason)
    return code


if __name__ == "__main__":
    sys.exit(main())
