"""The build queue: one predefined command, FIFO, one build at a time, safe for many agents.

Each build runs `build.command + args` (args from the closed `allowed_args` list) with execvp
semantics in its own process group; its output is appended to the `build` log, and the byte range
it wrote is remembered so `/build_status` can return that build's own log tail.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from . import procs
from .config import Config
from .events import EVENTS_ENV, EventFeed
from .logtail import tail_fd
from .paths import open_inside

LOG = logging.getLogger("builder_api.builds")

# How often the worker wakes while a build runs, to notice a cancel or the timeout (seconds).
WORKER_TICK_S = 0.05
# Grace between TERM and KILL when a build is cancelled, times out or the daemon stops (seconds).
BUILD_STOP_GRACE_S = 3.0
# Most args one build request may carry.
MAX_ARGS = 64

PENDING, RUNNING = "pending", "running"
# File under server.runtime_dir with the last build id, so ids stay unique across restarts
# (build.log and events.jsonl keep entries of earlier daemons).
COUNTER_NAME = "last-build-id"

SUCCESS, FAILED, CANCELLED, TIMEOUT, ERROR = "success", "failed", "cancelled", "timeout", "error"
FINISHED = (SUCCESS, FAILED, CANCELLED, TIMEOUT, ERROR)


def read_counter(path: str) -> int:
    """Return the last build id stored in `path`, or 0 when it is missing or unreadable."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() else 0


def write_counter(path: str, value: int) -> None:
    """Store the last build id atomically (a temporary file, then os.replace)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with open(fd, "w", encoding="ascii") as handle:
            handle.write(f"{value}\n")
        os.replace(temporary, path)
    except OSError as exc:
        LOG.warning("cannot store the last build id in %s: %s", path, exc.strerror or exc)


class QueueFull(Exception):
    pass


class NotCancellable(Exception):
    pass


@dataclass
class Build:
    id: int
    args: list[str]
    agent: str
    state: str = PENDING
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    pid: int | None = None
    cancel_requested: bool = False
    log_start: int = 0
    log_end: int = 0
    # How many times build.log had been rotated when this build started; see log_tail.
    log_generation: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "args": self.args,
            "agent": self.agent,
            "state": self.state,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "pid": self.pid,
        }
        if self.started_at is not None:
            end = self.finished_at if self.finished_at is not None else time.time()
            data["duration_s"] = round(end - self.started_at, 3)
        if self.error:
            data["error"] = self.error
        return data


class BuildQueue:
    def __init__(
        self, config: Config, events: EventFeed, on_change: Callable[[Build], None] | None = None
    ) -> None:
        self.config = config
        self.events = events
        self.on_change = on_change
        self.log_path = config.logs["build"]
        self.changed = threading.Condition()
        self._pending: deque[Build] = deque()
        self._running: Build | None = None
        self._proc: subprocess.Popen | None = None
        self._history: deque[Build] = deque(maxlen=config.build.history)
        self._by_id: dict[int, Build] = {}
        self._counter_file = os.path.join(config.runtime_dir, COUNTER_NAME)
        self._next_id = read_counter(self._counter_file) + 1
        self._log_generation = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._worker, name="build-worker", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Cancel pending builds, stop the running one, and end the worker."""
        with self.changed:
            self._stopping = True
            cancelled = list(self._pending)
            self._pending.clear()
            for build in cancelled:
                self._finish(build, CANCELLED, None)
            if self._running is not None:
                self._running.cancel_requested = True
            self.changed.notify_all()
        for build in cancelled:
            self.events.emit("build_cancel", build=build.id, agent="daemon", reason="shutdown")
        if self._thread is not None:
            self._thread.join(timeout=BUILD_STOP_GRACE_S + 10)

    # -- API -------------------------------------------------------------------------------

    def submit(self, args: Sequence[str], agent: str) -> Build:
        with self.changed:
            if self._stopping:
                raise QueueFull("the daemon is shutting down")
            if len(self._pending) >= self.config.build.max_pending:
                raise QueueFull(
                    f"{len(self._pending)} builds are already pending "
                    f"(build.max_pending = {self.config.build.max_pending})"
                )
            build = Build(self._next_id, list(args), agent)
            self._next_id += 1
            write_counter(self._counter_file, build.id)
            self._pending.append(build)
            self._by_id[build.id] = build
            self.changed.notify_all()
        self.events.emit("build_queued", build=build.id, args=build.args, agent=agent)
        self._notify(build)
        return build

    def cancel(self, build_id: int, agent: str) -> Build:
        with self.changed:
            build = self._by_id.get(build_id)
            if build is None:
                raise KeyError(build_id)
            if build.done:
                raise NotCancellable(f"build {build_id} already finished ({build.state})")
            if build.state == PENDING:
                self._pending.remove(build)
                self._finish(build, CANCELLED, None)
            else:
                build.cancel_requested = True
            self.changed.notify_all()
        self.events.emit("build_cancel", build=build_id, agent=agent)
        return build

    @property
    def stopping(self) -> bool:
        return self._stopping

    def get(self, build_id: int) -> Build | None:
        with self.changed:
            return self._by_id.get(build_id)

    def latest_id(self) -> int | None:
        with self.changed:
            return self._next_id - 1 if self._next_id > 1 else None

    def wait(self, build_id: int, wait_s: float) -> bool:
        """Block until the build finishes or `wait_s` passes; True when it finished."""
        deadline = time.monotonic() + wait_s
        with self.changed:
            while True:
                build = self._by_id.get(build_id)
                if build is None or build.done:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return build.done
                self.changed.wait(left)

    def snapshot(self) -> dict[str, Any]:
        with self.changed:
            pending = [dict(b.summary(), position=i + 1) for i, b in enumerate(self._pending)]
            running = self._running.summary() if self._running else None
            history = [b.summary() for b in reversed(self._history)]
        return {
            "pending": pending,
            "running": running,
            "history": history,
            "max_pending": self.config.build.max_pending,
        }

    def counts(self) -> dict[str, Any]:
        with self.changed:
            return {
                "pending": len(self._pending),
                "running": self._running.id if self._running else None,
                "last": self._history[-1].summary() if self._history else None,
            }

    def log_tail(self, build: Build, n: int) -> list[str]:
        if build.started_at is None:
            return []
        path = self.log_path
        if build.log_generation == self._log_generation - 1:
            path += procs.ROTATED_SUFFIX
        elif build.log_generation != self._log_generation:
            return []  # its log was rotated out twice and is gone
        try:
            fd = open_inside(self.config.project_root, path, os.O_RDONLY)
        except OSError:
            return []
        try:
            end = build.log_end if build.done else os.fstat(fd).st_size
            return tail_fd(fd, n, start=build.log_start, end=end)
        finally:
            os.close(fd)

    # -- worker ----------------------------------------------------------------------------

    def _notify(self, build: Build) -> None:
        if self.on_change is not None:
            try:
                self.on_change(build)
            except Exception:  # a broadcast failure must not stop builds
                LOG.exception("build change listener failed")

    def _finish(self, build: Build, state: str, exit_code: int | None) -> None:
        # Called with self.changed held.
        build.state = state
        build.exit_code = exit_code
        build.finished_at = time.time()
        self._history.append(build)
        self._forget_old()

    def _forget_old(self) -> None:
        keep = {b.id for b in self._history} | {b.id for b in self._pending}
        if self._running is not None:
            keep.add(self._running.id)
        if len(self._by_id) > len(keep) + 16:
            self._by_id = {k: v for k, v in self._by_id.items() if k in keep}

    def _worker(self) -> None:
        while True:
            with self.changed:
                while not self._pending and not self._stopping:
                    self.changed.wait()
                if self._stopping:
                    return
                build = self._pending.popleft()
                build.state = RUNNING
                build.started_at = time.time()
                self._running = build
                self.changed.notify_all()
            self._notify(build)
            self._run_one(build)
            with self.changed:
                self._running = None
                self.changed.notify_all()
            self._notify(build)

    def _log_size(self) -> int:
        return procs.log_size(self.config.project_root, self.log_path)

    def _append_log(self, text: str) -> None:
        procs.append_log(self.config.project_root, self.log_path, text)

    def _run_one(self, build: Build) -> None:
        argv = list(self.config.build.command) + build.args
        if procs.rotate_log(self.config.project_root, self.log_path):
            self._log_generation += 1
        build.log_generation = self._log_generation
        self._append_log(f"=== build {build.id} by {build.agent}: {procs.argv_text(argv)}\n")
        build.log_start = self._log_size()
        env = {EVENTS_ENV: self.events.path, "BUILDER_API_BUILD_ID": str(build.id)}
        self.events.emit("build_started", build=build.id, args=build.args, agent=build.agent)
        try:
            proc = procs.spawn(
                argv, self.config.project_root, self.config.project_root, self.log_path, env
            )
        except OSError as exc:
            build.error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            # The reason goes into the build's own log range, so log_tail carries it.
            self._append_log(f"=== build {build.id} error: {build.error}\n")
            build.log_end = self._log_size()
            with self.changed:
                self._finish(build, ERROR, None)
            self.events.emit("build_finished", build=build.id, state=ERROR, error=build.error)
            return
        build.pid = proc.pid
        deadline = time.monotonic() + self.config.build.timeout_s
        state = None
        while True:
            try:
                code: int | None = proc.wait(timeout=WORKER_TICK_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if build.cancel_requested:
                state = CANCELLED
            elif time.monotonic() > deadline:
                state = TIMEOUT
            if state is not None:
                code, _ = procs.stop_group(proc, BUILD_STOP_GRACE_S)
                break
        # Reap any children left in the group.
        procs.signal_group(proc, 9)
        if state is None:
            state = SUCCESS if code == 0 else FAILED
        self._append_log(f"=== build {build.id} {state} ({procs.describe_exit(code)})\n")
        build.log_end = self._log_size()
        with self.changed:
            self._finish(build, state, code)
        self.events.emit(
            "build_finished",
            build=build.id,
            state=state,
            exit_code=code,
            agent=build.agent,
            duration_s=build.summary().get("duration_s"),
        )
