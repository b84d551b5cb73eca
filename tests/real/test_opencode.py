"""The real OpenCode in the cage against the scripted mock OpenAI-compatible API.

OpenCode reads the image's policy from /etc/opencode/opencode.json. Its
deny rules are globs (OpenCode 1.18.33 matched nothing else reliably), so a
read of `.env` in the project must come back refused while a read of an
ordinary file goes through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.mocks import mock_openai
from tests.mocks.recording_server import MockServer, RequestLog
from tests.real.conftest import Cage
from tests.real.conftest import write_owned_file as write_file

pytestmark = pytest.mark.real

FAKE_ENV = "API_TOKEN=not-a-real-token-llm-docker-test\n"
OPENCODE_ENVIRONMENT = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
}
PLUGIN_DEPENDENCIES = {"@opencode-ai/plugin": "*"}


def seed_opencode_offline(cage: Cage, port: int) -> None:
    """Point OpenCode at the mock and keep it from installing its plugin package."""
    config_dir = cage.state / "opencode/config"
    config = mock_openai.opencode_config(f"http://host.docker.internal:{port}/v1")
    write_file(config_dir / "opencode.json", json.dumps(config), cage.uid, cage.gid)
    write_file(
        config_dir / "package.json",
        json.dumps({"dependencies": PLUGIN_DEPENDENCIES}),
        cage.uid,
        cage.gid,
    )
    lock = {"lockfileVersion": 3, "packages": {"": {"dependencies": PLUGIN_DEPENDENCIES}}}
    write_file(config_dir / "package-lock.json", json.dumps(lock), cage.uid, cage.gid)
    (config_dir / "node_modules").mkdir(exist_ok=True)


@pytest.fixture
def opencode_run(cage: Cage, gateway_address: str) -> Iterator:
    """Return a function that runs one OpenCode turn against a scripted mock."""
    servers: list[MockServer] = []
    write_file(cage.project / ".env", FAKE_ENV, cage.uid, cage.gid)
    write_file(cage.project / "README.md", "readme-marker-text\n", cage.uid, cage.gid)

    def run(script: list[list[dict[str, Any]]]) -> RequestLog:
        server, requests = mock_openai.serve(["127.0.0.1", gateway_address], script)
        servers.append(server)
        seed_opencode_offline(cage, server.port)
        result = cage.run(
            ["opencode", "run", "Follow the task."],
            internet=False,
            environment=OPENCODE_ENVIRONMENT,
        )
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return requests

    yield run
    for server in servers:
        server.stop()


def tool_reply(requests: RequestLog) -> str:
    """Return the text OpenCode sent back for the mock's first tool call."""
    for record in requests.snapshot():
        for message in record.get("tool_messages", []):
            return message["content"]
    pytest.fail("OpenCode sent no tool result back to the mock")


def test_opencode_env_read_denied(cage: Cage, opencode_run) -> None:
    requests = opencode_run([[{"name": "read", "input": {"filePath": f"{cage.workdir}/.env"}}]])
    reply = tool_reply(requests)
    assert "not-a-real-token" not in reply
    assert "a rule which prevents you from using this specific tool call" in reply, reply
    # The refusal lists the image policy's rule (OpenCode 1.18.33 wording).
    assert '"pattern":"*.env","action":"deny"' in reply


def test_opencode_read_allowed(cage: Cage, opencode_run) -> None:
    readme = f"{cage.workdir}/README.md"
    requests = opencode_run([[{"name": "read", "input": {"filePath": readme}}]])
    assert "readme-marker-text" in tool_reply(requests)
