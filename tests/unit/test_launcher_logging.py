"""Logging: the log file, rotation, verbosity, and that no secret reaches the log or argv."""

from __future__ import annotations

import pytest

import llmdocker
from tests.unit.test_launcher_fakes import install_fake_engine, make_sandbox

SECRET = "sk-ant-api03-very-secret-value"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    return make_sandbox(tmp_path, monkeypatch)


def test_log_written_with_timestamp(sandbox, monkeypatch):
    install_fake_engine(monkeypatch)
    assert llmdocker.main(["claude"]) == 0
    text = sandbox.log_text()
    first = text.splitlines()[0]
    assert first[:4].isdigit()
    assert "launch claude in" in text
    assert "exited with status 0" in text


def test_secret_absent_from_log_and_argv(sandbox, monkeypatch):
    fake = install_fake_engine(monkeypatch)
    sandbox.write_env(f"ANTHROPIC_API_KEY={SECRET}\nEXTRA_TOKEN='{SECRET}-2'\n")
    monkeypatch.setenv("NODE_ENV", "development")
    assert llmdocker.main(["claude", "-vv"]) == 0
    assert SECRET not in sandbox.log_text()
    command = fake.run_command()
    assert not any(SECRET in argument for argument in command.argv)
    assert command.env["ANTHROPIC_API_KEY"] == SECRET
    assert command.env["EXTRA_TOKEN"] == SECRET + "-2"


def test_log_dry_run_prints_no_secret(sandbox, monkeypatch, capsys):
    install_fake_engine(monkeypatch)
    sandbox.write_env(f"ANTHROPIC_API_KEY={SECRET}\n")
    assert llmdocker.main(["claude", "--dry-run"]) == 0
    output = capsys.readouterr()
    assert SECRET not in output.out + output.err
    assert f"ANTHROPIC_API_KEY=<secret, {len(SECRET)} characters>" in output.out


def test_log_redactor_replaces_secret():
    import logging

    record = logging.LogRecord("x", logging.INFO, "f", 1, "value %s here", (SECRET,), None)
    llmdocker.SecretRedactor([SECRET, "ab"]).filter(record)
    assert record.getMessage() == "value *** here"


def test_log_rotation(sandbox, monkeypatch):
    install_fake_engine(monkeypatch)
    sandbox.write_conf("LOG_MAX_KILOBYTES=1\n")
    for _ in range(12):
        assert llmdocker.main(["claude"]) == 0
    logs = sandbox.state / "logs"
    assert (logs / "llm-docker.log.1").exists()
    assert (logs / "llm-docker.log").stat().st_size <= 1024 + 512


def test_log_off_with_zero(sandbox, monkeypatch):
    install_fake_engine(monkeypatch)
    sandbox.write_conf("LOG_MAX_KILOBYTES=0\n")
    assert llmdocker.main(["claude"]) == 0
    assert not (sandbox.state / "logs" / "llm-docker.log").exists()


def test_log_records_errors(sandbox, monkeypatch):
    install_fake_engine(monkeypatch)
    assert llmdocker.main(["claude", str(sandbox.home)]) == 1
    assert "refusing project root" in sandbox.log_text()


def test_verbose_echoes_info(sandbox, monkeypatch, capsys):
    install_fake_engine(monkeypatch)
    assert llmdocker.main(["claude", "-v"]) == 0
    assert "info: launch claude" in capsys.readouterr().err


def test_quiet_hides_warnings(sandbox, monkeypatch, capsys):
    install_fake_engine(monkeypatch)
    monkeypatch.setenv("SANDBOX_ENABLED", "false")
    assert llmdocker.main(["claude", "-q"]) == 0
    assert "sandbox is off" not in capsys.readouterr().err


def test_default_shows_sandbox_warning(sandbox, monkeypatch, capsys):
    install_fake_engine(monkeypatch)
    monkeypatch.setenv("SANDBOX_ENABLED", "false")
    assert llmdocker.main(["claude"]) == 0
    assert "sandbox is off" in capsys.readouterr().err


def test_logging_started_after_spawn(sandbox, monkeypatch):
    fake = install_fake_engine(monkeypatch)
    states: list[object] = []
    original = fake.__call__

    def spy(command):
        if command.mode == "attach":
            states.append(llmdocker.log.logger)
        return original(command)

    monkeypatch.setattr(llmdocker, "run_command", spy)
    assert llmdocker.main(["claude"]) == 0
    assert states == [None]
    assert "launch claude" in sandbox.log_text()
