#!/usr/bin/env python3
"""Benchmark the builder API daemon on loopback, bounded in count and time.

Usage: python3 bench/bench_builder_api.py [--seconds S] [--polls N] [--write]

The daemon runs as its own process (`python3 -m builder_api`) on 127.0.0.1 with an ephemeral port,
in a scratch project. Clients run in this process (threads) and in helper processes, so the
figures include Python client overhead on the same 2-core machine: they are a floor, not a
ceiling.

1. Requests per second for GET /status and GET /logs?file=big&n=200 (a 200,000-line log) with 50
   concurrent HTTP/1.1 keep-alive clients (2 processes x 25 threads, one connection each), for
   S seconds each; latency median and p99.
2. Long-polls held open at once: one build that sleeps, then N connections each waiting in
   GET /build_status?wait=60; checks none is answered early, measures /status latency while they
   are held, then cancels the build and times how long until every long-poll has its reply.
3. Log-line latency to 20 WebSocket clients while a writer appends 1,000 lines per second for S
   seconds: time from the write to each client's receipt (stdlib client on the daemon's codec).

`--write` replaces this benchmark's section of bench/RESULTS.md (between its markers).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder_api import wsproto  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
START_MARK = "<!-- bench:builder-api:start -->"
END_MARK = "<!-- bench:builder-api:end -->"
HTTP_CLIENTS = 50
CLIENT_PROCESSES = 2
WS_CLIENTS = 20
LINES_PER_SECOND = 1000
BIG_LOG_LINES = 200_000
MAX_POLLS = 2000  # upper bound on the long-poll count we try, whatever --polls says


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


# -- daemon -----------------------------------------------------------------------------------


def start_daemon(root: Path, polls: int) -> tuple[subprocess.Popen, int]:
    (root / "sleep.py").write_text("import time\ntime.sleep(120)\n")
    with open(root / "big.log", "w") as log:
        for i in range(BIG_LOG_LINES):
            log.write(f"{i:08d} a typical build log line with some words in it\n")
    (root / "live.log").write_text("")
    config = {
        "build": {"command": [sys.executable, "sleep.py"], "allowed_args": []},
        "logs": {"big": "big.log", "live": "live.log"},
        "security": {"max_connections": MAX_POLLS + 200},
        "websocket": {
            "max_clients": 100,
            "queue_frames": 10000,
            "poll_s": 0.005,
            "heartbeat_s": 60,
        },
    }
    (root / ".builder-api.json").write_text(json.dumps(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("BUILDER_API_PASSWORD", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder_api", "--project", str(root), "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench: the daemon did not start")


def call(port: int, method: str, path: str, body: Any = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=None if body is None else json.dumps(body))
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


# -- 1. keep-alive throughput -----------------------------------------------------------------


def _client_worker(port: int, path: str, threads: int, seconds: float, out: Any) -> None:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200 or resp.getheader("Connection") != "keep-alive":
                    errors[0] += 1
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((latencies, errors[0]))


def bench_throughput(port: int, path: str, seconds: float) -> dict[str, Any]:
    queue: Any = multiprocessing.Queue()
    per_process = HTTP_CLIENTS // CLIENT_PROCESSES
    procs = [
        multiprocessing.Process(
            target=_client_worker, args=(port, path, per_process, seconds, queue)
        )
        for _ in range(CLIENT_PROCESSES)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        got, err = queue.get(timeout=seconds + 60)
        latencies += got
        errors += err
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - started
    return {
        "path": path,
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "median": statistics.median(latencies),
        "p99": pct(latencies, 0.99),
        "errors": errors,
        "elapsed": elapsed,
    }


# -- 2. long-polls ----------------------------------------------------------------------------


def bench_long_polls(port: int, count: int) -> dict[str, Any]:
    build = call(port, "POST", "/build", {"args": []})
    time.sleep(0.3)
    request = (
        f"GET /build_status?id={build['id']}&wait=60 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    opened_at = time.monotonic()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(request)
        socks.append(sock)
    open_s = time.monotonic() - opened_at
    time.sleep(1.0)
    readable, _, _ = select.select(socks, [], [], 0)
    answered_early = len(readable)
    status_lat = []
    for _ in range(20):
        start = time.perf_counter()
        call(port, "GET", "/status")
        status_lat.append(time.perf_counter() - start)
    cancelled_at = time.monotonic()
    call(port, "DELETE", f"/queue/{build['id']}")
    pending = set(socks)
    replies_ok = 0
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], 1.0)
        for sock in readable:
            data = sock.recv(65536)
            if data.startswith(b"HTTP/1.1 200"):
                replies_ok += 1
            pending.discard(sock)
    released_s = time.monotonic() - cancelled_at
    for sock in socks:
        sock.close()
    return {
        "count": count,
        "held": count - answered_early,
        "open_s": open_s,
        "status_median": statistics.median(status_lat),
        "status_p99": pct(status_lat, 0.99),
        "released_s": released_s,
        "replies_ok": replies_ok,
    }


# -- 3. WebSocket latency ---------------------------------------------------------------------


class WsReader(threading.Thread):
    def __init__(self, port: int, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop_at = stop_at
        self.latencies: list[float] = []
        self.dropped = 0
        self.ready = threading.Event()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"bench: WebSocket handshake failed: {head[:40]!r}")

    def run(self) -> None:
        parser = wsproto.Parser(max_message=1 << 24, require_mask=False)
        self.sock.settimeout(0.5)
        self.ready.set()
        while time.monotonic() < self.stop_at:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                break
            now = time.time()
            for event in parser.feed(data):
                if not isinstance(event, wsproto.Message):
                    continue
                message = json.loads(event.data)
                if message.get("type") == "dropped":
                    self.dropped += message["count"]
                if message.get("type") == "log" and message.get("file") == "live":
                    stamp = float(message["line"].split()[1])
                    self.latencies.append(now - stamp)
        self.sock.close()


def bench_websocket(port: int, root: Path, seconds: float) -> dict[str, Any]:
    stop_at = time.monotonic() + seconds + 3
    readers = [WsReader(port, stop_at) for _ in range(WS_CLIENTS)]
    for reader in readers:
        reader.start()
        reader.ready.wait(5)
    time.sleep(0.3)
    written = 0
    interval = 1.0 / LINES_PER_SECOND
    started = time.monotonic()
    with open(root / "live.log", "a", buffering=1) as log:
        while time.monotonic() - started < seconds:
            due = started + written * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            log.write(f"line {time.time():.6f} {written}\n")
            written += 1
    for reader in readers:
        reader.join(timeout=seconds + 10)
    latencies = [lat for reader in readers for lat in reader.latencies]
    received = len(latencies)
    return {
        "written": written,
        "clients": WS_CLIENTS,
        "received": received,
        "expected": written * WS_CLIENTS,
        "dropped": sum(r.dropped for r in readers),
        "median": statistics.median(latencies) if latencies else float("nan"),
        "p99": pct(latencies, 0.99),
        "rate": written / seconds,
    }


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs (nproc), Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}"
    )


def render(args: argparse.Namespace, results: dict[str, Any]) -> str:
    status, logs = results["status"], results["logs"]
    polls, ws = results["polls"], results["ws"]
    command = f"python3 bench/bench_builder_api.py --seconds {args.seconds:g} --polls {args.polls}"
    lines = [
        START_MARK,
        "## Builder API daemon",
        "",
        f"Machine: {machine()}. Command: `{command}`. The daemon is a separate process on",
        "127.0.0.1; the clients (stdlib Python, in this machine's other core) share the CPU with",
        "it, so the figures are a floor.",
        "",
        f"| benchmark ({HTTP_CLIENTS} keep-alive clients, {args.seconds:g} s) | requests/s "
        "| median | p99 | errors |",
        "|---|---|---|---|---|",
    ]
    for row in (status, logs):
        lines.append(
            f"| GET {row['path']} | {row['rps']:.0f} | {ms(row['median'])} | "
            f"{ms(row['p99'])} | {row['errors']} |"
        )
    lines += [
        "",
        f"Long-polls: {polls['held']} of {polls['count']} `GET /build_status?wait=60` held open at "
        f"once (opened in {polls['open_s']:.2f} s); `GET /status` meanwhile: median "
        f"{ms(polls['status_median'])}, p99 {ms(polls['status_p99'])}; after the build was "
        f"cancelled all {polls['replies_ok']} got their 200 within {polls['released_s']:.2f} s.",
        "",
        f"WebSocket: {ws['clients']} clients, {ws['written']} lines written at "
        f"{ws['rate']:.0f} lines/s; {ws['received']} of {ws['expected']} deliveries "
        f"({ws['dropped']} dropped by back-pressure); write-to-receipt latency median "
        f"{ms(ws['median'])}, p99 {ms(ws['p99'])} (includes the daemon's "
        "5 ms file poll used here, `websocket.poll_s`; the default is 20 ms).",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START_MARK in text and END_MARK in text:
        before = text[: text.index(START_MARK)]
        after = text[text.index(END_MARK) + len(END_MARK) :].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed run")
    parser.add_argument("--polls", type=int, default=1000, help="long-polls to hold open")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args(argv)
    args.seconds = max(1.0, min(args.seconds, 30.0))
    args.polls = max(1, min(args.polls, MAX_POLLS))
    with tempfile.TemporaryDirectory(prefix="bench-builder-api-") as tmp:
        root = Path(tmp)
        proc, port = start_daemon(root, args.polls)
        try:
            results = {
                "status": bench_throughput(port, "/status", args.seconds),
                "logs": bench_throughput(port, "/logs?file=big&n=200", args.seconds),
                "polls": bench_long_polls(port, args.polls),
                "ws": bench_websocket(port, root, args.seconds),
            }
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    section = render(args, results)
    print(section)
    if args.write:
        write_section(section)
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
