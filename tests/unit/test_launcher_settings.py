"""Settings: the KEY=VALUE parser, typed values, load order and the .env file."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import llmdocker
from llmdocker import SettingsError, load_settings, parse_settings_text

HOME = "/home/user"


def parse_one(line: str) -> tuple[str, str]:
    (assignment,) = parse_settings_text(line, "test.conf")
    return assignment.key, assignment.value


def load(tmp_path, conf="", env="", environ=None):
    conf_path = tmp_path / "llm-docker.conf"
    env_path = tmp_path / ".env"
    conf_path.write_text(conf, encoding="utf-8")
    env_path.write_text(env, encoding="utf-8")
    return load_settings(environ or {}, str(conf_path), str(env_path), HOME)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("KEY=value", ("KEY", "value")),
        ("export KEY=value", ("KEY", "value")),
        ("KEY = value", ("KEY", "value")),
        ("KEY=", ("KEY", "")),
        ("KEY='a b # c'", ("KEY", "a b # c")),
        ('KEY="a \\"b\\" \\\\ \\$x \\n"', ("KEY", 'a "b" \\ $x \\n')),
        ("KEY=value # comment", ("KEY", "value")),
        ("KEY=a#b", ("KEY", "a#b")),
        ("KEY='quoted' # comment", ("KEY", "quoted")),
        ("KEY=$(rm -rf ~)x", None),
        ("KEY=é", ("KEY", "é")),
    ],
)
def test_settings_line_forms(line, expected):
    if expected is None:
        with pytest.raises(SettingsError):
            parse_one(line)
        return
    assert parse_one(line) == expected


def test_settings_comments_and_blank_lines_skipped():
    text = "\ufeff# comment\n\n   \n  # indented comment\nA=1\r\nB=2\n"
    assignments = parse_settings_text(text, "f")
    assert [(a.key, a.value, a.line) for a in assignments] == [("A", "1", 5), ("B", "2", 6)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("JUSTTEXT", "expected KEY=VALUE"),
        ("1KEY=x", "not a valid setting name"),
        ("KEY-NAME=x", "not a valid setting name"),
        ("KEY='open", "unterminated single quote"),
        ('KEY="open', "unterminated double quote"),
        ("KEY=a b", "contains whitespace"),
        ("KEY=ab'c", "contains a quote"),
        ("KEY='a' b", "after the closing quote"),
    ],
)
def test_settings_malformed_line_names_file_and_line(line, reason):
    with pytest.raises(SettingsError, match=reason) as caught:
        parse_settings_text("A=1\n" + line + "\n", "/x/llm-docker.conf")
    assert caught.value.message.startswith("/x/llm-docker.conf:2:")


def test_settings_defaults(tmp_path):
    settings = load(tmp_path)
    assert settings.flag("SANDBOX_ENABLED") is True
    assert settings.text("NETWORK_MODE") == "bridge"
    assert settings.text("DOCKER_DIR") == "/home/agent/Projects"
    assert settings.flag("LLM_DOCKER_SSH_ENABLED") is False
    assert settings.number("LOG_MAX_KILOBYTES") == 1024
    assert settings.optional_number("AGENT_UID") is None
    assert settings.names("PASS_ENV") == []


def test_settings_load_order(tmp_path):
    settings = load(
        tmp_path,
        conf="PIDS_LIMIT=100\nCPU_LIMIT=1\nMEMORY_LIMIT=1g\n",
        env="CPU_LIMIT=2\nMEMORY_LIMIT=2g\n",
        environ={"MEMORY_LIMIT": "3g", "UNRELATED": "x"},
    )
    assert settings.number("PIDS_LIMIT") == 100
    assert settings.text("CPU_LIMIT") == "2"
    assert settings.text("MEMORY_LIMIT") == "3g"
    assert settings.sources["MEMORY_LIMIT"] == "environment variable MEMORY_LIMIT"
    assert settings.sources["PIDS_LIMIT"].endswith("llm-docker.conf:1")


def test_settings_unknown_key_suggests(tmp_path):
    with pytest.raises(SettingsError, match="did you mean SANDBOX_ENABLED") as caught:
        load(tmp_path, conf="PIDS_LIMIT=64\nSANDBOX_ENABLE=true\n")
    assert "llm-docker.conf:2" in caught.value.message


def test_settings_secret_in_conf_rejected(tmp_path):
    with pytest.raises(SettingsError, match="is a secret"):
        load(tmp_path, conf="ANTHROPIC_API_KEY=sk-123\n")


def test_settings_home_only_from_environment(tmp_path):
    with pytest.raises(SettingsError, match="environment only"):
        load(tmp_path, conf="LLM_DOCKER_HOME=/x/y/z\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SANDBOX_ENABLED=maybe", "true or false"),
        ("LLM_DOCKER_SSH_HOST_PORT=0", "1 to 65535"),
        ("LLM_DOCKER_SSH_HOST_PORT=70000", "1 to 65535"),
        ("BUILDER_API_PORT=http", "a whole number"),
        ("LOG_MAX_KILOBYTES=-1", "a whole number"),
        ("MEMORY_LIMIT=4x", "a size"),
        ("MEMORY_LIMIT=0", "a size"),
        ("CPU_LIMIT=0", "a positive number"),
        ("CPU_LIMIT=1.", "a positive number"),
        ("AGENT_UID=0", "from 1"),
        ("NETWORK_MODE=none", "bridge or host"),
        ("LLM_DOCKER_ENGINE=nerdctl", "docker or podman"),
        ("PASS_ENV=GOOD,bad-name", "environment variable names"),
        ("WORKSPACE_DIR=relative/dir", "an absolute path"),
        ("LLM_DOCKER_IMAGE='bad image'", "an image reference"),
        ("BUILDER_API_HOST=a/b", "a host name"),
    ],
)
def test_settings_wrong_type_reported_with_line(tmp_path, line, expected):
    with pytest.raises(SettingsError, match=expected) as caught:
        load(tmp_path, conf="# first\n" + line + "\n")
    assert "llm-docker.conf:2" in caught.value.message


@pytest.mark.parametrize("name", ["AGENT_UID", "AGENT_GID"])
def test_settings_agent_uid_zero_hint(tmp_path, name):
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, conf=f"{name}=0\n")
    assert "never be root" in caught.value.hint
    assert f"set {name} to the owner of your project files" in caught.value.hint
    assert "or leave it empty" in caught.value.hint


@pytest.mark.parametrize("key", sorted(llmdocker.KNOWN_CLIENT_VARIABLES))
def test_settings_env_known_client_variable_no_warning(tmp_path, capsys, monkeypatch, key):
    monkeypatch.setattr(llmdocker, "log", llmdocker.LaunchLog("cld"))
    settings = load(tmp_path, env=f"{key}=value\n")
    assert settings.env_file_values == {key: "value"}
    assert capsys.readouterr().err == ""


def test_settings_env_near_miss_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(llmdocker, "log", llmdocker.LaunchLog("cld"))  # no file logger attached
    settings = load(tmp_path, env="ANTROPIC_API_KEY=sk\n")
    assert settings.env_file_values == {"ANTROPIC_API_KEY": "sk"}
    err = capsys.readouterr().err
    assert "did you mean ANTHROPIC_API_KEY?" in err
    assert err.count("\n") == 1


def test_settings_env_unrelated_key_no_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(llmdocker, "log", llmdocker.LaunchLog("cld"))
    load(tmp_path, env="GITHUB_TOKEN=ghp\n")
    assert capsys.readouterr().err == ""


def test_settings_llm_docker_home_from_environment(tmp_path):
    settings = load(tmp_path, environ={"LLM_DOCKER_HOME": "~/state"})
    assert settings.text("LLM_DOCKER_HOME") == HOME + "/state"
    assert settings.sources["LLM_DOCKER_HOME"] == "environment variable LLM_DOCKER_HOME"


def test_settings_empty_llm_docker_home_is_default(tmp_path):
    settings = load(tmp_path, environ={"LLM_DOCKER_HOME": ""})
    assert settings.sources["LLM_DOCKER_HOME"] == "default"


def test_settings_wrong_type_from_environment(tmp_path):
    with pytest.raises(SettingsError, match="environment variable SANDBOX_ENABLED"):
        load(tmp_path, environ={"SANDBOX_ENABLED": "nope"})


def test_settings_home_expansion(tmp_path):
    settings = load(tmp_path, conf="WORKSPACE_DIR=~/Projects\n")
    assert settings.text("WORKSPACE_DIR") == HOME + "/Projects"


def test_settings_pass_env_list(tmp_path):
    settings = load(tmp_path, conf="PASS_ENV='A, B C'\n")
    assert settings.names("PASS_ENV") == ["A", "B", "C"]


def test_settings_env_file_keys_kept(tmp_path):
    settings = load(tmp_path, env="ANTHROPIC_API_KEY=sk-ant-1\nGITHUB_TOKEN=ghp_2\nCPU_LIMIT=2\n")
    assert settings.env_file_values == {"ANTHROPIC_API_KEY": "sk-ant-1", "GITHUB_TOKEN": "ghp_2"}
    assert settings.text("ANTHROPIC_API_KEY") == "sk-ant-1"
    assert sorted(settings.secret_values()) == ["ghp_2", "sk-ant-1", "sk-ant-1"]


@pytest.mark.parametrize("key", ["PATH", "HOME", "OPENCODE_PERMISSION", "LLM_DOCKER_TOOL"])
def test_settings_env_file_reserved_key_rejected(tmp_path, key):
    with pytest.raises(SettingsError, match="cannot be passed into the container"):
        load(tmp_path, env=f"{key}=x\n")


def test_settings_invalid_utf8_reported(tmp_path):
    conf_path = tmp_path / "llm-docker.conf"
    conf_path.write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(SettingsError, match=r"llm-docker\.conf:2: invalid UTF-8"):
        llmdocker.read_settings_file(str(conf_path))


def test_settings_missing_file_is_empty(tmp_path):
    assert llmdocker.read_settings_file(str(tmp_path / "missing")) == []


def test_env_file_created_private(tmp_path):
    state = llmdocker.StatePaths(str(tmp_path / "state"))
    assert llmdocker.ensure_env_file(state) is True
    mode = stat.S_IMODE(os.stat(state.env_file).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(state.root).st_mode) == 0o700
    with open(state.env_file) as stream:
        assert parse_settings_text(stream.read(), ".env") == []


def test_env_file_not_overwritten(tmp_path):
    state = llmdocker.StatePaths(str(tmp_path))
    with open(state.env_file, "w") as stream:
        stream.write("A=1\n")
    os.chmod(state.env_file, 0o600)
    assert llmdocker.ensure_env_file(state) is False
    with open(state.env_file) as stream:
        assert stream.read() == "A=1\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_env_file_readable_by_others_refused(tmp_path, mode):
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    os.chmod(path, mode)
    with pytest.raises(SettingsError, match="readable or writable by other users") as caught:
        llmdocker.check_env_file_private(str(path), os.getuid())
    assert f"chmod 600 {path}" in caught.value.hint


def test_env_file_owned_by_other_refused(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    os.chmod(path, 0o600)
    with pytest.raises(SettingsError, match="owned by uid"):
        llmdocker.check_env_file_private(str(path), os.getuid() + 1)


LINE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
)  # any line content, surrogates excluded (not encodable)


@given(st.lists(LINE_TEXT, max_size=6).map("\n".join))
@example("KEY='unterminated")
@example('export KEY="a\\"')
@example("=value")
@example("export")
@example("KEY=\0")
def test_settings_parser_parses_or_raises_settings_error(text):
    try:
        assignments = parse_settings_text(text, "f")
    except SettingsError as error:
        assert error.message.startswith("f:")
        return
    for assignment in assignments:
        assert llmdocker.is_env_name(assignment.key)
        assert "\0" not in assignment.value


SAFE_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30
)


@given(SAFE_VALUE)
@example("it's")
@example("a\\b")
def test_settings_double_quoted_value_round_trips(value):
    escaped = "".join("\\" + char if char in '\\"$`' else char for char in value)
    assert parse_one(f'KEY="{escaped}"') == ("KEY", value)


@given(st.sampled_from(llmdocker.SETTINGS), LINE_TEXT)
@example(llmdocker.SETTINGS_BY_NAME["CPU_LIMIT"], "\u0663")
@example(llmdocker.SETTINGS_BY_NAME["MEMORY_LIMIT"], "k")
def test_settings_convert_returns_value_or_raises(setting, raw):
    try:
        llmdocker.convert_setting(setting, raw, "where", HOME)
    except SettingsError as error:
        assert error.message.startswith("where: ")
