"""The request→response core: `App.handle(Request) -> Response`.

Everything a request can do is decided here, without sockets, so tests call `handle` directly.
Order of checks: agent id, Host (DNS rebinding), CORS preflight, Origin (cross-site requests and
WebSocket hijacking), password (with the per-client lockout), then the route.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from . import __version__, wsproto
from .auth import AuthGuard, password_matches
from .builds import BUILD_STOP_GRACE_S, MAX_ARGS, BuildQueue, NotCancellable, QueueFull
from .config import Config, is_loopback
from .events import EventFeed
from .httpcore import (
    JSON_TYPE,
    HttpError,
    Request,
    Response,
    query_float,
    query_int,
    redact_target,
    split_host,
)
from .logtail import tail_fd
from .paths import PathEscapeError, open_inside, resolve_inside
from .runner import NoStartCommand, Runner
from .wshub import Follower, Heartbeat, Hub

LOG = logging.getLogger("builder_api")

PASSWORD_HEADER = "x-builder-api-password"  # noqa: S105 - a header name
AGENT_HEADER = "x-agent-id"
AGENT_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,127}$")
# Hosts always accepted in the Host header (besides the bound address and security.allowed_hosts).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "host.docker.internal")
# Longest /build_status long-poll, in seconds.
MAX_WAIT_S = 300.0
# Most lines one /logs or /build_status reply carries.
MAX_TAIL_LINES = 10000
# Most events one /events reply carries.
MAX_EVENTS = 5000
MAX_BUILD_ID = 1 << 40
# Seconds DELETE /queue/<id> waits beyond the build's TERM grace for the worker to record it.
CANCEL_WAIT_EXTRA_S = 5.0
# Query parameters each built-in endpoint accepts, besides `key` (the password) everywhere.
# Other names get 400, so a typo such as `?wiat=60` is not silently ignored.
QUERY_KEYS: dict[str, frozenset[str]] = {
    "/build_status": frozenset({"id", "wait", "n"}),
    "/logs": frozenset({"file", "n"}),
    "/events": frozenset({"type", "since", "pid", "n"}),
}
# Browser log entries accepted per POST /log, and characters kept per text field.
MAX_BROWSER_ENTRIES = 100
MAX_BROWSER_TEXT = 8192
BROWSER_LEVELS = ("log", "info", "warn", "error", "debug", "trace")
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Builder-API-Password, X-Agent-ID",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}

Handler = Callable[[Request], Response]


class PluginAPI:
    """What a `builder_plugin.py` gets in `register(api)`: a way to add routes, plus the app."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.events = app.events
        self.config = app.config

    def add_route(self, method: str, path: str, handler: Callable[[Request], Any]) -> None:
        """Add `handler` for METHOD PATH; it returns a Response or a JSON-able value."""
        method = method.upper()
        if not path.startswith("/") or (method, path) in self.app.routes:
            raise ValueError(f"plugin route {method} {path} is invalid or already taken")

        def wrapped(request: Request) -> Response:
            result = handler(request)
            return result if isinstance(result, Response) else Response.json(result)

        self.app.routes[(method, path)] = wrapped


class App:
    def __init__(
        self,
        config: Config,
        password: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.password = password or None
        self.started_at = time.time()
        self.loopback = is_loopback(config.server.bind)
        self.port = config.server.port
        self.guard = AuthGuard(
            config.security.auth_failures_per_minute, config.security.lockout_s, clock
        )
        self.events = EventFeed(config.project_root, config.events_file)
        ws = config.websocket
        self.hub = Hub(ws.max_clients, ws.queue_frames, ws.max_message_bytes)
        self.builds = BuildQueue(config, self.events, on_change=self._build_changed)
        self.runner = Runner(config, self.events, on_change=self._run_changed)
        self.follower = Follower(
            config.project_root,
            dict(config.logs),
            config.events_file,
            self.hub.broadcast,
            ws.poll_s,
        )
        self.heartbeat = Heartbeat(ws.heartbeat_s, self.status_data, self.hub.broadcast)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self.h_index,
            ("GET", "/status"): self.h_status,
            ("POST", "/build"): self.h_build,
            ("GET", "/build_status"): self.h_build_status,
            ("GET", "/queue"): self.h_queue,
            ("GET", "/logs"): self.h_logs,
            ("GET", "/events"): self.h_events,
            ("POST", "/run"): self.h_run,
            ("POST", "/stop"): self.h_stop,
            ("GET", "/ws"): self.h_ws,
            ("POST", "/log"): self.h_browser_log,
            ("GET", "/browser.js"): self.h_browser_js,
        }
        self._builtin_routes = frozenset(self.routes)
        self.allowed_hosts: set[str] = set(LOCAL_HOSTS) | set(config.security.allowed_hosts)
        self.allowed_hosts.add(config.server.bind.lower())
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background workers (build queue, file follower, heartbeat)."""
        if self._started:
            return
        self._started = True
        os.makedirs(self.config.runtime_dir, exist_ok=True)
        self.builds.start()
        self.follower.start()
        self.heartbeat.start()
        if self.config.plugin:
            from .plugin import load_plugin

            load_plugin(self.config.plugin, PluginAPI(self))
        self.events.emit(
            "daemon_started", version=__version__, bind=self.config.server.bind, port=self.port
        )

    def shutdown(self) -> None:
        """Stop builds and the runtime process, close WebSocket clients."""
        self.builds.shutdown()
        self.runner.shutdown()
        self.heartbeat.stop()
        self.follower.stop()
        self.hub.shutdown()
        self.events.emit("daemon_stopped")

    # -- the core --------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            response = self._handle(request)
        except HttpError as exc:
            response = Response.error(exc.status, exc.message, exc.headers)
        except Exception:
            LOG.exception("handler failed for %s %s", request.method, redact_target(request.path))
            response = Response.error(500, "internal error (see the daemon's log)")
        if request.path == "/log":
            response.headers.update(self._cors(request))
        LOG.info(
            "%s %s %d agent=%s client=%s",
            request.method,
            redact_target(request.path),
            response.status,
            request.agent,
            request.client,
        )
        return response

    def _handle(self, request: Request) -> Response:
        agent = request.header(AGENT_HEADER)
        if agent:
            if not AGENT_RE.match(agent):
                raise HttpError(400, "X-Agent-ID must be 1-128 printable ASCII characters")
            request.agent = agent
        self._check_host(request)

        is_cors = request.path == "/log"
        if request.method == "OPTIONS":
            if is_cors:
                return Response(204, b"", self._cors(request))
            raise HttpError(403, "cross-origin requests are accepted on /log only")
        if not is_cors:
            self._check_origin(request)
        self._check_auth(request)

        self._check_query_keys(request)
        handler = self.routes.get((request.method, request.path))
        if handler is not None and request.method == "POST" and request.path != "/log":
            request.json()  # 415/400 for a body that is not JSON, even where it is ignored
        if handler is None:
            if request.method == "DELETE" and request.path.startswith("/queue/"):
                return self.h_cancel(request)
            if any(path == request.path for (_m, path) in self.routes):
                raise HttpError(405, f"{request.method} is not allowed on {request.path}")
            raise HttpError(404, f"no endpoint {request.path}")
        return handler(request)

    def _check_query_keys(self, request: Request) -> None:
        """Raise 400 for query parameters a built-in endpoint does not take (plugins: any)."""
        if (request.method, request.path) not in self._builtin_routes and not (
            request.path.startswith("/queue/")
        ):
            return
        allowed = QUERY_KEYS.get(request.path, frozenset()) | {"key"}
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            names = ", ".join(repr(name[:40]) for name in unknown)
            takes = ", ".join(sorted(allowed - {"key"})) or "none"
            raise HttpError(
                400, f"unknown query parameter {names} for {request.path} (it takes: {takes})"
            )

    def _check_host(self, request: Request) -> None:
        host = request.header("host")
        if not host:
            if request.version == "HTTP/1.0":
                return
            raise HttpError(400, "missing Host header")
        if split_host(host) not in self.allowed_hosts:
            raise HttpError(
                403, "Host not allowed (add it to security.allowed_hosts if it is yours)"
            )

    def _origin_allowed(self, origin: str) -> bool:
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        return parts.hostname.lower() in self.allowed_hosts and port == self.port

    def _check_origin(self, request: Request) -> None:
        origin = request.header("origin")
        if origin and not self._origin_allowed(origin):
            raise HttpError(403, "cross-origin request refused (only /log accepts other origins)")

    def _cors(self, request: Request) -> dict[str, str]:
        headers = dict(CORS_HEADERS)
        headers["Access-Control-Allow-Origin"] = request.header("origin") or "*"
        return headers

    def needs_auth(self, request: Request) -> bool:
        if self.password is None:
            return False
        if not self.loopback:
            return True
        return request.method in ("POST", "DELETE", "PUT", "PATCH")

    def _check_auth(self, request: Request) -> None:
        if not self.needs_auth(request):
            return
        password = self.password or ""
        locked = self.guard.locked_for(request.client)
        if locked > 0:
            seconds = int(locked) + 1
            raise HttpError(
                429,
                f"too many failed password attempts from {request.client}: locked out for "
                f"{seconds} more seconds",
                {"Retry-After": str(seconds)},
            )
        offered = request.header(PASSWORD_HEADER) or request.query.get("key")
        if password_matches(password, offered):
            self.guard.record_success(request.client)
            return
        if self.guard.record_failure(request.client):
            LOG.warning(
                "client %s locked out for %ss after repeated password failures",
                request.client,
                int(self.config.security.lockout_s),
            )
            self.events.emit(
                "auth_lockout",
                client=request.client,
                agent=request.agent,
                lockout_s=self.config.security.lockout_s,
            )
        raise HttpError(401, "missing or wrong password (X-Builder-API-Password header)")

    # -- broadcasts ------------------------------------------------------------------------

    def _build_changed(self, build: Any) -> None:
        self.hub.broadcast({"type": "build", "build": build.summary()})

    def _run_changed(self) -> None:
        self.hub.broadcast({"type": "run", "run": self.runner.status()})

    # -- handlers --------------------------------------------------------------------------

    def status_data(self) -> dict[str, Any]:
        return {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "project": os.path.basename(self.config.project_root),
                "uptime_s": round(time.time() - self.started_at, 3),
                "ws_clients": self.hub.count(),
            },
            "build": self.builds.counts(),
            "run": self.runner.status(),
        }

    def h_index(self, request: Request) -> Response:
        endpoints = sorted(f"{method} {path}" for method, path in self.routes)
        endpoints.append("DELETE /queue/<id>")
        return Response.json(
            {
                "service": "builder-api",
                "version": __version__,
                "endpoints": endpoints,
                "logs": sorted(self.config.logs),
                "allowed_args": list(self.config.build.allowed_args),
            }
        )

    def h_status(self, request: Request) -> Response:
        return Response.json(self.status_data())

    def h_build(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, 'the body must be a JSON object like {"args": ["test"]}')
        unknown = set(body) - {"args"}
        if unknown:
            raise HttpError(400, f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
        args = body.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise HttpError(400, '"args" must be a list of strings')
        if len(args) > MAX_ARGS:
            raise HttpError(400, f"at most {MAX_ARGS} args")
        allowed = set(self.config.build.allowed_args)
        for arg in args:
            if arg not in allowed:
                raise HttpError(
                    400,
                    f"argument {arg[:100]!r} is not in build.allowed_args "
                    f"({', '.join(self.config.build.allowed_args) or 'empty'})",
                )
        if not self.config.build.command:
            raise HttpError(409, "no build.command is configured for this project")
        self._check_runtime_log("build")
        try:
            build = self.builds.submit(args, request.agent)
        except QueueFull as exc:
            raise HttpError(429, str(exc), {"Retry-After": "5"}) from None
        data = build.summary()
        data["status_url"] = f"/build_status?id={build.id}"
        return Response.json(data, 202)

    def h_build_status(self, request: Request) -> Response:
        query = request.query
        build_id = query_int(query, "id", 0, 1, MAX_BUILD_ID) if query.get("id") else None
        if build_id is None:
            build_id = self.builds.latest_id()
            if build_id is None:
                raise HttpError(404, "no build has been queued yet")
        wait_s = query_float(query, "wait", 0.0, 0.0, MAX_WAIT_S)
        n = query_int(query, "n", self.config.build.log_tail_lines, 1, MAX_TAIL_LINES)
        if self.builds.get(build_id) is None:
            raise HttpError(404, f"no build {build_id} (unknown or dropped from the history)")
        finished = self.builds.wait(build_id, wait_s)
        build = self.builds.get(build_id)
        if build is None:
            raise HttpError(404, f"build {build_id} was dropped from the history")
        data = build.summary()
        data["done"] = build.done
        data["timed_out"] = not finished
        if self.builds.stopping:
            # The daemon woke this long-poll early because it is stopping.
            data["shutting_down"] = True
        if build.done:
            data["log_tail"] = self.builds.log_tail(build, n)
        return Response.json(data)

    def h_queue(self, request: Request) -> Response:
        return Response.json(self.builds.snapshot())

    def h_cancel(self, request: Request) -> Response:
        raw = request.path[len("/queue/") :]
        if not raw.isdigit() or len(raw) > 12:
            raise HttpError(400, "DELETE /queue/<id> needs a numeric build id")
        try:
            build = self.builds.cancel(int(raw), request.agent)
        except KeyError:
            raise HttpError(404, f"no build {raw}") from None
        except NotCancellable as exc:
            raise HttpError(409, str(exc)) from None
        # The worker stops a running build, so wait for it and reply with the new state.
        self.builds.wait(build.id, BUILD_STOP_GRACE_S + CANCEL_WAIT_EXTRA_S)
        return Response.json(build.summary())

    def h_logs(self, request: Request) -> Response:
        alias = request.query.get("file", "")
        n = query_int(request.query, "n", 200, 1, MAX_TAIL_LINES)
        path = self.config.logs.get(alias)
        if path is None:
            raise HttpError(
                404,
                f"unknown log alias {alias[:64]!r}; known: {', '.join(sorted(self.config.logs))}",
            )
        try:
            fd = open_inside(self.config.project_root, path, os.O_RDONLY)
        except PathEscapeError:
            LOG.warning("log alias %s now resolves outside the project root; refused", alias)
            raise HttpError(403, f"log {alias!r} now resolves outside the project root") from None
        except FileNotFoundError:
            return Response.json({"file": alias, "exists": False, "lines": []})
        except OSError as exc:
            raise HttpError(403, f"log {alias!r} cannot be opened: {exc.strerror}") from None
        try:
            lines = tail_fd(fd, n)
        finally:
            os.close(fd)
        return Response.json({"file": alias, "exists": True, "lines": lines})

    def h_events(self, request: Request) -> Response:
        query = request.query
        event_type = query.get("type") or None
        since = query_float(query, "since", -1.0, -1.0, 1e12) if query.get("since") else None
        pid = query_int(query, "pid", 0, 0, 1 << 31) if query.get("pid") else None
        n = query_int(query, "n", 100, 1, MAX_EVENTS)
        try:
            events = self.events.query(event_type, since, pid, n)
        except PathEscapeError:
            raise HttpError(403, "the event feed now resolves outside the project root") from None
        except OSError as exc:
            raise HttpError(403, f"the event feed cannot be read: {exc.strerror}") from None
        return Response.json({"events": events})

    def _check_runtime_log(self, alias: str) -> None:
        """Raise 403 when the build or run log now resolves outside the project (a symlink)."""
        try:
            resolve_inside(self.config.project_root, self.config.logs[alias])
        except PathEscapeError:
            LOG.warning("the %s log now resolves outside the project root; refused", alias)
            raise HttpError(403, f"the {alias} log now resolves outside the project root") from None

    def h_run(self, request: Request) -> Response:
        if self.config.run.start_command:
            self._check_runtime_log("run")
        try:
            status = self.runner.restart(request.agent)
        except NoStartCommand as exc:
            raise HttpError(409, f"{exc} for this project") from None
        except OSError as exc:
            raise HttpError(409, f"cannot start run.start_command: {exc.strerror or exc}") from None
        return Response.json(status)

    def h_stop(self, request: Request) -> Response:
        return Response.json(self.runner.stop(request.agent))

    def h_ws(self, request: Request) -> Response:
        headers = request.headers
        if "websocket" not in headers.get("upgrade", "").lower():
            raise HttpError(
                426, "this endpoint needs a WebSocket upgrade", {"Upgrade": "websocket"}
            )
        connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if "upgrade" not in connection:
            raise HttpError(400, "Connection: Upgrade is required")
        if headers.get("sec-websocket-version") != "13":
            raise HttpError(
                426, "only WebSocket version 13 is supported", {"Sec-WebSocket-Version": "13"}
            )
        key = headers.get("sec-websocket-key", "")
        if not wsproto.check_client_key(key):
            raise HttpError(400, "invalid Sec-WebSocket-Key")
        if self.hub.full():
            raise HttpError(429, "too many WebSocket clients", {"Retry-After": "5"})
        agent = request.agent
        hello = {"type": "hello", "status": self.status_data()}

        def upgrade(sock: Any) -> None:
            self.hub.serve(sock, agent, hello)

        return Response(
            101,
            b"",
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Accept": wsproto.accept_key(key),
            },
            upgrade=upgrade,
        )

    def h_browser_log(self, request: Request) -> Response:
        # browser.js sends text/plain, which keeps its cross-origin POST free of a preflight.
        body = request.json((JSON_TYPE, "text/plain"))
        entries = body.get("entries") if isinstance(body, dict) and "entries" in body else [body]
        if not isinstance(entries, list) or not entries or len(entries) > MAX_BROWSER_ENTRIES:
            raise HttpError(
                400,
                f'send one entry object or {{"entries": [...]}} '
                f"with 1-{MAX_BROWSER_ENTRIES} entries",
            )
        records: list[dict[str, Any]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise HttpError(400, "each entry must be a JSON object")
            if not isinstance(entry.get("message"), str):
                raise HttpError(400, 'each entry needs a "message" string field')
            level = entry.get("level", "log")
            if level not in BROWSER_LEVELS:
                raise HttpError(400, f"level must be one of {', '.join(BROWSER_LEVELS)}")
            record: dict[str, Any] = {"level": level}
            for name in ("message", "url", "stack", "source"):
                value = entry.get(name)
                if value is not None:
                    record[name] = _text(value)
            for name in ("line", "column"):
                value = entry.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    record[name] = value
            records.append(record)
        for record in records:
            self.events.emit(
                "browser", agent=request.agent, origin=request.header("origin")[:200], **record
            )
        return Response.json({"accepted": len(records)})

    def h_browser_js(self, request: Request) -> Response:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser.js")
        try:
            with open(path, "rb") as handle:
                body = handle.read()
        except OSError:
            raise HttpError(404, "browser.js is not installed next to the daemon") from None
        return Response(200, body, {"Content-Type": "application/javascript; charset=utf-8"})


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:MAX_BROWSER_TEXT]
