"""Docker tier: a real round trip from a container to the builder API on the host.

The daemon binds the bridge network's gateway address (beyond loopback, so a password is
mandatory) and the container reaches it as host.docker.internal via
`--add-host host.docker.internal:host-gateway`, using busybox wget from the stub image.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "roundtrip-password"
DOCKER_TIMEOUT_S = 120


def bridge_gateway(env: dict[str, str]) -> str:
    """The bridge network's IPv4 gateway (Docker 20.10 lists only the subnet: then its .1)."""
    result = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format",
         "{{range .IPAM.Config}}{{.Gateway}}|{{.Subnet}} {{end}}"],
        capture_output=True, text=True, env=env, timeout=DOCKER_TIMEOUT_S, check=False,
    )  # fmt: skip
    for entry in result.stdout.split():
        gateway, _, subnet = entry.partition("|")
        if gateway and "." in gateway:
            return gateway
        if subnet and "." in subnet:
            return str(ipaddress.ip_network(subnet, strict=False).network_address + 1)
    skip_or_fail(f"no IPv4 gateway on the bridge network: {result.stderr.strip()}")
    raise AssertionError("unreachable")


def free_port(address: str) -> int:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            skip_or_fail(
                f"the bridge gateway {address} is not an address of this host ({exc}); "
                "is DOCKER_HOST a remote engine?"
            )
        return int(probe.getsockname()[1])


@pytest.fixture
def daemon_on_bridge(tmp_path: Path, docker_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    gateway = bridge_gateway(docker_env)
    port = free_port(gateway)
    (tmp_path / "build.py").write_text("print('built inside the host', flush=True)\n")
    (tmp_path / ".builder-api.json").write_text(
        json.dumps(
            {
                "build": {"command": [sys.executable, "build.py"], "allowed_args": ["test"]},
            }
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), BUILDER_API_PASSWORD=PASSWORD)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "builder_api",
            "--project",
            str(tmp_path),
            "--bind",
            gateway,
            "--port",
            str(port),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((gateway, port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"daemon exited: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)
    yield gateway, port
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def in_container(image: str, env: dict[str, str], script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway",
         "-e", "BUILDER_API_PASSWORD", "--entrypoint", "/bin/sh", image, "-c", script],
        capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S, check=False,
        env=dict(env, BUILDER_API_PASSWORD=PASSWORD),
    )  # fmt: skip


def wget(port: int, path: str, post: str | None = None, password: bool = True) -> str:
    parts = ["wget", "-q", "-O", "-", "--header", "'X-Agent-ID: container-1'"]
    if password:
        parts += ["--header", '"X-Builder-API-Password: $BUILDER_API_PASSWORD"']
    if post is not None:
        parts += ["--header", "'Content-Type: application/json'", "--post-data", f"'{post}'"]
    parts.append(f"'http://host.docker.internal:{port}{path}'")
    return " ".join(parts)


def test_roundtrip_status_with_password(
    daemon_on_bridge: tuple[str, int], stub_image: str, docker_env: dict[str, str]
) -> None:
    _, port = daemon_on_bridge
    result = in_container(stub_image, docker_env, wget(port, "/status"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["daemon"]["version"]


def test_roundtrip_without_password_refused(
    daemon_on_bridge: tuple[str, int], stub_image: str, docker_env: dict[str, str]
) -> None:
    _, port = daemon_on_bridge
    result = in_container(stub_image, docker_env, wget(port, "/status", password=False))
    assert result.returncode != 0
    assert "401" in result.stderr


def test_roundtrip_build_and_long_poll(
    daemon_on_bridge: tuple[str, int], stub_image: str, docker_env: dict[str, str]
) -> None:
    _, port = daemon_on_bridge
    script = (
        wget(port, "/build", post='{"args": ["test"]}')
        + " && echo && "
        + wget(port, "/build_status?id=1&wait=30")
    )
    result = in_container(stub_image, docker_env, script)
    assert result.returncode == 0, result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    queued, final = replies
    assert queued["agent"] == "container-1"
    assert final["state"] == "success"
    assert "built inside the host" in final["log_tail"]
