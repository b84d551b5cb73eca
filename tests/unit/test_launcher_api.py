"""-a/--api: starting or reusing the project's builder API daemon, with fakes at the seams.

The fake engine returns output for `docker network inspect bridge`; the fake host records what
spawn_detached starts and decides which pids live and which ports answer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import llmdocker
from tests.unit.test_launcher_fakes import FakeEngine, make_sandbox

PASSWORD = "builder-secret-0123456789"
GATEWAY = "172.17.0.1"
REPO = Path(__file__).resolve().parents[2]


class FakeHost:
    """Stands in for spawn_detached, process_alive, port_is_open and child_exited.

    A spawned daemon gets the next pid, lives, and opens its port unless `fail_start` is set,
    in which case it writes `fail_output` to its log and exits.
    """

    def __init__(self) -> None:
        self.spawned: list[tuple[list[str], dict[str, str], str]] = []
        self.alive: set[int] = set()
        self.open_ports: set[tuple[str, int]] = set()
        self.next_pid = 4242
        self.fail_start = False
        self.fail_output = "builder-api: error: cannot bind 172.17.0.1:6666: in use\n"

    def spawn_detached(self, argv, environment, log_file) -> int:
        self.spawned.append((list(argv), dict(environment), log_file))
        pid = self.next_pid
        self.next_pid += 1
        if self.fail_start:
            Path(log_file).write_text(self.fail_output, encoding="utf-8")
            return pid
        self.alive.add(pid)
        bind = argv[argv.index("--bind") + 1]
        port = int(argv[argv.index("--port") + 1])
        self.open_ports.add((bind, port))
        return pid

    def process_alive(self, pid: int) -> bool:
        return pid in self.alive

    def port_is_open(self, host: str, port: int) -> bool:
        return (host, port) in self.open_ports

    def child_exited(self, pid: int) -> bool:
        return pid not in self.alive


class BridgeEngine(FakeEngine):
    """FakeEngine that also returns `network inspect bridge` output as Docker 20.10 does."""

    def __init__(self) -> None:
        super().__init__()
        self.bridge_output = "|172.17.0.0/16 "
        self.terminal_pid = 777
        self.terminal_record: Path | None = None  # where the Terminal's shell writes the record
        self.secret_seen: tuple[str, int] | None = None  # password file content and mode
        self.host: FakeHost | None = None

    def __call__(self, command: llmdocker.Command) -> llmdocker.CommandResult:
        if command.argv[1:3] == ["network", "inspect"]:
            self.commands.append(command)
            return llmdocker.CommandResult(0, self.bridge_output, "")
        if command.argv[0] == "osascript":
            # The Terminal window's shell writes the record and the daemon opens its port.
            self.commands.append(command)
            assert self.host is not None
            assert self.terminal_record is not None
            secret_file = self.terminal_record.with_suffix(".secret")
            if secret_file.exists():
                self.secret_seen = (secret_file.read_text(), secret_file.stat().st_mode & 0o777)
            self.terminal_record.write_text(
                llmdocker.builder_api_record_json(self.terminal_pid, llmdocker.LOOPBACK, 6666)
            )
            self.host.alive.add(self.terminal_pid)
            self.host.open_ports.add((llmdocker.LOOPBACK, 6666))
            return llmdocker.CommandResult(0)
        return super().__call__(command)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    sandbox = make_sandbox(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "platform", "linux")
    return sandbox


@pytest.fixture
def host(monkeypatch) -> FakeHost:
    fake = FakeHost()
    for name in ("spawn_detached", "process_alive", "port_is_open", "child_exited"):
        monkeypatch.setattr(llmdocker, name, getattr(fake, name))
    return fake


@pytest.fixture
def engine(monkeypatch, host) -> BridgeEngine:
    fake = BridgeEngine()
    fake.images.update(llmdocker.IMAGE_TAGS.values())
    fake.host = host
    monkeypatch.setattr(llmdocker, "run_command", fake)
    return fake


def project_id(sandbox) -> str:
    return llmdocker.sha256_hex(str(sandbox.project).encode())[:8]


def record_path(sandbox) -> Path:
    return sandbox.state / "builder-api" / f"{project_id(sandbox)}.pid"


def write_record(sandbox, content: str) -> None:
    record_path(sandbox).parent.mkdir(parents=True)
    record_path(sandbox).write_text(content)


def running_daemon(
    sandbox, host: FakeHost, pid: int = 999, port: int = 6666, password: str = PASSWORD
) -> None:
    """Record a daemon of this project as the launcher would, alive with its port open."""
    fingerprint = llmdocker.password_fingerprint(password)
    write_record(sandbox, llmdocker.builder_api_record_json(pid, GATEWAY, port, fingerprint))
    host.alive.add(pid)
    host.open_ports.add((GATEWAY, port))


def expected_daemon_argv(sandbox, bind: str, port: int = 6666) -> list[str]:
    import builder_api

    base = builder_api.launch_args(str(sandbox.project))
    return [*base, "--bind", bind, "--port", str(port)]


def test_api_starts_daemon_on_bridge_gateway(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    assert llmdocker.main(["claude", "-a"]) == 0

    assert len(host.spawned) == 1
    argv, environment, log_file = host.spawned[0]
    assert argv == expected_daemon_argv(sandbox, GATEWAY)
    assert environment["BUILDER_API_PASSWORD"] == PASSWORD
    assert log_file == str(sandbox.state / "logs" / f"builder-api-{project_id(sandbox)}.log")
    err = capsys.readouterr().err
    assert f"builder API started on http://{GATEWAY}:6666 (pid 4242)" in err
    assert log_file in err
    assert "kill 4242" in err


def test_api_password_never_in_any_argv(sandbox, engine, host):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    assert llmdocker.main(["claude", "-a"]) == 0

    all_argvs = [host.spawned[0][0]] + [command.argv for command in engine.commands]
    for argv in all_argvs:
        assert not any(PASSWORD in argument for argument in argv), argv
    run = engine.run_command()
    assert run.env["BUILDER_API_PASSWORD"] == PASSWORD
    assert "BUILDER_API_PASSWORD" in run.argv


def test_api_container_gets_url_and_client(sandbox, engine, host):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    assert llmdocker.main(["claude", "-a"]) == 0

    run = engine.run_command()
    assert run.env["BUILDER_API_URL"] == "http://host.docker.internal:6666"
    add_host = run.argv.index("--add-host")
    assert run.argv[add_host + 1] == "host.docker.internal:host-gateway"
    client = REPO / "builder_api" / "client.py"
    mount_prefix = f"type=bind,src={client},dst={llmdocker.CONTAINER_BUILDER_CLIENT},"
    client_mounts = [argument for argument in run.argv if argument.startswith(mount_prefix)]
    assert len(client_mounts) == 1
    assert "readonly" in client_mounts[0].split(",")


def test_api_record_written_atomically(sandbox, engine, host):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    assert llmdocker.main(["claude", "-a"]) == 0

    text = record_path(sandbox).read_text()
    record = json.loads(text)
    salt, digest = record.pop("password_salt"), record.pop("password_hmac")
    assert record == {"version": 1, "pid": 4242, "bind": GATEWAY, "port": 6666}
    assert llmdocker.password_fingerprint(PASSWORD, salt)["password_hmac"] == digest
    assert PASSWORD not in text
    assert oct(record_path(sandbox).stat().st_mode & 0o777) == oct(0o600)
    assert oct(record_path(sandbox).parent.stat().st_mode & 0o777) == oct(0o700)
    names = sorted(path.name for path in record_path(sandbox).parent.iterdir())
    assert names == [f"{project_id(sandbox)}.lock", f"{project_id(sandbox)}.pid"]


def test_api_refused_without_password(sandbox, engine, host, capsys):
    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert "BUILDER_API_PASSWORD is not set" in err
    assert GATEWAY in err
    assert str(sandbox.state / ".env") in err
    assert host.spawned == []
    assert engine.argvs("run") == []


def test_api_reuses_running_daemon(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    running_daemon(sandbox, host)

    assert llmdocker.main(["claude", "-a"]) == 0

    assert host.spawned == []
    assert "(pid 999); reusing it" in capsys.readouterr().err
    assert engine.run_command().env["BUILDER_API_URL"] == "http://host.docker.internal:6666"


@pytest.mark.parametrize(
    ("alive", "port_open"), [(False, False), (True, False)], ids=["dead-pid", "closed-port"]
)
def test_api_stale_record_starts_new_daemon(sandbox, engine, host, alive, port_open):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    write_record(sandbox, llmdocker.builder_api_record_json(999, GATEWAY, 6666))
    if alive:
        host.alive.add(999)
    if port_open:
        host.open_ports.add((GATEWAY, 6666))

    assert llmdocker.main(["claude", "-a"]) == 0

    assert len(host.spawned) == 1
    assert json.loads(record_path(sandbox).read_text())["pid"] == 4242


@pytest.mark.parametrize(
    "content", ["", "not json", '{"version": 2, "pid": 1, "bind": "x", "port": 1}', "[1, 2]",
                '{"version": 1, "pid": "1", "bind": "x", "port": 1}',
                '{"version": 1, "pid": -5, "bind": "x", "port": 1}'],
)  # fmt: skip
def test_api_invalid_record_is_ignored(sandbox, engine, host, content):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    write_record(sandbox, content)

    assert llmdocker.main(["claude", "-a"]) == 0
    assert len(host.spawned) == 1


def test_api_running_on_other_port_is_error(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    running_daemon(sandbox, host, port=7000)

    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert f"already runs on {GATEWAY}:7000 (pid 999)" in err
    assert "BUILDER_API_PORT=7000" in err
    assert host.spawned == []


def test_api_port_taken_by_other_program(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    host.open_ports.add((GATEWAY, 6666))

    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert f"port 6666 on {GATEWAY} is already in use" in err
    assert "BUILDER_API_PORT" in err
    assert host.spawned == []


def test_api_daemon_exit_shows_log_tail(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    host.fail_start = True

    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert "the builder API exited at start (pid 4242)" in err
    assert "cannot bind 172.17.0.1:6666: in use" in err
    assert engine.argvs("run") == []


def test_api_daemon_never_ready_times_out(sandbox, engine, host, capsys, monkeypatch):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    monkeypatch.setattr(llmdocker, "BUILDER_API_READY_SECONDS", 0.3)
    monkeypatch.setattr(llmdocker, "port_is_open", lambda host_name, port: False)

    started = time.monotonic()
    assert llmdocker.main(["claude", "-a"]) == 1

    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert f"accepted no connection on http://{GATEWAY}:6666 within 0.3 s" in err


def test_api_custom_port_setting(sandbox, engine, host):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    sandbox.write_conf("BUILDER_API_PORT=7123\n")

    assert llmdocker.main(["claude", "-a"]) == 0

    assert host.spawned[0][0] == expected_daemon_argv(sandbox, GATEWAY, 7123)
    assert engine.run_command().env["BUILDER_API_URL"] == "http://host.docker.internal:7123"


def test_api_host_network_binds_loopback(sandbox, engine, host):
    sandbox.write_conf("NETWORK_MODE=host\n")

    assert llmdocker.main(["claude", "-a"]) == 0

    assert host.spawned[0][0] == expected_daemon_argv(sandbox, "127.0.0.1")
    assert "BUILDER_API_PASSWORD" not in host.spawned[0][1]
    assert engine.argvs("network") == []
    assert engine.run_command().env["BUILDER_API_URL"] == "http://127.0.0.1:6666"


def test_api_stale_password_not_inherited(sandbox, engine, host, monkeypatch):
    sandbox.write_conf("NETWORK_MODE=host\n")
    monkeypatch.setenv("BUILDER_API_PASSWORD", "")

    assert llmdocker.main(["claude", "-a"]) == 0
    assert "BUILDER_API_PASSWORD" not in host.spawned[0][1]


def test_api_macos_opens_terminal(sandbox, engine, host, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "darwin")
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    engine.terminal_record = record_path(sandbox)

    assert llmdocker.main(["claude", "-a"]) == 0

    assert host.spawned == []
    assert engine.argvs("network") == []
    osascript = [c.argv for c in engine.commands if c.argv[0] == "osascript"]
    assert len(osascript) == 1
    assert osascript[0][2].startswith('tell application "Terminal" to do script "cd ')
    assert "--bind 127.0.0.1 --port 6666" in osascript[0][2]
    assert not any(PASSWORD in argument for argument in osascript[0])
    assert engine.secret_seen == (PASSWORD + "\n", 0o600)
    assert not record_path(sandbox).with_suffix(".secret").exists()
    assert "new Terminal window on http://127.0.0.1:6666 (pid 777)" in capsys.readouterr().err


def test_api_dry_run_starts_nothing(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")

    assert llmdocker.main(["claude", "-a", "--dry-run"]) == 0

    assert host.spawned == []
    assert not (sandbox.state / "builder-api").exists()
    assert not (sandbox.state / "logs").exists()
    out = capsys.readouterr().out
    assert "builder API (-a):\n  not running: it would be started\n" in out
    assert f"  command: {llmdocker.shell_join(expected_daemon_argv(sandbox, GATEWAY))}" in out
    assert f"  bind: {GATEWAY}\n  port: 6666\n" in out
    assert "  password: set (passed in the environment)" in out
    assert f"  log: {sandbox.state / 'logs' / f'builder-api-{project_id(sandbox)}.log'}" in out
    assert PASSWORD not in out
    assert "(query) docker network inspect bridge" in out


def test_api_dry_run_shows_reuse(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    running_daemon(sandbox, host)

    assert llmdocker.main(["claude", "-a", "--dry-run"]) == 0

    assert f"  already running: pid 999 on {GATEWAY}:6666 (reused)" in capsys.readouterr().out
    assert host.spawned == []


def test_api_dry_run_still_refuses_without_password(sandbox, engine, host, capsys):
    assert llmdocker.main(["claude", "-a", "--dry-run"]) == 1
    assert "BUILDER_API_PASSWORD is not set" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [[], ["-a", "false"], ["--api=no"]])
def test_api_off_starts_nothing(sandbox, engine, host, arguments):
    assert llmdocker.main(["claude", *arguments]) == 0

    assert host.spawned == []
    assert engine.argvs("network") == []
    run = engine.run_command()
    assert not any(llmdocker.CONTAINER_BUILDER_CLIENT in argument for argument in run.argv)


def test_api_single_file_install(sandbox, engine, host, monkeypatch, tmp_path, capsys):
    alone = tmp_path / "alone"
    alone.mkdir()
    monkeypatch.setattr(llmdocker, "code_directory", lambda: str(alone))
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")

    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert str(alone / "builder_api") in err
    assert "full llm-docker checkout" in err
    assert host.spawned == []


def test_api_podman_bridge_not_available(sandbox, engine, host, capsys):
    sandbox.write_conf("LLM_DOCKER_ENGINE=podman\n")
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")

    assert llmdocker.main(["claude", "-a"]) == 2

    err = capsys.readouterr().err
    assert "LLM_DOCKER_ENGINE=podman" in err
    assert "not available yet" in err


def test_api_bridge_without_ipv4_is_error(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    engine.bridge_output = "|fd00::/64 "

    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert "no IPv4 gateway or subnet" in err
    assert "NETWORK_MODE=host" in err


@pytest.mark.parametrize(
    ("output", "gateway"),
    [("172.18.0.1|172.18.0.0/16 ", "172.18.0.1"), ("|10.9.0.0/24 ", "10.9.0.1"),
     ("|fd00::/64 |192.168.5.0/24 ", "192.168.5.1"), ("", None), ("<no value>|<no value> ", None),
     ("bad|also-bad ", None)],
)  # fmt: skip
def test_parse_bridge_gateway_cases(output, gateway):
    assert llmdocker.parse_bridge_gateway(output) == gateway


@given(st.text())
@example("|")
@example("1.2.3.4/33|")
@example("|1.2.3.4/33")
def test_parse_bridge_gateway_returns_ipv4_or_none(text):
    result = llmdocker.parse_bridge_gateway(text)
    if result is not None:
        assert isinstance(ipaddress.ip_address(result), ipaddress.IPv4Address)


def test_terminal_script_runs_under_sh(tmp_path):
    """The Terminal window's command, run by a real sh: record, password from the file."""
    record = tmp_path / "builder-api" / "abcd1234.pid"
    record.parent.mkdir()
    secret = tmp_path / "builder-api" / "abcd1234.secret"
    secret.write_text("pass word 'quoted'\n")
    output = tmp_path / "seen.txt"
    argv = [
        sys.executable, "-c",
        "import os, sys; open(sys.argv[1], 'w').write(f\"{os.getpid()} \"\n"
        "+ os.environ['BUILDER_API_PASSWORD'])",
        str(output),
    ]  # fmt: skip
    launch = llmdocker.BuilderApiLaunch(
        argv, {}, "127.0.0.1", 6666, str(tmp_path), str(record), "", in_terminal=True
    )

    script = llmdocker.terminal_script(launch, str(secret))
    completed = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)

    assert completed.returncode == 0, completed.stderr
    pid_text, password = output.read_text().split(" ", 1)
    assert password == "pass word 'quoted'"
    assert not secret.exists()
    assert llmdocker.read_builder_api_record(str(record)) == (int(pid_text), "127.0.0.1", 6666)
    assert "pass word" not in script
    assert llmdocker.recorded_password_matches(str(record), "")
    assert oct(record.stat().st_mode & 0o777) == oct(0o600)


def test_spawn_detached_new_session_and_log(tmp_path):
    """The real spawn: own session, stdin from /dev/null, stdout and stderr appended."""
    log_file = tmp_path / "daemon.log"
    script = "import os, sys; print(os.getsid(0) == os.getpid()); print(sys.stdin.read() == '');"
    script += "print('to stderr', file=sys.stderr)"
    pid = llmdocker.spawn_detached([sys.executable, "-c", script], dict(os.environ), str(log_file))
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(log_file.read_text().splitlines()) == ["True", "True", "to stderr"]
    assert oct(log_file.stat().st_mode & 0o777) == oct(0o600)


def test_spawn_detached_appends_to_log(tmp_path):
    log_file = tmp_path / "daemon.log"
    log_file.write_text("earlier line\n")
    pid = llmdocker.spawn_detached(["echo", "later line"], dict(os.environ), str(log_file))
    os.waitpid(pid, 0)

    assert log_file.read_text() == "earlier line\nlater line\n"


def test_port_is_open_real_socket():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert llmdocker.port_is_open("127.0.0.1", port) is True
    assert llmdocker.port_is_open("127.0.0.1", port) is False


def test_process_alive_real_pids():
    assert llmdocker.process_alive(os.getpid()) is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert llmdocker.process_alive(child.pid) is False


def test_api_lock_serializes_launchers(sandbox, engine, host, tmp_path):
    """A second launcher waits for the first one's lock, then reuses its daemon."""
    import fcntl
    import threading

    launch = llmdocker.BuilderApiLaunch(
        ["python3", "builder_api", "--bind", GATEWAY, "--port", "6666"], {}, GATEWAY, 6666,
        str(sandbox.project), str(tmp_path / "api" / "p.pid"), str(tmp_path / "p.log"), False,
    )  # fmt: skip
    (tmp_path / "api").mkdir()
    results: list[int] = []
    with open(tmp_path / "api" / "p.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = threading.Thread(
            target=lambda: results.append(llmdocker.ensure_builder_api(launch, quiet=True))
        )
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()
        assert host.spawned == []
    waiting.join(5)

    assert results == [4242]
    assert llmdocker.ensure_builder_api(launch, quiet=True) == 4242
    assert len(host.spawned) == 1


def test_api_other_password_refuses_reuse(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    running_daemon(sandbox, host, password="an-older-password")

    assert llmdocker.main(["claude", "-a"]) == 1

    err = capsys.readouterr().err
    assert "(pid 999) was started with another BUILDER_API_PASSWORD" in err
    assert "kill 999" in err
    assert host.spawned == []
    assert 999 in host.alive
    assert engine.argvs("run") == []


def test_api_record_without_fingerprint_refuses(sandbox, engine, host, capsys):
    sandbox.write_env(f"BUILDER_API_PASSWORD={PASSWORD}\n")
    write_record(sandbox, llmdocker.builder_api_record_json(999, GATEWAY, 6666))
    host.alive.add(999)
    host.open_ports.add((GATEWAY, 6666))

    assert llmdocker.main(["claude", "-a"]) == 1
    assert "kill 999" in capsys.readouterr().err
    assert host.spawned == []


@given(st.text(max_size=40), st.text(max_size=40))
def test_password_fingerprint_matches_only_same(first, second):
    fingerprint = llmdocker.password_fingerprint(first)
    again = llmdocker.password_fingerprint(second, fingerprint["password_salt"])
    assert (again == fingerprint) == (first == second)
