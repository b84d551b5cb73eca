"""Docker tier: the real launcher against the stub image, asserting what reaches the container.

The stub's fake claude/opencode print their argv, uid, environment, capabilities and mounts
(tests/stub_image/fake-tool.sh); these tests parse that output.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import llmdocker

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
CLD = REPO / "cld"
OCD = REPO / "ocd"
AGENT_UID = 4321  # explicit non-root uid: CI runs as root, which maps to 1000 otherwise
RUN_TIMEOUT_S = 120
# CapBnd of the container with SANDBOX_ENABLED=true: CHOWN(0) DAC_OVERRIDE(1) FOWNER(3) KILL(5)
# SETGID(6) SETUID(7) SETPCAP(8), everything else dropped. The stub entrypoint does not empty
# the bounding set as the real one does, so the agent still shows these.
SETUP_CAPABILITY_MASK = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)
CAP_SYS_PTRACE = 1 << 19
SIGNAL_WAIT_S = 60  # the stub prints within a second; the margin covers a loaded CI host
TRICKY_NAME = "my proj, \"quoted\" 'single' : colon é☃"


class Sandbox:
    def __init__(self, root: Path, docker_env: dict[str, str], image: str) -> None:
        self.home = root / "home"
        self.project = self.home / "Projects" / "app"
        self.project.mkdir(parents=True)
        os.chmod(self.project, 0o777)  # noqa: S103 - the agent uid differs from the test's
        self.state = root / "state"
        self.env = {
            key: value for key, value in docker_env.items()
            if key not in llmdocker.SETTINGS_BY_NAME
        }  # fmt: skip
        self.env.update(
            HOME=str(self.home),
            LLM_DOCKER_HOME=str(self.state),
            LLM_DOCKER_IMAGE=image,
            AGENT_UID=str(AGENT_UID),
            AGENT_GID=str(AGENT_UID),
            LOG_MAX_KILOBYTES="64",
        )

    def run(self, program: Path, *arguments: str, cwd: Path | None = None, **env: str):
        environment = dict(self.env, **env)
        return subprocess.run(
            [str(program), *arguments],
            cwd=cwd or self.project,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )


class StubReport:
    """The lines the fake tool printed, split by kind."""

    def __init__(self, output: str) -> None:
        self.lines = output.splitlines()
        self.env = dict(
            line[len("ENV:") :].split("=", 1) for line in self.lines if line.startswith("ENV:")
        )
        self.args = [line.split("=", 1)[1] for line in self.lines if line.startswith("ARG[")]
        self.status = {
            line.split(":")[1]: line.split(":", 2)[2].strip()
            for line in self.lines if line.startswith("STATUS:")
        }  # fmt: skip
        self.writable = {
            decode(line[len("WRITABLE:") :]) for line in self.lines if line.startswith("WRITABLE:")
        }
        self.readonly = {
            decode(line[len("READONLY:") :]) for line in self.lines if line.startswith("READONLY:")
        }

    def value(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :]
        raise AssertionError(f"no line starting with {prefix!r} in:\n" + "\n".join(self.lines))


def decode(escaped: str) -> str:
    """Undo the octal escapes of /proc/mounts (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), escaped)


@pytest.fixture
def sandbox(tmp_path: Path, docker_env: dict[str, str], stub_image: str) -> Sandbox:
    return Sandbox(tmp_path, docker_env, stub_image)


def run_ok(sandbox: Sandbox, *arguments: str, program: Path = CLD, **env: str) -> StubReport:
    result = sandbox.run(program, *arguments, **env)
    assert result.returncode == 0, result.stderr + result.stdout
    return StubReport(result.stdout)


def test_docker_run_capabilities_and_user(sandbox):
    report = run_ok(sandbox)
    assert report.value("UID=") == f"{AGENT_UID} GID={AGENT_UID}"
    assert report.status["NoNewPrivs"] == "1"
    assert int(report.status["CapBnd"], 16) == SETUP_CAPABILITY_MASK
    assert int(report.status["CapEff"], 16) == 0
    assert report.value("HOSTNAME=") == "llm-docker"


def test_docker_run_only_project_and_state_writable(sandbox):
    report = run_ok(sandbox)
    workdir = report.env["LLM_DOCKER_WORKDIR"]
    assert report.value("CWD=") == workdir
    assert report.writable == {workdir, "/home/agent/.claude"}
    assert "DOCKER_SOCKET:present" not in report.lines


def test_docker_run_workspace_read_only(sandbox):
    (sandbox.home / "Projects" / "other").mkdir()
    report = run_ok(sandbox, WORKSPACE_DIR=str(sandbox.home / "Projects"))
    assert report.env["LLM_DOCKER_WORKDIR"] == "/home/agent/Projects/Projects/app"
    assert "/home/agent/Projects/Projects" in report.readonly
    assert "/home/agent/Projects/Projects/app" in report.writable


def test_docker_run_environment_allowlist(sandbox):
    sandbox.state.mkdir(parents=True)
    env_file = sandbox.state / ".env"
    env_file.write_text("ANTHROPIC_API_KEY=sk-ant-secret-value-123\nMY_TOKEN='tok en'\n")
    env_file.chmod(0o600)
    report = run_ok(
        sandbox, OUTSIDE_ALLOWLIST="leak", PASSED_BY_USER="yes", PASS_ENV="PASSED_BY_USER"
    )
    assert "OUTSIDE_ALLOWLIST" not in report.env
    assert report.env["PASSED_BY_USER"] == "yes"
    assert report.env["ANTHROPIC_API_KEY"] == "sk-ant-secret-value-123"
    assert report.env["MY_TOKEN"] == "tok en"
    assert report.env["CLAUDE_CONFIG_DIR"] == "/home/agent/.claude"
    assert report.env["LLM_DOCKER_TOOL"] == "claude"
    assert report.env["LLM_DOCKER_SESSION"] == "new"
    assert "OPENCODE_PERMISSION" not in report.env


def test_docker_run_secret_absent_from_log(sandbox):
    sandbox.state.mkdir(parents=True)
    env_file = sandbox.state / ".env"
    env_file.write_text("ANTHROPIC_API_KEY=sk-ant-secret-value-123\n")
    env_file.chmod(0o600)
    run_ok(sandbox, "-v")
    log_text = (sandbox.state / "logs" / "llm-docker.log").read_text()
    assert "launch claude" in log_text
    assert "sk-ant-secret-value-123" not in log_text


def test_docker_run_tool_arguments_without_boot(sandbox):
    (sandbox.project / "BOOT.md").write_text("Boot steps: say hi.\n")
    report = run_ok(sandbox, "--", "--permission-mode", "plan")
    assert report.value("TOOL=") == "claude"
    assert report.args == ["--permission-mode", "plan"]


def test_docker_run_boot_first_message(sandbox):
    (sandbox.project / "BOOT.md").write_text("Boot steps: say hi.\n")
    report = run_ok(sandbox)
    assert report.args[0].startswith("Boot steps: say hi.")
    assert len(report.args) == 1


def test_docker_run_continue_never_injects(sandbox):
    (sandbox.project / "BOOT.md").write_text("Boot\n")
    # No earlier session: -c starts a new one, still without the first message.
    report = run_ok(sandbox, "-c")
    assert report.args == []
    assert report.env["LLM_DOCKER_SESSION"] == "new"


def test_docker_run_opencode(sandbox):
    report = run_ok(sandbox, "--", "--session", "ses_abc123", program=OCD)
    assert report.value("TOOL=") == "opencode"
    assert report.args == ["--session", "ses_abc123"]
    assert report.writable == {
        report.env["LLM_DOCKER_WORKDIR"],
        "/home/agent/.config/opencode",
        "/home/agent/.local/share/opencode",
        "/home/agent/.cache/opencode",
    }


def test_docker_run_tricky_path(sandbox):
    project = sandbox.home / "Projects" / TRICKY_NAME
    project.mkdir()
    project.chmod(0o777)
    result = sandbox.run(CLD, cwd=project)
    assert result.returncode == 0, result.stderr
    report = StubReport(result.stdout)
    workdir = report.env["LLM_DOCKER_WORKDIR"]
    assert workdir.startswith(f"/home/agent/Projects/{TRICKY_NAME}-")
    assert report.value("CWD=") == workdir
    assert workdir in report.writable


def test_docker_run_exit_code_passes_through(sandbox):
    result = sandbox.run(CLD, STUB_EXIT="7", PASS_ENV="STUB_EXIT")
    assert result.returncode == 7


def test_docker_run_python_entry_without_symlink(sandbox):
    result = sandbox.run(Path("/usr/bin/env"), "python3", str(REPO / "llmdocker.py"), "opencode")
    assert result.returncode == 0, result.stderr
    assert StubReport(result.stdout).value("TOOL=") == "opencode"


def test_docker_run_sandbox_off_keeps_ptrace(sandbox):
    result = sandbox.run(CLD, SANDBOX_ENABLED="false")
    assert result.returncode == 0, result.stderr
    assert "the agent keeps the SYS_PTRACE capability" in result.stderr
    report = StubReport(result.stdout)
    assert report.status["NoNewPrivs"] == "1"
    assert int(report.status["CapBnd"], 16) == SETUP_CAPABILITY_MASK | CAP_SYS_PTRACE


def test_docker_run_quiet_tells_entrypoint(sandbox):
    assert run_ok(sandbox, "-q").env["LLM_DOCKER_QUIET"] == "true"
    assert "LLM_DOCKER_QUIET" not in run_ok(sandbox).env


def test_docker_run_read_only_files_no_deprecation_warning(sandbox):
    """Read-only dotfiles and certificates are plain binds: the CLI has nothing to warn about.

    Docker 25+ CLIs warn "bind-nonrecursive is deprecated" for every bind that uses it; only
    WORKSPACE_DIR does.
    """
    (sandbox.home / ".tmux.conf").write_text("set -g mouse on\n")
    (sandbox.state / "certs").mkdir(parents=True)
    result = sandbox.run(CLD)
    assert result.returncode == 0, result.stderr
    report = StubReport(result.stdout)
    assert any(line.startswith("MOUNT:/home/agent/.tmux.conf ") for line in report.lines)
    assert "/usr/local/share/llm-docker/certs" in report.readonly
    assert "bind-nonrecursive" not in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_docker_inspect_labels_ports_and_env(sandbox, docker_env, monkeypatch):
    """Run main() in-process, starting the container detached so docker inspect can see it."""
    sandbox.state.mkdir(parents=True)
    env_file = sandbox.state / ".env"
    env_file.write_text("ANTHROPIC_API_KEY=sk-ant-inspect-secret\n")
    env_file.chmod(0o600)
    ssh_port = free_port()
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    for name in llmdocker.SETTINGS_BY_NAME:
        if name not in sandbox.env:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLM_DOCKER_SSH_ENABLED", "true")
    monkeypatch.setenv("LLM_DOCKER_SSH_HOST_PORT", str(ssh_port))
    monkeypatch.chdir(sandbox.project)

    real_run_command = llmdocker.run_command
    started: list[list[str]] = []

    def detached(command):
        if command.mode != "attach":
            return real_run_command(command)
        argv = ["-d" if argument == "--rm" else argument for argument in command.argv]
        argv = [argument for argument in argv if argument != "-i"]
        started.append(command.argv)
        detached_command = llmdocker.Command(argv, command.env, "capture")
        return real_run_command(detached_command)

    monkeypatch.setattr(llmdocker, "run_command", detached)
    assert llmdocker.main(["claude"]) == 0
    (argv,) = started
    name = argv[argv.index("--name") + 1]
    try:
        inspect = subprocess.run(
            ["docker", "inspect", name], capture_output=True, text=True, env=docker_env, check=True
        )
        (details,) = json.loads(inspect.stdout)
    finally:
        subprocess.run(
            ["docker", "rm", "-f", name], capture_output=True, env=docker_env, check=False
        )

    labels = details["Config"]["Labels"]
    assert labels["com.docker.compose.project"] == "llm-docker"
    assert labels["llm-docker.tool"] == "claude"
    assert labels["llm-docker.project"] == "app"
    assert labels["llm-docker.host-uid"] == str(os.getuid())
    assert labels["llm-docker.state-dir"] == str(sandbox.state)
    bindings = details["HostConfig"]["PortBindings"]
    assert bindings == {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(ssh_port)}]}
    env_names = {entry.split("=", 1)[0] for entry in details["Config"]["Env"]}
    assert "ANTHROPIC_API_KEY" in env_names
    assert "LLM_DOCKER_SSH_ENABLED" in env_names
    assert not any("sk-ant-inspect-secret" in argument for argument in argv)
    assert "CAP_SYS_CHROOT" in details["HostConfig"]["CapAdd"]
    assert details["HostConfig"]["CapDrop"] == ["ALL"]
    assert details["HostConfig"]["PidsLimit"] == 4096
    assert details["HostConfig"]["Init"] is True


def test_docker_clean(sandbox, docker_env, stub_image):
    uid = os.getuid()
    mine = f"llm-docker.state-dir={sandbox.state}"
    project_label = "com.docker.compose.project=llm-docker"
    labels = ["--label", project_label, "--label", f"llm-docker.host-uid={uid}", "--label", mine]
    other = ["--label", project_label, "--label", "llm-docker.host-uid=99999", "--label", mine]

    def create(*options: str) -> str:
        result = subprocess.run(
            ["docker", "run", "-d", "--entrypoint", "/bin/sleep", *options, stub_image, "300"],
            capture_output=True, text=True, env=docker_env, check=True,
        )  # fmt: skip
        return result.stdout.strip()

    running = create(*labels)
    exited = subprocess.run(
        ["docker", "create", *labels, stub_image], capture_output=True, text=True,
        env=docker_env, check=True,
    ).stdout.strip()  # fmt: skip
    foreign = create(*other)

    def exists(container_id: str) -> bool:
        probe = subprocess.run(
            ["docker", "inspect", container_id], capture_output=True, env=docker_env
        )
        return probe.returncode == 0

    try:
        refused = sandbox.run(CLD, "--clean")
        assert refused.returncode == 1
        assert "needs confirmation" in refused.stderr
        assert exists(running)
        assert exists(exited)

        cleaned = sandbox.run(CLD, "--clean", "--yes")
        assert cleaned.returncode == 0, cleaned.stderr
        assert not exists(running)
        assert not exists(exited)
        assert exists(foreign)
    finally:
        subprocess.run(
            ["docker", "rm", "-f", running, exited, foreign], capture_output=True, env=docker_env
        )


class LineReader:
    """Collects a child's output lines on a thread, so a test can wait for one with a timeout."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, expected: str, timeout: float = SIGNAL_WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while expected not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {expected!r} within {timeout} s in: {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue

    def rest(self) -> list[str]:
        self.thread.join(timeout=SIGNAL_WAIT_S)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def container_of(sandbox: Sandbox, docker_env: dict[str, str]) -> str:
    """Return the name of the one running container started with this sandbox's state dir."""
    listing = subprocess.run(
        ["docker", "ps", "--filter", f"label=llm-docker.state-dir={sandbox.state}",
         "--format", "{{.Names}}"],
        capture_output=True, text=True, env=docker_env, check=True,
    )  # fmt: skip
    (name,) = listing.stdout.split()
    return name


@contextlib.contextmanager
def sleeping_launcher(sandbox, docker_env):
    """Run `cld` with the stub tool sleeping; yield the launcher and its output reader.

    On the way out a launcher still running is killed and its container removed, so a failed
    test leaves nothing behind.
    """
    environment = dict(sandbox.env, STUB_SLEEP="120", PASS_ENV="STUB_SLEEP")
    launcher = subprocess.Popen(
        [str(CLD)], cwd=sandbox.project, env=environment, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    output = LineReader(launcher.stdout)
    try:
        output.wait_for("SLEEPING")
        yield launcher, output
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
            subprocess.run(
                ["docker", "rm", "-f", container_of(sandbox, docker_env)],
                capture_output=True, env=docker_env, check=False,
            )  # fmt: skip


def test_docker_run_signals_reach_agent(sandbox, docker_env):
    """tini forwards SIGWINCH (terminal resize) and docker stop's SIGTERM to the agent.

    Without CAP_KILL, tini (root) may not signal the agent (another uid) and ends the whole
    container with "[FATAL tini (1)] Unexpected error when forwarding signal".
    """
    with sleeping_launcher(sandbox, docker_env) as (launcher, output):
        name = container_of(sandbox, docker_env)

        subprocess.run(
            ["docker", "kill", "--signal", "WINCH", name],
            capture_output=True, env=docker_env, check=True,
        )  # fmt: skip
        output.wait_for("SIGNAL:WINCH")
        running = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True, text=True, env=docker_env, check=True,
        )  # fmt: skip
        assert running.stdout.strip() == "true"

        subprocess.run(["docker", "stop", name], capture_output=True, env=docker_env, check=True)
        exit_code = launcher.wait(timeout=SIGNAL_WAIT_S)
    stderr = launcher.stderr.read() if launcher.stderr else ""
    lines = output.rest()

    assert "SIGNAL:TERM" in lines, lines
    assert "[FATAL tini" not in stderr
    assert exit_code == 143  # the tool's own status, 128 + SIGTERM, passed through unchanged


def test_docker_run_launcher_sigterm_reaches_agent(sandbox, docker_env):
    """SIGTERM to the launcher goes through the docker CLI and tini to the agent."""
    with sleeping_launcher(sandbox, docker_env) as (launcher, output):
        launcher.terminate()
        exit_code = launcher.wait(timeout=SIGNAL_WAIT_S)
    stderr = launcher.stderr.read() if launcher.stderr else ""
    lines = output.rest()

    assert "SIGNAL:TERM" in lines, lines
    assert "[FATAL tini" not in stderr
    assert exit_code == 143


@pytest.mark.skipif(os.getuid() != 0, reason="the agent identity of root launches")
def test_docker_run_root_agent_is_project_owner(sandbox):
    owner = AGENT_UID + 1
    os.chown(sandbox.project, owner, owner)
    os.chmod(sandbox.project, 0o755)  # noqa: S103 - writable by its owner only
    sandbox.env.pop("AGENT_UID")
    sandbox.env.pop("AGENT_GID")
    result = sandbox.run(CLD)
    assert result.returncode == 0, result.stderr
    report = StubReport(result.stdout)
    assert report.value("UID=") == f"{owner} GID={owner}"
    assert report.env["LLM_DOCKER_WORKDIR"] in report.writable
    assert "cannot write the project root" not in result.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="the agent identity of root launches")
def test_docker_run_root_owned_project_warns(sandbox):
    os.chmod(sandbox.project, 0o755)  # noqa: S103 - root-owned, as the test runs as root
    sandbox.env.pop("AGENT_UID")
    sandbox.env.pop("AGENT_GID")
    result = sandbox.run(CLD)
    assert result.returncode == 0, result.stderr
    report = StubReport(result.stdout)
    assert report.value("UID=") == "1000 GID=1000"
    assert report.env["LLM_DOCKER_WORKDIR"] in report.readonly
    assert f"chown -R 1000:1000 {sandbox.project}" in result.stderr
