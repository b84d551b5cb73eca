"""The one long-lived runtime process (`run.start_command`): /run (re)starts it, /stop stops it.

No API-supplied arguments: the command comes from the config only. Stopping signals the whole
process group, TERM first and KILL after `run.stop_grace_s`, even when its main process has
already exited and left other members behind.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from typing import Any, Callable

from . import procs
from .config import Config
from .events import EVENTS_ENV, EventFeed

LOG = logging.getLogger("builder_api.runner")


class NoStartCommand(Exception):
    pass


class Runner:
    def __init__(
        self, config: Config, events: EventFeed, on_change: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self.events = events
        self.on_change = on_change
        self.log_path = config.logs["run"]
        # Serialises /run and /stop so two agents cannot interleave a restart.
        self._control = threading.Lock()
        self._state = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._started_at: float | None = None
        self._agent: str | None = None
        self._last_exit: int | None = None
        self._restarts = 0

    def status(self) -> dict[str, Any]:
        with self._state:
            proc = self._proc
            running = proc is not None and proc.poll() is None
            return {
                "configured": bool(self.config.run.start_command),
                "running": running,
                "pid": proc.pid if running and proc is not None else None,
                "started_at": self._started_at if running else None,
                "started_by": self._agent if running else None,
                "last_exit_code": self._last_exit,
                "starts": self._restarts,
            }

    def restart(self, agent: str) -> dict[str, Any]:
        argv = list(self.config.run.start_command)
        if not argv:
            raise NoStartCommand("no run.start_command is configured")
        with self._control:
            self._stop_locked(agent)
            env = {EVENTS_ENV: self.events.path}
            procs.rotate_log(self.config.project_root, self.log_path)
            procs_log = f"=== run by {agent}: {procs.argv_text(argv)}\n"
            self._append(procs_log)
            proc = procs.spawn(
                argv, self.config.project_root, self.config.project_root, self.log_path, env
            )
            with self._state:
                self._proc = proc
                self._started_at = time.time()
                self._agent = agent
                self._restarts += 1
            threading.Thread(
                target=self._watch, args=(proc,), name="run-watch", daemon=True
            ).start()
        self.events.emit("run_started", run_pid=proc.pid, agent=agent)
        self._changed()
        return self.status()

    def stop(self, agent: str) -> dict[str, Any]:
        with self._control:
            was_running = self._stop_locked(agent)
        status = self.status()
        status["stopped"] = was_running
        return status

    def shutdown(self) -> None:
        self.stop("daemon")

    def _stop_locked(self, agent: str) -> bool:
        """Stop the last started run's whole process group; return whether anything was signalled.

        A leader that already exited may have left members in its group, so the group is
        signalled whenever a run was started.
        """
        with self._state:
            proc = self._proc
        if proc is None:
            return False
        code, signalled = procs.stop_group(proc, self.config.run.stop_grace_s)
        if not signalled:
            return False
        with self._state:
            self._last_exit = code
        self._append(f"=== run stopped by {agent} ({procs.describe_exit(code)})\n")
        self.events.emit("run_stopped", run_pid=proc.pid, exit_code=code, agent=agent)
        self._changed()
        return True

    def _append(self, text: str) -> None:
        procs.append_log(self.config.project_root, self.log_path, text)

    def _watch(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._state:
            current = self._proc is proc
            if current:
                self._last_exit = code
        if current and not self._control.locked():
            self.events.emit("run_exited", run_pid=proc.pid, exit_code=code)
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                LOG.exception("run change listener failed")
