"""INTERNET_ACCESS=false: egress rules for IPv4 and IPv6 that the agent cannot undo.

Only servers these tests start on the host's bridge address are contacted;
no outside address is ever probed.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.mocks import mock_anthropic
from tests.real.conftest import CONTAINER_TIMEOUT_S, Cage

pytestmark = pytest.mark.real

READY_MARKER = "AGENT-DONE"
READY_TIMEOUT_S = 60
FLUSH_ATTEMPTS = (
    "iptables -F",
    "iptables -P OUTPUT ACCEPT",
    "iptables -D OUTPUT -j LLM_DOCKER_EGRESS",
    "ip6tables -F",
    "ip6tables -P OUTPUT ACCEPT",
)


def wait_for_log(cage: Cage, name: str, marker: str) -> str:
    """Return the container's output once it contains `marker`; fail after a timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    output = ""
    while time.monotonic() < deadline:
        logs = subprocess.run(
            ["docker", "logs", name],
            capture_output=True,
            text=True,
            env=cage.docker_env,
            timeout=CONTAINER_TIMEOUT_S,
            check=False,
        )
        output = logs.stdout + logs.stderr
        if marker in output:
            return output
        time.sleep(0.2)
    pytest.fail(f"container {name} did not print {marker} within {READY_TIMEOUT_S} s:\n{output}")


@pytest.fixture
def blocked_cage(cage: Cage) -> tuple[Cage, str, str]:
    """Start a blocked-internet cage whose agent tries to undo the rules; return its logs."""
    attempts = "; ".join(f"{attempt} 2>&1 | head -n 1" for attempt in FLUSH_ATTEMPTS)
    script = (
        f"{attempts}; iptables -S >/dev/null 2>&1 || echo CANNOT-LIST; "
        f"echo {READY_MARKER}; sleep 120"
    )
    name = "llm-docker-real-firewall-" + str(time.monotonic_ns())
    cage.start(["bash", "-c", script], name, internet=False)
    return cage, name, wait_for_log(cage, name, READY_MARKER)


@pytest.mark.parametrize("command", ["iptables", "ip6tables"])
def test_rules_exist_after_agent_flush(blocked_cage: tuple[Cage, str, str], command: str) -> None:
    cage, name, _ = blocked_cage
    rules = cage.docker("exec", name, command, "-S").splitlines()
    assert "-P OUTPUT DROP" in rules
    assert "-A OUTPUT -j LLM_DOCKER_EGRESS" in rules
    assert rules[-1].startswith("-A LLM_DOCKER_EGRESS -j REJECT"), rules
    assert "-A LLM_DOCKER_EGRESS -o lo -j ACCEPT" in rules
    assert any("--dport 53 -j REJECT" in rule for rule in rules), rules


def test_agent_cannot_list_rules(blocked_cage: tuple[Cage, str, str]) -> None:
    _, _, output = blocked_cage
    assert "CANNOT-LIST" in output
    assert "Permission denied" in output


def test_private_ranges_allowed(blocked_cage: tuple[Cage, str, str]) -> None:
    cage, name, _ = blocked_cage
    ipv4 = cage.docker("exec", name, "iptables", "-S").splitlines()
    ipv6 = cage.docker("exec", name, "ip6tables", "-S").splitlines()
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert f"-A LLM_DOCKER_EGRESS -d {network} -j ACCEPT" in ipv4
    for network in ("fc00::/7", "fe80::/10"):
        assert f"-A LLM_DOCKER_EGRESS -d {network} -j ACCEPT" in ipv6


def test_host_gateway_server_reachable(cage: Cage, gateway_address: str) -> None:
    server, requests = mock_anthropic.serve([gateway_address])
    try:
        url = f"http://host.docker.internal:{server.port}/v1/models"
        result = cage.run(["curl", "-sS", "--max-time", "10", url], internet=False)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert mock_anthropic.MODELS[0] in result.stdout
    assert [record["path"] for record in requests.snapshot()] == ["/v1/models"]
