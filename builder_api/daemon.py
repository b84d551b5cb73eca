"""Assembly and the command line: load the config, check it, start the app and the server,
stop builds and the runtime process cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from . import __version__
from .app import App
from .config import ConfigError, check_startable, load_config
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
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s builder-api %(levelname)s %(message)s"
    )


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

    app = App(config, password)
    try:
        server = Server(app, config.server.bind, config.server.port)
    except OSError as exc:
        print(
            f"builder-api: error: cannot bind {config.server.bind}:{config.server.port}: "
            f"{exc.strerror or exc} (change server.port or use --port)",
            file=sys.stderr,
        )
        return 1
    try:
        app.start()
    except (PluginError, OSError) as exc:
        print(f"builder-api: error: cannot start: {exc}", file=sys.stderr)
        server.stop()
        app.shutdown()
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
    server.stop()
    app.shutdown()
    return 0
