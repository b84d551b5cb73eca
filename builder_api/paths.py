"""Project-root scoping: every configured path resolves inside the project root.

Paths are checked once when the daemon starts (a path outside refuses to start) and again at
every access, so a symlink swapped in later that points outside the root is never followed.
"""

from __future__ import annotations

import os


class PathEscapeError(OSError):
    """A configured path resolves outside the project root."""


def is_inside(root: str, path: str) -> bool:
    """True when the real path `path` is `root` or below it (both already real paths)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_inside(root: str, path: str) -> str:
    """Return the real path of `path` (relative to `root`), or raise PathEscapeError.

    `root` must already be a real path. Missing trailing components are fine: a log file that does
    not exist yet still resolves through its existing parent directories.
    """
    if "\x00" in path:
        raise PathEscapeError(f"path {path!r} contains a NUL byte")
    joined = path if os.path.isabs(path) else os.path.join(root, path)
    real = os.path.realpath(joined)
    if not is_inside(root, real):
        raise PathEscapeError(
            f"path {path!r} resolves to {real!r}, outside the project root {root!r}"
        )
    return real


def open_inside(root: str, path: str, flags: int, mode: int = 0o644) -> int:
    """Open `path` after re-checking that it still resolves inside `root`; return the fd.

    The final component is opened with O_NOFOLLOW, so a symlink planted between the check and the
    open makes the open fail instead of escaping.
    """
    real = resolve_inside(root, path)
    return os.open(real, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
