"""Docker tier: `cld -a` starts the project's builder API on the bridge gateway, the container
gets its URL and password, and a container on the bridge reaches it with busybox wget.

The stub's fake tool only reports what reached the container, so the request comes from a
second stub container started with the same `--add-host` and the values the first one got.
Each test stops the daemon it started, by the pid in the launcher's record.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmdocker
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
CLD = REPO / "cld"
PASSWORD = "launcher-api-password-0123"
AGENT_UID = 4321
TIMEOUT_S = 120
STOP_TIMEOUT_S = 15


def bridge_gateway(env: dict[str, str]) -> str:
    result = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", llmdocker.BRIDGE_IPAM_FORMAT],
        capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    gateway = llmdocker.parse_bridge_gateway(result.stdout)
    if gateway is None:
        skip_or_fail(f"no IPv4 gateway on the bridge network: {result.stderr.strip()}")
    assert gateway is not None
    return gateway


def free_port(address: str) -> int:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            skip_or_fail(f"the bridge gateway {address} is not an address of this host ({exc})")
        return int(probe.getsockname()[1])


def process_gone(pid: int) -> bool:
    """Return whether pid no longer runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def stop_daemon(pid: int) -> None:
    if process_gone(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while not process_gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)


class ApiSandbox:
    def __init__(self, root: Path, docker_env: dict[str, str], image: str, port: int) -> None:
        self.image = image
        self.docker_env = docker_env
        self.project = root / "home" / "Projects" / "app"
        self.project.mkdir(parents=True)
        (self.project / "build.py").write_text("print('built on the host', flush=True)\n")
        (self.project / ".builder-api.json").write_text(
            json.dumps({"build": {"command": [sys.executable, "build.py"], "allowed_args": []}})
        )
        self.state = root / "state"
        self.state.mkdir()
        env_file = self.state / ".env"
        env_file.write_text(f"BUILDER_API_PASSWORD={PASSWORD}\n")
        os.chmod(env_file, 0o600)
        self.env = {
            key: value for key, value in docker_env.items()
            if key not in llmdocker.SETTINGS_BY_NAME
        }  # fmt: skip
        self.env.update(
            HOME=str(root / "home"),
            LLM_DOCKER_HOME=str(self.state),
            LLM_DOCKER_IMAGE=image,
            AGENT_UID=str(AGENT_UID),
            AGENT_GID=str(AGENT_UID),
            BUILDER_API_PORT=str(port),
        )
        project_id = llmdocker.sha256_hex(str(self.project.resolve()).encode())[:8]
        self.record = self.state / "builder-api" / f"{project_id}.pid"
        self.log_file = self.state / "logs" / f"builder-api-{project_id}.log"

    def launch(self, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CLD), *arguments],
            cwd=self.project, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip

    def daemon_pid(self) -> int:
        return int(json.loads(self.record.read_text())["pid"])

    def request_from_container(self, url: str, password: str | None) -> subprocess.CompletedProcess:
        header = '--header "X-Builder-API-Password: $BUILDER_API_PASSWORD"' if password else ""
        env = dict(self.docker_env, BUILDER_API_URL=url, BUILDER_API_PASSWORD=password or "")
        return subprocess.run(
            ["docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway",
             "-e", "BUILDER_API_URL", "-e", "BUILDER_API_PASSWORD",
             "--entrypoint", "/bin/sh", self.image,
             "-c", f'wget -q -O - {header} "$BUILDER_API_URL/status"'],
            capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip


def env_lines(output: str) -> dict[str, str]:
    pairs = (line[len("ENV:") :].split("=", 1) for line in output.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


@pytest.fixture
def sandbox(tmp_path: Path, docker_env: dict[str, str], stub_image: str) -> Iterator[ApiSandbox]:
    port = free_port(bridge_gateway(docker_env))
    sandbox = ApiSandbox(tmp_path, docker_env, stub_image, port)
    yield sandbox
    if sandbox.record.exists():
        stop_daemon(sandbox.daemon_pid())


def test_api_launch_reaches_status_from_container(sandbox: ApiSandbox) -> None:
    gateway = bridge_gateway(sandbox.docker_env)
    port = sandbox.env["BUILDER_API_PORT"]

    first = sandbox.launch("-a")

    assert first.returncode == 0, first.stderr + first.stdout
    pid = sandbox.daemon_pid()
    assert f"builder API started on http://{gateway}:{port} (pid {pid})" in first.stderr
    assert str(sandbox.log_file) in first.stderr
    seen = env_lines(first.stdout)
    assert seen["BUILDER_API_URL"] == f"http://host.docker.internal:{port}"
    assert seen["BUILDER_API_PASSWORD"] == PASSWORD
    assert f"MOUNT:{llmdocker.CONTAINER_BUILDER_CLIENT} " in first.stdout
    assert PASSWORD not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()

    reply = sandbox.request_from_container(seen["BUILDER_API_URL"], PASSWORD)
    assert reply.returncode == 0, reply.stderr
    assert json.loads(reply.stdout)["daemon"]["version"]

    refused = sandbox.request_from_container(seen["BUILDER_API_URL"], None)
    assert refused.returncode != 0
    assert "401" in refused.stderr


def test_api_second_launch_reuses_daemon(sandbox: ApiSandbox) -> None:
    first = sandbox.launch("-a")
    assert first.returncode == 0, first.stderr
    pid = sandbox.daemon_pid()

    second = sandbox.launch("-a")

    assert second.returncode == 0, second.stderr
    assert f"(pid {pid}); reusing it" in second.stderr
    assert sandbox.daemon_pid() == pid
    assert "serving" in sandbox.log_file.read_text()


def test_api_without_password_refused(sandbox: ApiSandbox) -> None:
    (sandbox.state / ".env").write_text("# no password\n")

    result = sandbox.launch("-a")

    assert result.returncode == 1
    assert "BUILDER_API_PASSWORD is not set" in result.stderr
    assert not sandbox.record.exists()
