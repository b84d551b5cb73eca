"""Image handling: tag selection, the build from docker/, --build, --rebuild-force, --clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmdocker
from llmdocker import Engine, EngineError
from tests.unit.test_launcher_fakes import install_fake_engine, make_settings


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "docker").mkdir(parents=True)
    (code / "docker" / "Dockerfile").write_text("FROM scratch\n")
    (code / "docker" / "entrypoint.sh").write_text("#!/bin/sh\n")
    return code


@pytest.fixture
def state(tmp_path: Path) -> llmdocker.StatePaths:
    return llmdocker.StatePaths(str(tmp_path / "state"))


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, argument in enumerate(argv) if argument == option]


@pytest.mark.parametrize(
    ("raw", "tool", "expected"),
    [
        ({}, "claude", "llm-docker-claude:latest"),
        ({}, "opencode", "llm-docker-opencode:latest"),
        ({"COMBINED_IMAGE": "true"}, "opencode", "llm-docker:latest"),
        ({"LLM_DOCKER_IMAGE": "stub:1", "COMBINED_IMAGE": "true"}, "claude", "stub:1"),
    ],
)
def test_image_tag(raw, tool, expected):
    assert llmdocker.image_tag(make_settings(**raw), tool) == expected


def test_build_arguments(code_dir, state):
    arguments = llmdocker.build_arguments(
        make_settings(BASE_IMAGE="base:1", INSTALL_CPP="true"), "claude"
    )
    values = option_values(arguments, "--build-arg")
    assert "TOOL=claude" in values
    assert "BASE_IMAGE=base:1" in values
    assert "INSTALL_CPP=true" in values
    assert "INSTALL_RUBY=false" in values
    assert len([v for v in values if v.startswith("INSTALL_")]) == len(llmdocker.INSTALL_SETTINGS)


def test_build_arguments_combined():
    values = option_values(
        llmdocker.build_arguments(make_settings(COMBINED_IMAGE="true"), "x"), "--build-arg"
    )
    assert "TOOL=both" in values


def test_build_uses_copy_with_certificates(monkeypatch, code_dir, state):
    fake = install_fake_engine(monkeypatch, with_images=False)
    Path(state.certs).mkdir(parents=True)
    Path(state.certs, "corp.crt").write_text("CERT\n")
    Path(state.certs, "notes.txt").write_text("not a cert\n")
    seen: dict[str, list[str]] = {}

    original = fake.__call__

    def spy(command):
        if command.argv[1] == "build":
            context = Path(command.argv[-1])
            seen["files"] = sorted(p.relative_to(context).as_posix() for p in context.rglob("*"))
        return original(command)

    monkeypatch.setattr(llmdocker, "run_command", spy)
    engine = Engine("docker", {}, dry_run=False)
    llmdocker.build_image(
        engine, make_settings(), "claude", "t:1", str(code_dir), state, quiet=True
    )
    assert seen["files"] == ["Dockerfile", "certs", "certs/corp.crt", "entrypoint.sh"]
    (build,) = fake.argvs("build")
    assert option_values(build, "--tag") == ["t:1"]
    assert not Path(build[-1]).exists()  # the temporary context is removed


def test_build_without_docker_dir(monkeypatch, tmp_path, state):
    install_fake_engine(monkeypatch, with_images=False)
    engine = Engine("docker", {}, dry_run=False)
    with pytest.raises(EngineError, match="without its docker/ directory") as caught:
        llmdocker.build_image(engine, make_settings(), "claude", "t:1", str(tmp_path), state, True)
    assert "docker load" in caught.value.hint


def test_build_failure_reports_tail(monkeypatch, code_dir, state, capsys):
    fake = install_fake_engine(monkeypatch, with_images=False)
    fake.build_lines = ["Step 1/1 : RUN false", "The command returned a non-zero code: 1"]
    fake.build_exit_code = 1
    engine = Engine("docker", {}, dry_run=False)
    with pytest.raises(EngineError, match="building t:1 failed with exit status 1"):
        llmdocker.build_image(engine, make_settings(), "claude", "t:1", str(code_dir), state, True)
    assert "non-zero code" in capsys.readouterr().err


def test_build_step_parsing():
    assert llmdocker.build_step("Step 3/9 : RUN apt-get update") == "3/9 : RUN apt-get update"
    assert llmdocker.build_step("#7 [3/9] RUN npm install") == "[3/9] RUN npm install"
    assert llmdocker.build_step("Get:1 http://deb bookworm InRelease") is None
    assert llmdocker.build_step("#7 0.123 added 5 packages") is None


def test_smart_build_runs_install_and_commits(monkeypatch, code_dir, state):
    fake = install_fake_engine(monkeypatch)
    fake.image_config = json.dumps({"Entrypoint": ["/usr/local/bin/llm-docker-entrypoint"],
                                    "Cmd": None, "User": ""})  # fmt: skip
    engine = Engine("docker", {}, dry_run=False)
    settings = make_settings(INSTALL_MEDIA="true")
    llmdocker.smart_build(
        engine, settings, "claude", "llm-docker-claude:latest", str(code_dir), state, True
    )
    (run,) = fake.argvs("run")
    name = option_values(run, "--name")[0]
    assert option_values(run, "--user") == ["0:0"]
    assert option_values(run, "--entrypoint") == ["env"]
    assert "INSTALL_MEDIA=true" in run
    assert run[-1] == llmdocker.INSTALL_PACKS_SCRIPT
    assert "-e" not in run
    (commit,) = fake.argvs("commit")
    changes = option_values(commit, "--change")
    assert changes == ['ENTRYPOINT ["/usr/local/bin/llm-docker-entrypoint"]', "CMD []", "USER 0"]
    assert commit[-2:] == [name, "llm-docker-claude:latest"]
    assert fake.argvs("rm") == [["docker", "rm", "--force", name]]


def test_smart_build_without_image_builds(monkeypatch, code_dir, state):
    fake = install_fake_engine(monkeypatch, with_images=False)
    engine = Engine("docker", {}, dry_run=False)
    llmdocker.smart_build(engine, make_settings(), "claude", "t:1", str(code_dir), state, True)
    assert len(fake.argvs("build")) == 1
    assert fake.argvs("commit") == []


def test_force_rebuild_removes_then_builds_without_cache(monkeypatch, code_dir, state):
    fake = install_fake_engine(monkeypatch)
    engine = Engine("docker", {}, dry_run=False)
    llmdocker.force_rebuild(
        engine, make_settings(), "claude", "llm-docker-claude:latest", str(code_dir), state, True
    )
    assert fake.argvs("image")[-1] == ["docker", "image", "rm", "llm-docker-claude:latest"]
    (build,) = fake.argvs("build")
    assert "--no-cache" in build


def test_clean_removes_stopped_and_refuses_running_without_terminal(monkeypatch):
    fake = install_fake_engine(monkeypatch)
    fake.containers = [("a1", "exited", "old"), ("b2", "running", "live")]
    engine = Engine("docker", {}, dry_run=False)
    with pytest.raises(llmdocker.LauncherError, match="needs confirmation") as caught:
        llmdocker.clean_containers(engine, 1000, "/s", confirmed=False, interactive=False)
    assert "--yes" in caught.value.hint
    assert fake.argvs("rm") == []
    (listing,) = fake.argvs("ps")
    assert "label=llm-docker.host-uid=1000" in listing
    assert "label=llm-docker.state-dir=/s" in listing


def test_clean_with_yes_stops_and_removes(monkeypatch):
    fake = install_fake_engine(monkeypatch)
    fake.containers = [("a1", "exited", "old"), ("b2", "running", "live")]
    engine = Engine("docker", {}, dry_run=False)
    llmdocker.clean_containers(engine, 1000, "/s", confirmed=True, interactive=False)
    assert fake.argvs("stop") == [["docker", "stop", "b2"]]
    assert fake.argvs("rm") == [["docker", "rm", "--force", "a1", "b2"]]


REMOVAL_IN_PROGRESS = "Error response from daemon: removal of container b2 is already in progress\n"


def engine_failing(monkeypatch, subcommand: str, stderr: str):
    """Install a fake engine whose `subcommand` fails with `stderr`."""
    fake = install_fake_engine(monkeypatch)

    def answer(command):
        if command.argv[1] == subcommand:
            fake.commands.append(command)
            return llmdocker.CommandResult(1, "", stderr)
        return type(fake).__call__(fake, command)

    monkeypatch.setattr(llmdocker, "run_command", answer)
    return fake


@pytest.mark.parametrize(
    ("subcommand", "stderr"),
    [
        ("rm", REMOVAL_IN_PROGRESS),
        ("rm", "Error response from daemon: No such container: b2\n"),
        ("rm", REMOVAL_IN_PROGRESS + "Error: No such container: a1\n"),
        ("stop", "Error response from daemon: No such container: b2\n"),
    ],
)  # fmt: skip
def test_clean_tolerates_containers_already_gone(monkeypatch, capsys, subcommand, stderr):
    fake = engine_failing(monkeypatch, subcommand, stderr)
    fake.containers = [("a1", "exited", "old"), ("b2", "running", "live")]
    engine = Engine("docker", {}, dry_run=False)
    llmdocker.clean_containers(engine, 1000, "/s", confirmed=True, interactive=False)
    assert "removed 2 llm-docker container(s)" in capsys.readouterr().err


def test_clean_reports_other_rm_errors(monkeypatch):
    stderr = REMOVAL_IN_PROGRESS + "Error response from daemon: device or resource busy\n"
    fake = engine_failing(monkeypatch, "rm", stderr)
    fake.containers = [("a1", "exited", "old"), ("b2", "running", "live")]
    engine = Engine("docker", {}, dry_run=False)
    with pytest.raises(EngineError, match=r"docker rm failed: .*device or resource busy"):
        llmdocker.clean_containers(engine, 1000, "/s", confirmed=True, interactive=False)


def test_clean_asks_on_terminal(monkeypatch):
    fake = install_fake_engine(monkeypatch)
    fake.containers = [("b2", "running", "live")]
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    engine = Engine("docker", {}, dry_run=False)
    llmdocker.clean_containers(engine, 1000, "/s", confirmed=False, interactive=True)
    assert fake.argvs("stop") == []


def test_clean_dry_run_changes_nothing(monkeypatch):
    fake = install_fake_engine(monkeypatch)
    fake.containers = [("a1", "exited", "old")]
    engine = Engine("docker", {}, dry_run=True)
    llmdocker.clean_containers(engine, 1000, "/s", confirmed=True, interactive=False)
    assert fake.argvs("rm") == []
    assert "docker rm --force a1" in engine.printed
