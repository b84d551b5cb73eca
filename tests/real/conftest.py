"""Fixtures of the real-image tier: the image built from docker/ and a cage.

The image tag comes from LLM_DOCKER_REAL_IMAGE (`.ci/build-real-image.sh`
builds `llm-docker:latest` with both CLIs); without it every test here is
skipped. A `Cage` starts containers the way the launcher does. It takes the
exact `docker run` argv and environment from `llmdocker.py --dry-run`, run
in the project with a temporary LLM_DOCKER_HOME, and replaces only the
container command, because the launcher runs nothing but the tool. With
LLM_DOCKER_REAL_DRIVER=docker, or when llmdocker.py is missing, it builds the
argv itself from docker/CONTRACT.md instead.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmdocker import SETUP_CAPABILITIES
from tests.conftest import skip_or_fail

REAL_IMAGE_VARIABLE = "LLM_DOCKER_REAL_IMAGE"
DRIVER_VARIABLE = "LLM_DOCKER_REAL_DRIVER"  # "launcher" (default) or "docker"
LAUNCHER = Path(__file__).resolve().parents[2] / "llmdocker.py"
LAUNCHER_TIMEOUT_S = 60  # a dry run makes one engine query
CONTAINER_HOME = "/home/agent"
CONTAINER_PROJECT = f"{CONTAINER_HOME}/Projects/project-0123abcd"
# Persistence directories: name under the state directory -> container path.
PERSISTENCE_MOUNTS = {
    "claude/config": f"{CONTAINER_HOME}/.claude",
    "opencode/config": f"{CONTAINER_HOME}/.config/opencode",
    "opencode/data": f"{CONTAINER_HOME}/.local/share/opencode",
    "opencode/cache": f"{CONTAINER_HOME}/.cache/opencode",
}
NON_ROOT_TEST_UID = 2345  # used when the tests run as root, as CI does
CONTAINER_TIMEOUT_S = 120  # one claude -p turn against the mock takes a few seconds
PIDS_LIMIT = "512"


def agent_ids() -> tuple[int, int]:
    """Return the uid and gid the agent gets: the caller's, or a non-root one for root."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    return NON_ROOT_TEST_UID, NON_ROOT_TEST_UID


@pytest.fixture(scope="session")
def real_image(docker_env: dict[str, str]) -> str:
    """Return the real image's tag, or skip when LLM_DOCKER_REAL_IMAGE is unset."""
    tag = os.environ.get(REAL_IMAGE_VARIABLE, "")
    if not tag:
        skip_or_fail(
            f"{REAL_IMAGE_VARIABLE} is not set: build the image with "
            f".ci/build-real-image.sh and set {REAL_IMAGE_VARIABLE}=llm-docker:latest"
        )
    inspect = subprocess.run(
        ["docker", "image", "inspect", tag],
        capture_output=True,
        text=True,
        env=docker_env,
        check=False,
    )
    if inspect.returncode != 0:
        pytest.fail(f"{REAL_IMAGE_VARIABLE}={tag} names no image: run .ci/build-real-image.sh")
    return tag


@pytest.fixture(scope="session")
def gateway_address(real_image: str, docker_env: dict[str, str]) -> str:
    """Return the host's address on the Docker bridge, as containers see it."""
    probe = subprocess.run(
        [
            "docker", "run", "--rm", "--add-host", "llm-docker-gateway:host-gateway",
            "--entrypoint", "getent", real_image, "hosts", "llm-docker-gateway",
        ],
        capture_output=True,
        text=True,
        env=docker_env,
        timeout=CONTAINER_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    if probe.returncode != 0 or not probe.stdout.split():
        pytest.fail(f"could not find the bridge gateway address: {probe.stderr.strip()}")
    return probe.stdout.split()[0]


@dataclass
class Cage:
    """A project, its state directory and the contract's `docker run` around them."""

    image: str
    docker_env: dict[str, str]
    project: Path
    state: Path
    uid: int
    gid: int
    via_launcher: bool = True  # False: the contract's argv, for entrypoint-only settings
    started: list[str] = field(default_factory=list)
    _workdir: str | None = None

    def run_argv(
        self,
        command: Sequence[str],
        *,
        internet: bool = True,
        bypass: bool = False,
        environment: dict[str, str] | None = None,
        detach: bool = False,
        name: str | None = None,
        docker_options: Sequence[str] = (),
    ) -> tuple[list[str], dict[str, str]]:
        """Return the `docker run` argv for `command` and the environment to run it with.

        `docker_options` (extra capabilities, ports, mounts) need the contract's argv.
        """
        name = name or f"llm-docker-real-{uuid.uuid4().hex[:10]}"
        self.started.append(name)
        if self.via_launcher and use_launcher() and not docker_options:
            return self.launcher_argv(command, internet, bypass, environment or {}, detach, name)
        argv, values = self.contract_argv(
            command, internet, bypass, environment or {}, detach, name
        )
        image_index = argv.index(self.image)
        return [*argv[:image_index], *docker_options, *argv[image_index:]], values

    def launcher_argv(
        self,
        command: Sequence[str],
        internet: bool,
        bypass: bool,
        environment: dict[str, str],
        detach: bool,
        name: str,
    ) -> tuple[list[str], dict[str, str]]:
        """Ask the launcher's dry run for its argv and environment; swap in `command`."""
        tool = "opencode" if command[0] == "opencode" else "claude"
        settings = {
            "LLM_DOCKER_HOME": str(self.state),
            "LLM_DOCKER_IMAGE": self.image,
            "AGENT_UID": str(self.uid),
            "AGENT_GID": str(self.gid),
            "INTERNET_ACCESS": "true" if internet else "false",
            "CLAUDE_BYPASS_PERMISSIONS": "true" if bypass else "false",
            "PASS_ENV": " ".join(environment),
        }
        launcher_env = {**self.docker_env, **settings, **environment}

        report = subprocess.run(
            [sys.executable, str(LAUNCHER), tool, "--dry-run"],
            capture_output=True,
            text=True,
            env=launcher_env,
            cwd=self.project,
            timeout=LAUNCHER_TIMEOUT_S,
            check=False,
        )
        if report.returncode != 0:
            pytest.fail(f"llmdocker.py {tool} --dry-run failed:\n{report.stderr}")

        argv, values = parse_dry_run(report.stdout)
        image_index = argv.index(self.image)
        argv = [*argv[: image_index + 1], *command]
        argv[argv.index("--name") + 1] = name
        if detach:
            argv[argv.index("--rm")] = "--detach"
        return argv, {**self.docker_env, **values, **environment}

    def contract_argv(
        self,
        command: Sequence[str],
        internet: bool,
        bypass: bool,
        environment: dict[str, str],
        detach: bool,
        name: str,
    ) -> tuple[list[str], dict[str, str]]:
        """Build the `docker run` argv for `command` as docker/CONTRACT.md prescribes."""
        argv = ["docker", "run", "--init", "--name", name, "--cap-drop", "ALL"]
        argv += ["--detach"] if detach else ["--rm", "--interactive"]
        for capability in SETUP_CAPABILITIES + (() if internet else ("NET_ADMIN",)):
            argv += ["--cap-add", capability]
        argv += ["--security-opt", "no-new-privileges=true", "--pids-limit", PIDS_LIMIT]
        argv += ["--add-host", "host.docker.internal:host-gateway"]
        argv += ["--mount", f"type=bind,src={self.project},dst={CONTAINER_PROJECT}"]
        for relative, target in PERSISTENCE_MOUNTS.items():
            argv += ["--mount", f"type=bind,src={self.state / relative},dst={target}"]
        variables = {
            "LLM_DOCKER_TOOL": command[0] if command[0] in ("claude", "opencode") else "claude",
            "LLM_DOCKER_UID": str(self.uid),
            "LLM_DOCKER_GID": str(self.gid),
            "LLM_DOCKER_WORKDIR": CONTAINER_PROJECT,
            "LLM_DOCKER_PROJECT": "project",
            "LLM_DOCKER_VERSION": "test",
            "LLM_DOCKER_SESSION": "new",
            "LLM_DOCKER_SANDBOX": "true",
            "LLM_DOCKER_BYPASS": "true" if bypass else "false",
            "INTERNET_ACCESS": "true" if internet else "false",
            "CLAUDE_CONFIG_DIR": f"{CONTAINER_HOME}/.claude",
            "IS_SANDBOX": "1",
            **environment,
        }
        for key in variables:
            argv += ["--env", key]  # by name, with the value in the CLI's environment
        argv += ["--workdir", CONTAINER_PROJECT, self.image, *command]
        return argv, {**self.docker_env, **variables}

    def run(
        self, command: Sequence[str], *, timeout: float = CONTAINER_TIMEOUT_S, **options
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` in a fresh container as the agent; return the finished process."""
        argv, environment = self.run_argv(command, **options)
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    @property
    def workdir(self) -> str:
        """Return the project's path in the container (the launcher derives it from the path)."""
        if self._workdir is None:
            _, environment = self.run_argv(["true"])
            self._workdir = environment["LLM_DOCKER_WORKDIR"]
        return self._workdir

    def start(self, command: Sequence[str], name: str, **options) -> None:
        """Start `command` in a detached container called `name`."""
        argv, environment = self.run_argv(command, detach=True, name=name, **options)
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=environment,
            timeout=CONTAINER_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"could not start container {name}: {result.stderr.strip()}")

    def shell(self, script: str, **options) -> subprocess.CompletedProcess[str]:
        """Run a bash script in the project directory as the agent."""
        return self.run(["bash", "-c", script], **options)

    def docker(self, *arguments: str, timeout: float = CONTAINER_TIMEOUT_S) -> str:
        """Run a docker CLI command; return its stdout or fail the test with stderr."""
        result = subprocess.run(
            ["docker", *arguments],
            capture_output=True,
            text=True,
            env=self.docker_env,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"docker {' '.join(arguments)} failed: {result.stderr.strip()}")
        return result.stdout


def use_launcher() -> bool:
    """Return True when the tests drive containers through llmdocker.py."""
    driver = os.environ.get(DRIVER_VARIABLE, "launcher")
    if driver not in ("launcher", "docker"):
        pytest.fail(f"invalid {DRIVER_VARIABLE}={driver!r}: use launcher or docker")
    return driver == "launcher" and LAUNCHER.is_file()


def parse_dry_run(report: str) -> tuple[list[str], dict[str, str]]:
    """Return the `docker run` argv and the environment values of a --dry-run report."""
    argv: list[str] = []
    values: dict[str, str] = {}
    section = ""
    for line in report.splitlines():
        if not line.startswith(" "):
            section = line
            continue
        entry = line.strip()
        if section.startswith("container environment"):
            key, _, value = entry.partition("=")
            values[key] = value
        elif section.startswith("engine commands") and entry.split()[1:2] == ["run"]:
            argv = shlex.split(entry)
    if not argv:
        pytest.fail(f"the --dry-run report has no docker run command:\n{report}")
    return argv, values


def make_owned_directory(path: Path, uid: int, gid: int) -> Path:
    """Create `path` with any missing parents, and give `path` itself to uid:gid."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    return path


def write_owned_file(path: Path, text: str, uid: int, gid: int) -> Path:
    path.write_text(text, encoding="utf-8")
    os.chown(path, uid, gid)
    return path


@pytest.fixture
def cage(real_image: str, docker_env: dict[str, str], tmp_path: Path) -> Iterator[Cage]:
    """Return a Cage over a fresh project and state directory owned by the agent's uid."""
    uid, gid = agent_ids()
    tmp_path.chmod(0o755)
    project = make_owned_directory(tmp_path / "project", uid, gid)
    state = tmp_path / "state"
    for relative in PERSISTENCE_MOUNTS:
        make_owned_directory(state / relative, uid, gid)
        for parent in (state / relative).parents:
            if parent == tmp_path:
                break
            os.chown(parent, uid, gid)
    cage = Cage(real_image, docker_env, project, state, uid, gid)
    yield cage
    for name in cage.started:
        subprocess.run(
            ["docker", "rm", "--force", name],
            capture_output=True,
            env=docker_env,
            timeout=CONTAINER_TIMEOUT_S,
            check=False,
        )


def seed_claude_offline(cage: Cage, api_key: str) -> None:
    """Write the `.claude.json` that lets Claude Code start without first-run screens.

    Measured with Claude Code 2.1.197-2.1.332: onboarding done, every
    directory trusted (the "/" entry) and the key approved.
    """
    config = {
        "hasCompletedOnboarding": True,
        "projects": {"/": {"hasTrustDialogAccepted": True}},
        "customApiKeyResponses": {"approved": [api_key[-20:]], "rejected": []},
    }
    write_owned_file(
        cage.state / "claude/config/.claude.json", json.dumps(config), cage.uid, cage.gid
    )
