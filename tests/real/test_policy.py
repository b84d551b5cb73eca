"""The managed policy against the real Claude Code and a scripted mock model API.

The mock replies to the first model turn(s) with tool calls. Claude Code runs
them through its permission system and sends the results back in its next
request, which the mock records. A denied call must come back as a
`tool_result` with `is_error` and a permission message, and the file must be
unchanged. Claude runs in bypass mode (`--dangerously-skip-permissions`), so
only the managed deny rules can refuse a call, and with INTERNET_ACCESS=false,
so it reaches nothing but the mock on the host's bridge address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mocks import mock_anthropic
from tests.mocks.recording_server import MockServer, RequestLog
from tests.real.conftest import CONTAINER_HOME, Cage, seed_claude_offline
from tests.real.conftest import write_owned_file as write_file

pytestmark = pytest.mark.real

# Claude Code prints these when it skips (part of) a managed policy, and still exits 0.
POLICY_WARNINGS = ("Managed settings failed to load", "matches no known tool")
FAKE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key-llm-docker-test\n"
FAKE_ENV = "API_TOKEN=not-a-real-token-llm-docker-test\n"
USER_SETTINGS = f"{CONTAINER_HOME}/.claude/settings.json"


@pytest.fixture
def claude_project(cage: Cage) -> Cage:
    """Fill the project with secrets, ordinary files and Claude user settings."""
    write_file(cage.project / "id_rsa", FAKE_KEY, cage.uid, cage.gid)
    write_file(cage.project / ".env", FAKE_ENV, cage.uid, cage.gid)
    write_file(cage.project / "README.md", "readme-marker-text\n", cage.uid, cage.gid)
    write_file(cage.project / "NOTES.md", "draft\n", cage.uid, cage.gid)
    settings = cage.state / "claude/config/settings.json"
    write_file(settings, json.dumps({"theme": "dark"}), cage.uid, cage.gid)
    seed_claude_offline(cage, mock_anthropic.API_TOKEN)
    return cage


@pytest.fixture
def start_mock(gateway_address: str) -> Iterator:
    """Return a function that starts a scripted mock; stop every one at teardown."""
    servers: list[MockServer] = []

    def start(script: list[list[dict[str, Any]]]) -> tuple[MockServer, RequestLog]:
        server, requests = mock_anthropic.serve(["127.0.0.1", gateway_address], script)
        servers.append(server)
        return server, requests

    yield start
    for server in servers:
        server.stop()


def run_claude(cage: Cage, server: MockServer) -> Any:
    """Run one non-interactive Claude Code prompt in the cage against the mock."""
    base_url = f"http://host.docker.internal:{server.port}"
    environment = mock_anthropic.offline_claude_environment(base_url)
    command = ["claude", "-p", "--dangerously-skip-permissions", "Follow the task."]
    result = cage.run(command, internet=False, bypass=True, environment=environment)
    for warning in POLICY_WARNINGS:
        assert warning not in result.stderr, result.stderr
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def result_for_step(requests: RequestLog, step: int) -> dict[str, Any]:
    """Return the tool_result that Claude sent back for the mock's scripted step."""
    records = requests.snapshot()
    sent = [record for record in records if (record.get("reply") or {}).get("step") == step]
    assert sent, f"the mock never sent step {step}; requests: {[r['path'] for r in records]}"
    tool_use_id = sent[0]["reply"]["content"][0]["id"]
    for record in records:
        for tool_result in record.get("tool_results", []):
            if tool_result["tool_use_id"] == tool_use_id:
                return tool_result
    pytest.fail(f"Claude Code sent no tool_result for step {step} ({tool_use_id})")


def assert_denied(tool_result: dict[str, Any]) -> None:
    assert tool_result["is_error"] is True, tool_result
    assert "denied" in tool_result["content"].lower(), tool_result


def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
    """Return a script step holding one tool call."""
    return [{"name": name, "input": arguments}]


@pytest.mark.parametrize(
    ("tool", "secret"),
    [("Read", "id_rsa"), ("Read", ".env"), ("Bash", ".env"), ("Bash", "id_rsa")],
    ids=["read-key", "read-env", "bash-cat-env", "bash-cat-key"],
)
def test_secret_read_denied(claude_project, start_mock, tool, secret) -> None:
    if tool == "Read":
        step = call("Read", file_path=f"{claude_project.workdir}/{secret}")
    else:
        step = call("Bash", command=f"cat {secret}", description="Show the file")
    server, requests = start_mock([step])
    before = (claude_project.project / secret).stat()
    run_claude(claude_project, server)
    tool_result = result_for_step(requests, 0)
    assert_denied(tool_result)
    assert "not-a-real" not in tool_result["content"]
    after = (claude_project.project / secret).stat()
    assert after.st_mtime_ns == before.st_mtime_ns
    assert after.st_size == before.st_size


def test_allowed_read_succeeds(claude_project, start_mock) -> None:
    readme = f"{claude_project.workdir}/README.md"
    server, requests = start_mock([call("Read", file_path=readme)])
    run_claude(claude_project, server)
    tool_result = result_for_step(requests, 0)
    assert tool_result["is_error"] is False, tool_result
    assert "readme-marker-text" in tool_result["content"]


def test_settings_edit_denied(claude_project, start_mock) -> None:
    unlock = '"dark", "permissions": {"allow": ["Bash"]}'
    server, requests = start_mock(
        [
            call("Read", file_path=USER_SETTINGS),
            call("Edit", file_path=USER_SETTINGS, old_string='"dark"', new_string=unlock),
        ]
    )
    run_claude(claude_project, server)
    assert result_for_step(requests, 0)["is_error"] is False
    assert_denied(result_for_step(requests, 1))
    settings = json.loads((claude_project.state / "claude/config/settings.json").read_text())
    # The entrypoint seeded the bypass opt-in; nothing else changed.
    assert settings == {"theme": "dark", "skipDangerousModePermissionPrompt": True}


def test_git_hook_write_denied(claude_project, start_mock) -> None:
    hook = f"{claude_project.workdir}/.git/hooks/pre-commit"
    (claude_project.project / ".git/hooks").mkdir(parents=True)
    server, requests = start_mock([call("Write", file_path=hook, content="#!/bin/sh\nexit 0\n")])
    run_claude(claude_project, server)
    assert_denied(result_for_step(requests, 0))
    assert not (claude_project.project / ".git/hooks/pre-commit").exists()


def test_project_edit_allowed(claude_project, start_mock) -> None:
    notes = f"{claude_project.workdir}/NOTES.md"
    server, requests = start_mock(
        [
            call("Read", file_path=notes),
            call("Edit", file_path=notes, old_string="draft", new_string="edited"),
        ]
    )
    run_claude(claude_project, server)
    assert result_for_step(requests, 1)["is_error"] is False
    assert (claude_project.project / "NOTES.md").read_text() == "edited\n"
    assert Path(claude_project.project / "NOTES.md").stat().st_uid == claude_project.uid


def test_managed_policy_edit_denied(claude_project, start_mock) -> None:
    policy = "/etc/claude-code/managed-settings.json"
    server, requests = start_mock(
        [
            call("Read", file_path=policy),
            call("Edit", file_path=policy, old_string='"deny": [', new_string='"deny": [], "x": ['),
            call("Bash", command=f"echo '{{}}' > {policy}", description="Reset the policy"),
        ]
    )
    run_claude(claude_project, server)
    assert result_for_step(requests, 0)["is_error"] is False
    assert_denied(result_for_step(requests, 1))
    assert result_for_step(requests, 2)["is_error"] is True
    after = claude_project.run(["python3", "-m", "json.tool", policy])
    assert after.returncode == 0, after.stderr
    assert '"allowManagedHooksOnly": true' in after.stdout
