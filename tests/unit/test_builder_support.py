"""Shared helpers for the builder-api tests (no tests here): a scratch project, a running app,
a live server on 127.0.0.1 with an ephemeral port, and a tiny raw HTTP client.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder_api.app import App
from builder_api.config import Config, load_config
from builder_api.httpcore import Request, Response
from builder_api.server import Server

# A stand-in build tool: its behaviour is chosen by its arguments.
BUILD_SCRIPT = r"""
import json, os, sys, time
args = sys.argv[1:]
for i in range(3):
    print(f"line {i} of build {os.environ.get('BUILDER_API_BUILD_ID')} args={args}", flush=True)
if "event" in args:
    with open(os.environ["BUILDER_API_EVENTS"], "a") as feed:
        feed.write(json.dumps({"ts": time.time(), "type": "custom", "pid": os.getpid()}) + "\n")
if "slow" in args:
    time.sleep(0.6)
if "hang" in args:
    time.sleep(60)
if "fail" in args:
    print("it failed", flush=True)
    sys.exit(3)
print("build ok", flush=True)
"""

RUN_SCRIPT = r"""
import os, signal, sys, time
print("server up", os.getpid(), flush=True)
if "stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(0.05)
"""

ALLOWED = ["ok", "fail", "slow", "hang", "event", "stubborn", "a;b", "$(x)"]


def write_project(root: Path, extra: dict[str, Any] | None = None) -> Path:
    """A scratch project with a build script, a run script and a JSON config."""
    (root / "build.py").write_text(BUILD_SCRIPT)
    (root / "serve.py").write_text(RUN_SCRIPT)
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "app.log").write_text("".join(f"app line {i}\n" for i in range(500)))
    config: dict[str, Any] = {
        "build": {
            "command": [sys.executable, "build.py"],
            "allowed_args": ALLOWED,
            "timeout_s": 20,
            "max_pending": 4,
            "history": 5,
        },
        "run": {"start_command": [sys.executable, "serve.py"], "stop_grace_s": 0.5},
        "logs": {"app": "logs/app.log"},
        "security": {
            "request_timeout_s": 2,
            "max_body_bytes": 4096,
            "auth_failures_per_minute": 3,
            "lockout_s": 60,
        },
        "websocket": {
            "heartbeat_s": 0.2,
            "queue_frames": 50,
            "max_message_bytes": 1024,
            "poll_s": 0.01,
        },
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    (root / ".builder-api.json").write_text(json.dumps(config))
    return root


def make_config(root: Path, extra: dict[str, Any] | None = None) -> Config:
    write_project(root, extra)
    return load_config(str(root)).with_overrides(port=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(
    method: str,
    target: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    client: str = "127.0.0.1",
) -> Request:
    """A Request as the server would build it (socketless)."""
    from builder_api.httpcore import parse_target

    path, query = parse_target(target)
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    merged = {"host": "127.0.0.1:6666"}
    if raw:
        merged["content-type"] = "application/json"
    merged.update({k.lower(): v for k, v in (headers or {}).items()})
    return Request(method, path, query, merged, raw, client)


def body(response: Response) -> Any:
    return json.loads(response.body)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    application = App(make_config(tmp_path))
    application.start()
    yield application
    application.shutdown()


class Live:
    """A started App plus its Server on 127.0.0.1 with an ephemeral port."""

    def __init__(
        self, config: Config, password: str | None = None, clock: Any = time.monotonic
    ) -> None:
        self.app = App(config, password, clock=clock)
        self.app.port = 0
        self.server = Server(self.app, "127.0.0.1", 0)
        # Origin/Host checks compare against the real port.
        self.app.port = self.server.port
        self.app.start()
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(
        self,
        method: str,
        target: str,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        conn = self.conn(timeout)
        try:
            data = None if payload is None else json.dumps(payload).encode()
            sent = dict(headers or {})
            if data is not None:
                sent.setdefault("Content-Type", "application/json")
            conn.request(method, target, body=data, headers=sent)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 5) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except (socket.timeout, ConnectionResetError):
                pass
            return b"".join(chunks)

    def close(self) -> None:
        self.server.stop()
        self.app.shutdown()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server = Live(make_config(tmp_path))
    yield server
    server.close()


def status_line(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
