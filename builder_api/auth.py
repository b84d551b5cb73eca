"""Password checks and the per-client lockout after repeated failures.

The clock is injected so tests can step through a lockout without sleeping.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from typing import Callable

# Window over which failures are counted, in seconds ("N failures a minute").
FAILURE_WINDOW_S = 60.0
# Clients tracked at once; beyond this the oldest idle records are dropped (bounded memory).
MAX_TRACKED_CLIENTS = 10000


def password_matches(expected: str, offered: str | None) -> bool:
    """Constant-time comparison of the offered password with the expected one."""
    if offered is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), offered.encode("utf-8", "surrogatepass"))


class AuthGuard:
    """Counts failed attempts per client and locks a client out after too many.

    `record_failure` returns True when this failure started a lockout (so the caller can warn and
    emit an event exactly once per lockout).
    """

    def __init__(
        self,
        failures_per_minute: int,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = failures_per_minute
        self.lockout_s = lockout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked_for(self, client: str) -> float:
        """Seconds left in the client's lockout (0 when it is not locked out)."""
        with self._lock:
            until = self._locked_until.get(client)
            if until is None:
                return 0.0
            left = until - self.clock()
            if left <= 0:
                del self._locked_until[client]
                return 0.0
            return left

    def record_failure(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= MAX_TRACKED_CLIENTS and client not in self._failures:
                self._failures.pop(next(iter(self._failures)))
            window = self._failures.setdefault(client, deque())
            window.append(now)
            while window and window[0] <= now - FAILURE_WINDOW_S:
                window.popleft()
            if len(window) >= self.limit and client not in self._locked_until:
                self._locked_until[client] = now + self.lockout_s
                window.clear()
                return True
            return False

    def record_success(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
