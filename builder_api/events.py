"""The JSON-lines event feed: the daemon appends to it, build and run processes append to it
(its path is in their `BUILDER_API_EVENTS` environment variable), `/events` filters it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from .logtail import iter_lines_backwards
from .paths import open_inside

# Environment variable that tells build and run processes where the event feed is.
EVENTS_ENV = "BUILDER_API_EVENTS"
# Bytes of the feed scanned (backwards) by one /events query.
MAX_SCAN_BYTES = 16 * 1024 * 1024
# One event line larger than this is refused by the daemon's own writer.
MAX_EVENT_BYTES = 64 * 1024


class EventFeed:
    """Appends events to the feed file, re-checking that the file is inside the project root."""

    def __init__(self, root: str, path: str) -> None:
        self.root = root
        self.path = path
        self._lock = threading.Lock()

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Append one event (`ts`, `type`, `pid` plus fields) and return it."""
        event: dict[str, Any] = {"ts": round(time.time(), 6), "type": event_type}
        event.setdefault("pid", os.getpid())
        event.update(fields)
        line = json.dumps(event, separators=(",", ":"), default=str).encode("utf-8")
        if len(line) > MAX_EVENT_BYTES:
            event = {"ts": event["ts"], "type": event_type, "pid": event["pid"], "truncated": True}
            line = json.dumps(event).encode("utf-8")
        with self._lock:
            try:
                fd = open_inside(
                    self.root, self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
                )
            except OSError:
                return (
                    event  # the feed is unavailable (or was swapped for a link): drop, never crash
                )
            try:
                os.write(fd, line + b"\n")
            finally:
                os.close(fd)
        return event

    def query(
        self, event_type: str | None, since: float | None, pid: int | None, n: int
    ) -> list[dict[str, Any]]:
        """The last `n` events that match, oldest first."""
        try:
            fd = open_inside(self.root, self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        found: list[dict[str, Any]] = []
        try:
            for raw in iter_lines_backwards(fd, MAX_SCAN_BYTES):
                event = parse_event(raw)
                if event is None:
                    continue
                ts = event.get("ts")
                if since is not None and isinstance(ts, (int, float)) and ts <= since:
                    break  # the feed is append-only, so older lines are older events
                if event_type and event.get("type") != event_type:
                    continue
                if pid is not None and event.get("pid") != pid:
                    continue
                found.append(event)
                if len(found) >= n:
                    break
        finally:
            os.close(fd)
        found.reverse()
        return found


def parse_event(raw: bytes) -> dict[str, Any] | None:
    """One feed line as a dict, or None when it is not a JSON object (foreign lines are skipped)."""
    raw = raw.strip()
    if not raw or len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        event = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None
