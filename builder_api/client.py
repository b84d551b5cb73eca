#!/usr/bin/env python3
"""builder-api client: standard library only, Python 3.9+, usable inside the container.

Import it by path (no package needed)::

    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("builder_client", "/path/to/client.py")
    ...
    client = BuilderClient()            # BUILDER_API_URL, BUILDER_API_PASSWORD from the env
    result = client.build_and_wait(["test"])

or run it::

    python3 client.py build test        # queue a build, wait, print its log tail; exit = build's
    python3 client.py logs build -n 100
    python3 client.py status | run | stop | queue | cancel ID | events [--type T] [--since TS]

Exit codes: 0 success, 1 the build failed or was cancelled, 2 usage or request refused (4xx),
3 the daemon cannot be reached, 4 the daemon returned a server error.
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Callable, Optional

DEFAULT_URL = "http://host.docker.internal:6666"
# Connection attempts before giving up, and the first backoff delay (doubles each time), seconds.
DEFAULT_RETRIES = 5
BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0
# Seconds one long-poll asks the daemon to wait; the socket timeout allows for it plus slack.
LONG_POLL_S = 30.0
SOCKET_SLACK_S = 15.0

EXIT_OK, EXIT_BUILD_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_SERVER = 0, 1, 2, 3, 4


class BuilderError(Exception):
    """A request failed: `status` is the HTTP status (0 when the daemon could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def default_agent_id() -> str:
    return os.environ.get("BUILDER_API_AGENT_ID") or f"{socket.gethostname()}:{os.getpid()}"


class BuilderClient:
    def __init__(
        self,
        url: Optional[str] = None,
        password: Optional[str] = None,
        agent_id: Optional[str] = None,
        retries: Optional[int] = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = (url or os.environ.get("BUILDER_API_URL") or DEFAULT_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise BuilderError(
                0, f"BUILDER_API_URL must start with http:// or https://: {self.url!r}"
            )
        self.password = password if password is not None else os.environ.get("BUILDER_API_PASSWORD")
        self.agent_id = agent_id or default_agent_id()
        self.retries = max(1, DEFAULT_RETRIES if retries is None else retries)
        self.timeout_s = timeout_s
        # Never use an HTTP proxy from the environment for the daemon.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- transport -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: Optional[dict[str, Any]] = None,
        body: Any = None,
        timeout_s: Optional[float] = None,
    ) -> Any:
        """One JSON request with retry and backoff on connection errors; returns the JSON reply."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"X-Agent-ID": self.agent_id, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.password:
            headers["X-Builder-API-Password"] = self.password
        delay = BACKOFF_S
        for attempt in range(self.retries):
            # The URL scheme is checked in __init__ (http/https only).
            req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
            try:
                with self._opener.open(req, timeout=timeout_s or self.timeout_s) as resp:
                    return _decode(resp.read())
            except urllib.error.HTTPError as exc:
                reply = _decode(exc.read())
                message = reply.get("error") if isinstance(reply, dict) else None
                raise BuilderError(exc.code, message or f"HTTP {exc.code}") from None
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as exc:
                if attempt + 1 >= self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise BuilderError(
                        0,
                        f"cannot reach the builder API at {self.url}: {reason} "
                        "(is the daemon running? check BUILDER_API_URL)",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- API -------------------------------------------------------------------------------

    def status(self) -> Any:
        return self.request("GET", "/status")

    def build(self, args: Sequence[str] = ()) -> Any:
        return self.request("POST", "/build", body={"args": list(args)})

    def build_status(self, build_id: int, wait_s: float = 0.0, n: Optional[int] = None) -> Any:
        return self.request(
            "GET",
            "/build_status",
            {"id": build_id, "wait": wait_s, "n": n},
            timeout_s=wait_s + SOCKET_SLACK_S,
        )

    def wait_build(
        self, build_id: int, timeout_s: Optional[float] = None, poll_s: float = LONG_POLL_S
    ) -> Any:
        """Long-poll until the build ends (or `timeout_s` passes); returns the last status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = (
                poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
            )
            status = self.build_status(build_id, wait)
            if status.get("done") or (deadline is not None and time.monotonic() >= deadline):
                return status

    def build_and_wait(self, args: Sequence[str] = (), timeout_s: Optional[float] = None) -> Any:
        """Queue a build and long-poll until it ends; the result carries `log_tail`."""
        queued = self.build(args)
        return self.wait_build(int(queued["id"]), timeout_s)

    def queue(self) -> Any:
        return self.request("GET", "/queue")

    def cancel(self, build_id: int) -> Any:
        return self.request("DELETE", f"/queue/{int(build_id)}")

    def logs(self, alias: str, n: int = 200) -> list[str]:
        return list(self.request("GET", "/logs", {"file": alias, "n": n})["lines"])

    def events(
        self,
        event_type: Optional[str] = None,
        since: Optional[float] = None,
        n: Optional[int] = None,
        pid: Optional[int] = None,
    ) -> list[dict[str, Any]]:
        reply = self.request(
            "GET", "/events", {"type": event_type, "since": since, "n": n, "pid": pid}
        )
        return list(reply["events"])

    def run(self) -> Any:
        return self.request("POST", "/run")

    def stop(self) -> Any:
        return self.request("POST", "/stop")


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return {"error": raw[:200].decode("utf-8", "replace")}


# -- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client.py",
        description="Talk to the builder API (BUILDER_API_URL, "
        "BUILDER_API_PASSWORD, BUILDER_API_AGENT_ID).",
    )
    parser.add_argument("--url", help=f"daemon URL (default: $BUILDER_API_URL or {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print raw JSON replies")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="queue a build, wait for it, print its log tail")
    build.add_argument("args", nargs="*", help="build args (from the allowed_args list)")
    build.add_argument("--no-wait", action="store_true", help="only queue it; print its id")
    build.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    logs = sub.add_parser("logs", help="tail a log by alias")
    logs.add_argument("alias")
    logs.add_argument("-n", type=_line_count, default=200, help="lines to show (1 to 10000)")
    events = sub.add_parser("events", help="filtered events")
    events.add_argument("--type")
    events.add_argument("--since", type=float)
    events.add_argument("--pid", type=int)
    events.add_argument("-n", type=_event_count, default=50, help="events to show (1 to 5000)")
    cancel = sub.add_parser("cancel", help="cancel a queued build")
    cancel.add_argument("id", type=int)
    wait = sub.add_parser("wait", help="wait for a build to end")
    wait.add_argument("id", type=int)
    for name in ("status", "run", "stop", "queue"):
        sub.add_parser(name)
    return parser


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """Return an argparse type that accepts integers from lo to hi (a usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi}, got {text!r}")
        return value

    return parse


# The daemon's limits for /logs?n= and /events?n=.
_line_count = _bounded_int(1, 10000)
_event_count = _bounded_int(1, 5000)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _finish_build(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        _print(result)
    else:
        for line in result.get("log_tail", []):
            print(line)
        outcome = f"(exit code {result.get('exit_code')})"
        if result.get("error"):
            outcome = f"({result['error']})"
        print(f"build {result.get('id')}: {result.get('state')} {outcome}", file=sys.stderr)
    if not result.get("done"):
        return EXIT_BUILD_FAILED
    return EXIT_OK if result.get("state") == "success" else EXIT_BUILD_FAILED


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.url is not None and not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https://, got {args.url!r}")
    try:
        client = BuilderClient(url=args.url)
        if args.command == "build":
            if args.no_wait:
                _print(client.build(args.args))
                return EXIT_OK
            return _finish_build(client.build_and_wait(args.args, args.timeout), args.json)
        if args.command == "wait":
            return _finish_build(client.wait_build(args.id), args.json)
        if args.command == "logs":
            lines = client.logs(args.alias, args.n)
            if args.json:
                _print(lines)
            else:
                for line in lines:
                    print(line)
            return EXIT_OK
        if args.command == "events":
            for event in client.events(args.type, args.since, args.n, args.pid):
                print(json.dumps(event))
            return EXIT_OK
        if args.command == "cancel":
            _print(client.cancel(args.id))
            return EXIT_OK
        _print(getattr(client, args.command)())
        return EXIT_OK
    except BuilderError as exc:
        print(
            f"client.py: error: {exc.message}" + (f" (HTTP {exc.status})" if exc.status else ""),
            file=sys.stderr,
        )
        if exc.status == 0:
            return EXIT_UNREACHABLE
        return EXIT_SERVER if exc.status >= 500 else EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
