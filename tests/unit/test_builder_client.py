"""client.py against a live daemon: env handling, agent id, auth, long-poll helpers, retry with
backoff, and the command line's output and exit codes. client.py is loaded by path, as inside the
container.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.test_builder_support import Live, live, make_config

__all__ = ["live"]

CLIENT_PATH = Path(__file__).resolve().parents[2] / "builder_api" / "client.py"


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("builder_client_under_test", CLIENT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


client_module = load_client()


@pytest.fixture
def env(live: Live, monkeypatch: pytest.MonkeyPatch) -> Live:
    monkeypatch.setenv("BUILDER_API_URL", live.url)
    monkeypatch.delenv("BUILDER_API_PASSWORD", raising=False)
    monkeypatch.setenv("BUILDER_API_AGENT_ID", "client-test")
    return live


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_client_reads_url_from_env(env: Live) -> None:
    assert client_module.BuilderClient().url == env.url


def test_client_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDER_API_URL", raising=False)
    assert client_module.BuilderClient().url == "http://host.docker.internal:6666"


def test_client_default_agent_id_is_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDER_API_AGENT_ID", raising=False)
    assert client_module.default_agent_id().endswith(f":{__import__('os').getpid()}")


def test_client_build_and_wait_sends_agent_id(env: Live) -> None:
    result = client_module.BuilderClient().build_and_wait(["ok"])
    assert result["state"] == "success"
    assert result["agent"] == "client-test"
    assert "build ok" in result["log_tail"]


def test_client_wait_build_long_polls_past_short_polls(env: Live) -> None:
    client = client_module.BuilderClient()
    queued = client.build(["slow"])
    result = client.wait_build(queued["id"], poll_s=0.2)
    assert result["done"] is True


def test_client_logs_and_events(env: Live) -> None:
    client = client_module.BuilderClient()
    env.app.events.emit("probe", n=5)
    assert client.logs("app", 2) == ["app line 498", "app line 499"]
    assert client.events("probe")[-1]["n"] == 5


def test_client_refused_arg_raises_with_status(env: Live) -> None:
    with pytest.raises(client_module.BuilderError) as info:
        client_module.BuilderClient().build(["not-allowed"])
    assert info.value.status == 400


def test_client_sends_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = Live(make_config(tmp_path), password="pw-123")
    try:
        monkeypatch.setenv("BUILDER_API_URL", server.url)
        monkeypatch.setenv("BUILDER_API_PASSWORD", "pw-123")
        stopped = client_module.BuilderClient().stop()
    finally:
        server.close()
    assert stopped["running"] is False


def test_client_retries_with_backoff_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "BACKOFF_S", 0.05)
    client = client_module.BuilderClient(url=f"http://127.0.0.1:{free_port()}", retries=3)
    started = time.monotonic()
    with pytest.raises(client_module.BuilderError) as info:
        client.status()
    elapsed = time.monotonic() - started
    assert info.value.status == 0
    assert 0.1 <= elapsed < 5


def test_client_retry_reaches_a_daemon_that_starts_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from builder_api.app import App
    from builder_api.server import Server

    port = free_port()
    holder: list[tuple[App, Server]] = []

    def start_later() -> None:
        time.sleep(0.4)
        app = App(make_config(tmp_path))
        server = Server(app, "127.0.0.1", port)
        app.start()
        server.start()
        holder.append((app, server))

    thread = threading.Thread(target=start_later)
    thread.start()
    monkeypatch.setattr(client_module, "BACKOFF_S", 0.2)
    try:
        status = client_module.BuilderClient(url=f"http://127.0.0.1:{port}", retries=6).status()
    finally:
        thread.join()
        for app, server in holder:
            server.stop()
            app.shutdown()
    assert "daemon" in status


# -- command line ---------------------------------------------------------------------------------


def test_cli_build_success_exit_0(env: Live, capsys: pytest.CaptureFixture[str]) -> None:
    code = client_module.main(["build", "ok"])
    out = capsys.readouterr().out
    assert code == 0
    assert "build ok" in out


def test_cli_build_failure_exit_1(env: Live) -> None:
    assert client_module.main(["build", "fail"]) == 1


def test_cli_refused_exit_2(env: Live, capsys: pytest.CaptureFixture[str]) -> None:
    code = client_module.main(["build", "rm"])
    assert code == 2
    assert "not in build.allowed_args" in capsys.readouterr().err


def test_cli_unreachable_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client_module, "DEFAULT_RETRIES", 1)
    monkeypatch.setenv("BUILDER_API_URL", f"http://127.0.0.1:{free_port()}")
    code = client_module.main(["status"])
    assert code == 3
    assert "cannot reach" in capsys.readouterr().err


def test_cli_logs_prints_lines(env: Live, capsys: pytest.CaptureFixture[str]) -> None:
    assert client_module.main(["logs", "app", "-n", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["app line 498", "app line 499"]


@pytest.mark.parametrize("command", [["status"], ["queue"], ["run"], ["stop"], ["events"]])
def test_cli_simple_commands_exit_0(env: Live, command: list[str]) -> None:
    assert client_module.main(command) == 0


def test_cli_bad_url_scheme_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDER_API_URL", "file:///etc/passwd")
    assert client_module.main(["status"]) == 3


def test_cli_build_error_prints_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Live(make_config(tmp_path, {"build": {"command": ["no-such-binary"]}}))
    monkeypatch.setenv("BUILDER_API_URL", server.url)
    monkeypatch.delenv("BUILDER_API_PASSWORD", raising=False)
    try:
        code = client_module.main(["build", "ok"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1
    assert "error (cannot start 'no-such-binary'" in err


@pytest.mark.parametrize("count", ["-1", "0", "10001", "x"])
def test_cli_logs_bad_count_usage_error(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        client_module.main(["logs", "app", "-n", count])
    assert caught.value.code == 2
    assert "must be an integer from 1 to 10000" in capsys.readouterr().err


def test_cli_url_flag_bad_scheme_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        client_module.main(["--url", "ftp://x", "status"])
    assert caught.value.code == 2
    assert "--url must start with http:// or https://" in capsys.readouterr().err
