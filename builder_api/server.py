"""The thin threaded socket layer: accept, read one request with a deadline, call `App.handle`,
write the response, keep the connection alive for the next request.

One thread per connection, capped by `security.max_connections`. The whole request head and body
must arrive within `security.request_timeout_s` (a slowloris client that trickles bytes is cut
off when the deadline passes, whatever its pace), and the body is capped by
`security.max_body_bytes`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from .app import App
from .httpcore import (
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    Response,
    content_length,
    parse_head,
    parse_target,
    wants_keep_alive,
)

LOG = logging.getLogger("builder_api.server")

# Bytes read from a socket at once.
RECV_BYTES = 64 * 1024
# Seconds a response may take to be accepted by a slow reader before the connection is dropped.
SEND_TIMEOUT_S = 30.0
# Seconds between checks of the stop flag by the accept loop.
ACCEPT_POLL_S = 0.1
# Listen backlog.
BACKLOG = 128
# Connections over the cap get a 503 from at most this many short-lived threads at once,
# each spending at most REFUSE_TIMEOUT_S seconds; beyond that they are closed outright.
MAX_REFUSERS = 16
REFUSE_TIMEOUT_S = 1.0


class RequestTimeout(Exception):
    pass


class ConnectionClosed(Exception):
    pass


class Server:
    def __init__(self, app: App, bind: str, port: int) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.listen(BACKLOG)
        # accept() wakes up this often to notice stop(); closing a socket does not wake it.
        self.sock.settimeout(ACCEPT_POLL_S)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        security = app.config.security
        self.request_timeout_s = security.request_timeout_s
        self.max_body = security.max_body_bytes
        self.slots = threading.BoundedSemaphore(security.max_connections)
        self.refusers = threading.BoundedSemaphore(MAX_REFUSERS)
        self._stopping = threading.Event()
        self._conns_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="accept", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)
                continue
            if not self.slots.acquire(blocking=False):
                self._refuse(conn)
                continue
            thread = threading.Thread(
                target=self._connection, args=(conn, addr[0]), name="conn", daemon=True
            )
            thread.start()

    def close_listener(self) -> None:
        """Stop accepting connections; requests in progress go on."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting, give requests in progress up to `drain_s` to respond, then cut the rest.

        Idle keep-alive connections end at once (their read side is shut down). A handler that
        is still busy after `drain_s` (a long-poll the app did not wake) loses its connection.
        """
        self.close_listener()
        self._shutdown_conns(socket.SHUT_RD)
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            with self._conns_lock:
                if not self._conns:
                    break
            time.sleep(0.02)
        self._shutdown_conns(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _shutdown_conns(self, how: int) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(how)

    def _refuse(self, conn: socket.socket) -> None:
        """Answer 503 on a connection over the cap, from a short-lived thread (also capped)."""
        if not self.refusers.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._refuse_now, args=(conn,), name="refuse", daemon=True).start()

    def _refuse_now(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(REFUSE_TIMEOUT_S)
            response = Response.error(503, "too many connections", {"Retry-After": "1"})
            conn.sendall(response.head_bytes(False) + response.body)
            conn.shutdown(socket.SHUT_WR)
            # Drain what the client sent, so closing does not reset the connection before the
            # client has read the 503.
            deadline = time.monotonic() + REFUSE_TIMEOUT_S
            while time.monotonic() < deadline and conn.recv(RECV_BYTES):
                pass
        except OSError:
            pass
        finally:
            conn.close()
            self.refusers.release()

    # -- one connection --------------------------------------------------------------------

    def _connection(self, conn: socket.socket, client: str) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serve_connection(conn, client)
        except Exception:  # a bug must cost one connection, never the daemon
            LOG.exception("connection from %s failed", client)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            self.slots.release()

    def _serve_connection(self, conn: socket.socket, client: str) -> None:
        buffer = b""
        while not self._stopping.is_set():
            try:
                request, buffer, keep_alive = self._read_request(conn, client, buffer)
            except (RequestTimeout, ConnectionClosed, OSError) as exc:
                if isinstance(exc, RequestTimeout) and exc.args and exc.args[0]:
                    self._send(conn, Response.error(408, "request not received in time"), False)
                return
            except HttpError as exc:
                self._send(conn, Response.error(exc.status, exc.message, exc.headers), False)
                return
            response = self.app.handle(request)
            if response.upgrade is not None and response.status == 101:
                if self._send(conn, response, True):
                    conn.settimeout(None)
                    response.upgrade(conn)
                return
            keep_alive = keep_alive and not response.close and not self._stopping.is_set()
            if not self._send(conn, response, keep_alive, head_only=request.method == "HEAD"):
                return
            if not keep_alive:
                return

    def _send(
        self, conn: socket.socket, response: Response, keep_alive: bool, head_only: bool = False
    ) -> bool:
        try:
            conn.settimeout(SEND_TIMEOUT_S)
            payload = response.head_bytes(keep_alive)
            if not head_only:
                payload += response.body
            conn.sendall(payload)
            return True
        except OSError:
            return False

    def _recv(self, conn: socket.socket, deadline: float, started: bool) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout(started)
        conn.settimeout(left)
        try:
            data = conn.recv(RECV_BYTES)
        except socket.timeout:
            raise RequestTimeout(started) from None
        if not data:
            raise ConnectionClosed()
        return data

    def _read_request(
        self, conn: socket.socket, client: str, buffer: bytes
    ) -> tuple[Request, bytes, bool]:
        """Read one request (head and body) within the deadline; return it and leftover bytes."""
        deadline = time.monotonic() + self.request_timeout_s
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_HEAD_BYTES:
                raise HttpError(431, "request head too large")
            if b"\n\n" in buffer:
                # A head ended by bare LFs would otherwise wait for CRLF CRLF until the timeout.
                raise HttpError(400, "request head lines must end with CRLF, not a bare LF")
            buffer += self._recv(conn, deadline, bool(buffer))
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        # Tolerate leading blank lines between pipelined requests (RFC 9112 2.2).
        head = head.lstrip(b"\r\n")
        method, target, version, headers = parse_head(head)
        length = content_length(headers, self.max_body)
        if len(buffer) < length and headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for this on big bodies
        while len(buffer) < length:
            buffer += self._recv(conn, deadline, True)
        body, buffer = buffer[:length], buffer[length:]
        path, query = parse_target(target)
        request = Request(method, path, query, headers, body, client, version, raw_target=target)
        return request, buffer, wants_keep_alive(version, headers)
