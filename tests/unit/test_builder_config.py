"""Config schema: defaults, clear errors (file, key, reason), path scoping; Hypothesis over it."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder_api import launch_args
from builder_api.config import (
    Config,
    ConfigError,
    build_config,
    check_startable,
    is_loopback,
    load_config,
    parse_text,
)


def test_config_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(str(tmp_path))
    assert config.server.bind == "127.0.0.1"
    assert config.server.port == 6666
    assert config.build.max_pending == 32
    assert config.security.request_timeout_s == 30
    assert config.security.auth_failures_per_minute == 10
    assert config.security.lockout_s == 300
    assert set(config.logs) == {"build", "run"}
    assert config.events_file.startswith(str(tmp_path.resolve()))


def test_config_reads_toml(tmp_path: Path) -> None:
    (tmp_path / ".builder-api.toml").write_text(
        '[server]\nport = 7000\n[build]\ncommand = ["make"]\nallowed_args = ["test"]\n'
        '[logs]\napp = "app.log"\n'
    )
    config = load_config(str(tmp_path))
    assert config.server.port == 7000
    assert config.build.command == ("make",)
    assert config.logs["app"] == str(tmp_path.resolve() / "app.log")


def test_config_reads_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    (tmp_path / ".builder-api.yml").write_text("build:\n  command: [make]\n  max_pending: 3\n")
    assert load_config(str(tmp_path)).build.max_pending == 3


def test_config_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / ".builder-api.json").write_text(json.dumps({"build": {"comand": ["make"]}}))
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.key == "build.comand"
    assert info.value.file.endswith(".builder-api.json")


def test_config_string_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a string"):
        build_config(str(tmp_path), "f.json", {"build": {"command": "make -j4"}})


def test_config_bad_type_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected an integer"):
        build_config(str(tmp_path), "f.json", {"server": {"port": "80"}})


def test_config_log_outside_root_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the project root"):
        build_config(str(tmp_path), "f.json", {"logs": {"etc": "/etc/passwd"}})


def test_config_log_symlink_outside_root_refuses(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(ConfigError, match=r"logs\.x"):
        build_config(str(tmp_path), "f.json", {"logs": {"x": "link/passwd"}})


def test_config_dotdot_escape_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"events\.file"):
        build_config(str(tmp_path), "f.json", {"events": {"file": "../events.jsonl"}})


def test_config_bad_alias_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="alias"):
        build_config(str(tmp_path), "f.json", {"logs": {"a b": "x.log"}})


def test_config_invalid_json_names_file(tmp_path: Path) -> None:
    (tmp_path / ".builder-api.json").write_text("{nope")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(str(tmp_path))


def test_config_non_loopback_needs_password(tmp_path: Path) -> None:
    config = load_config(str(tmp_path)).with_overrides(bind="0.0.0.0")
    with pytest.raises(ConfigError, match="requires a password"):
        check_startable(config, None)


def test_config_non_loopback_with_password_starts(tmp_path: Path) -> None:
    config = load_config(str(tmp_path)).with_overrides(bind="0.0.0.0")
    check_startable(config, "secret")


@pytest.mark.parametrize(
    "bind, expected",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("172.17.0.1", False),
    ],
)
def test_config_is_loopback(bind: str, expected: bool) -> None:
    assert is_loopback(bind) is expected


def test_config_bad_port_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(str(tmp_path)).with_overrides(port=70000)


def test_config_plugin_must_be_python(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plugin"):
        build_config(str(tmp_path), "f.json", {"plugin": "plugin.sh"})


def test_launch_args_runs_the_package_directory(tmp_path: Path) -> None:
    argv = launch_args(str(tmp_path))
    assert argv[0] == sys.executable
    assert os.path.basename(argv[1]) == "builder_api"
    assert argv[2:] == ["--project", str(tmp_path)]


# -- Hypothesis: any input parses into a Config or raises ConfigError, nothing else ------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "server",
        "build",
        "run",
        "logs",
        "events",
        "security",
        "websocket",
        "plugin",
        "bind",
        "port",
        "command",
        "allowed_args",
        "max_pending",
        "timeout_s",
        "file",
        "x",
    ]
)
config_data = st.dictionaries(
    keys, st.dictionaries(keys, json_values, max_size=4) | json_values, max_size=5
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=config_data)
@example(data={"server": {"port": True}})
@example(data={"logs": {"x": "\x00"}})
@example(data={"build": {"command": []}})
def test_config_any_data_parses_or_raises_config_error(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    try:
        result = build_config(str(tmp_path.resolve()), "f.json", data)
    except ConfigError as exc:
        assert exc.file == "f.json"
    else:
        assert isinstance(result, Config)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200), ext=st.sampled_from([".json", ".toml", ".yml"]))
@example(text="[[", ext=".toml")
@example(text="- a", ext=".yml")
def test_config_any_text_parses_or_raises_config_error(text: str, ext: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_text("f" + ext, text)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["no-such-binary-here"], "'no-such-binary-here' is not found on PATH"),
        (["./missing.sh"], "'./missing.sh' does not exist"),
        (["./plain.txt"], "'./plain.txt' is not executable"),
        (["sh", "-c", "true"], None),
    ],
)
def test_build_program_problem_cases(
    tmp_path: Path, command: list[str], expected: str | None
) -> None:
    from builder_api.daemon import build_program_problem
    from tests.unit.test_builder_support import make_config

    (tmp_path / "plain.txt").write_text("not a program\n")
    problem = build_program_problem(make_config(tmp_path, {"build": {"command": command}}))
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ({"build": {"allowed_args": ["ok", ""]}}, "build.allowed_args[1]", "empty string"),
        ({"logs": {"build": "logs/app.log"}}, "logs.build", "built in"),
        ({"logs": {"run": "logs/app.log"}}, "logs.run", "built in"),
    ],
)
def test_config_rejects_silent_mistakes(
    tmp_path: Path, extra: dict[str, Any], key: str, reason: str
) -> None:
    from tests.unit.test_builder_support import make_config

    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, extra)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_config_allowed_args_need_command(tmp_path: Path) -> None:
    (tmp_path / ".builder-api.json").write_text(json.dumps({"build": {"allowed_args": ["x"]}}))
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))
    assert caught.value.key == "build.allowed_args"
    assert "add build.command" in caught.value.reason


def test_project_lock_refuses_second_daemon(tmp_path: Path) -> None:
    from builder_api.daemon import AlreadyServed, lock_project

    config = load_config(str(tmp_path))
    first = lock_project(config)
    try:
        with pytest.raises(AlreadyServed) as caught:
            lock_project(config)
    finally:
        os.close(first)
    assert caught.value.pid == os.getpid()
    os.close(lock_project(config))  # free again once the first holder closed it


def test_daemon_without_config_says_defaults(tmp_path: Path) -> None:
    import signal
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder_api", "--project", str(tmp_path), "--port", "0"],
        env=dict(os.environ, PYTHONPATH=str(repo)),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "serving" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    defaults = [line for line in lines if "runs with defaults" in line]
    assert len(defaults) == 1
    assert ".builder-api.toml, .builder-api.json" in defaults[0]


def _daemon_main(argv: list[str]) -> int:
    from builder_api.daemon import main

    return main(argv)


def test_daemon_missing_plugin_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".builder-api.json").write_text(json.dumps({"plugin": "gone.py"}))
    assert _daemon_main(["--project", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "plugin: the plugin file" in err
    assert "gone.py does not exist" in err


def test_daemon_config_extension_unsupported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.ini").write_text("[build]\n")
    code = _daemon_main(["--project", str(tmp_path), "--config", str(tmp_path / "a.ini")])
    assert code == 2
    assert "extension is not supported (supported: .toml, .json, .yml, .yaml)" in (
        capsys.readouterr().err
    )


def test_daemon_project_not_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "plain"
    file.write_text("")
    assert _daemon_main(["--project", str(file)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_daemon_bind_error_names_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _daemon_main(["--project", str(tmp_path), "--bind", "nowhere"]) == 2
    assert "command line: --bind: 'nowhere' is not an IP address" in capsys.readouterr().err


def test_bind_failure_names_missing_address(tmp_path: Path) -> None:
    import errno
    import socket

    from builder_api.daemon import bind_failure

    config = load_config(str(tmp_path)).with_overrides("192.0.2.1", 6666)
    with socket.socket() as probe, pytest.raises(OSError) as caught:
        probe.bind(("192.0.2.1", 0))  # TEST-NET-1: no host has it; bind sends nothing
    assert caught.value.errno == errno.EADDRNOTAVAIL
    message = bind_failure(config, caught.value)
    assert "this host has no address 192.0.2.1" in message
    assert "port" not in message.split(":", 2)[2]
