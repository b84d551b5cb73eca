"""The image side of the contract: seeding, signals, verbosity, certificates, SSH, packs.

These tests start containers with the contract's own `docker run` argv, so
they can set entrypoint variables that the launcher derives from its flags.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.real.conftest import CONTAINER_TIMEOUT_S, Cage, make_owned_directory
from tests.real.conftest import write_owned_file as write_file

pytestmark = pytest.mark.real

STOP_TIMEOUT_S = 10  # `docker stop` waits this long before it kills
SSH_WAIT_S = 30


@pytest.fixture
def contract_cage(cage: Cage) -> Cage:
    cage.via_launcher = False
    return cage


def settings_file(cage: Cage) -> Path:
    return cage.state / "claude/config/settings.json"


def test_new_session_bypass_seeds_prompt_skip(contract_cage: Cage) -> None:
    write_file(settings_file(contract_cage), '{"theme": "dark"}', contract_cage.uid, 0)
    result = contract_cage.run(["true"], bypass=True)
    assert result.returncode == 0, result.stderr
    settings = json.loads(settings_file(contract_cage).read_text())
    assert settings == {"theme": "dark", "skipDangerousModePermissionPrompt": True}
    assert settings_file(contract_cage).stat().st_uid == contract_cage.uid


def test_new_session_without_bypass_removes_skip(contract_cage: Cage) -> None:
    seeded = '{"theme": "dark", "skipDangerousModePermissionPrompt": true}'
    write_file(settings_file(contract_cage), seeded, contract_cage.uid, contract_cage.gid)
    result = contract_cage.run(["true"], bypass=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(settings_file(contract_cage).read_text()) == {"theme": "dark"}


def test_continue_session_keeps_settings(contract_cage: Cage) -> None:
    seeded = '{"theme": "dark", "skipDangerousModePermissionPrompt": true}'
    write_file(settings_file(contract_cage), seeded, contract_cage.uid, contract_cage.gid)
    result = contract_cage.run(
        ["true"], bypass=False, environment={"LLM_DOCKER_SESSION": "continue"}
    )
    assert result.returncode == 0, result.stderr
    assert settings_file(contract_cage).read_text() == seeded


def test_opencode_template_seeded_once(contract_cage: Cage) -> None:
    template = contract_cage.state / "opencode/config/opencode.jsonc"
    assert contract_cage.run(["true"]).returncode == 0
    assert '"permission"' in template.read_text()
    template.write_text("// edited by the user\n{}\n")
    assert contract_cage.run(["true"]).returncode == 0
    assert template.read_text() == "// edited by the user\n{}\n"


def test_invalid_session_value_rejected(contract_cage: Cage) -> None:
    result = contract_cage.run(["true"], environment={"LLM_DOCKER_SESSION": "later"})
    assert result.returncode != 0
    assert "invalid LLM_DOCKER_SESSION 'later'" in result.stderr


def test_invalid_boolean_rejected(contract_cage: Cage) -> None:
    result = contract_cage.run(["true"], environment={"INTERNET_ACCESS": "maybe"})
    assert result.returncode != 0
    assert "invalid value 'maybe' for INTERNET_ACCESS" in result.stderr


def test_banner_shows_security_state(contract_cage: Cage) -> None:
    result = contract_cage.run(["true"], internet=False)
    assert result.returncode == 0, result.stderr
    assert "llm-docker test" in result.stderr
    assert "sandbox on" in result.stderr
    assert "internet blocked" in result.stderr
    assert "ssh off" in result.stderr


def test_development_mode_is_verbose(contract_cage: Cage) -> None:
    quiet = contract_cage.run(["true"])
    verbose = contract_cage.run(["true"], environment={"NODE_ENV": "development"})
    assert verbose.returncode == 0, verbose.stderr
    assert "agent user agent uid=" in verbose.stderr
    assert "agent user agent uid=" not in quiet.stderr


def test_stop_signal_reaches_tool(contract_cage: Cage) -> None:
    name = f"llm-docker-real-stop-{time.monotonic_ns()}"
    contract_cage.start(["sleep", "300"], name)
    started = time.monotonic()
    contract_cage.docker("stop", "--time", str(STOP_TIMEOUT_S), name)
    elapsed = time.monotonic() - started
    status = contract_cage.docker("inspect", "--format", "{{.State.ExitCode}}", name).strip()
    assert elapsed < STOP_TIMEOUT_S / 2, f"docker stop took {elapsed:.1f} s"
    assert status == "143"  # 128 + SIGTERM: the tool itself got the signal


def test_exit_to_docker_opens_shell(contract_cage: Cage) -> None:
    argv, environment = contract_cage.run_argv(
        ["bash", "-c", "exit 3"], environment={"EXIT_TO_DOCKER": "true"}
    )
    result = subprocess.run(
        argv,
        input="echo in-the-shell-$((40 + 2))\nexit\n",
        capture_output=True,
        text=True,
        env=environment,
        timeout=CONTAINER_TIMEOUT_S,
        check=False,
    )
    assert "in-the-shell-42" in result.stdout, result.stderr
    assert "exited with status 3" in result.stderr
    assert result.returncode == 3


def require_host_tools(*names: str) -> None:
    """Skip (fail under LLM_DOCKER_REQUIRE_ENGINE=1) when a host program is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        skip_or_fail(
            f"{', '.join(missing)} not found on the host: apt-get install openssh-client openssl"
        )


def test_runtime_ca_certificate_trusted(contract_cage: Cage, tmp_path: Path) -> None:
    require_host_tools("openssl")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=llm-docker test CA", "-keyout", str(tmp_path / "ca.key"),
            "-out", str(certs / "test-ca.crt"),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    pem_body = "".join((certs / "test-ca.crt").read_text().splitlines()[1:-1])
    mount = f"type=bind,src={certs},dst=/usr/local/share/llm-docker/certs,readonly"
    result = contract_cage.shell(
        "tr -d '\\n' < /etc/ssl/certs/ca-certificates.crt", docker_options=["--mount", mount]
    )
    assert result.returncode == 0, result.stderr
    assert pem_body in result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sshd_accepts_agent_key(contract_cage: Cage, tmp_path: Path) -> None:
    require_host_tools("ssh", "ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60
    )
    ssh_state = make_owned_directory(tmp_path / "ssh-state", 0, 0)
    port = free_port()
    name = f"llm-docker-real-ssh-{time.monotonic_ns()}"
    contract_cage.start(
        ["sleep", "120"],
        name,
        environment={
            "LLM_DOCKER_SSH_ENABLED": "true",
            "LLM_DOCKER_SSH_PORT": "22",
            "LLM_DOCKER_SSH_AUTHORIZED_KEYS": (tmp_path / "id_ed25519.pub").read_text().strip(),
        },
        docker_options=[
            "--cap-add", "SYS_CHROOT", "--publish", f"127.0.0.1:{port}:22",
            "--mount", f"type=bind,src={ssh_state},dst=/etc/ssh/llm-docker",
        ],
    )  # fmt: skip
    ssh = [
        "ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=5",
    ]  # fmt: skip
    deadline = time.monotonic() + SSH_WAIT_S
    login = None
    while time.monotonic() < deadline:
        login = subprocess.run(
            [*ssh, "agent@127.0.0.1", "id -u; grep CapEff /proc/self/status"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if login.returncode == 0:
            break
        time.sleep(0.5)
    assert login is not None
    assert login.returncode == 0, login.stderr
    assert login.stdout.split()[0] == str(contract_cage.uid)
    assert "CapEff:\t0000000000000000" in login.stdout
    root = subprocess.run(
        [*ssh, "root@127.0.0.1", "id"], capture_output=True, text=True, timeout=30, check=False
    )
    assert root.returncode != 0
    assert (ssh_state / "ssh_host_ed25519_key.pub").is_file()


def run_install_packs(cage: Cage, *variables: str) -> subprocess.CompletedProcess[str]:
    """Run install-packs.sh as root in a container of the image, as `--build` does."""
    command = ["docker", "run", "--rm", "--entrypoint", "/opt/llm-docker/install/install-packs.sh"]
    for variable in variables:
        command += ["-e", variable]
    return subprocess.run(
        [*command, cage.image],
        capture_output=True,
        text=True,
        env=cage.docker_env,
        timeout=CONTAINER_TIMEOUT_S,
        check=False,
    )


def test_install_packs_idempotent(contract_cage: Cage) -> None:
    started = time.monotonic()
    result = run_install_packs(contract_cage, "INSTALL_BROWSING=false", "FETCH_EXTRAS=false")
    assert result.returncode == 0, result.stderr
    assert "packs installed: TMUX_VANILLA TMUX_TEAM" in result.stderr
    assert "apt-get install" not in result.stderr  # everything was already there
    assert time.monotonic() - started < CONTAINER_TIMEOUT_S


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("INSTALL_TYPO=true", "unknown pack variable INSTALL_TYPO"),
        ("INSTALL_CPP=yes", "invalid boolean 'yes' for INSTALL_CPP"),
    ],
)
def test_install_packs_rejects_bad_input(contract_cage: Cage, variable: str, message: str) -> None:
    result = run_install_packs(contract_cage, variable)
    assert result.returncode != 0
    assert message in result.stderr


def test_firewall_without_net_admin_fails(contract_cage: Cage) -> None:
    argv, environment = contract_cage.run_argv(["true"], internet=False)
    net_admin = argv.index("NET_ADMIN")
    del argv[net_admin - 1 : net_admin + 1]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=environment,
        timeout=CONTAINER_TIMEOUT_S,
        check=False,
    )
    assert result.returncode != 0
    assert "must add NET_ADMIN when INTERNET_ACCESS=false" in result.stderr
