"""What the agent process gets inside the real image: identity, privileges, mounts."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.real.conftest import PERSISTENCE_MOUNTS, Cage

pytestmark = pytest.mark.real

VERSION_PATTERN = re.compile(r"\b\d+\.\d+\.\d+\b")
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
# Paths the agent must not be able to create or change.
READ_ONLY_PATHS = (
    "/etc/passwd",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/claude-code/managed-settings.json",
    "/etc/claude-code/new-file.json",
    "/etc/opencode/opencode.json",
    "/usr/local/bin/new-file",
    "/opt/llm-docker/new-file",
    "/home/agent/Projects/new-file",
    "/root/new-file",
    "/new-file",
)
# Host mounts Docker adds to every container (root-owned files).
DOCKER_MANAGED_MOUNTS = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"})
# Read-only host mounts: the init process of `--init` and the contract's optional files.
READ_ONLY_MOUNTS = frozenset(
    {
        "/usr/sbin/docker-init",
        "/usr/local/share/llm-docker/certs",
        "/home/agent/.tmux.conf",
        "/home/agent/.p10k.zsh",
    }
)
MANAGED_POLICY = "/etc/claude-code/managed-settings.json"


def status_fields(text: str) -> dict[str, str]:
    """Parse /proc/<pid>/status into a dict of field -> value text."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


@pytest.mark.parametrize("tool", ["claude", "opencode"])
def test_cli_version_runs(cage: Cage, tool: str) -> None:
    result = cage.run([tool, "--version"])
    assert result.returncode == 0, result.stderr
    assert VERSION_PATTERN.search(result.stdout), result.stdout


def test_agent_identity_and_capabilities(cage: Cage) -> None:
    result = cage.run(["cat", "/proc/self/status"])
    assert result.returncode == 0, result.stderr
    fields = status_fields(result.stdout)
    assert fields["Uid"].split() == [str(cage.uid)] * 4
    assert fields["Gid"].split() == [str(cage.gid)] * 4
    assert cage.uid != 0
    for name in CAPABILITY_FIELDS:
        assert int(fields[name], 16) == 0, f"{name}={fields[name]}"
    assert fields["NoNewPrivs"] == "1"


def test_agent_cannot_regain_root(cage: Cage) -> None:
    result = cage.shell("su -c id root </dev/null; setpriv --reuid=0 id; unshare -r id")
    assert "uid=0" not in result.stdout, result.stdout


def test_agent_writes_only_project(cage: Cage) -> None:
    probes = " ".join(READ_ONLY_PATHS)
    script = (
        "echo ok > written-by-agent && echo PROJECT-WRITABLE; "
        f"for path in {probes}; do "
        '(echo x >> "$path") 2>/dev/null && echo "WRITABLE $path"; done; true'
    )
    result = cage.shell(script)
    assert result.returncode == 0, result.stderr
    assert "PROJECT-WRITABLE" in result.stdout
    assert "WRITABLE /" not in result.stdout, result.stdout


def test_host_mounts_are_project_and_state(cage: Cage) -> None:
    result = cage.run(["cat", "/proc/self/mountinfo"])
    assert result.returncode == 0, result.stderr
    allowed = {cage.workdir, *PERSISTENCE_MOUNTS.values(), *DOCKER_MANAGED_MOUNTS}
    host_mounts = []
    for line in result.stdout.splitlines():
        fields = line.split()
        mount_point, options = fields[4], fields[5]
        source_type = fields[fields.index("-") + 1]
        if source_type in ("overlay", "proc", "tmpfs", "devpts", "mqueue", "sysfs", "cgroup2"):
            continue
        if source_type == "cgroup" or mount_point.startswith(("/proc", "/sys", "/dev")):
            continue
        host_mounts.append(mount_point)
        if "ro" in options.split(",") and mount_point in READ_ONLY_MOUNTS:
            continue
        if mount_point not in allowed:
            pytest.fail(f"unexpected host mount {mount_point} ({options}) in the cage")
    assert cage.workdir in host_mounts


def test_created_file_owned_by_host_user(cage: Cage) -> None:
    result = cage.shell("mkdir -p made/by && echo agent > made/by/agent.txt")
    assert result.returncode == 0, result.stderr
    created = cage.project / "made/by/agent.txt"
    assert created.read_text() == "agent\n"
    assert created.stat().st_uid == cage.uid
    assert created.stat().st_gid == cage.gid
    directory = cage.project / "made"
    assert directory.stat().st_uid == cage.uid
    assert directory.stat().st_gid == cage.gid


def test_no_docker_socket(cage: Cage) -> None:
    script = (
        "for path in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do "
        '[ -e "$path" ] && echo "FOUND $path"; done; '
        "find / -xdev -type s -name '*.sock' 2>/dev/null | sed 's/^/SOCKET /'; "
        'echo "DOCKER_HOST=${DOCKER_HOST:-}"'
    )
    result = cage.shell(script)
    assert result.returncode == 0, result.stderr
    assert "FOUND" not in result.stdout
    assert "SOCKET" not in result.stdout, result.stdout
    assert "DOCKER_HOST=\n" in result.stdout


def test_managed_policy_root_owned(cage: Cage) -> None:
    result = cage.run(["stat", "-c", "%u %g %a", "/etc/claude-code", MANAGED_POLICY])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["0 0 755", "0 0 644"]


def test_managed_policy_not_modifiable(cage: Cage) -> None:
    before = cage.run(["sha256sum", MANAGED_POLICY]).stdout
    attempts = [
        f"echo '{{}}' > {MANAGED_POLICY}",
        f"chmod 666 {MANAGED_POLICY}",
        f"mv {MANAGED_POLICY} /tmp/moved.json",
        f"rm -f {MANAGED_POLICY}",
        "mkdir -p /etc/claude-code/managed-settings.d",
        "cp /dev/null /etc/claude-code/managed-settings.d/override.json",
    ]
    script = "; ".join(
        f"({attempt}) 2>/dev/null && echo 'CHANGED: {attempt}'" for attempt in attempts
    )
    result = cage.shell(f"{script}; sha256sum {MANAGED_POLICY}")
    assert "CHANGED" not in result.stdout, result.stdout
    assert before.strip()
    assert result.stdout.strip().splitlines()[-1] == before.strip()


def test_entrypoint_rejects_root_uid(cage: Cage) -> None:
    argv, environment = cage.run_argv(["id"])
    assert environment["LLM_DOCKER_UID"] == str(cage.uid)
    environment["LLM_DOCKER_UID"] = "0"
    result = subprocess.run(
        argv, capture_output=True, text=True, env=environment, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "must not run as root" in result.stderr


def test_exit_code_is_returned(cage: Cage) -> None:
    result = cage.shell("exit 7")
    assert result.returncode == 7
