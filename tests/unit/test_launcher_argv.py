"""The docker run argv and the container environment, built by pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmdocker
from llmdocker import SessionDecision, StatePaths
from tests.unit.test_launcher_fakes import make_settings


@pytest.fixture
def project(tmp_path: Path) -> llmdocker.Project:
    root = tmp_path / "home" / "Projects" / "app"
    root.mkdir(parents=True)
    return llmdocker.Project(
        str(root), str(root), "app", "1234abcd", "/home/agent/Projects/app-1234abcd",
        [llmdocker.Mount(str(root), "/home/agent/Projects/app-1234abcd", False)],
    )  # fmt: skip


def context(environ=None, uid=1000, gid=1000, size=None, engine="docker"):
    return llmdocker.LaunchContext(environ or {}, "/nonexistent-home", engine, uid, gid, size, "u1")


def plan_for(project, tool="claude", options=None, decision=None, environ=None, size=None,
             engine="docker", uid=1000, **raw):  # fmt: skip
    options = options or llmdocker.Options(tool)
    decision = decision or SessionDecision("new", None, None, None)
    state = StatePaths("/nonexistent-state")
    return llmdocker.build_run_plan(
        options, make_settings(**raw), project, decision, state, "img:tag",
        context(environ, uid=uid, size=size, engine=engine),
    )  # fmt: skip


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, argument in enumerate(argv) if argument == option]


def test_argv_hardened_defaults(project):
    argv = plan_for(project).argv
    assert argv[:4] == ["docker", "run", "--rm", "-i"]
    assert "-t" not in argv
    assert option_values(argv, "--cap-drop") == ["ALL"]
    assert option_values(argv, "--cap-add") == list(llmdocker.SETUP_CAPABILITIES)
    assert option_values(argv, "--security-opt") == ["no-new-privileges=true"]
    assert option_values(argv, "--pids-limit") == ["4096"]
    assert option_values(argv, "--network") == ["bridge"]
    assert option_values(argv, "--hostname") == ["llm-docker"]
    assert option_values(argv, "--add-host") == ["host.docker.internal:host-gateway"]
    assert "--init" in argv
    assert "-p" not in argv
    assert "--privileged" not in argv
    assert not any("docker.sock" in argument for argument in argv)


def test_argv_terminal_adds_tty_and_size(project):
    plan = plan_for(project, size=(120, 40))
    assert "-t" in plan.argv
    assert plan.environment["COLUMNS"] == "120"
    assert plan.environment["LINES"] == "40"


def test_argv_image_then_command_last(project):
    argv = plan_for(project).argv
    assert argv[-2:] == ["img:tag", "claude"]


def test_argv_labels(project):
    argv = plan_for(project).argv
    labels = option_values(argv, "--label")
    assert "com.docker.compose.project=llm-docker" in labels
    assert "llm-docker.tool=claude" in labels
    assert "llm-docker.project=app" in labels
    assert "llm-docker.slot=none" in labels
    assert "llm-docker.host-uid=1000" in labels


def test_argv_name_unique_and_valid(project):
    name = plan_for(project).name
    assert name == "llm-docker-claude-app-1234abcd-u1"
    assert all(char in llmdocker.CONTAINER_NAME_CHARS for char in name)


def test_argv_container_name_slug_of_odd_project():
    odd = llmdocker.Project("/a", "/a", 'é ,x"y', "00ff00ff", "/c", [])
    name = llmdocker.container_name("opencode", odd, "9")
    assert all(char in llmdocker.CONTAINER_NAME_CHARS for char in name)


def test_argv_limits(project):
    argv = plan_for(project, CPU_LIMIT="1.5", MEMORY_LIMIT="4g", PIDS_LIMIT="256").argv
    assert option_values(argv, "--cpus") == ["1.5"]
    assert option_values(argv, "--memory") == ["4g"]
    assert option_values(argv, "--pids-limit") == ["256"]


def test_argv_no_internet_adds_net_admin(project):
    plan = plan_for(project, INTERNET_ACCESS="false")
    assert "NET_ADMIN" in option_values(plan.argv, "--cap-add")
    assert plan.environment["INTERNET_ACCESS"] == "false"


def test_argv_sandbox_off(project):
    argv = plan_for(project, SANDBOX_ENABLED="false").argv
    assert option_values(argv, "--cap-drop") == ["ALL"]
    assert option_values(argv, "--cap-add") == [*llmdocker.SETUP_CAPABILITIES, "SYS_PTRACE"]
    assert option_values(argv, "--security-opt") == ["no-new-privileges=true"]


def test_argv_sandbox_off_with_ssh_keeps_chroot(project):
    argv = plan_for(project, SANDBOX_ENABLED="false", LLM_DOCKER_SSH_ENABLED="true").argv
    assert "SYS_CHROOT" in option_values(argv, "--cap-add")
    assert "SYS_PTRACE" in option_values(argv, "--cap-add")


def test_argv_setup_capabilities_let_tini_signal():
    # tini runs as root without the agent's uid and needs CAP_KILL to forward signals.
    assert "KILL" in llmdocker.SETUP_CAPABILITIES


def test_argv_ssh_port_on_loopback(project):
    plan = plan_for(project, LLM_DOCKER_SSH_ENABLED="true", LLM_DOCKER_SSH_HOST_PORT="9000",
                    LLM_DOCKER_SSH_PORT="2222")  # fmt: skip
    assert option_values(plan.argv, "-p") == ["127.0.0.1:9000:2222"]
    assert "SYS_CHROOT" in option_values(plan.argv, "--cap-add")
    assert plan.environment["LLM_DOCKER_SSH_ENABLED"] == "true"
    assert plan.environment["LLM_DOCKER_SSH_PORT"] == "2222"
    targets = [mount.target for mount in plan.mounts]
    assert "/etc/ssh/llm-docker" in targets


def test_argv_ssh_port_offset_by_slot(project):
    settings = make_settings(LLM_DOCKER_SSH_ENABLED="true")
    ports = llmdocker.port_arguments(llmdocker.Options("claude"), settings, slot=3)
    assert ports == ["-p", "127.0.0.1:8886:22"]


def test_argv_ssh_port_overflow(project):
    settings = make_settings(LLM_DOCKER_SSH_ENABLED="true", LLM_DOCKER_SSH_HOST_PORT="65535")
    with pytest.raises(llmdocker.SettingsError, match="above 65535"):
        llmdocker.port_arguments(llmdocker.Options("claude"), settings, slot=2)


def test_argv_codeman_publishes_3000_on_loopback(project):
    options = llmdocker.Options("opencode")
    options.tmux = "codeman"
    plan = plan_for(project, tool="opencode", options=options)
    assert option_values(plan.argv, "-p") == ["127.0.0.1:3000:3000"]
    assert plan.environment["LLM_DOCKER_TMUX"] == "codeman"


def test_argv_environment_passed_by_name_only(project):
    environ = {"TERM": "xterm-256color", "SECRET_SAUCE": "s3cr3t", "ANTHROPIC_API_KEY": "host"}
    plan = plan_for(project, environ=environ, PASS_ENV="SECRET_SAUCE")
    names = option_values(plan.argv, "-e")
    assert names == list(plan.environment)
    assert all("=" not in name for name in names)
    assert plan.environment["SECRET_SAUCE"] == "s3cr3t"
    assert plan.environment["TERM"] == "xterm-256color"
    assert not any("s3cr3t" in argument for argument in plan.argv)


def test_argv_host_variable_outside_allowlist_not_passed(project):
    plan = plan_for(project, environ={"AWS_SECRET_ACCESS_KEY": "x", "PATH": "/bin"})
    assert "AWS_SECRET_ACCESS_KEY" not in plan.environment
    assert "PATH" not in plan.environment


def test_argv_env_file_keys_passed_and_secret(project):
    settings = make_settings(ANTHROPIC_API_KEY="sk-ant-1")
    settings.env_file_values = {"ANTHROPIC_API_KEY": "sk-ant-1", "GH_TOKEN": "ghp"}
    values, secrets = llmdocker.container_environment(
        llmdocker.Options("claude"), settings, llmdocker.Project("/a", "/a", "a", "1", "/c", []),
        SessionDecision("new", None, None, None), llmdocker.Identity(1, 1), {}, None,
    )  # fmt: skip
    assert values["GH_TOKEN"] == "ghp"
    assert values["ANTHROPIC_API_KEY"] == "sk-ant-1"
    assert secrets >= {"GH_TOKEN", "ANTHROPIC_API_KEY"}


@pytest.mark.parametrize("name", ["PATH", "LLM_DOCKER_UID", "OPENCODE_PERMISSION", "HOME"])
def test_argv_pass_env_reserved_rejected(project, name):
    with pytest.raises(llmdocker.SettingsError, match="PASS_ENV"):
        plan_for(project, PASS_ENV=name)


def test_argv_claude_environment(project):
    env = plan_for(project).environment
    assert env["CLAUDE_CONFIG_DIR"] == "/home/agent/.claude"
    assert env["IS_SANDBOX"] == "1"
    assert env["LLM_DOCKER_TOOL"] == "claude"
    assert env["LLM_DOCKER_WORKDIR"] == project.container_path
    assert env["LLM_DOCKER_UID"] == "1000"
    assert env["BUILDER_API_URL"] == "http://host.docker.internal:6666"


def test_argv_quiet_tells_entrypoint(project):
    quiet = llmdocker.Options("claude")
    quiet.verbosity = -1
    assert plan_for(project, options=quiet).environment["LLM_DOCKER_QUIET"] == "true"
    assert "LLM_DOCKER_QUIET" not in plan_for(project).environment


def test_argv_pass_env_unset_name_skipped_with_notice(project, capsys, monkeypatch):
    monkeypatch.setattr(llmdocker, "log", llmdocker.LaunchLog("cld", llmdocker.LaunchLog.INFO))
    plan = plan_for(project, environ={}, PASS_ENV="NOT_SET_ANYWHERE")
    assert "NOT_SET_ANYWHERE" not in plan.environment
    err = capsys.readouterr().err
    assert "PASS_ENV lists NOT_SET_ANYWHERE, which is not set in the environment" in err
    assert err.count("\n") == 1


def test_argv_opencode_has_no_claude_environment(project):
    env = plan_for(project, tool="opencode").environment
    assert "CLAUDE_CONFIG_DIR" not in env
    assert "OPENCODE_PERMISSION" not in env


def test_argv_workdir(project):
    argv = plan_for(project).argv
    assert option_values(argv, "--workdir") == [project.container_path]


def test_argv_podman_security_opt(project):
    argv = plan_for(project, engine="podman").argv
    assert argv[0] == "podman"
    assert option_values(argv, "--security-opt") == ["no-new-privileges"]


def test_identity_root_maps_to_1000():
    identity = llmdocker.agent_identity(make_settings(), 0, 0)
    assert identity.uid == 1000
    assert identity.gid == 1000


def test_identity_user_kept():
    identity = llmdocker.agent_identity(make_settings(), 501, 20)
    assert identity.uid == 501
    assert identity.gid == 20


def test_identity_root_takes_project_owner():
    identity = llmdocker.agent_identity(make_settings(), 0, 0, (1001, 1002))
    assert identity.uid == 1001
    assert identity.gid == 1002


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ((0, 0), (1000, 1000)), ((0, 1002), (1000, 1000)), ((1001, 0), (1001, 1000)),
        (None, (1000, 1000)),
    ],
)  # fmt: skip
def test_identity_root_owned_project_falls_back(owner, expected):
    identity = llmdocker.agent_identity(make_settings(), 0, 0, owner)
    assert (identity.uid, identity.gid) == expected


def test_identity_user_ignores_project_owner():
    identity = llmdocker.agent_identity(make_settings(), 501, 20, (1001, 1002))
    assert identity.uid == 501
    assert identity.gid == 20


def test_identity_settings_override_project_owner():
    identity = llmdocker.agent_identity(
        make_settings(AGENT_UID="4321", AGENT_GID="99"), 0, 0, (1001, 1002)
    )
    assert identity.uid == 4321
    assert identity.gid == 99


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "writable"),
    [
        (1001, 5, 0o755, True), (1001, 5, 0o555, False), (1001, 5, 0o655, False),
        (7, 1002, 0o775, True), (7, 1002, 0o755, False),
        (7, 5, 0o777, True), (7, 5, 0o775, False), (7, 5, 0o772, False),
    ],
)  # fmt: skip
def test_can_write_directory_by_class(uid, gid, mode, writable):
    identity = llmdocker.Identity(uid, gid)
    assert llmdocker.can_write_directory(identity, (1001, 1002), mode) is writable


def test_project_write_warning_gives_fix(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    root.chmod(0o755)
    owner = root.stat()
    identity = llmdocker.Identity(owner.st_uid + 1, owner.st_gid + 1)
    warning = llmdocker.project_write_warning(identity, str(root), "/state/llm-docker.conf")
    assert warning is not None
    assert f"chown -R {identity.uid}:{identity.gid} {root}" in warning
    assert "cannot write the project root" in warning
    if owner.st_uid != 0:
        assert f"AGENT_UID={owner.st_uid} and AGENT_GID={owner.st_gid}" in warning
    else:
        assert "AGENT_UID" not in warning  # the agent can never be root


def test_project_write_warning_none_when_writable(tmp_path):
    owner = tmp_path.stat()
    identity = llmdocker.Identity(owner.st_uid, owner.st_gid)
    tmp_path.chmod(0o755)
    assert llmdocker.project_write_warning(identity, str(tmp_path), "/c") is None


def test_identity_settings_override():
    identity = llmdocker.agent_identity(make_settings(AGENT_UID="4321", AGENT_GID="99"), 0, 0)
    assert identity.uid == 4321
    assert identity.gid == 99


@pytest.mark.parametrize(
    ("tool", "decision", "passthrough", "expected"),
    [
        ("claude", SessionDecision("new", None, None, None), [], ["claude"]),
        ("claude", SessionDecision("continue", None, None, None), [], ["claude", "--continue"]),
        ("claude", SessionDecision("resume", "abc", None, None), ["-x"],
         ["claude", "--resume", "abc", "-x"]),
        ("opencode", SessionDecision("resume", "ses_1", None, None), [],
         ["opencode", "--session", "ses_1"]),
        ("opencode", SessionDecision("continue", None, None, None), [], ["opencode", "--continue"]),
        ("claude", SessionDecision("new", None, None, "hi"), ["--model", "x"],
         ["claude", "--model", "x", "hi"]),
        ("opencode", SessionDecision("new", None, None, "hi"), [], ["opencode", "--prompt", "hi"]),
    ],
)  # fmt: skip
def test_tool_command(tool, decision, passthrough, expected):
    assert llmdocker.tool_command(tool, decision, make_settings(), passthrough) == expected


def test_tool_command_bypass_permissions():
    settings = make_settings(CLAUDE_BYPASS_PERMISSIONS="true")
    decision = SessionDecision("new", None, None, None)
    assert llmdocker.tool_command("claude", decision, settings, []) == [
        "claude", "--dangerously-skip-permissions",
    ]  # fmt: skip
    assert llmdocker.tool_command("opencode", decision, settings, []) == ["opencode"]


@pytest.mark.parametrize(
    ("raw", "options", "match"),
    [
        ({"INTERNET_ACCESS": "false"}, {}, "INTERNET_ACCESS=false"),
        ({"LLM_DOCKER_SSH_ENABLED": "true"}, {}, "LLM_DOCKER_SSH_ENABLED=true"),
        ({}, {"tmux": "codeman"}, "-tc"),
    ],
)
def test_network_host_conflicts(raw, options, match):
    settings = make_settings(NETWORK_MODE="host", **raw)
    parsed = llmdocker.Options("claude")
    for key, value in options.items():
        setattr(parsed, key, value)
    with pytest.raises(llmdocker.SettingsError, match=match):
        llmdocker.check_network_settings(parsed, settings)


def test_network_host_allowed_alone(project):
    llmdocker.check_network_settings(
        llmdocker.Options("claude"), make_settings(NETWORK_MODE="host")
    )
    argv = plan_for(project, NETWORK_MODE="host").argv
    assert option_values(argv, "--network") == ["host"]
