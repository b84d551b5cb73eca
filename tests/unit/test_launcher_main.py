"""main(): the whole launch with a fake engine at the seam."""

from __future__ import annotations

import os
import stat

import pytest

import llmdocker
from tests.unit.test_launcher_fakes import install_fake_engine, make_sandbox


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
    assert llmdocker.main(["opencode", "-c"], program="llmdocker.py") == 0
    assert container_command(fake) == ["opencode", "--continue"]


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
    assert "session:\n  continue" in out
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
    assert "created" in capsys.readouterr().err


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
    [(["4"], "window count 4"), (["--slot", "2"], "--slot"), (["-a"], "-a/--api"),
     (["-c", "3"], "window count 3")],
)  # fmt: skip
def test_main_not_available_yet(sandbox, fake, capsys, arguments, flag):
    assert llmdocker.main(["claude", *arguments]) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert "not available yet" in err
    assert fake.commands == []


def test_main_tmux_passed_to_container(sandbox, fake):
    assert llmdocker.main(["claude", "-tt", "3"]) == 0
    assert fake.run_command().env["LLM_DOCKER_TMUX"] == "team:3"


def test_main_tmux_pack_missing(sandbox, fake, capsys):
    assert llmdocker.main(["claude", "-tr"]) == 1
    err = capsys.readouterr().err
    assert "needs INSTALL_TMUX_RECON=true" in err
    assert "cld --build" in err


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
    assert llmdocker.main(["claude", "-c"]) == 0
    assert container_command(fake) == ["claude", "--continue"]


def test_main_passthrough_resume_never_injects(sandbox, fake):
    (sandbox.project / "BOOT.md").write_text("boot\n")
    assert llmdocker.main(["claude", "--", "--resume", "abc"]) == 0
    assert container_command(fake) == ["claude", "--resume", "abc"]
    assert fake.run_command().env["LLM_DOCKER_SESSION"] == "resume"


def test_main_resume_session_id(sandbox, fake):
    assert llmdocker.main(["claude", "-c", "0f8c2d1e-aaaa"]) == 0
    assert container_command(fake) == ["claude", "--resume", "0f8c2d1e-aaaa"]


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
