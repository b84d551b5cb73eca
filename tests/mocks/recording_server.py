"""Threaded HTTP server plumbing shared by the mock model APIs.

A mock binds one port on several addresses: loopback for host-side clients
and the Docker bridge gateway, which is the address a container on the
default bridge reaches the host through. Every request is recorded with its
secret headers redacted, in memory and optionally as JSON lines in a file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

# Headers whose values never reach a record or a log.
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "cookie", "proxy-authorization", "anthropic-api-key"}
)
MAX_BODY_BYTES = 64 * 1024 * 1024  # a Claude Code request with a long transcript stays far below

# A script step: the tool calls (`{"name": ..., "input": {...}}`) of one model reply.
Step = list[dict[str, Any]]


class RequestLog:
    """Thread-safe list of request records, mirrored to a JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._path = path

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as stream:
                    stream.write(json.dumps(record) + "\n")

    def snapshot(self) -> list[dict[str, Any]]:
        """Return a copy of the records made so far, oldest first."""
        with self._lock:
            return list(self._records)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Return the headers as a dict with the values of secret headers replaced."""
    redacted = {}
    for name, value in headers:
        if name.lower() in SECRET_HEADERS:
            redacted[name] = f"<redacted, {len(value)} characters>"
        else:
            redacted[name] = value
    return redacted


def parse_json_body(body: bytes) -> Any:
    """Return the parsed JSON body, or its text when it is not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class MockHandler(BaseHTTPRequestHandler):
    """Base handler: reads bodies, writes JSON and server-sent events.

    `bind_handler` makes a subclass per server with its own script, request
    log and turn counter, so several mocks can run in one process.
    """

    protocol_version = "HTTP/1.1"
    script: Sequence[Step] = ()
    reply_text = "Done."
    request_log: RequestLog
    turn_counter: itertools.count
    turn_lock: threading.Lock

    def next_turn(self) -> int:
        """Return the number of this model request, counted from 1 per server."""
        with self.turn_lock:
            return next(self.turn_counter)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep stderr quiet; the request log is the record."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError(f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
        return self.rfile.read(length) if length else b""

    def record(self, method: str, body: bytes, **extra: Any) -> dict[str, Any]:
        entry = {
            "time": round(time.time(), 3),
            "method": method,
            "path": self.path,
            "headers": redact_headers(self.headers.items()),
            "body": parse_json_body(body),
            **extra,
        }
        self.request_log.append(entry)
        return entry

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_event_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def send_event(self, data: Any, event: str | None = None) -> None:
        """Write one server-sent event; a str payload is sent as is."""
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        self.wfile.write(f"{prefix}data: {text}\n\n".encode())
        self.wfile.flush()


class MockServer:
    """One handler class served on the same port of several addresses."""

    def __init__(self, handler: type[MockHandler], addresses: Iterable[str], port: int = 0):
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        for address in addresses:
            server = ThreadingHTTPServer((address, port), handler)
            server.daemon_threads = True
            port = server.server_address[1]  # the other addresses take the same port
            self._servers.append(server)
        if not self._servers:
            raise ValueError("a mock server needs at least one address")
        self.port = port
        self.addresses = [server.server_address[0] for server in self._servers]

    def start(self) -> MockServer:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


HandlerType = TypeVar("HandlerType", bound=MockHandler)


def bind_handler(
    handler: type[HandlerType],
    script: Sequence[Step],
    request_log: RequestLog,
    reply_text: str = "Done.",
) -> type[HandlerType]:
    """Return a subclass of `handler` bound to its own script, log and turn counter."""
    attributes = {
        "script": [list(step) for step in script],
        "reply_text": reply_text,
        "request_log": request_log,
        "turn_counter": itertools.count(1),
        "turn_lock": threading.Lock(),
    }
    return type(f"Bound{handler.__name__}", (handler,), attributes)


def serve(
    handler: type[MockHandler],
    addresses: Iterable[str],
    script: Sequence[Step] = (),
    port: int = 0,
    log_path: Path | None = None,
) -> tuple[MockServer, RequestLog]:
    """Start a mock on every address (same port); return it and its request log."""
    request_log = RequestLog(log_path)
    server = MockServer(bind_handler(handler, script, request_log), addresses, port).start()
    return server, request_log


def load_script(path: Path) -> list[Step]:
    """Read a JSON script: a list of steps, each a call object or a list of them."""
    steps = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(steps, list):
        raise ValueError(f"{path}: a script must be a JSON list of steps")
    return [step if isinstance(step, list) else [step] for step in steps]


def run_cli(handler: type[MockHandler], title: str, argv: list[str] | None) -> int:
    """Serve `handler` from the command line until interrupted; return the exit code."""
    parser = argparse.ArgumentParser(description=f"Mock of the {title} with scripted tool calls.")
    parser.add_argument("--bind", action="append", required=True, help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--script", type=Path, help="JSON file with the scripted steps")
    parser.add_argument("--log", type=Path, help="append every request to this JSON-lines file")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script) if args.script else []
    except (OSError, ValueError) as error:
        parser.error(str(error))
    server, _ = serve(handler, args.bind, script, args.port, args.log)
    print(f"{title} mock on port {server.port} of {', '.join(server.addresses)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
    return 0
