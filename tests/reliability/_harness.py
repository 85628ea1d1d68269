"""Shared pieces of the reliability tests: raw gRPC calls and a ``dprscope serve`` subprocess.

Hostile-input and fuzz tests call methods through generic stubs (bytes or messages in,
status out) so they can send what no well-behaved client would: undecodable bodies,
unknown enum numbers, oversized messages, odd metadata.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import Message

DPRSCOPE = [sys.executable, "-m", "dprscope.cli"]
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: int = 0


def _serialize(request: bytes | Message) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def call(channel: grpc.Channel, method: str, request: bytes | Message, *, stream: bool = False,
         metadata: tuple[tuple[str, str | bytes], ...] = (), timeout: float = 60.0) -> Outcome:
    """Invoke ``method`` (``/pkg.Service/Method``) with raw bytes; never raises an RpcError."""
    data = _serialize(request)
    try:
        if stream:
            rpc = channel.unary_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            count = sum(1 for _ in rpc(data, timeout=timeout, metadata=metadata))
            return Outcome(grpc.StatusCode.OK, "", count)
        rpc = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        rpc(data, timeout=timeout, metadata=metadata)
        return Outcome(grpc.StatusCode.OK, "", 1)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``dprscope serve`` as an operator runs it, on free local ports, with its log kept."""

    def __init__(self, index_dir: Path, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_path
        self._log = log_path.open("w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*DPRSCOPE, "serve", "--index", str(index_dir), "--host", "127.0.0.1", "--port", str(self.port),
             "--metrics-port", str(self.metrics_port), "--analysis-port", "0", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_serving(self, timeout: float = 300.0) -> None:
        from dprscope_client import RetrieverClient

        deadline = time.monotonic() + timeout
        with RetrieverClient(self.target, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"dprscope serve exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    client.wait_until_serving(timeout=min(10.0, deadline - time.monotonic()))
                    return
                except Exception:
                    continue
        raise AssertionError(f"dprscope serve not SERVING within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()
