"""The engine seam: run_command with real processes, the Engine wrapper and its errors."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

import llmdocker
from llmdocker import Command, Engine, EngineError
from tests.unit.test_launcher_fakes import install_fake_engine, make_sandbox


def write_script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_run_command_captures_output(tmp_path):
    script = write_script(tmp_path, "tool", 'echo "out $1"; echo "err $FOO" >&2; exit 3\n')
    result = llmdocker.run_command(Command([str(script), "a b"], {"FOO": "bar", "PATH": "/bin"}))
    assert result.returncode == 3
    assert result.stdout == "out a b\n"
    assert result.stderr == "err bar\n"


def test_run_command_large_output_no_deadlock(tmp_path):
    script = write_script(
        tmp_path,
        "tool",
        "i=0; while [ $i -lt 3000 ]; do\n"
        "  echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >&2; echo y; i=$((i+1))\n"
        "done\n",
    )
    result = llmdocker.run_command(Command([str(script)], {"PATH": "/bin:/usr/bin"}))
    assert result.returncode == 0
    assert len(result.stderr.splitlines()) == 3000
    assert len(result.stdout.splitlines()) == 3000


def test_run_command_finds_program_on_path(tmp_path):
    write_script(tmp_path, "fakedocker", "echo found\n")
    result = llmdocker.run_command(Command(["fakedocker"], {"PATH": f"/nonexistent:{tmp_path}"}))
    assert result.stdout == "found\n"


def test_run_command_missing_program(tmp_path):
    with pytest.raises(EngineError, match="docker not found on PATH") as caught:
        llmdocker.run_command(Command(["docker"], {"PATH": str(tmp_path)}))
    assert "LLM_DOCKER_ENGINE=podman" in caught.value.hint


def test_run_command_streams_lines(tmp_path):
    script = write_script(tmp_path, "tool", "echo one; echo two >&2; echo three\n")
    lines: list[str] = []
    result = llmdocker.run_command(Command([str(script)], {"PATH": "/bin"}, "stream", lines.append))
    assert result.returncode == 0
    assert sorted(lines) == ["one", "three", "two"]


def test_run_command_attached_exit_code_and_started(tmp_path):
    script = write_script(tmp_path, "tool", "exit 5\n")
    started: list[bool] = []
    command = Command(
        [str(script)], {"PATH": "/bin"}, "attach", on_started=lambda: started.append(True)
    )
    assert llmdocker.run_command(command).returncode == 5
    assert started == [True]


def test_run_command_attached_killed_by_signal(tmp_path):
    script = write_script(tmp_path, "tool", "kill -TERM $$\n")
    assert (
        llmdocker.run_command(Command([str(script)], {"PATH": "/bin"}, "attach")).returncode == 143
    )


def test_run_command_environment_is_exactly_given(tmp_path):
    script = write_script(tmp_path, "tool", "env\n")
    result = llmdocker.run_command(Command([str(script)], {"ONLY": "this", "PATH": "/bin"}))
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines()}
    assert "ONLY" in names
    assert "HOME" not in names


def test_engine_dry_run_prints_actions_and_runs_queries(monkeypatch):
    fake = install_fake_engine(monkeypatch)
    engine = Engine("docker", {}, dry_run=True)
    engine.query("image", "inspect", "x")
    engine.act("rm", "--force", "a b")
    assert [command.argv for command in fake.commands] == [["docker", "image", "inspect", "x"]]
    assert engine.printed == ["(query) docker image inspect x", "docker rm --force 'a b'"]


def test_engine_attach_merges_environment(monkeypatch):
    fake = install_fake_engine(monkeypatch)
    engine = Engine("docker", {"DOCKER_HOST": "unix:///x.sock"}, dry_run=False)
    assert engine.attach(["docker", "run", "img"], {"SECRET": "v"}) == 0
    command = fake.run_command()
    assert command.env == {"DOCKER_HOST": "unix:///x.sock", "SECRET": "v"}


def test_engine_down_hint_linux():
    hint = llmdocker.engine_hint(
        "docker", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", {}
    )
    assert "systemctl start docker" in hint


def test_engine_down_hint_podman():
    assert "podman" in llmdocker.engine_hint("podman", "Cannot connect to Podman", {})


def test_engine_permission_hint():
    hint = llmdocker.engine_hint(
        "docker", "permission denied while trying to connect to the Docker daemon socket", {}
    )
    assert "docker group" in hint


def test_image_exists_engine_down_on_linux(monkeypatch, tmp_path):
    fake = install_fake_engine(monkeypatch)
    fake.engine_down = True
    engine = Engine("docker", {"DOCKER_HOST": "tcp://127.0.0.1:1"}, dry_run=False)
    state = llmdocker.StatePaths(str(tmp_path))
    with pytest.raises(EngineError, match=r"image inspect .* failed: Cannot connect") as caught:
        llmdocker.image_exists(engine, "tag", "linux", state)
    assert "tcp://127.0.0.1:1" in caught.value.hint


def test_image_exists_starts_docker_desktop_on_macos(monkeypatch, tmp_path):
    fake = install_fake_engine(monkeypatch)
    fake.engine_down = True
    calls: list[str] = []

    def start(engine, state):
        calls.append(state.root)
        fake.engine_down = False

    monkeypatch.setattr(llmdocker, "start_docker_desktop", start)
    engine = Engine("docker", {}, dry_run=False)
    state = llmdocker.StatePaths(str(tmp_path))
    assert llmdocker.image_exists(engine, "llm-docker-claude:latest", "darwin", state) is True
    assert calls == [str(tmp_path)]


def test_docker_desktop_started_once_and_waited(monkeypatch, tmp_path):
    answers = iter([1, 1, 1, 0])  # info: before open (locked re-check), then two polls, then up
    commands: list[list[str]] = []

    def fake(command):
        commands.append(command.argv)
        if command.argv[:2] == ["docker", "info"]:
            return llmdocker.CommandResult(next(answers))
        return llmdocker.CommandResult(0)

    monkeypatch.setattr(llmdocker, "run_command", fake)
    monkeypatch.setattr(llmdocker, "DOCKER_DESKTOP_POLL_SECONDS", 0.0)
    app = tmp_path / "Applications" / "Docker.app"
    app.mkdir(parents=True)
    monkeypatch.setattr(llmdocker, "DOCKER_DESKTOP_LOCATIONS", (str(app),))
    llmdocker.start_docker_desktop(Engine("docker", {}, False), llmdocker.StatePaths(str(tmp_path)))
    assert ["open", "-a", str(app)] in commands
    assert sum(1 for argv in commands if argv[:2] == ["docker", "info"]) == 4
    assert os.path.exists(tmp_path / "docker-desktop.lock")


def test_docker_desktop_missing(monkeypatch, tmp_path):
    def fake(command):
        return llmdocker.CommandResult(1)

    monkeypatch.setattr(llmdocker, "run_command", fake)
    monkeypatch.setattr(llmdocker, "DOCKER_DESKTOP_LOCATIONS", (str(tmp_path / "none.app"),))
    with pytest.raises(EngineError, match="Docker Desktop was not found"):
        llmdocker.start_docker_desktop(
            Engine("docker", {}, False), llmdocker.StatePaths(str(tmp_path))
        )


def test_main_honours_docker_host_and_podman(tmp_path, monkeypatch):
    sandbox = make_sandbox(tmp_path, monkeypatch)
    fake = install_fake_engine(monkeypatch)
    monkeypatch.setenv("DOCKER_HOST", "unix:///custom.sock")
    monkeypatch.setenv("LLM_DOCKER_ENGINE", "podman")
    assert llmdocker.main(["claude"]) == 0
    assert all(command.argv[0] == "podman" for command in fake.commands)
    assert fake.run_command().env["DOCKER_HOST"] == "unix:///custom.sock"
    assert sandbox.project.exists()


def test_fake_docker_on_path_whole_process(tmp_path):
    """The real launcher process with a fake docker CLI on PATH: one query, then run."""
    import subprocess

    sandbox_home = tmp_path / "home"
    project = sandbox_home / "Projects" / "app"
    project.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    write_script(bin_dir, "docker", f'printf "%s\\n" "$*" >> "{calls}"\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(sandbox_home)}
    result = subprocess.run(
        [sys.executable, str(Path(llmdocker.__file__)), "claude"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("image inspect")
    assert lines[1].startswith("run --rm -i ")


def test_symlinked_program_runs_cached_module_not_cwd_modules(tmp_path):
    """cld symlinked from another directory: the sh header finds llmdocker.py through the
    link, the name picks the tool, and a module in the working directory shadows nothing."""
    import subprocess

    home = tmp_path / "home"
    project = home / "Projects" / "app"
    project.mkdir(parents=True)
    (project / "select.py").write_text("raise SystemExit('the project shadowed select')\n")
    (project / "llmdocker.py").write_text("raise SystemExit('the project shadowed llmdocker')\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ocd").symlink_to(Path(llmdocker.__file__).parent / "ocd")
    calls = tmp_path / "calls"
    write_script(bin_dir, "docker", f'printf "%s\\n" "$*" >> "{calls}"\n')
    python_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:{python_dir}:/usr/bin:/bin", "HOME": str(home)}
    result = subprocess.run(
        ["ocd", "--", "--version"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_line = calls.read_text().splitlines()[-1]
    assert run_line.endswith("llm-docker-opencode:latest opencode --version")
