"""The threaded server over real sockets on 127.0.0.1 (ephemeral port): keep-alive, slowloris,
body limits, the connection cap, hostile bytes, and the daemon process's clean shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.test_builder_support import Live, live, make_config, status_line, write_project

__all__ = ["live"]

REPO = Path(__file__).resolve().parents[2]


def test_server_status_over_socket(live: Live) -> None:
    status, data = live.call("GET", "/status")
    assert status == 200
    assert data["daemon"]["pid"] == os.getpid()


def test_server_keep_alive_serves_many_requests_on_one_connection(live: Live) -> None:
    conn = live.conn()
    statuses = []
    for _ in range(20):
        conn.request("GET", "/status")
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    sock_before = conn.sock
    conn.request("GET", "/queue")
    conn.getresponse().read()
    assert set(statuses) == {200}
    assert conn.sock is sock_before
    conn.close()


def test_server_pipelined_requests(live: Live) -> None:
    one = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    raw = live.raw(
        one + one + b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert raw.count(b"HTTP/1.1 200 OK") == 3


def test_server_slowloris_is_cut_off(live: Live) -> None:
    # request_timeout_s is 2 in the test config: trickling bytes does not extend it.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\n")
        reply = b""
        with contextlib.suppress(OSError):
            for _ in range(40):  # one header line every 0.25 s: never a complete head
                sock.sendall(b"X-A: b\r\n")
                time.sleep(0.25)
        with contextlib.suppress(OSError):
            reply = sock.recv(4096)
    elapsed = time.monotonic() - started
    assert status_line(reply) in (0, 408)
    assert elapsed < 6


def test_server_slowloris_does_not_block_others(live: Live) -> None:
    slow = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(5)]
    for sock in slow:
        sock.sendall(b"GET /status HTTP/1.1\r\n")
    try:
        status, _ = live.call("GET", "/status", timeout=2)
    finally:
        for sock in slow:
            sock.close()
    assert status == 200


def test_server_slow_body_is_cut_off(live: Live) -> None:
    started = time.monotonic()
    reply = live.raw(
        b"POST /log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{", timeout=10
    )
    assert status_line(reply) == 408
    assert time.monotonic() - started < 5


def test_server_body_too_large_413(live: Live) -> None:
    reply = live.raw(b"POST /log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999\r\n\r\n")
    assert status_line(reply) == 413


def test_server_chunked_body_411(live: Live) -> None:
    reply = live.raw(b"POST /log HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status_line(reply) == 411


def test_server_nul_in_head_400(live: Live) -> None:
    reply = live.raw(b"GET /sta\x00tus HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_line(reply) == 400


def test_server_huge_head_431(live: Live) -> None:
    reply = live.raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n")
    assert status_line(reply) in (400, 431)


def test_server_connection_cap(tmp_path: Path) -> None:
    server = Live(make_config(tmp_path, {"security": {"max_connections": 3}}))
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        time.sleep(0.2)
        reply = server.raw(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    finally:
        for sock in held:
            sock.close()
        server.close()
    assert status_line(reply) == 503


def test_server_long_poll_over_socket_outlives_build(live: Live) -> None:
    _, queued = live.call("POST", "/build", {"args": ["slow"]})
    status, data = live.call("GET", f"/build_status?id={queued['id']}&wait=20", timeout=30)
    assert status == 200
    assert data["state"] == "success"
    assert data["timed_out"] is False


def test_server_many_long_polls_at_once(live: Live) -> None:
    _, queued = live.call("POST", "/build", {"args": ["slow"]})
    results: list[int] = []

    def poll() -> None:
        status, _ = live.call("GET", f"/build_status?id={queued['id']}&wait=20", timeout=30)
        results.append(status)

    threads = [threading.Thread(target=poll) for _ in range(30)]
    for thread in threads:
        thread.start()
    status, _ = live.call("GET", "/status", timeout=5)
    for thread in threads:
        thread.join()
    assert status == 200
    assert results.count(200) == 30


def test_server_cors_preflight_over_socket(live: Live) -> None:
    conn = live.conn()
    conn.request(
        "OPTIONS",
        "/log",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 204
    assert resp.getheader("Access-Control-Allow-Origin") == "http://localhost:5173"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=1, max_size=200))
@example(data=b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n")
@example(data=b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n")
@example(data=b"\xff\xfe\r\n\r\n")
def test_server_hostile_bytes_never_5xx_and_worker_survives(live: Live, data: bytes) -> None:
    reply = live.raw(data + b"\r\n\r\n", timeout=3)
    code = status_line(reply)
    assert code < 500
    assert live.call("GET", "/status", timeout=3)[0] == 200


# -- the daemon process -----------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    write_project(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder_api", "--project", str(tmp_path), "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield proc, port, tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _post(port: int, path: str, payload: object = None) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", path, body=json.dumps(payload or {}), headers={"Content-Type": "application/json"}
    )
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


def test_daemon_sigterm_stops_build_and_run(daemon: tuple[subprocess.Popen, int, Path]) -> None:
    proc, port, _root = daemon
    run_pid = _post(port, "/run")["pid"]
    _post(port, "/build", {"args": ["hang"]})
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    time.sleep(0.1)
    try:
        os.kill(run_pid, 0)
        run_alive = True
    except ProcessLookupError:
        run_alive = False
    assert code == 0
    assert run_alive is False


def test_daemon_refuses_non_loopback_without_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BUILDER_API_PASSWORD"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "builder_api",
            "--project",
            str(tmp_path),
            "--bind",
            "0.0.0.0",
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "requires a password" in result.stderr


def test_daemon_refuses_log_outside_root(tmp_path: Path) -> None:
    (tmp_path / ".builder-api.json").write_text(json.dumps({"logs": {"x": "/var/log/syslog"}}))
    result = subprocess.run(
        [sys.executable, "-m", "builder_api", "--project", str(tmp_path), "--port", "0"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "logs.x" in result.stderr


def test_daemon_runs_as_directory_script(tmp_path: Path) -> None:
    from builder_api import launch_args

    argv = [*launch_args(str(tmp_path)), "--version"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("builder-api")


def test_server_expect_100_continue(live: Live) -> None:
    body = b'{"level": "info", "message": "' + b"m" * 2000 + b'"}'
    head = (
        "POST /log HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(head)
        interim = sock.recv(4096)
        sock.sendall(body)
        final = b""
        while chunk := sock.recv(65536):
            final += chunk
    assert interim.startswith(b"HTTP/1.1 100")
    assert status_line(final) == 200


def test_server_access_log_records_agent_without_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    server = Live(make_config(tmp_path), password="pw")
    try:
        with caplog.at_level(logging.INFO, logger="builder_api"):
            server.call("POST", "/stop?key=pw", headers={"X-Agent-ID": "agent-42"})
    finally:
        server.close()
    assert "agent=agent-42" in caplog.text
    assert "key=" not in caplog.text
    assert "pw" not in caplog.text


def test_daemon_shutdown_answers_waiters(daemon: tuple[subprocess.Popen, int, Path]) -> None:
    import http.client

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    proc, port, root = daemon
    hanging = _post(port, "/build", {"args": ["hang"]})["id"]
    pending = _post(port, "/build", {"args": ["ok"]})["id"]
    time.sleep(0.3)
    answers: list[tuple[int, dict]] = []

    def long_poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/build_status?id={hanging}&wait=60")
        response = conn.getresponse()
        answers.append((response.status, json.loads(response.read())))
        conn.close()

    poller = threading.Thread(target=long_poll)
    poller.start()
    with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, ping_interval=None) as ws:
        ws.recv(timeout=5)  # hello
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    poller.join(timeout=15)
    proc.wait(timeout=15)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert len(answers) == 1
    assert answers[0][0] == 200
    assert answers[0][1]["shutting_down"] is True
    events = [json.loads(line) for line in (root / ".builder-api" / "events.jsonl").open()]
    cancels = [e for e in events if e["type"] == "build_cancel" and e.get("build") == pending]
    assert len(cancels) == 1


def test_server_bare_lf_head_400_promptly(live: Live) -> None:
    started = time.monotonic()
    raw = live.raw(b"GET /status HTTP/1.1\nHost: 127.0.0.1\n\n")
    assert status_line(raw) == 400
    assert b"CRLF" in raw
    assert time.monotonic() - started < 1.0
