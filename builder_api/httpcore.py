"""Sans-I/O HTTP/1.1 pieces: the Request and Response records and a strict request-head parser.

The parser accepts only what the daemon needs and rejects everything else with a 4xx
(`HttpError`): it never raises anything else on client input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

# Limits on the request head, in bytes and counts; beyond them the request is refused with 431/400.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_TARGET_BYTES = 8 * 1024
MAX_QUERY_FIELDS = 64
JSON_TYPE = "application/json"

TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """A client error with its status; turned into a JSON error response."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    """One parsed request. `headers` keys are lower-case; `query` keeps the last value per key."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str = "127.0.0.1"
    version: str = "HTTP/1.1"
    agent: str = "-"
    # Set by the server for WebSocket upgrades: the connection socket (None in socketless tests).
    raw_target: str = ""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self, content_types: tuple[str, ...] = (JSON_TYPE,)) -> Any:
        """Return the body as JSON; an empty body is {} (no arguments).

        Raises 415 when a non-empty body's Content-Type is not in `content_types`, and 400 on
        a body that is not JSON or repeats a key in one object.
        """
        if not self.body:
            return {}
        media_type = self.header("content-type").split(";", 1)[0].strip().lower()
        if media_type not in content_types:
            shown = repr(media_type[:60]) if media_type else "none"
            raise HttpError(
                415,
                f"a JSON body needs Content-Type: {content_types[0]} (got {shown}); "
                "send no body at all for no arguments",
            )
        try:
            return json.loads(self.body.decode("utf-8"), object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise HttpError(400, f"the request body repeats the JSON key {exc.key!r}") from None
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HttpError(400, "the request body is not valid JSON") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key[:60]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # For a 101 upgrade: called with the connection's socket after the head is sent.
    upgrade: Callable[[Any], None] | None = None
    close: bool = False

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(data, separators=(",", ":"), sort_keys=False).encode("utf-8") + b"\n"
        merged = {"Content-Type": "application/json"}
        merged.update(headers or {})
        return cls(status, body, merged)

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return cls.json({"error": message, "status": status}, status, headers)

    def head_bytes(self, keep_alive: bool) -> bytes:
        reason = REASONS.get(self.status, "Unknown")
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        headers = dict(self.headers)
        if self.status != 101:
            headers["Content-Length"] = str(len(self.body))
            headers["Connection"] = "keep-alive" if keep_alive else "close"
        headers.setdefault("Cache-Control", "no-store")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _check_text(value: str, what: str) -> None:
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
        raise HttpError(400, f"control characters in {what}")


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into a decoded path and a query dict; 400 on hostile input."""
    if len(target) > MAX_TARGET_BYTES:
        raise HttpError(414, "request target too long")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be an absolute path")
    _check_text(target, "the request target")
    try:
        parts = urlsplit(target)
        path = unquote(parts.path, errors="strict")
        pairs = parse_qsl(
            parts.query,
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "malformed request target") from None
    _check_text(path, "the path")
    query: dict[str, str] = {}
    for key, value in pairs:
        _check_text(key, "a query parameter")
        _check_text(value, "a query parameter")
        if key in query:
            raise HttpError(400, f"query parameter {_shown(key)} is given twice")
        query[key] = value
    return path, query


def _shown(value: str) -> str:
    """Return `value` quoted and cut to 40 characters for an error message."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Parse a request head (without the final blank line) into method, target, version, headers."""
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, "request head too large")
    if b"\x00" in head:
        raise HttpError(400, "NUL byte in the request head")
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise HttpError(400, "undecodable request head") from None
    lines = text.split("\r\n")
    request_line = lines[0]
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if method not in METHODS:
        raise HttpError(405 if TOKEN_RE.match(method) else 400, "method not supported")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "only HTTP/1.0 and HTTP/1.1 are supported")
    headers: dict[str, str] = {}
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise HttpError(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not TOKEN_RE.match(name):
            raise HttpError(400, "malformed header line")
        value = value.strip(" \t")
        _check_text(value, f"header {name}")
        key = name.lower()
        if key in headers and key in ("content-length", "host", "transfer-encoding"):
            raise HttpError(400, f"duplicate {name} header")
        headers[key] = value if key not in headers else headers[key] + ", " + value
    return method, target, version, headers


def content_length(headers: dict[str, str], limit: int) -> int:
    """The declared body length, checked against `limit`; 411/413/400 when unusable."""
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    if not raw.isdigit() or len(raw) > 15:
        raise HttpError(400, "invalid Content-Length")
    length = int(raw)
    if length > limit:
        raise HttpError(413, f"request body larger than {limit} bytes")
    return length


def wants_keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def split_host(host: str) -> str:
    """The host name of a Host header value, lower-case, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            _check_host_port(host, host[end + 1 :].removeprefix(":"), host[end + 1 :])
            return host[1:end]
        return host
    if host.count(":") == 1:
        name, port = host.split(":", 1)
        _check_host_port(host, port, ":")
        return name
    return host


def _check_host_port(host: str, port: str, rest: str) -> None:
    """Raise 400 unless the Host header's port part is empty or a port number."""
    if not rest:
        return
    if not (rest.startswith(":") and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        raise HttpError(400, f"invalid Host header {_shown(host)}: the port must be 0 to 65535")


def redact_target(target: str) -> str:
    """The target for logs: the path only, never a `?key=` password."""
    return target.split("?", 1)[0][:200]


def query_int(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """Return the integer query parameter `name`, or `default` when absent or empty.

    Raises 400 naming the parameter, the value and the range when it is not an integer in
    lo..hi; out-of-range values are rejected rather than clamped.
    """
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if re.match(r"^-?[0-9]{1,15}$", raw) and lo <= int(raw) <= hi:
        return int(raw)
    raise HttpError(
        400, f"query parameter {name!r} must be an integer from {lo} to {hi}, got {_shown(raw)}"
    )


def query_float(query: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    """Return the decimal query parameter `name` (no exponent), like query_int."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if re.match(r"^-?[0-9]{1,12}(\.[0-9]{1,9})?$", raw) and lo <= float(raw) <= hi:
        return float(raw)
    raise HttpError(
        400, f"query parameter {name!r} must be a number from {lo:g} to {hi:g}, got {_shown(raw)}"
    )


def headers_list(headers: dict[str, str]) -> list[tuple[str, str]]:
    return list(headers.items())
