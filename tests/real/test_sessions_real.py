"""Sessions and slots with the real Claude Code and OpenCode, driven through the launcher.

Each test runs `cld`/`ocd` (llmdocker.py) in a real terminal (tmux on a private socket) in a
project whose path has spaces, dots and a non-ASCII letter, against a mock model API on the
host, and checks on the host:

1-3. `--slot 1` starts a session: the tool's session file or database row appears under the
     state directory, and the slot record points to it.
4.   After a rebuilt image, `-c --slot 1` continues it: the mock receives the earlier
     conversation, and no new session appears.
5.   A second project with the same folder name elsewhere keeps its own sessions and slots.
6.   A launcher killed with SIGKILL mid-session leaves no container after 10 s, and its slot
     record points to the session.

"Rebuilt image" here is an image built FROM the real one with an extra label: it has a new
image id, and the shared real image stays untouched for the other tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mocks import mock_anthropic, mock_openai
from tests.mocks.recording_server import MockServer, RequestLog
from tests.real.conftest import LAUNCHER, agent_ids
from tests.real.test_opencode import OPENCODE_ENVIRONMENT, PLUGIN_DEPENDENCIES

pytestmark = pytest.mark.real

PROJECT_FOLDER = "my proj.v2 é"  # spaces, dots and a non-ASCII letter
CONTAINER_PROJECTS = "/home/agent/Projects"  # DOCKER_DIR's default
SCREEN_COLUMNS, SCREEN_LINES = 150, 45
READY_TIMEOUT_S = 120  # container start and tool start; about 3 s (Claude) or 10 s (OpenCode)
REPLY_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 60
KILL_DEADLINE_S = 10  # the container must be gone and the slot saved within this time
POLL_S = 0.2


# What each tool shows when its prompt takes input (Claude Code 2.1.332, OpenCode 1.18.33).
READY_MARKERS = {"claude": "? for shortcuts", "opencode": "ctrl+p commands"}
OPENCODE_SETTLE_S = 2.0  # OpenCode draws its prompt before it accepts keys
MODEL_PATHS = {"claude": "/v1/messages", "opencode": "/v1/chat/completions"}


class Terminal:
    """A tmux server on a private socket with one window that runs the launcher."""

    def __init__(self, socket: str, runner: Path) -> None:
        self.socket = socket
        self.runner = runner

    def tmux(self, *arguments: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *arguments],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout

    def start(self, arguments: list[str]) -> None:
        command = shlex.join(["bash", str(self.runner), *arguments])
        subprocess.run(
            ["tmux", "-L", self.socket, "new-session", "-d", "-s", "main",
             "-x", str(SCREEN_COLUMNS), "-y", str(SCREEN_LINES), command],
            check=True,
            timeout=30,
        )  # fmt: skip

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "main")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.screen():
                return
            time.sleep(POLL_S)
        pytest.fail(f"{text!r} did not appear within {timeout} s; screen:\n{self.screen()}")

    def type_line(self, text: str) -> None:
        self.tmux("send-keys", "-t", "main", "-l", text)
        time.sleep(0.5)
        self.tmux("send-keys", "-t", "main", "Enter")

    def launcher_pid(self) -> int:
        shell_pid = self.tmux("list-panes", "-t", "main", "-F", "#{pane_pid}").strip()
        found = subprocess.run(
            ["pgrep", "-P", shell_pid, "-f", "llmdocker.py"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(found) == 1, f"expected one launcher below pid {shell_pid}, found {found}"
        return int(found[0])

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)
        # tmux leaves its socket file behind, in the directory `tmux -L` puts it.
        socket_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (socket_dir / self.socket).unlink(missing_ok=True)


class Harness:
    """The state directory, the mock model API and the launcher runs of one test."""

    def __init__(
        self, tool: str, root: Path, image: str, docker_env: dict[str, str], gateway: str
    ) -> None:
        self.tool = tool
        self.root = root
        self.image = image
        self.docker_env = docker_env
        self.uid, self.gid = agent_ids()
        self.state = root / "state"
        self.terminals: list[Terminal] = []
        self.images: list[str] = []
        module = mock_anthropic if tool == "claude" else mock_openai
        self.server: MockServer
        self.requests: RequestLog
        self.server, self.requests = module.serve(["127.0.0.1", gateway])

    # ---- setup ----------------------------------------------------------------------------

    def project(self, parent: str) -> Path:
        """Create `<root>/<parent>/my proj.v2 é` owned by the agent and return its real path."""
        path = self.root / parent / PROJECT_FOLDER
        path.mkdir(parents=True)
        os.chown(path.parent, self.uid, self.gid)
        os.chown(path, self.uid, self.gid)
        return Path(os.path.realpath(path))

    def owned_file(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        for item in (path, *path.parents):
            if item == self.root:
                break
            os.chown(item, self.uid, self.gid)

    def seed(self) -> None:
        """Write the client settings that start the tool offline against the mock."""
        if self.tool == "claude":
            config = {
                "hasCompletedOnboarding": True,
                "projects": {"/": {"hasTrustDialogAccepted": True}},
                "customApiKeyResponses": {
                    "approved": [mock_anthropic.API_TOKEN[-20:]],
                    "rejected": [],
                },
            }
            self.owned_file(self.state / "claude/config/.claude.json", json.dumps(config))
            return
        config_dir = self.state / "opencode/config"
        config = mock_openai.opencode_config(f"http://host.docker.internal:{self.server.port}/v1")
        self.owned_file(config_dir / "opencode.json", json.dumps(config))
        self.owned_file(
            config_dir / "package.json", json.dumps({"dependencies": PLUGIN_DEPENDENCIES})
        )
        lock = {"lockfileVersion": 3, "packages": {"": {"dependencies": PLUGIN_DEPENDENCIES}}}
        self.owned_file(config_dir / "package-lock.json", json.dumps(lock))
        (config_dir / "node_modules").mkdir(exist_ok=True)
        os.chown(config_dir / "node_modules", self.uid, self.gid)

    def environment(self, image: str) -> dict[str, str]:
        if self.tool == "claude":
            base_url = f"http://host.docker.internal:{self.server.port}"
            passed = mock_anthropic.offline_claude_environment(base_url)
        else:
            passed = dict(OPENCODE_ENVIRONMENT)
        return {
            **{key: value for key, value in self.docker_env.items() if key.startswith("DOCKER_")},
            "PATH": os.environ["PATH"],
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "LLM_DOCKER_HOME": str(self.state),
            "LLM_DOCKER_IMAGE": image,
            "AGENT_UID": str(self.uid),
            "AGENT_GID": str(self.gid),
            "INTERNET_ACCESS": "false",
            "PASS_ENV": " ".join(passed),
            **passed,
        }

    def rebuilt_image(self) -> str:
        """Build an image FROM the real one with a new id, as a rebuild gives."""
        tag = f"llm-docker-sessions-rebuilt:{uuid.uuid4().hex[:10]}"
        dockerfile = f"FROM {self.image}\nLABEL llm-docker.test-rebuild={tag.split(':')[1]}\n"
        result = subprocess.run(
            ["docker", "build", "--quiet", "--tag", tag, "-"],
            input=dockerfile,
            capture_output=True,
            text=True,
            env=self.docker_env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        self.images.append(tag)
        return tag

    # ---- running the launcher --------------------------------------------------------------

    def launch(self, project: Path, *arguments: str, image: str | None = None) -> Terminal:
        """Start the launcher in a new terminal and wait until the tool takes input."""
        name = f"run{len(self.terminals)}"
        runner = self.root / f"{name}.sh"
        exports = "".join(
            f"export {key}={shlex.quote(value)}\n"
            for key, value in self.environment(image or self.image).items()
        )
        launcher = shlex.join([sys.executable, str(LAUNCHER), self.tool])
        runner.write_text(
            "#!/bin/bash\n"
            f"{exports}"
            f"cd {shlex.quote(str(project))} || exit 1\n"
            f'{launcher} "$@"\n'
            'echo "LAUNCHER-EXITED rc=$?"\n'
            "sleep 600\n",
            encoding="utf-8",
        )
        terminal = Terminal(f"llm-docker-sessions-{os.getpid()}-{uuid.uuid4().hex[:6]}", runner)
        self.terminals.append(terminal)
        terminal.start(list(arguments))
        terminal.wait_for(READY_MARKERS[self.tool], READY_TIMEOUT_S)
        if self.tool == "opencode":
            time.sleep(OPENCODE_SETTLE_S)
        return terminal

    def request_with(self, text: str) -> dict[str, Any] | None:
        """Return the last model request whose body contains `text`, or None."""
        for record in reversed(self.requests.snapshot()):
            if record["path"].split("?")[0] == MODEL_PATHS[self.tool] and text in json.dumps(
                record.get("body")
            ):
                return record
        return None

    def send(self, terminal: Terminal, text: str) -> dict[str, Any]:
        """Type a prompt and wait until the tool sent it and shows the mock's reply."""
        terminal.type_line(text)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            record = self.request_with(text)
            if record is not None:
                turn = record.get("turn")
                terminal.wait_for(f"turn {turn}", REPLY_TIMEOUT_S)
                return record
            time.sleep(POLL_S)
        pytest.fail(f"the mock never received {text!r}; screen:\n{terminal.screen()}")

    def exit_tool(self, terminal: Terminal) -> None:
        terminal.type_line("/exit")
        terminal.wait_for("LAUNCHER-EXITED rc=0", EXIT_TIMEOUT_S)

    def run_launcher(self, project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(LAUNCHER), self.tool, *arguments],
            capture_output=True,
            text=True,
            env=self.environment(self.image),
            cwd=project,
            timeout=60,
            check=False,
        )

    # ---- state on the host ------------------------------------------------------------------

    def slot(self, project: Path, slot: int) -> dict[str, Any] | None:
        path = self.state / "slots" / self.tool / project_id(project) / f"slot-{slot}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def sessions(self, project: Path) -> list[str]:
        """Return the ids of the tool's sessions of the project, read as a user would."""
        if self.tool == "claude":
            folder = self.state / "claude/config/projects" / claude_folder(workdir(project))
            if not folder.is_dir():
                return []
            pattern = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.jsonl")
            return sorted(p.stem for p in folder.iterdir() if pattern.fullmatch(p.name))
        database = self.state / "opencode/data/opencode.db"
        if not database.exists():
            return []
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            rows = connection.execute(
                "SELECT id FROM session WHERE directory = ? ORDER BY id", (workdir(project),)
            ).fetchall()
        finally:
            connection.close()
        return [row[0] for row in rows]

    def container_ids(self, project: Path, slot: int) -> list[str]:
        output = subprocess.run(
            ["docker", "ps", "--all", "--quiet",
             "--filter", f"label=llm-docker.project-id={project_id(project)}",
             "--filter", f"label=llm-docker.slot={slot}"],
            capture_output=True,
            text=True,
            env=self.docker_env,
            timeout=30,
            check=True,
        ).stdout  # fmt: skip
        return output.split()

    def close(self) -> None:
        for terminal in self.terminals:
            terminal.close()
        self.server.stop()
        for tag in self.images:
            subprocess.run(
                ["docker", "rmi", "--force", tag],
                capture_output=True,
                env=self.docker_env,
                timeout=120,
                check=False,
            )


def project_id(project: Path) -> str:
    """Return the project id the launcher derives: 8 hex digits of SHA-256 of the real path."""
    return hashlib.sha256(os.fsencode(str(project))).hexdigest()[:8]


def workdir(project: Path) -> str:
    return f"{CONTAINER_PROJECTS}/{project.name}-{project_id(project)}"


def claude_folder(path: str) -> str:
    """Claude Code's project folder name for paths up to 200 UTF-16 code units."""
    assert len(path.encode("utf-16-le")) // 2 <= 200, "the long-path hash is not needed here"
    return "".join(
        char if char.isascii() and char.isalnum() else "-" * (len(char.encode("utf-16-le")) // 2)
        for char in path
    )


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL_S)
    return condition()


@pytest.fixture
def harness_factory(
    real_image: str, docker_env: dict[str, str], gateway_address: str, tmp_path: Path
) -> Iterator[Callable[[str], Harness]]:
    if not LAUNCHER.is_file():
        pytest.fail(f"{LAUNCHER} is missing")
    created: list[Harness] = []
    tmp_path.chmod(0o755)
    (tmp_path / "home").mkdir()

    def make(tool: str) -> Harness:
        harness = Harness(tool, tmp_path, real_image, docker_env, gateway_address)
        created.append(harness)
        harness.seed()
        return harness

    yield make
    for harness in created:
        harness.close()


@pytest.mark.parametrize("tool", ["claude", "opencode"])
def test_sessions_survive_rebuild_and_kill(
    harness_factory: Callable[[str], Harness], tool: str
) -> None:
    harness = harness_factory(tool)
    first = harness.project("one")
    second = harness.project("two")

    # Steps 1-3: a new session in slot 1, found on the host, and the slot record.
    terminal = harness.launch(first, "--slot", "1")
    harness.send(terminal, "remember the word pelican")
    harness.exit_tool(terminal)
    sessions = harness.sessions(first)
    assert len(sessions) == 1, sessions
    record = harness.slot(first, 1)
    assert record is not None
    assert record["session_id"] == sessions[0]
    assert record["project"] == str(first)
    assert record["version"] == 1

    # Step 4: a rebuilt image, then -c --slot 1 continues the same session.
    rebuilt = harness.rebuilt_image()
    terminal = harness.launch(first, "-c", "--slot", "1", image=rebuilt)
    request = harness.send(terminal, "which word did I ask you to remember")
    harness.exit_tool(terminal)
    assert "pelican" in json.dumps(request["body"]), "the earlier conversation was not sent"
    assert harness.sessions(first) == sessions
    continued = harness.slot(first, 1)
    assert continued is not None
    assert continued["session_id"] == sessions[0]

    # Step 5: a project with the same folder name elsewhere keeps its own sessions and slots.
    assert project_id(second) != project_id(first)
    terminal = harness.launch(second, "--slot", "1")
    harness.send(terminal, "a different project")
    harness.exit_tool(terminal)
    second_sessions = harness.sessions(second)
    assert len(second_sessions) == 1, second_sessions
    assert second_sessions[0] not in sessions
    second_record = harness.slot(second, 1)
    assert second_record is not None
    assert second_record["session_id"] == second_sessions[0]
    assert second_record["project"] == str(second)
    assert harness.slot(first, 1) == continued
    assert harness.sessions(first) == sessions
    listing = harness.run_launcher(second, "--sessions", "--json")
    assert listing.returncode == 0, listing.stderr
    listed = json.loads(listing.stdout)
    assert [row["id"] for row in listed["sessions"]] == second_sessions
    assert listed["sessions"][0]["slots"] == [1]

    # Step 6: SIGKILL mid-session: the container goes, and the slot points to the session.
    terminal = harness.launch(first, "--slot", "2")
    harness.send(terminal, "a message before the crash")
    assert harness.container_ids(first, 2), "the slot 2 container is not running"
    launcher = terminal.launcher_pid()
    killed_at = time.monotonic()
    os.kill(launcher, signal.SIGKILL)
    assert wait_until(lambda: not harness.container_ids(first, 2), KILL_DEADLINE_S), (
        f"the container of the killed launcher still exists after {KILL_DEADLINE_S} s"
    )
    assert wait_until(lambda: harness.slot(first, 2) is not None, KILL_DEADLINE_S)
    assert time.monotonic() - killed_at < KILL_DEADLINE_S
    crashed = harness.slot(first, 2)
    assert crashed is not None
    new_sessions = sorted(set(harness.sessions(first)) - set(sessions))
    assert len(new_sessions) == 1, new_sessions
    assert crashed["session_id"] == new_sessions[0]
    assert harness.slot(first, 1) == continued


@pytest.mark.parametrize("signal_number", [signal.SIGHUP, signal.SIGTERM], ids=["hup", "term"])
def test_signalled_launcher_stops_and_saves(
    harness_factory: Callable[[str], Harness], signal_number: int
) -> None:
    # A closed terminal sends SIGHUP; `kill` sends SIGTERM.
    harness = harness_factory("claude")
    project = harness.project("one")
    terminal = harness.launch(project, "--slot", "3")
    harness.send(terminal, "a message before the signal")
    assert harness.container_ids(project, 3), "the slot 3 container is not running"

    os.kill(terminal.launcher_pid(), signal_number)

    assert wait_until(lambda: not harness.container_ids(project, 3), KILL_DEADLINE_S), (
        f"the container still exists {KILL_DEADLINE_S} s after the signal"
    )
    assert wait_until(lambda: harness.slot(project, 3) is not None, KILL_DEADLINE_S)
    record = harness.slot(project, 3)
    assert record is not None
    assert record["session_id"] == harness.sessions(project)[0]
