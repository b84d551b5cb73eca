"""builder-api: the host-side daemon a caged agent uses to build, test, run and read logs.

Modules, in dependency order: `paths` (project-root scoping), `config` (the declarative config
and its schema), `httpcore` (sans-I/O HTTP records and parser), `auth` (password and lockout),
`logtail` (tail a file backwards), `events` (the JSON-lines feed), `procs` (child processes),
`builds` (the queue), `runner` (the runtime process), `wsproto` (sans-I/O WebSocket codec),
`wshub` (WebSocket I/O, file follower, heartbeats), `plugin`, `app` (request→response core),
`server` (threaded sockets), `daemon` (assembly, signals, command line). `client.py` is a
stand-alone client for use inside the container.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"


def launch_args(project_dir: str) -> list[str]:
    """The argv the launcher (`cld -a`) uses to start the daemon for `project_dir`.

    It runs this package's directory as a script (`python3 /path/to/builder_api --project DIR`),
    which works from any working directory. The password is never on the command line: the
    launcher passes it in the environment (`BUILDER_API_PASSWORD`). Bind address and port come
    from the project's config file.
    """
    package_dir = os.path.dirname(os.path.abspath(__file__))
    return [sys.executable or "python3", package_dir, "--project", os.path.abspath(project_dir)]
