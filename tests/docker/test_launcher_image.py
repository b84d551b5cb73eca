"""Docker tier: image build from docker/ and --build (install packs + commit) with a real engine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import llmdocker
from tests.unit.test_launcher_fakes import make_settings

pytestmark = pytest.mark.docker

INSTALL_PACKS = """#!/bin/sh
# Test stand-in: records the INSTALL_* values it was given and the user it ran as.
set -e
env | grep '^INSTALL_' | sort > /opt/llm-docker/packs.txt
id -u >> /opt/llm-docker/packs.txt
"""


def docker(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture
def engine(docker_env, monkeypatch):
    for key, value in docker_env.items():
        monkeypatch.setenv(key, value)
    return llmdocker.Engine("docker", dict(docker_env), dry_run=False)


@pytest.fixture
def tag(docker_env):
    name = f"llm-docker-test-image:{os.getpid()}-{os.urandom(3).hex()}"
    yield name
    docker(docker_env, "image", "rm", "--force", name)


def write_context(code_dir: Path, stub_image: str) -> None:
    context = code_dir / "docker"
    (context / "install").mkdir(parents=True)
    (context / "certs").mkdir()
    (context / "certs" / "README.md").write_text("extra certificates go here\n")
    (context / "install" / "install-packs.sh").write_text(INSTALL_PACKS)
    (context / "install" / "install-packs.sh").chmod(0o755)
    (context / "Dockerfile").write_text(
        f"FROM {stub_image}\n"
        "ARG TOOL\n"
        "COPY certs/ /usr/local/share/test-certs/\n"
        "COPY install/ /opt/llm-docker/install/\n"
        'RUN echo "$TOOL" > /opt/llm-docker/tool.txt\n'
        "USER 0\n"
    )


def read_file(env: dict[str, str], image: str, path: str) -> str:
    result = docker(env, "run", "--rm", "--entrypoint", "cat", image, path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_image_build_with_certificates(engine, docker_env, stub_image, tag, tmp_path):
    write_context(tmp_path / "code", stub_image)
    state = llmdocker.StatePaths(str(tmp_path / "state"))
    Path(state.certs).mkdir(parents=True)
    Path(state.certs, "corp.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    llmdocker.build_image(
        engine, make_settings(), "opencode", tag, str(tmp_path / "code"), state, quiet=True
    )
    assert read_file(docker_env, tag, "/opt/llm-docker/tool.txt") == "opencode\n"
    listing = docker(
        docker_env, "run", "--rm", "--entrypoint", "ls", tag, "/usr/local/share/test-certs"
    )
    assert listing.stdout.split() == ["README.md", "corp.crt"]


def test_image_smart_build_commits_and_keeps_config(engine, docker_env, stub_image, tag, tmp_path):
    write_context(tmp_path / "code", stub_image)
    state = llmdocker.StatePaths(str(tmp_path / "state"))
    settings = make_settings(INSTALL_MEDIA="true")
    llmdocker.build_image(engine, settings, "claude", tag, str(tmp_path / "code"), state, True)
    before = json.loads(docker(docker_env, "image", "inspect", tag).stdout)[0]["Config"]

    llmdocker.smart_build(engine, settings, "claude", tag, str(tmp_path / "code"), state, True)
    after = json.loads(docker(docker_env, "image", "inspect", tag).stdout)[0]["Config"]
    assert after["Entrypoint"] == before["Entrypoint"]
    assert after["Cmd"] == before["Cmd"]
    assert after["Env"] == before["Env"]
    packs = read_file(docker_env, tag, "/opt/llm-docker/packs.txt").splitlines()
    assert "INSTALL_MEDIA=true" in packs
    assert "INSTALL_RUBY=false" in packs
    assert packs[-1] == "0"
    leftovers = docker(docker_env, "ps", "--all", "--filter", "name=llm-docker-build-", "--quiet")
    assert leftovers.stdout.strip() == ""


def test_image_build_failure_is_reported(engine, stub_image, tag, tmp_path, capsys):
    code_dir = tmp_path / "code"
    write_context(code_dir, stub_image)
    (code_dir / "docker" / "Dockerfile").write_text(f"FROM {stub_image}\nRUN exit 3\n")
    state = llmdocker.StatePaths(str(tmp_path / "state"))
    with pytest.raises(llmdocker.EngineError, match="failed with exit status"):
        llmdocker.build_image(engine, make_settings(), "claude", tag, str(code_dir), state, True)
    err = capsys.readouterr().err
    assert "RUN exit 3" in err
