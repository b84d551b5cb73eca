"""Fakes shared by the launcher unit tests: a recording engine and a sandboxed home.

This module holds no tests. The other test_launcher_* modules import from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import llmdocker


class FakeEngine:
    """Stands in for llmdocker.run_command: records every command and answers like docker.

    `images` lists the tags `image inspect` finds; `containers` holds `ps` lines
    (id, state, name); `exit_code` is what the attached container returns.
    """

    def __init__(self) -> None:
        self.commands: list[llmdocker.Command] = []
        self.images: set[str] = set()
        self.containers: list[tuple[str, str, str]] = []
        self.exit_code = 0
        self.engine_down = False
        self.build_lines = ["Step 1/2 : FROM scratch", "Step 2/2 : RUN true", "done"]
        self.build_exit_code = 0
        self.image_config = '{"Entrypoint": ["/usr/local/bin/entry"], "Cmd": null, "User": ""}'

    def __call__(self, command: llmdocker.Command) -> llmdocker.CommandResult:
        self.commands.append(command)
        argv = command.argv
        if self.engine_down:
            return llmdocker.CommandResult(
                1,
                "",
                "Cannot connect to the Docker daemon at unix:///x. Is the docker daemon running?",
            )
        if argv[1:3] == ["image", "inspect"]:
            tag = argv[-1]
            if tag not in self.images:
                return llmdocker.CommandResult(1, "", f"Error: No such image: {tag}")
            if "{{json .Config}}" in argv:
                return llmdocker.CommandResult(0, self.image_config, "")
            return llmdocker.CommandResult(0, "sha256:abc\n", "")
        if argv[1] == "build":
            assert command.on_line is not None
            for line in self.build_lines:
                command.on_line(line)
            if self.build_exit_code == 0:
                self.images.add(argv[argv.index("--tag") + 1])
            return llmdocker.CommandResult(self.build_exit_code)
        if argv[1] == "ps":
            lines = "".join(f"{cid}\t{state}\t{name}\n" for cid, state, name in self.containers)
            return llmdocker.CommandResult(0, lines, "")
        if command.mode == "attach":
            if command.on_started is not None:
                command.on_started()
            return llmdocker.CommandResult(self.exit_code)
        if command.mode == "stream" and command.on_line is not None:
            command.on_line("installing packs")
        return llmdocker.CommandResult(0, "", "")

    def argvs(self, subcommand: str) -> list[list[str]]:
        """Return the argv of every recorded command whose engine subcommand is `subcommand`."""
        return [c.argv for c in self.commands if len(c.argv) > 1 and c.argv[1] == subcommand]

    def run_command(self) -> llmdocker.Command:
        """Return the one attached `docker run` command."""
        attached = [c for c in self.commands if c.mode == "attach"]
        assert len(attached) == 1, [c.argv for c in self.commands]
        return attached[0]


class Sandbox:
    """A temporary home directory with a project, for running main() without side effects."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.project = self.home / "Projects" / "app"
        self.project.mkdir(parents=True)
        self.state = self.home / ".llm-docker"

    def write_conf(self, text: str) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "llm-docker.conf").write_text(text, encoding="utf-8")

    def write_env(self, text: str, mode: int = 0o600) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        path = self.state / ".env"
        path.write_text(text, encoding="utf-8")
        os.chmod(path, mode)

    def log_text(self) -> str:
        path = self.state / "logs" / "llm-docker.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""


def make_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Return a Sandbox with HOME pointing at it, no llm-docker settings in the environment,
    the working directory in its project, and stdin not a terminal."""
    sandbox = Sandbox(tmp_path)
    monkeypatch.setenv("HOME", str(sandbox.home))
    for setting in llmdocker.SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    monkeypatch.delenv("LLM_DOCKER_HOME", raising=False)
    monkeypatch.chdir(sandbox.project)
    return sandbox


def make_settings(**raw: str) -> llmdocker.Settings:
    """Return settings with defaults, overridden by `raw` values typed as a file would."""
    settings = llmdocker.Settings()
    for setting in llmdocker.SETTINGS:
        value = raw.get(setting.name, setting.default)
        settings.values[setting.name] = llmdocker.convert_setting(setting, value, "test", "/h")
        settings.sources[setting.name] = "test"
    return settings


def install_fake_engine(monkeypatch: pytest.MonkeyPatch, with_images: bool = True) -> FakeEngine:
    engine = FakeEngine()
    if with_images:
        engine.images.update(llmdocker.IMAGE_TAGS.values())
        engine.images.add(llmdocker.COMBINED_IMAGE_TAG)
    monkeypatch.setattr(llmdocker, "run_command", engine)
    return engine
