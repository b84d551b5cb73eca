"""Thin threaded I/O around `wsproto`: the set of connected /ws clients, per-client bounded send
queues, the file follower that turns new log lines and events into frames, and heartbeats.

A slow client never slows the others: frames go into its own bounded queue, and when the queue is
full its oldest frame is dropped (it is told how many it lost).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from . import wsproto
from .events import parse_event
from .paths import open_inside

LOG = logging.getLogger("builder_api.ws")

# Socket timeout for one WebSocket send or receive, in seconds. A client that accepts no data
# for this long is disconnected (its queue has been dropping frames meanwhile).
WS_IO_TIMEOUT_S = 30.0
# Frames joined into one sendall by a client's sender thread.
MAX_FRAMES_PER_SEND = 256
# Bytes of new data read from one followed file per poll (bounds memory under a log flood).
MAX_FOLLOW_BYTES_PER_TICK = 4 * 1024 * 1024
# A partial line longer than this is sent as is rather than held back.
MAX_PARTIAL_LINE = 64 * 1024
# Bytes read from the socket at once.
RECV_BYTES = 64 * 1024


def _json_frame(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), default=str)
    return wsproto.encode_frame(wsproto.OP_TEXT, text.encode("utf-8"))


class WsClient:
    """One connected client: its bounded frame queue and its sender thread."""

    def __init__(self, sock: socket.socket, agent: str, max_queue: int) -> None:
        self.sock = sock
        self.agent = agent
        self.queue: deque[bytes] = deque(maxlen=max_queue)
        self.cond = threading.Condition()
        self.send_lock = threading.Lock()
        self.dropped = 0
        self.closed = False

    def push(self, frame: bytes) -> None:
        with self.cond:
            if self.closed:
                return
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append(frame)
            self.cond.notify()

    def send_now(self, frame: bytes) -> bool:
        """Send a control frame directly (pong, close); False when the socket is gone."""
        try:
            with self.send_lock:
                self.sock.sendall(frame)
            return True
        except OSError:
            return False

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def sender(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                batch: list[bytes] = []
                if self.dropped:
                    batch.append(_json_frame({"type": "dropped", "count": self.dropped}))
                    self.dropped = 0
                while self.queue and len(batch) < MAX_FRAMES_PER_SEND:
                    batch.append(self.queue.popleft())
            try:
                with self.send_lock:
                    self.sock.sendall(b"".join(batch))
            except OSError:
                self.close()
                _shutdown(self.sock)
                return


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Hub:
    """All /ws clients; `broadcast` queues one encoded frame to each."""

    def __init__(self, max_clients: int, queue_frames: int, max_message: int) -> None:
        self.max_clients = max_clients
        self.queue_frames = queue_frames
        self.max_message = max_message
        self._lock = threading.Lock()
        self._clients: set[WsClient] = set()
        self._stopping = False

    def count(self) -> int:
        with self._lock:
            return len(self._clients)

    def full(self) -> bool:
        return self.count() >= self.max_clients

    def broadcast(self, obj: dict[str, Any]) -> None:
        with self._lock:
            clients = list(self._clients)
        if not clients:
            return
        frame = _json_frame(obj)
        for client in clients:
            client.push(frame)

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            clients = list(self._clients)
        for client in clients:
            client.send_now(wsproto.encode_close(wsproto.CLOSE_GOING_AWAY, "daemon stopping"))
            client.close()
            _shutdown(client.sock)

    def serve(self, sock: socket.socket, agent: str, hello: dict[str, Any] | None = None) -> None:
        """Run one client until it closes (called on the connection's thread after the 101)."""
        sock.settimeout(WS_IO_TIMEOUT_S)
        client = WsClient(sock, agent, self.queue_frames)
        with self._lock:
            if self._stopping:
                return
            self._clients.add(client)
        sender = threading.Thread(target=client.sender, name="ws-send", daemon=True)
        sender.start()
        if hello is not None:
            client.push(_json_frame(hello))
        try:
            self._read_loop(client)
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()
            sender.join(timeout=WS_IO_TIMEOUT_S + 1)

    def _read_loop(self, client: WsClient) -> None:
        parser = wsproto.Parser(max_message=self.max_message, require_mask=True)
        while not client.closed:
            try:
                data = client.sock.recv(RECV_BYTES)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                events = parser.feed(data)
            except wsproto.ProtocolError as exc:
                LOG.info("ws client %s broke the protocol: %s", client.agent, exc.reason)
                client.send_now(wsproto.encode_close(exc.code, exc.reason[:100]))
                return
            for event in events:
                if isinstance(event, wsproto.Ping):
                    client.send_now(wsproto.encode_frame(wsproto.OP_PONG, event.data))
                elif isinstance(event, wsproto.Close):
                    code = event.code if event.code != wsproto.CLOSE_NO_STATUS else None
                    reply = (
                        wsproto.encode_close(code)
                        if code
                        else wsproto.encode_frame(wsproto.OP_CLOSE, b"")
                    )
                    client.send_now(reply)
                    return
                # Text/binary messages from clients and pongs are accepted and ignored.


class Follower:
    """Polls followed files (log aliases and the event feed) and broadcasts new lines.

    Each access re-checks the path against the project root (via `open_inside`).
    """

    def __init__(
        self,
        root: str,
        logs: dict[str, str],
        events_path: str,
        emit: Callable[[dict[str, Any]], None],
        poll_s: float,
    ) -> None:
        self.root = root
        self.files: list[tuple[str, str]] = [(alias, path) for alias, path in logs.items()]
        self.files.append(("", events_path))
        self.emit = emit
        self.poll_s = poll_s
        self._offsets: dict[str, tuple[int, int]] = {}
        self._partial: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for _alias, path in self.files:
            self._offsets[path] = self._position(path, at_end=True)
        self._thread = threading.Thread(target=self._loop, name="ws-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _position(self, path: str, at_end: bool) -> tuple[int, int]:
        try:
            fd = open_inside(self.root, path, os.O_RDONLY)
        except OSError:
            return (0, 0)
        try:
            st = os.fstat(fd)
            return (st.st_ino, st.st_size if at_end else 0)
        finally:
            os.close(fd)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            for alias, path in self.files:
                try:
                    self._poll(alias, path)
                except Exception:  # one bad file must not stop the feed
                    LOG.exception("following %s failed", alias or "events")

    def poll_once(self) -> None:
        for alias, path in self.files:
            self._poll(alias, path)

    def _poll(self, alias: str, path: str) -> None:
        try:
            fd = open_inside(self.root, path, os.O_RDONLY)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            inode, offset = self._offsets.get(path, (st.st_ino, 0))
            if st.st_ino != inode or st.st_size < offset:
                offset = 0  # rotated or truncated: start over
                self._partial.pop(path, None)
            if st.st_size == offset:
                self._offsets[path] = (st.st_ino, offset)
                return
            data = os.pread(fd, min(st.st_size - offset, MAX_FOLLOW_BYTES_PER_TICK), offset)
        finally:
            os.close(fd)
        self._offsets[path] = (st.st_ino, offset + len(data))
        data = self._partial.pop(path, b"") + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_PARTIAL_LINE:
            lines.append(rest)
        elif rest:
            self._partial[path] = rest
        for raw in lines:
            if alias:
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                self.emit({"type": "log", "file": alias, "line": line})
            else:
                event = parse_event(raw)
                if event is not None:
                    self.emit({"type": "event", "event": event})


class Heartbeat:
    def __init__(
        self,
        interval_s: float,
        status: Callable[[], dict[str, Any]],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.interval_s = interval_s
        self.status = status
        self.emit = emit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ws-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.emit({"type": "status", "ts": time.time(), "status": self.status()})
            except Exception:
                LOG.exception("heartbeat failed")
