"""Assembly and the command line: load the config, check it, start the app and the server,
stop builds and the runtime process cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any

from . import __version__
from .app import App
from .config import (
    CONFIG_NAMES,
    DEFAULTS_SOURCE,
    Config,
    ConfigError,
    check_startable,
    load_config,
)
from .plugin import PluginError
from .server import Server

LOG = logging.getLogger("builder_api")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="builder-api",
        description="Host-side builder API daemon for one project. The password, when needed, "
        "comes from the BUILDER_API_PASSWORD environment variable (or the variable "
        "named by server.password_env), never from the command line.",
    )
    parser.add_argument("--project", default=".", help="project root (default: current directory)")
    parser.add_argument(
        "--config", help="config file (default: .builder-api.{toml,json,yml} in the project root)"
    )
    parser.add_argument("--bind", help="address to bind (default: server.bind, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: server.port, 6666; 0 = any)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors (no request log)"
    )
    parser.add_argument("--version", action="version", version=f"builder-api {__version__}")
    return parser


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Requests (method, path without query, status, agent, client) are logged at INFO."""
    level = logging.INFO
    if quiet:
        level = logging.WARNING
    elif verbose:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s builder-api %(levelname)s %(message)s"
    )


# Seconds the server waits at shutdown for requests in progress to send their responses.
SHUTDOWN_DRAIN_S = 2.0
# File under server.runtime_dir that one daemon per project holds an exclusive flock on.
LOCK_NAME = "daemon.lock"


class AlreadyServed(Exception):
    """Another daemon holds the project's lock; `pid` is its pid (None when unreadable)."""

    def __init__(self, lock_file: str, pid: int | None) -> None:
        self.lock_file = lock_file
        self.pid = pid
        super().__init__(lock_file)


def lock_project(config: Config) -> int:
    """Take the exclusive lock of the project's runtime dir and write our pid into it.

    Returns the lock's file descriptor, which must stay open while the daemon runs; the
    kernel releases the lock when the process ends, even after SIGKILL.
    """
    import fcntl

    os.makedirs(config.runtime_dir, exist_ok=True)
    lock_file = os.path.join(config.runtime_dir, LOCK_NAME)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise AlreadyServed(lock_file, int(text) if text.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def bind_failure(config: Config, exc: OSError) -> str:
    """Return the message for a failed bind, with the fix that matches its cause."""
    address = f"{config.server.bind}:{config.server.port}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot bind {address}: this host has no address {config.server.bind} "
            "(set server.bind or --bind to one of its addresses, e.g. 127.0.0.1)"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"cannot bind {address}: the port is in use (change server.port or use --port)"
    return f"cannot bind {address}: {exc.strerror or exc}"


def build_program_problem(config: Config) -> str | None:
    """Return why `build.command[0]` cannot be started, or None when it looks startable.

    A name without a slash is looked up on PATH, as execvp does; a path with a slash is taken
    relative to the project root, the builds' working directory.
    """
    if not config.build.command:
        return None
    program = config.build.command[0]
    if "/" not in program:
        if shutil.which(program) is None:
            return f"build.command[0] {program!r} is not found on PATH"
        return None
    path = os.path.join(config.project_root, program)
    if not os.path.isfile(path):
        return f"build.command[0] {program!r} does not exist (relative to {config.project_root})"
    if not os.access(path, os.X_OK):
        return f"build.command[0] {program!r} is not executable (chmod +x {path})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        config = load_config(args.project, args.config).with_overrides(args.bind, args.port)
        password = os.environ.get(config.server.password_env) or None
        check_startable(config, password)
    except ConfigError as exc:
        print(f"builder-api: error: {exc}", file=sys.stderr)
        return 2

    if config.source == DEFAULTS_SOURCE:
        LOG.warning(
            "no config file in %s (looked for %s), so the daemon runs with defaults: "
            "no build command, no run command, only the build and run logs",
            config.project_root,
            ", ".join(CONFIG_NAMES),
        )
    problem = build_program_problem(config)
    if problem is not None:
        LOG.warning("%s, so every build will end in state error", problem)

    try:
        lock_fd = lock_project(config)
    except AlreadyServed as exc:
        holder = f"pid {exc.pid}" if exc.pid is not None else "another process"
        print(
            f"builder-api: error: another builder API daemon ({holder}) already serves "
            f"{config.project_root} (it holds {exc.lock_file}); stop it first or use it",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(
            f"builder-api: error: cannot lock {config.runtime_dir}/{LOCK_NAME}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    app = App(config, password)
    try:
        server = Server(app, config.server.bind, config.server.port)
    except OSError as exc:
        print(f"builder-api: error: {bind_failure(config, exc)}", file=sys.stderr)
        os.close(lock_fd)
        return 1
    try:
        app.start()
    except (PluginError, OSError) as exc:
        print(f"builder-api: error: cannot start: {exc}", file=sys.stderr)
        server.stop()
        app.shutdown()
        os.close(lock_fd)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    host, port = server.address
    auth = "password required" if password else "no password"
    print(
        f"builder-api {__version__}: serving {config.project_root} on http://{host}:{port} "
        f"({auth}; config {config.source})",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(1.0):
        pass
    print(
        "builder-api: stopping (builds and the runtime process are being stopped)",
        file=sys.stderr,
        flush=True,
    )
    # Order matters: no new connections, then the app wakes long-polls (they answer with
    # "shutting_down": true) and sends WebSocket clients a close frame, then the server waits
    # briefly for those answers before it cuts the remaining connections.
    server.close_listener()
    app.shutdown()
    server.stop(drain_s=SHUTDOWN_DRAIN_S)
    os.close(lock_fd)
    return 0
