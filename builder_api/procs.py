"""Starting and stopping child processes: a list argv (execvp semantics, never a shell), its own
process group, output appended to a log file inside the project root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from .paths import open_inside, resolve_inside

# Size at which the build and run logs are rotated, checked when the next build or run starts.
# One old file (`build.log.1`, `run.log.1`) is kept.
MAX_LOG_BYTES = 10 * 1024 * 1024
ROTATED_SUFFIX = ".1"


def spawn(
    argv: Sequence[str], cwd: str, root: str, log_path: str, env_extra: dict[str, str]
) -> subprocess.Popen:
    """Start `argv` (shell=False) in a new session, stdout+stderr appended to `log_path`."""
    env = dict(os.environ)
    env.update(env_extra)
    fd = _open_log(root, log_path)
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            shell=False,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)


def _open_log(root: str, log_path: str) -> int:
    return open_inside(root, log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def append_log(root: str, log_path: str, text: str) -> None:
    """Append `text` to the log; a log that cannot be opened (moved outside the root) is skipped."""
    try:
        fd = _open_log(root, log_path)
    except OSError:
        return
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


def rotate_log(root: str, log_path: str) -> bool:
    """Rename the log to `<log>.1` (replacing an older one) once it reaches MAX_LOG_BYTES.

    Returns whether it rotated. A log that resolves outside the root is left alone.
    """
    try:
        real = resolve_inside(root, log_path)
        if os.path.getsize(real) < MAX_LOG_BYTES:
            return False
        os.replace(real, real + ROTATED_SUFFIX)
    except OSError:  # missing, or PathEscapeError
        return False
    return True


def log_size(root: str, log_path: str) -> int:
    """Return the log size in bytes (creating the log when missing), or 0 when it cannot open."""
    try:
        fd = _open_log(root, log_path)
    except OSError:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def signal_group(proc: subprocess.Popen, signum: int) -> bool:
    """Send `signum` to the whole process group of `proc` (it leads its own session).

    Returns whether any member got the signal. The group outlives its leader while members
    remain, and Linux does not reuse a pid that is still a process group id.
    """
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(proc: subprocess.Popen, grace_s: float) -> tuple[int | None, bool]:
    """TERM the process group, wait `grace_s`, then KILL it.

    The group is signalled even when its leader has exited, because members it left behind
    (`server &` in a script) keep the group alive. Returns the leader's exit code and whether
    any member was signalled.
    """
    signalled = signal_group(proc, signal.SIGTERM)
    if signalled:
        _wait_group(proc, grace_s)
    # Members that ignored TERM (or outlived the leader) get KILL too.
    signalled = signal_group(proc, signal.SIGKILL) or signalled
    try:
        return proc.wait(timeout=5), signalled
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
        return None, signalled


def _wait_group(proc: subprocess.Popen, grace_s: float) -> None:
    """Wait up to `grace_s` for the leader to exit and the group to empty."""
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def now() -> float:
    return time.time()


def argv_text(argv: list[str]) -> str:
    return " ".join(argv)
