"""main(): the whole launch with a fake engine at the seam."""

from __future__ import annotations

import os
import stat

import pytest

import llmdocker
from tests.unit.test_launcher_fakes import install_fake_engine, make_sandbox, make_settings

SESSION_ID = "0f8c2d1e-1111-4222-8333-944455556666"


def write_claude_session(sandbox) -> str:
    """Write a Claude Code session of the sandbox project where the launcher looks for it."""
    root = os.path.realpath(sandbox.project)
    project_id = llmdocker.sha256_hex(os.fsencode(root))[:8]
    workdir = f"/home/agent/Projects/{os.path.basename(root)}-{project_id}"
    projects = sandbox.state / "claude" / "config" / "projects"
    folder = projects / llmdocker.claude_folder_name(workdir)
    folder.mkdir(parents=True)
    line = '{"type": "user", "cwd": "%s", "message": {"role": "user", "content": "hi"}}\n'
    (folder / f"{SESSION_ID}.jsonl").write_text(line % workdir)
    return SESSION_ID


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    return make_sandbox(tmp_path, monkeypatch)


@pytest.fixture
def fake(monkeypatch):
    return install_fake_engine(monkeypatch)


def container_command(fake) -> list[str]:
    """Return the tool argv: everything after the image in the docker run argv."""
    argv = fake.run_command().argv
    image_index = max(i for i, argument in enumerate(argv) if argument.startswith("llm-docker"))
    return argv[image_index + 1 :]


def test_main_warm_path_one_query_then_run(sandbox, fake):
    assert llmdocker.main(["claude"]) == 0
    assert [command.mode for command in fake.commands] == ["capture", "attach"]
    assert fake.commands[0].argv[:3] == ["docker", "image", "inspect"]
    assert fake.commands[1].argv[:2] == ["docker", "run"]


def test_main_program_name_selects_tool(sandbox, fake):
    assert llmdocker.main([], program="ocd") == 0
    assert container_command(fake) == ["opencode"]


def test_main_tool_argument_without_symlink(sandbox, fake):
    assert llmdocker.main(["opencode", "--", "--version"], program="llmdocker.py") == 0
    assert container_command(fake) == ["opencode", "--version"]


def test_main_missing_tool_argument(sandbox, fake, capsys):
    assert llmdocker.main(["--dry-run"], program="llmdocker.py") == 2
    assert "expected the tool name claude or opencode" in capsys.readouterr().err


def test_main_help_never_touches_engine_or_disk(sandbox, fake, capsys):
    assert llmdocker.main(["-h"], program="cld") == 0
    assert fake.commands == []
    assert not sandbox.state.exists()
    out = capsys.readouterr().out
    assert out.startswith("usage: cld")
    assert "SANDBOX_ENABLED=true" in out


def test_main_version(sandbox, fake, capsys):
    assert llmdocker.main(["--version"], program="ocd") == 0
    assert capsys.readouterr().out == f"llm-docker {llmdocker.__version__}\n"


def test_main_dry_run_has_no_side_effects(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "--dry-run", "-c"]) == 0
    assert not sandbox.state.exists()
    assert [command.mode for command in fake.commands] == ["capture"]
    out = capsys.readouterr().out
    assert "settings:" in out
    assert f"root: {sandbox.project}" in out
    assert "mounts:" in out
    assert "session:\n  new" in out
    assert "engine commands:\n  (query) docker image inspect" in out
    assert "  docker run --rm -i --name llm-docker-claude-app-" in out


def test_main_dry_run_shows_build_when_image_missing(sandbox, monkeypatch, capsys):
    install_fake_engine(monkeypatch, with_images=False)
    assert llmdocker.main(["claude", "--dry-run"]) == 0
    assert "docker build --tag llm-docker-claude:latest" in capsys.readouterr().out


def test_main_builds_missing_image_then_runs(sandbox, monkeypatch, tmp_path):
    fake = install_fake_engine(monkeypatch, with_images=False)
    code = tmp_path / "code"
    (code / "docker").mkdir(parents=True)
    (code / "docker" / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setattr(llmdocker, "code_directory", lambda: str(code))
    assert llmdocker.main(["claude"]) == 0
    assert len(fake.argvs("build")) == 1
    assert fake.run_command().argv[1] == "run"
    assert "building llm-docker-claude:latest: Step 2/2" in sandbox.log_text()


def test_main_override_image_missing_is_error(sandbox, monkeypatch, capsys):
    install_fake_engine(monkeypatch, with_images=False)
    monkeypatch.setenv("LLM_DOCKER_IMAGE", "stub:1")
    assert llmdocker.main(["claude"]) == 1
    assert "image stub:1 (LLM_DOCKER_IMAGE) not found" in capsys.readouterr().err


def test_main_exit_code_passes_through(sandbox, fake):
    fake.exit_code = 42
    assert llmdocker.main(["claude"]) == 42


def test_main_creates_private_env_file(sandbox, fake, capsys):
    assert llmdocker.main(["claude"]) == 0
    env_file = sandbox.state / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "# ANTHROPIC_API_KEY=" in env_file.read_text()
    err = capsys.readouterr().err
    assert f"cld: created {env_file} (mode 0600) for your API keys\n" in err
    assert "warning: created" not in err


def test_main_env_file_notice_hidden_by_quiet(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "-q"]) == 0
    assert (sandbox.state / ".env").exists()
    assert "created" not in capsys.readouterr().err


def test_main_refuses_readable_env_file(sandbox, fake, capsys):
    sandbox.write_env("ANTHROPIC_API_KEY=x\n", mode=0o644)
    assert llmdocker.main(["claude"]) == 1
    err = capsys.readouterr().err
    assert "cld: error: " in err
    assert f"chmod 600 {sandbox.state / '.env'}" in err
    assert fake.commands == []


def test_main_settings_error_names_line(sandbox, fake, capsys):
    sandbox.write_conf("# settings\nSANDBOX_ENABLED=perhaps\n")
    assert llmdocker.main(["claude"]) == 1
    assert "llm-docker.conf:2: SANDBOX_ENABLED='perhaps' is invalid" in capsys.readouterr().err


def test_main_usage_error_exit_2(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "--nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cld: error: unknown option '--nope'")
    assert "Traceback" not in err


def test_main_guard_error_escapes_path(sandbox, fake, capsys, tmp_path):
    evil = tmp_path / "x" / "y" / "bad\x1b[31mname"
    evil.mkdir(parents=True)
    assert llmdocker.main(["claude", str(evil)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\\x1b" in err


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (["4"], "window count 4"), (["-c", "3"], "window count 3"),
        (["-t"], "-t is not available yet"), (["--tmux"], "--tmux is not available yet"),
        (["-tt", "3"], "-tt is not available yet"), (["-tr"], "-tr is not available yet"),
        (["-tc"], "-tc is not available yet"), (["-tcl"], "-tcl is not available yet"),
    ],
)  # fmt: skip
def test_main_not_available_yet(sandbox, fake, capsys, arguments, flag):
    assert llmdocker.main(["claude", *arguments]) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert "not available yet" in err
    assert fake.commands == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-tt", "5"], "-tt/--tmux-team takes 2, 3 or 4 panes"),
        (["-t", "-tc"], "mutually exclusive"),
        (["-t", "--slot", "x"], "--slot needs a whole number"),
    ],
)  # fmt: skip
def test_main_tmux_validation_before_not_available(sandbox, fake, capsys, arguments, message):
    assert llmdocker.main(["claude", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "not available yet" not in err


def test_main_tmux_rejected_for_ocd_before_not_available(sandbox, fake, capsys):
    assert llmdocker.main(["-tr"], program="ocd") == 2
    err = capsys.readouterr().err
    assert "for Claude Code only" in err
    assert "not available yet" not in err


def test_tmux_pack_missing_names_setting():
    options = llmdocker.Options("claude")
    options.tmux = "recon"
    settings = make_settings()
    with pytest.raises(llmdocker.LauncherError) as raised:
        llmdocker.check_tmux_mode(options, settings)
    assert "needs INSTALL_TMUX_RECON=true" in raised.value.message
    assert "cld --build" in raised.value.hint


def test_main_boot_file_first_message(sandbox, fake):
    (sandbox.project / "BOOT.md").write_text("Read TODO.md and start.\n")
    assert llmdocker.main(["claude"]) == 0
    assert container_command(fake) == ["claude", "Read TODO.md and start.\n"]
    assert fake.run_command().env["LLM_DOCKER_SESSION"] == "new"


def test_main_claude_file_instruction(sandbox, fake):
    (sandbox.project / "CLAUDE.md").write_text("# rules\n")
    assert llmdocker.main(["claude"]) == 0
    assert container_command(fake)[-1] == (
        "Read ./CLAUDE.md in full and follow its BOOT steps before anything else."
    )


def test_main_continue_never_injects(sandbox, fake):
    (sandbox.project / "BOOT.md").write_text("boot\n")
    session_id = write_claude_session(sandbox)
    assert llmdocker.main(["claude", "-c"]) == 0
    assert container_command(fake) == ["claude", "--continue"]
    assert fake.run_command().env["LLM_DOCKER_SESSION"] == "continue"
    assert session_id


def test_main_continue_without_session_starts_fresh(sandbox, fake, capsys):
    (sandbox.project / "BOOT.md").write_text("boot\n")
    assert llmdocker.main(["claude", "-c"]) == 0
    assert container_command(fake) == ["claude"]
    assert "no earlier session in this directory" in capsys.readouterr().err


def test_main_passthrough_resume_never_injects(sandbox, fake):
    (sandbox.project / "BOOT.md").write_text("boot\n")
    assert llmdocker.main(["claude", "--", "--resume", "abc"]) == 0
    assert container_command(fake) == ["claude", "--resume", "abc"]
    assert fake.run_command().env["LLM_DOCKER_SESSION"] == "resume"


def test_main_resume_session_id(sandbox, fake):
    session_id = write_claude_session(sandbox)
    assert llmdocker.main(["claude", "-c", session_id]) == 0
    assert container_command(fake) == ["claude", "--resume", session_id]


def test_main_resume_unknown_session_id(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "-c", "0f8c2d1e-aaaa"]) == 1
    assert "0f8c2d1e-aaaa" in capsys.readouterr().err
    assert not any(command.mode == "attach" for command in fake.commands)


def test_main_boot_file_too_large(sandbox, fake, capsys):
    (sandbox.project / "BOOT.md").write_bytes(b"x" * (llmdocker.MAX_FIRST_MESSAGE_BYTES + 1))
    assert llmdocker.main(["claude"]) == 1
    assert "BOOT.md is larger than 64 KiB" in capsys.readouterr().err


def test_main_project_directory_argument(sandbox, fake, tmp_path):
    other = sandbox.home / "Projects" / "other"
    other.mkdir()
    os.chdir(tmp_path)
    assert llmdocker.main(["claude", str(other)]) == 0
    labels = fake.run_command().argv
    assert f"llm-docker.project-path={other}" in labels


def test_main_state_directories_created(sandbox, fake):
    assert llmdocker.main(["opencode"]) == 0
    for relative in ("opencode/config", "opencode/data", "opencode/cache", "slots"):
        directory = sandbox.state / relative
        assert directory.is_dir()
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="handing directories to the agent needs root")
def test_main_state_directories_owned_by_agent_when_root(sandbox, fake):
    assert llmdocker.main(["claude"]) == 0
    assert (sandbox.state / "claude" / "config").stat().st_uid == 1000


def test_main_llm_docker_home_moves_state(sandbox, fake, monkeypatch, tmp_path):
    moved = tmp_path / "elsewhere" / "state"
    monkeypatch.setenv("LLM_DOCKER_HOME", str(moved))
    assert llmdocker.main(["claude"]) == 0
    assert (moved / ".env").exists()
    assert not sandbox.state.exists()
    assert f"type=bind,src={moved}/claude/config,dst=/home/agent/.claude" in fake.run_command().argv


def test_main_clean_then_launch(sandbox, fake):
    fake.containers = [("a1", "exited", "old")]
    assert llmdocker.main(["claude", "--clean"]) == 0
    assert fake.argvs("rm") == [["docker", "rm", "--force", "a1"]]
    assert fake.run_command().argv[1] == "run"


def test_main_build_refused_with_image_override(sandbox, fake, monkeypatch, capsys):
    monkeypatch.setenv("LLM_DOCKER_IMAGE", "stub:1")
    assert llmdocker.main(["claude", "--build"]) == 1
    assert "unset LLM_DOCKER_IMAGE" in capsys.readouterr().err


def test_main_engine_down_message(sandbox, fake, capsys, monkeypatch):
    fake.engine_down = True
    monkeypatch.setattr(llmdocker.sys, "platform", "linux")
    assert llmdocker.main(["claude"]) == 1
    err = capsys.readouterr().err
    assert "Cannot connect to the Docker daemon" in err
    assert "systemctl start docker" in err


def test_main_dry_run_clean_and_build_change_nothing(sandbox, fake, capsys):
    fake.containers = [("a1", "exited", "old")]
    assert llmdocker.main(["claude", "--dry-run", "--clean", "--rebuild-force"]) == 0
    assert not sandbox.state.exists()
    assert fake.argvs("rm") == []
    assert fake.argvs("build") == []
    out = capsys.readouterr().out
    assert "docker rm --force a1" in out
    assert "docker image rm llm-docker-claude:latest" in out
    assert "docker build --tag llm-docker-claude:latest" in out


def test_main_window_count_one_is_single_launch(sandbox, fake):
    assert llmdocker.main(["claude", "1"]) == 0
    assert container_command(fake) == ["claude"]


def test_main_api_invalid_value_before_not_available(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "4", "--api", "maybe"]) == 2
    err = capsys.readouterr().err
    assert "--api takes true or false, got 'maybe'" in err
    assert "not available yet" not in err
    assert fake.commands == []


def test_main_llm_docker_home_root_refused(sandbox, fake, monkeypatch, capsys):
    monkeypatch.setenv("LLM_DOCKER_HOME", "/")
    assert llmdocker.main(["claude"]) == 1
    err = capsys.readouterr().err
    assert "refusing LLM_DOCKER_HOME='/'" in err
    assert "project" not in err
    assert fake.commands == []


@pytest.mark.parametrize("value", ["/usr/share/x", "/home", "~"])
def test_main_llm_docker_home_system_or_home_refused(sandbox, fake, monkeypatch, capsys, value):
    monkeypatch.setenv("LLM_DOCKER_HOME", value)
    assert llmdocker.main(["claude", "--dry-run"]) == 1
    assert "LLM_DOCKER_HOME" in capsys.readouterr().err


def test_main_dry_run_shows_llm_docker_home_source(sandbox, fake, monkeypatch, tmp_path, capsys):
    moved = tmp_path / "elsewhere" / "state"
    monkeypatch.setenv("LLM_DOCKER_HOME", str(moved))
    assert llmdocker.main(["claude", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"LLM_DOCKER_HOME={moved}  (environment variable LLM_DOCKER_HOME)" in out


def test_main_dry_run_shows_default_llm_docker_home(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "--dry-run"]) == 0
    assert f"LLM_DOCKER_HOME={sandbox.home}/.llm-docker  (default)" in capsys.readouterr().out


def test_main_podman_missing_hint_does_not_repeat_setting(sandbox, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LLM_DOCKER_ENGINE", "podman")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert llmdocker.main(["claude"]) == 1
    err = capsys.readouterr().err
    assert "podman not found on PATH" in err
    assert "set LLM_DOCKER_ENGINE=podman" not in err
    assert "install Podman" in err


def test_main_docker_missing_hint_mentions_podman(sandbox, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert llmdocker.main(["claude"]) == 1
    err = capsys.readouterr().err
    assert "docker not found on PATH" in err
    assert "set LLM_DOCKER_ENGINE=podman" in err


def test_main_passthrough_gets_no_boot_message(sandbox, fake):
    (sandbox.project / "BOOT.md").write_text("Boot steps.\n")
    assert llmdocker.main(["claude", "--", "--version"]) == 0
    assert container_command(fake) == ["claude", "--version"]
    assert fake.run_command().env["LLM_DOCKER_SESSION"] == "new"


def test_main_quiet_passes_quiet_to_container(sandbox, fake):
    assert llmdocker.main(["claude", "-q"]) == 0
    assert fake.run_command().env["LLM_DOCKER_QUIET"] == "true"


def test_main_sandbox_off_message_is_exact(sandbox, fake, monkeypatch, capsys):
    monkeypatch.setenv("SANDBOX_ENABLED", "false")
    assert llmdocker.main(["claude"]) == 0
    err = capsys.readouterr().err
    assert "the agent keeps the SYS_PTRACE capability" in err
    assert "still runs with no-new-privileges" in err
    assert "without no-new-privileges" not in err


root_only = pytest.mark.skipif(os.getuid() != 0, reason="the agent identity of root launches")


@root_only
def test_main_root_agent_takes_project_owner(sandbox, fake, capsys):
    os.chown(sandbox.project, 1001, 1002)
    assert llmdocker.main(["claude"]) == 0
    env = fake.run_command().env
    assert env["LLM_DOCKER_UID"] == "1001"
    assert env["LLM_DOCKER_GID"] == "1002"
    assert (sandbox.state / "claude" / "config").stat().st_uid == 1001
    assert "cannot write the project root" not in capsys.readouterr().err


@root_only
def test_main_root_owned_project_warns_with_fix(sandbox, fake, capsys):
    os.chmod(sandbox.project, 0o755)  # noqa: S103 - root-owned, as the test runs as root
    assert llmdocker.main(["claude"]) == 0
    assert fake.run_command().env["LLM_DOCKER_UID"] == "1000"
    err = capsys.readouterr().err
    assert err.count("cannot write the project root") == 1
    assert f"chown -R 1000:1000 {sandbox.project}" in err
