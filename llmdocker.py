#!/bin/sh
""":"
# Started as a program (cld, ocd, ./llmdocker.py), this file is first read by sh, which runs
# the line below. It imports llmdocker as a module, so Python loads the cached bytecode from
# __pycache__ instead of compiling this whole file on every launch (about 20 ms). Python
# itself parses these lines as a string.
find_code='import os, sys; sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[1]))'
exec python3 -c "$find_code; import llmdocker; llmdocker.run_as_program()" "$0" "$@"
"""

from __future__ import annotations

__doc__ = """llm-docker: run Claude Code (`cld`) or OpenCode (`ocd`) in a hardened Docker container.

One standard-library file for Python 3.9+. Copied alone to a machine that already has the image
(`docker load`), it launches the container without the rest of the repository. The program name
picks the tool (`cld` -> claude, `ocd` -> opencode); `python3 llmdocker.py claude|opencode ARGS`
works without the symlinks.

Sections, in dependency order:

    Constants and defaults     version, tools, container paths, named limits
    Errors                     LauncherError and its kinds; main() turns them into `cld: error: ...`
    Launch log                 records kept in memory until the container runs, then written
                               with the logging module (so the launch path never imports it)
    Settings                   the SETTINGS table, the KEY=VALUE file parser, typed values
    State directory            ~/.llm-docker (LLM_DOCKER_HOME), .env creation and permissions
    Paths and guards           real paths, refusals of dangerous project/workspace/DOCKER_DIR values
    Project identity           project root, stable id, container path, mounts
    Sessions and slots         session stores (Claude Code files, OpenCode database), slot
                               records, resolve_session(), the watchdog, --sessions
    Windows and tmux           window fan-out (not available yet), tmux mode for the container
    Builder API launch         -a/--api: start or reuse the project's builder API daemon
    Docker run argv            pure functions that build the `docker run` list
    Processes                  posix_spawn helpers: capture, stream, attach
    Engine seam                run_command() runs every external command; Engine wraps it
    Image                      inspect, build from docker/, --build, --rebuild-force, --clean
    Command line               hand-written parser for the flag grammar, --help text
    Dry run                    the report printed by --dry-run
    Main                       main(argv) -> exit code

The launch path imports only modules that the interpreter has already loaded at start
(os, sys, posixpath, _signal) plus `select` and the SHA-256 C module; everything else
(logging, shlex, json, difflib, tempfile, shutil) is imported where it is needed.
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterable, Mapping, Sequence

# ====================================================================================
# Constants and defaults
# ====================================================================================

__version__ = "0.1.0"

TOOLS = ("claude", "opencode")
PROGRAM_TOOLS = {"cld": "claude", "ocd": "opencode"}
TOOL_PROGRAMS = {tool: program for program, tool in PROGRAM_TOOLS.items()}
TOOL_TITLES = {"claude": "Claude Code", "opencode": "OpenCode"}

IMAGE_TAGS = {"claude": "llm-docker-claude:latest", "opencode": "llm-docker-opencode:latest"}
COMBINED_IMAGE_TAG = "llm-docker:latest"

# Container side, as written down in docker/CONTRACT.md.
AGENT_HOME = "/home/agent"
CONTAINER_HOSTNAME = "llm-docker"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project=llm-docker"
LABEL_PREFIX = "llm-docker."
INSTALL_PACKS_SCRIPT = "/opt/llm-docker/install/install-packs.sh"
CONTAINER_CERTS_DIR = "/usr/local/share/llm-docker/certs"
CONTAINER_SSH_DIR = "/etc/ssh/llm-docker"
CLAUDE_CONFIG_DIR = AGENT_HOME + "/.claude"

# (host path relative to the state directory, container path) per tool: directories only,
# because a bind-mounted single file breaks the atomic rename the clients use to save it.
PERSISTENCE_DIRS = {
    "claude": (("claude/config", CLAUDE_CONFIG_DIR),),
    "opencode": (
        ("opencode/config", AGENT_HOME + "/.config/opencode"),
        ("opencode/data", AGENT_HOME + "/.local/share/opencode"),
        ("opencode/cache", AGENT_HOME + "/.cache/opencode"),
    ),
}
# Host dotfiles mounted read-only when present (single files, never written back).
HOST_DOTFILES = (".tmux.conf", ".p10k.zsh")

# Capabilities the entrypoint's root setup needs before it drops to the agent user.
# SETPCAP lets the entrypoint empty the bounding set before it starts the agent. KILL lets
# tini (--init, root in the container) forward signals such as SIGWINCH and SIGTERM to the
# agent, which runs as another uid: without it tini exits with "Operation not permitted"
# and takes the session down. The agent itself keeps none of these.
SETUP_CAPABILITIES = (
    "CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER", "SETPCAP", "KILL",
)  # fmt: skip
CODEMAN_PORT = 3000  # the Codeman web UI listens here inside the container (-tc)
LOOPBACK = "127.0.0.1"  # every published port is bound here, never on all interfaces

# Environment keys each tool needs from the host when they are set.
TOOL_ENV_KEYS = {
    "claude": ("ANTHROPIC_API_KEY",),
    "opencode": ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ZAI_API_KEY"),
}
# Variables the tools read that are not llm-docker settings. A .env key that is a near-miss
# of a setting name gets a "did you mean" warning, except these.
KNOWN_CLIENT_VARIABLES = frozenset({
    "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL", "OPENAI_BASE_URL",
})  # fmt: skip
# Names that neither .env nor PASS_ENV may pass: they would break the container or, for
# OPENCODE_PERMISSION, override the OpenCode policy file.
RESERVED_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "HOSTNAME", "LD_PRELOAD",
    "LD_LIBRARY_PATH", "CLAUDE_CONFIG_DIR", "OPENCODE_PERMISSION",
})  # fmt: skip
RESERVED_ENV_PREFIX = "LLM_DOCKER_"

MAX_WINDOWS = 16  # more terminal windows than this is almost certainly a typo
MAX_WINDOW_DELAY_SECONDS = 60.0
MAX_SLOT = 999
MAX_SESSION_ID_LENGTH = 128
MAX_FIRST_MESSAGE_BYTES = 64 * 1024  # one argv string may not exceed 128 KiB on Linux
MAX_SETTINGS_FILE_BYTES = 1024 * 1024
MIN_SECRET_LENGTH_TO_REDACT = 4  # shorter values would blank out ordinary words in the log
MIN_PROJECT_DEPTH = 3  # /home/user/project; shallower roots expose too much
DOCKER_DESKTOP_WAIT_SECONDS = 120
DOCKER_DESKTOP_POLL_SECONDS = 2.0
BUILD_FAILURE_TAIL_LINES = 25
BOOT_FILE = "BOOT.md"
CLAUDE_FILE = "CLAUDE.md"
CLAUDE_FILE_INSTRUCTION = "Read {path} in full and follow its BOOT steps before anything else."

DIGITS = frozenset("0123456789")
ENV_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
ENV_NAME_CHARS = ENV_NAME_FIRST | DIGITS
SESSION_ID_CHARS = ENV_NAME_CHARS | frozenset(".:-")
CONTAINER_NAME_CHARS = ENV_NAME_CHARS | frozenset(".-")
IMAGE_REFERENCE_CHARS = CONTAINER_NAME_CHARS | frozenset("/:@")
HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


# ====================================================================================
# Errors
# ====================================================================================


class LauncherError(Exception):
    """A refusal or failure reported to the user as `cld: error: MESSAGE` with exit status 1.

    `hint` is the next step for the user (the setting, flag or command that changes the outcome).
    """

    exit_status = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(LauncherError):
    """Invalid command-line arguments (exit status 2)."""

    exit_status = 2


class SettingsError(LauncherError):
    """An invalid line or value in llm-docker.conf, .env or the environment."""


class GuardError(LauncherError):
    """A path that must not be mounted into the container."""


class EngineError(LauncherError):
    """The container engine is missing, does not respond, or a command failed."""


class NotAvailableError(LauncherError):
    """A flag whose work is not part of this launcher yet."""

    exit_status = 2


def quote_for_message(text: str) -> str:
    """Return `text` in single quotes with non-printable characters escaped.

    Paths and values reach the terminal through this, so a crafted name cannot emit
    terminal control sequences.
    """
    escaped = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return "'" + escaped.replace("'", "\\'") + "'"


# ====================================================================================
# Launch log
# ====================================================================================


class LaunchLog:
    """Log records of one launch, echoed to stderr by verbosity and written to the log file.

    Importing `logging` costs several milliseconds, so records are kept in memory until the
    container runs (or the launch fails), then replayed into a `logging` logger by
    `start_file_logging`. Messages use %-style arguments and never contain secrets; a filter
    also redacts every known secret value before a record reaches the file.
    """

    # The `logging` level numbers, so records replay unchanged once logging is imported.
    DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

    def __init__(self, program: str = "llm-docker", console_level: int = WARNING) -> None:
        self.program = program
        self.console_level = console_level
        self.pending: list[tuple[int, str, tuple[object, ...]]] = []
        self.logger: logging.Logger | None = None

    def debug(self, message: str, *args: object) -> None:
        self._record(self.DEBUG, message, args)

    def info(self, message: str, *args: object) -> None:
        self._record(self.INFO, message, args)

    def notice(self, message: str, *args: object) -> None:
        """Record an info message that stderr shows unless -q, as `PROGRAM: MESSAGE`."""
        if self.console_level <= self.WARNING:
            text = message % args if args else message
            sys.stderr.write(f"{self.program}: {text}\n")
        self._record(self.INFO, message, args, echo=False)

    def warning(self, message: str, *args: object) -> None:
        self._record(self.WARNING, message, args)

    def error(self, message: str, *args: object) -> None:
        self._record(self.ERROR, message, args)

    def file_only(self, level: int, message: str, *args: object) -> None:
        """Record a message for the log file without echoing it to stderr."""
        self._record(level, message, args, echo=False)

    def _record(
        self, level: int, message: str, args: tuple[object, ...], echo: bool = True
    ) -> None:
        if echo and level >= self.console_level:
            text = message % args if args else message
            name = {10: "debug", 20: "info", 30: "warning"}.get(level, "error")
            sys.stderr.write(f"{self.program}: {name}: {text}\n")
        if self.logger is None:
            self.pending.append((level, message, args))
            return
        self.logger.log(level, message, *args)


log = LaunchLog()


def start_file_logging(
    log_path: str | None, max_kilobytes: int, verbose: bool, secrets: Iterable[str]
) -> None:
    """Attach the launch log to a rotating file (or to nothing when `log_path` is None)."""
    import logging
    import logging.handlers

    logger = logging.getLogger("llm-docker")
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()

    if log_path is not None and max_kilobytes > 0:
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_path, maxBytes=max_kilobytes * 1024, backupCount=1, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
        handler.addFilter(SecretRedactor(secrets))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())

    log.logger = logger
    pending, log.pending = log.pending, []
    for level, message, args in pending:
        logger.log(level, message, *args)


class SecretRedactor:
    """A logging filter that replaces every known secret value in a record with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted(
            {value for value in secrets if len(value) >= MIN_SECRET_LENGTH_TO_REDACT},
            key=len,
            reverse=True,
        )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg = message
        record.args = ()
        return True


def close_file_logging() -> None:
    """Close the file handlers so tests and repeated main() calls do not leak descriptors."""
    if log.logger is None:
        return
    for handler in list(log.logger.handlers):
        log.logger.removeHandler(handler)
        handler.close()


# ====================================================================================
# Settings
# ====================================================================================


class Setting:
    """One row of the settings table: name, type, default and documentation.

    `kind` is one of: bool, int, port, kilobytes, uid, path, container-path, choice, text,
    names, cpus, memory, image, host, secret. `where` names the file the setting belongs in
    (`conf`, `env` for secrets, or `environment` for settings read only from the process
    environment).
    """

    __slots__ = ("choices", "default", "doc", "kind", "maximum", "minimum", "name", "where")

    def __init__(
        self,
        name: str,
        kind: str,
        default: str,
        doc: str,
        where: str = "conf",
        choices: tuple[str, ...] = (),
        minimum: int = 0,
        maximum: int = 2**31 - 1,
    ) -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.doc = doc
        self.where = where
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum

    @property
    def secret(self) -> bool:
        return self.kind == "secret"


def _install_setting(name: str, default: str, doc: str) -> Setting:
    return Setting(name, "bool", default, "Build-time: " + doc + " (change with --build).")


SETTINGS: tuple[Setting, ...] = (
    # Secrets: only in STATE/.env (mode 0600); passed into the container by name.
    Setting("ANTHROPIC_API_KEY", "secret", "",
            "Anthropic API key (skip when you log in with /login).", "env"),
    Setting("OPENAI_API_KEY", "secret", "", "OpenAI API key (OpenCode).", "env"),
    Setting("ZAI_API_KEY", "secret", "", "Z.AI API key (OpenCode).", "env"),
    Setting("BUILDER_API_PASSWORD", "secret", "", "Password of the host-side builder API.", "env"),
    Setting("CODEMAN_PASSWORD", "secret", "", "Password of the Codeman web UI (-tc).", "env"),
    Setting("LLM_DOCKER_SSH_AUTHORIZED_KEYS", "secret", "",
            "SSH public keys allowed to log in, separated by a literal \\n.", "env"),
    # Paths.
    Setting("LLM_DOCKER_HOME", "path", "~/.llm-docker",
            "State directory (settings, logs, sessions); read from the environment only.",
            "environment"),
    Setting("WORKSPACE_DIR", "path", "",
            "Host directory shown read-only beside the project (the project stays writable). "
            "Empty: only the project is mounted."),
    Setting("DOCKER_DIR", "container-path", AGENT_HOME + "/Projects",
            "Container directory under which projects are mounted."),
    # Security.
    Setting("SANDBOX_ENABLED", "bool", "true",
            "true: the agent runs without capabilities. false: it keeps SYS_PTRACE for "
            "gdb/strace (no-new-privileges stays on)."),
    Setting("CLAUDE_BYPASS_PERMISSIONS", "bool", "false",
            "Start Claude Code with --dangerously-skip-permissions (the managed policy "
            "still applies)."),
    Setting("AGENT_UID", "uid", "",
            "uid of the agent user. Empty: your uid; when you are root, the project owner's "
            "uid (1000 when root owns the project)."),
    Setting("AGENT_GID", "uid", "",
            "gid of the agent user. Empty: your gid; when you are root, the project owner's "
            "gid (1000 when it is 0)."),
    Setting("PASS_ENV", "names", "",
            "Extra host environment variables passed by name (comma- or space-separated)."),
    Setting("PIDS_LIMIT", "int", "4096", "Maximum number of processes in the container.",
            minimum=32, maximum=4_194_304),
    Setting("CPU_LIMIT", "cpus", "",
            "CPUs the container may use (docker --cpus). Empty: no limit."),
    Setting("MEMORY_LIMIT", "memory", "",
            "Memory limit (docker --memory: bytes or a number with b, k, m, g). Empty: no limit."),
    # Network.
    Setting("NETWORK_MODE", "choice", "bridge",
            "bridge or host. host is refused together with INTERNET_ACCESS=false, SSH or -tc.",
            choices=("bridge", "host")),
    Setting("INTERNET_ACCESS", "bool", "true",
            "false: the entrypoint blocks outbound traffic (adds NET_ADMIN for the setup only)."),
    Setting("LLM_DOCKER_SSH_ENABLED", "bool", "false",
            "Start sshd in the container (public keys only)."),
    Setting("LLM_DOCKER_SSH_PORT", "port", "22", "Container port of sshd."),
    Setting("LLM_DOCKER_SSH_HOST_PORT", "port", "8884",
            "Host port for SSH, bound to 127.0.0.1 (slot N adds N-1)."),
    Setting("BUILDER_API_HOST", "host", "host.docker.internal",
            "Host name the container uses to reach the builder API."),
    Setting("BUILDER_API_PORT", "port", "6666", "Port of the builder API."),
    # Container behaviour.
    Setting("NODE_ENV", "text", "production",
            "development makes the entrypoint and the log verbose."),
    Setting("EXIT_TO_DOCKER", "bool", "false",
            "Open a shell in the container after the tool exits."),
    Setting("IS_SANDBOX", "text", "1", "Tells Claude Code it runs in a sandbox."),
    Setting("CLAUDE_CODE_BUBBLEWRAP", "text", "1", "Second sandbox hint for Claude Code."),
    Setting("CLAUDE_CODE_MAX_OUTPUT_TOKENS", "int", "48000",
            "Upper bound of Claude's output tokens.",
            minimum=1, maximum=10_000_000),
    # Logging.
    Setting("LOG_MAX_KILOBYTES", "kilobytes", "1024",
            "Rotate logs/llm-docker.log at this size in KiB; 0 turns file logging off.",
            maximum=1_048_576),
    # Engine and image.
    Setting("LLM_DOCKER_ENGINE", "choice", "docker", "Container engine CLI: docker or podman.",
            choices=("docker", "podman")),
    Setting("LLM_DOCKER_IMAGE", "image", "",
            "Run this image instead of the llm-docker one (it is never built)."),
    Setting("COMBINED_IMAGE", "bool", "false",
            "Use one image with both tools (llm-docker:latest) instead of one per tool."),
    Setting("BASE_IMAGE", "image", "", "Build-time: base image. Empty: the Dockerfile's default."),
    _install_setting("INSTALL_SECURITY", "false", "pen-test tools (nmap, nikto, nuclei, ...)"),
    _install_setting("INSTALL_RUBY", "false", "rbenv, ruby-build and cocoapods"),
    _install_setting("INSTALL_CPP", "false", "make, cmake and gcc"),
    _install_setting("INSTALL_LLVM_CLANG", "false", "the LLVM/Clang toolchain"),
    _install_setting("INSTALL_NS", "false", "NativeScript CLI and the n node version manager"),
    _install_setting("INSTALL_MEDIA", "false", "ffmpeg, sox, yt-dlp and pipx"),
    _install_setting("INSTALL_QUAKE", "false", "clang, make and SDL2"),
    _install_setting("INSTALL_BROWSING", "true", "headless and headful Chromium"),
    _install_setting("INSTALL_TMUX_VANILLA", "true", "tmux, needed by every -t flag"),
    _install_setting("INSTALL_TMUX_TEAM", "true", "the team layouts of -tt"),
    _install_setting("INSTALL_TMUX_RECON", "false", "the recon dashboard of -tr"),
    _install_setting("INSTALL_TMUX_CODEMAN", "false", "the Codeman web UI of -tc"),
    _install_setting("INSTALL_TMUX_CLAUDE", "false", "the claude-tmux popup of -tcl"),
)  # fmt: skip
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
INSTALL_SETTINGS = tuple(
    setting.name for setting in SETTINGS if setting.name.startswith("INSTALL_")
)

BOOLEAN_WORDS = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip

SettingValue = object  # bool | int | str | list[str] | None, by kind


class SettingsLine:
    """One KEY=VALUE assignment read from a settings file."""

    __slots__ = ("key", "line", "source", "value")

    def __init__(self, key: str, value: str, source: str, line: int) -> None:
        self.key = key
        self.value = value
        self.source = source
        self.line = line

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"


def is_env_name(name: str) -> bool:
    """Return whether `name` is a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)."""
    return bool(name) and name[0] in ENV_NAME_FIRST and all(c in ENV_NAME_CHARS for c in name)


def parse_settings_text(text: str, source: str) -> list[SettingsLine]:
    """Parse KEY=VALUE lines as data: never executed, no variable expansion.

    Accepted: blank lines, `#` comments, an optional `export ` prefix, values unquoted, in
    single quotes (taken literally) or in double quotes (where \\\\, \\", \\$ and \\` are
    escapes and any other backslash is kept). An unquoted value ends at ` #`.
    Raises SettingsError naming the file and line for anything else.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    assignments = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        assignments.append(_parse_settings_line(line, source, number))
    return assignments


def _parse_settings_line(line: str, source: str, number: int) -> SettingsLine:
    where = f"{source}:{number}"
    if line.startswith("export ") or line.startswith("export\t"):
        line = line[len("export") :].lstrip()

    key, separator, rest = line.partition("=")
    key = key.rstrip()
    if not separator:
        raise SettingsError(
            f"{where}: expected KEY=VALUE, found {quote_for_message(line)}",
            "write one assignment per line, for example SANDBOX_ENABLED=true",
        )
    if not is_env_name(key):
        raise SettingsError(
            f"{where}: {quote_for_message(key)} is not a valid setting name",
            "names use letters, digits and underscores and do not start with a digit",
        )
    value = _parse_settings_value(rest.lstrip(), where)
    if "\0" in value:
        raise SettingsError(f"{where}: the value of {key} contains a NUL character")
    return SettingsLine(key, value, source, number)


def _parse_settings_value(text: str, where: str) -> str:
    if text.startswith("'"):
        end = text.find("'", 1)
        if end < 0:
            raise SettingsError(
                f"{where}: unterminated single quote", "close the quote on the same line"
            )
        _check_after_quote(text[end + 1 :], where)
        return text[1:end]

    if text.startswith('"'):
        value, end = _read_double_quoted(text, where)
        _check_after_quote(text[end + 1 :], where)
        return value

    comment = _find_comment(text)
    value = text[:comment].rstrip() if comment >= 0 else text.rstrip()
    for char in value:
        if char in " \t":
            raise SettingsError(
                f"{where}: the unquoted value {quote_for_message(value)} contains whitespace",
                "put the value in quotes",
            )
        if char in "'\"`":
            raise SettingsError(
                f"{where}: the unquoted value {quote_for_message(value)} contains a quote",
                "put the whole value in single or double quotes",
            )
    return value


def _read_double_quoted(text: str, where: str) -> tuple[str, int]:
    chars = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in '\\"$`':
            chars.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(chars), index
        chars.append(char)
        index += 1
    raise SettingsError(f"{where}: unterminated double quote", "close the quote on the same line")


def _find_comment(text: str) -> int:
    for index, char in enumerate(text):
        if char == "#" and (index == 0 or text[index - 1] in " \t"):
            return index
    return -1


def _check_after_quote(rest: str, where: str) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise SettingsError(
            f"{where}: unexpected text {quote_for_message(rest)} after the closing quote",
            "quote the whole value, or start a comment with ' #'",
        )


def expand_home(value: str, home: str) -> str:
    """Expand a leading `~` or `~/` to `home`; other values are returned unchanged."""
    if value == "~":
        return home
    if value.startswith("~/"):
        return home + value[1:]
    return value


def convert_setting(setting: Setting, raw: str, where: str, home: str) -> SettingValue:
    """Return the typed value of `raw` for `setting`, or raise SettingsError naming `where`."""
    kind = setting.kind
    value = raw.strip() if kind not in ("secret", "text") else raw

    def invalid(expected: str, hint: str = "") -> SettingsError:
        return SettingsError(
            f"{where}: {setting.name}={quote_for_message(raw)} is invalid: expected {expected}",
            hint or f"fix the value of {setting.name} (default: {setting.default or 'empty'})",
        )

    if kind == "bool":
        if value.lower() not in BOOLEAN_WORDS:
            raise invalid("true or false")
        return BOOLEAN_WORDS[value.lower()]

    if kind in ("int", "port", "kilobytes", "uid"):
        if kind == "uid" and value == "":
            return None
        if not value or not all(c in DIGITS for c in value):
            raise invalid("a whole number")
        number = int(value)
        low, high = {
            "port": (1, 65535),
            "kilobytes": (0, setting.maximum),
            "uid": (1, 2**31 - 2),
        }.get(kind, (setting.minimum, setting.maximum))
        if not low <= number <= high:
            hint = (
                f"the agent must never be root: set {setting.name} to the owner of your project "
                "files (ls -ldn PROJECT shows uid and gid), or leave it empty"
                if kind == "uid" and number == 0
                else ""
            )
            raise invalid(f"a number from {low} to {high}", hint)
        return number

    if kind == "choice":
        if value not in setting.choices:
            raise invalid(" or ".join(setting.choices))
        return value

    if kind == "path":
        if value == "":
            return ""
        expanded = expand_home(value, home)
        if not expanded.startswith("/"):
            raise invalid("an absolute path or one starting with ~/")
        return os.path.normpath(expanded)

    if kind == "container-path":
        return value

    if kind == "names":
        names = value.replace(",", " ").split()
        for name in names:
            if not is_env_name(name):
                raise invalid("environment variable names separated by commas or spaces")
        return names

    if kind == "cpus":
        if value == "":
            return ""
        whole, dot, fraction = value.partition(".")
        digits_ok = bool(whole) and all(c in DIGITS for c in whole + fraction)
        if not digits_ok or (dot and not fraction) or float(value) <= 0:
            raise invalid("a positive number such as 2 or 1.5")
        return value

    if kind == "memory":
        if value == "":
            return ""
        digits = value[:-1] if value[-1:].lower() in ("b", "k", "m", "g") else value
        if not digits or not all(c in DIGITS for c in digits) or int(digits) == 0:
            raise invalid("a size such as 4g, 512m or 1073741824")
        return value

    if kind == "image":
        if value == "":
            return ""
        if (
            len(value) > 255
            or value[0] not in ENV_NAME_CHARS
            or not all(c in IMAGE_REFERENCE_CHARS for c in value)
        ):
            raise invalid("an image reference such as llm-docker-claude:latest")
        return value

    if kind == "host":
        if not value or len(value) > 253 or not all(c in HOSTNAME_CHARS for c in value):
            raise invalid("a host name or IPv4 address")
        return value

    return value  # text and secret: taken as written


class Settings:
    """Resolved settings: typed values, where each came from, and the .env keys.

    Precedence: built-in defaults < llm-docker.conf < .env < process environment (known
    keys only).
    """

    def __init__(self) -> None:
        self.values: dict[str, SettingValue] = {}
        self.sources: dict[str, str] = {}
        self.env_file_values: dict[str, str] = {}  # every .env key, passed into the container

    def flag(self, name: str) -> bool:
        return bool(self.values[name])

    def number(self, name: str) -> int:
        value = self.values[name]
        if not isinstance(value, int):
            raise TypeError(f"setting {name} is not a number")
        return value

    def optional_number(self, name: str) -> int | None:
        value = self.values[name]
        return value if isinstance(value, int) else None

    def text(self, name: str) -> str:
        return str(self.values[name])

    def names(self, name: str) -> list[str]:
        value = self.values[name]
        if not isinstance(value, list):
            raise TypeError(f"setting {name} is not a list of names")
        return value

    def secret_values(self) -> list[str]:
        """Return every value that must never be logged: secret settings and all .env values."""
        values = [str(self.values[s.name]) for s in SETTINGS if s.secret and self.values[s.name]]
        return values + [value for value in self.env_file_values.values() if value]


def suggest_name(name: str, candidates: Iterable[str]) -> str:
    """Return ` (did you mean X?)` for the closest candidate, or an empty string."""
    import difflib

    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {matches[0]}?)" if matches else ""


def load_settings(environ: Mapping[str, str], conf_path: str, env_path: str, home: str) -> Settings:
    """Load defaults, llm-docker.conf, .env and the process environment, in that order."""
    settings = Settings()
    for setting in SETTINGS:
        settings.values[setting.name] = convert_setting(setting, setting.default, "default", home)
        settings.sources[setting.name] = "default"

    for assignment in read_settings_file(conf_path):
        known = SETTINGS_BY_NAME.get(assignment.key)
        if known is None:
            raise SettingsError(
                f"{assignment.location}: unknown setting {assignment.key}"
                + suggest_name(assignment.key, SETTINGS_BY_NAME),
                "see the settings list in --help; secrets and extra variables for the "
                "container go in " + env_path,
            )
        setting = known
        if setting.secret:
            raise SettingsError(
                f"{assignment.location}: {setting.name} is a secret and does not belong in "
                "llm-docker.conf",
                f"move it to {env_path} (mode 0600)",
            )
        if setting.where == "environment":
            raise SettingsError(
                f"{assignment.location}: {setting.name} is read from the environment only",
                f"export {setting.name} in your shell profile instead",
            )
        _apply(settings, setting, assignment.value, assignment.location, home)

    for assignment in read_settings_file(env_path):
        _apply_env_file_line(settings, assignment, home)

    for setting in SETTINGS:
        value = environ.get(setting.name)
        if value is None or (setting.where == "environment" and not value):
            continue  # an empty LLM_DOCKER_HOME means the default state directory
        _apply(settings, setting, value, f"environment variable {setting.name}", home)

    return settings


def _apply(settings: Settings, setting: Setting, raw: str, where: str, home: str) -> None:
    settings.values[setting.name] = convert_setting(setting, raw, where, home)
    settings.sources[setting.name] = where


def _apply_env_file_line(settings: Settings, assignment: SettingsLine, home: str) -> None:
    key = assignment.key
    setting = SETTINGS_BY_NAME.get(key)
    if setting is not None and setting.where == "environment":
        raise SettingsError(
            f"{assignment.location}: {key} is read from the environment only",
            f"export {key} in your shell profile instead",
        )
    if setting is not None and not setting.secret:
        _apply(settings, setting, assignment.value, assignment.location, home)
        return

    if key in RESERVED_ENV_NAMES or (key.startswith(RESERVED_ENV_PREFIX) and setting is None):
        raise SettingsError(
            f"{assignment.location}: {key} cannot be passed into the container",
            "the launcher sets it, or it would break the container or the tool's policy; "
            "remove the line",
        )
    if setting is not None:
        _apply(settings, setting, assignment.value, assignment.location, home)
    elif key not in KNOWN_CLIENT_VARIABLES:
        close = suggest_name(key, SETTINGS_BY_NAME)
        if close:
            log.warning(
                "%s: %s is passed into the container as is%s", assignment.location, key, close
            )
    settings.env_file_values[key] = assignment.value


def read_settings_file(path: str) -> list[SettingsLine]:
    """Read and parse one settings file; a missing file has no assignments."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_SETTINGS_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise SettingsError(f"cannot read {path}: {error.strerror}") from None

    if len(data) > MAX_SETTINGS_FILE_BYTES:
        raise SettingsError(
            f"{path} is larger than {MAX_SETTINGS_FILE_BYTES // 1024} KiB",
            "a settings file holds short KEY=VALUE lines; check that this is the right file",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SettingsError(f"{path}:{line}: invalid UTF-8", "save the file as UTF-8") from None
    return parse_settings_text(text, path)


# ====================================================================================
# State directory
# ====================================================================================


class StatePaths:
    """Files and directories under the state directory (~/.llm-docker or $LLM_DOCKER_HOME)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.conf = os.path.join(root, "llm-docker.conf")
        self.env_file = os.path.join(root, ".env")
        self.logs = os.path.join(root, "logs")
        self.log_file = os.path.join(self.logs, "llm-docker.log")
        self.slots = os.path.join(root, "slots")
        self.certs = os.path.join(root, "certs")
        self.ssh = os.path.join(root, "ssh")
        self.docker_desktop_lock = os.path.join(root, "docker-desktop.lock")


def home_directory(environ: Mapping[str, str]) -> str:
    """Return the real path of the user's home directory."""
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.realpath(home)


def state_paths(environ: Mapping[str, str], home: str) -> StatePaths:
    """Return the state paths, honouring LLM_DOCKER_HOME."""
    configured = environ.get("LLM_DOCKER_HOME", "")
    if not configured:
        return StatePaths(os.path.join(home, ".llm-docker"))

    setting = SETTINGS_BY_NAME["LLM_DOCKER_HOME"]
    where = "environment variable LLM_DOCKER_HOME"
    root = os.path.realpath(str(convert_setting(setting, configured, where, home)))
    reason = ""
    if root == "/" or root in SYSTEM_DIRECTORIES:
        reason = "it is a system directory"
    elif any(is_within(root, tree) for tree in SYSTEM_TREES):
        reason = "it is inside a system directory"
    elif root == home:
        reason = "it is your home directory"
    if reason:
        raise SettingsError(
            f"{where}: refusing LLM_DOCKER_HOME={quote_for_message(configured)} "
            f"({quote_for_message(root)}): {reason}, and llm-docker keeps secrets and "
            "sessions there",
            "set LLM_DOCKER_HOME to a directory of its own, such as ~/.llm-docker, or unset it",
        )
    return StatePaths(root)


ENV_FILE_TEMPLATE = """\
# llm-docker secrets, one KEY=VALUE a line. This file is read as data and never run by a shell.
# Keep it private (mode 0600): the launcher refuses it when others can read it.
# Every key set here is passed into the container by name, so its value never appears in
# the docker command line. Non-secret settings belong in llm-docker.conf.
#
# ANTHROPIC_API_KEY=
# OPENAI_API_KEY=
# ZAI_API_KEY=
# BUILDER_API_PASSWORD=
# CODEMAN_PASSWORD=
# LLM_DOCKER_SSH_AUTHORIZED_KEYS="ssh-ed25519 AAAA... you@laptop"
"""


def ensure_env_file(state: StatePaths) -> bool:
    """Create the state directory (0700) and a commented .env (0600) when missing.

    Returns whether the .env file was created.
    """
    os.makedirs(state.root, mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(state.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(ENV_FILE_TEMPLATE)
    return True


def check_env_file_private(path: str, uid: int) -> None:
    """Refuse a .env file that other users can read or write, or that someone else owns."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    if status.st_mode & 0o077:
        raise SettingsError(
            f"{path} is readable or writable by other users (mode {status.st_mode & 0o777:o}); "
            "it holds secrets",
            f"run: chmod 600 {path}",
        )
    if status.st_uid != uid:
        raise SettingsError(
            f"{path} is owned by uid {status.st_uid}, not by you (uid {uid})",
            f"check who wrote it, then run: chown {uid} {path}",
        )


def prepare_state_directories(
    state: StatePaths, tool: str, ssh: bool, agent_uid: int, agent_gid: int, host_uid: int
) -> None:
    """Create the persistence directories of `tool` (mode 0700) before they are mounted.

    When the launcher runs as root the agent has another uid, so the directories are handed
    to the agent's uid:gid; otherwise they belong to the user, whose uid the agent shares.
    """
    for host, _ in PERSISTENCE_DIRS[tool]:
        directory = os.path.join(state.root, host)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if host_uid == 0:
            os.chown(directory, agent_uid, agent_gid)
    if ssh:
        os.makedirs(state.ssh, mode=0o700, exist_ok=True)  # host keys stay root's
    os.makedirs(state.slots, mode=0o700, exist_ok=True)


# ====================================================================================
# Paths and guards
# ====================================================================================

# Host directories whose whole tree is refused as a project or workspace.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/snap", "/var/lib", "/var/run", "/var/log", "/var/cache",
    "/var/spool", "/var/mail", "/System", "/Library", "/private/etc", "/private/var/db",
    "/private/var/root", "/cores", "/Applications",
)  # fmt: skip
# Host directories refused themselves (projects inside them are allowed).
SYSTEM_DIRECTORIES = (
    "/", "/home", "/Users", "/root", "/var", "/tmp", "/private", "/private/var",  # noqa: S108
    "/private/tmp", "/opt", "/srv", "/mnt", "/media", "/Volumes", "/var/folders",
    "/private/var/folders", "/usr/local",
)  # fmt: skip
# Credential directories and files under the home directory (relative paths).
CREDENTIAL_PATHS = (
    ".ssh", ".aws", ".gnupg", ".kube", ".docker", ".config/gcloud", ".azure", ".config/gh",
    ".password-store", ".netrc", ".git-credentials", ".npmrc", ".pypirc", ".config/op",
    ".local/share/keyrings", "Library/Keychains", ".claude", ".claude.json",
    ".config/opencode", ".local/share/opencode", ".terraform.d", ".config/hub", ".vault-token",
)  # fmt: skip
# Container directories DOCKER_DIR may not be or be inside.
CONTAINER_SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var", "/tmp", "/opt/llm-docker", "/root",  # noqa: S108
)  # fmt: skip
CONTAINER_SYSTEM_DIRECTORIES = ("/", "/home", "/opt", "/mnt", "/media", "/srv")


def is_within(path: str, directory: str) -> bool:
    """Return whether `path` is `directory` or below it (both normalized absolute paths)."""
    if directory == "/":
        return True
    return path == directory or path.startswith(directory + "/")


def path_depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def has_control_character(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def guard_host_directory(
    path: str, role: str, home: str, state_root: str, code_dir: str, hint: str
) -> None:
    """Refuse a real host path that must not become the project or the workspace.

    `role` names the value in messages ("project root", "WORKSPACE_DIR"); `hint` is the fix.
    """

    def refuse(reason: str) -> GuardError:
        return GuardError(f"refusing {role} {quote_for_message(path)}: {reason}", hint)

    if has_control_character(path):
        raise refuse("the path contains a control character; rename the directory")
    if path == "/":
        raise refuse("it is the root directory, so the agent would see the whole machine")
    if path == home:
        raise refuse("it is your home directory, so the agent could change every file you own")
    if is_within(home, path):
        raise refuse("it contains your home directory")
    for tree in SYSTEM_TREES:
        if is_within(path, tree):
            raise refuse(f"it is inside the system directory {tree}")
    if path in SYSTEM_DIRECTORIES:
        raise refuse("it is a system directory")
    if path_depth(path) < MIN_PROJECT_DEPTH:
        raise refuse(
            f"it is shallower than {MIN_PROJECT_DEPTH} path segments, so it likely holds "
            "much more than one project"
        )
    if is_within(path, state_root) or is_within(state_root, path):
        raise refuse(f"it overlaps the llm-docker state directory {state_root} (secrets, sessions)")
    if is_within(path, code_dir) or is_within(code_dir, path):
        raise refuse(
            f"it overlaps the installed llm-docker code {code_dir}; the agent could change "
            "the launcher that runs on your host"
        )
    for relative in CREDENTIAL_PATHS:
        credentials = os.path.join(home, relative)
        if is_within(path, credentials) or is_within(credentials, path):
            raise refuse(f"it overlaps the credentials location {credentials}")


def guard_docker_dir(docker_dir: str, where: str) -> str:
    """Return the normalized DOCKER_DIR, or refuse a value that would break the container."""

    def refuse(reason: str) -> GuardError:
        return GuardError(
            f"{where}: refusing DOCKER_DIR={quote_for_message(docker_dir)}: {reason}",
            f"set DOCKER_DIR to a directory such as {AGENT_HOME}/Projects in llm-docker.conf",
        )

    if not docker_dir.startswith("/"):
        raise refuse("it is not an absolute path")
    if has_control_character(docker_dir):
        raise refuse("it contains a control character")
    if any(part in (".", "..") for part in docker_dir.split("/")):
        raise refuse("it contains '.' or '..'")
    normalized = os.path.normpath(docker_dir)
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if normalized in CONTAINER_SYSTEM_DIRECTORIES:
        raise refuse("it is a container system directory")
    for tree in CONTAINER_SYSTEM_TREES:
        if is_within(normalized, tree):
            if tree == "/root":
                raise refuse("the agent runs as a non-root user and cannot enter /root")
            raise refuse(f"it is inside the container system directory {tree}")
    for target in persistence_targets():
        if is_within(normalized, target) or is_within(target, normalized):
            raise refuse(f"it collides with the persistence mount {target}")
    return normalized


def persistence_targets() -> list[str]:
    targets = [target for mounts in PERSISTENCE_DIRS.values() for _, target in mounts]
    targets += [CONTAINER_SSH_DIR, CONTAINER_CERTS_DIR]
    targets += [AGENT_HOME + "/" + name for name in HOST_DOTFILES]
    return targets


# ====================================================================================
# Project identity
# ====================================================================================


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 hex digest of `data`.

    The C module is used directly when present: `hashlib` loads OpenSSL, which costs a few
    milliseconds of start-up time on the launch path.
    """
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment,unused-ignore]
    return str(sha256(data).hexdigest())


class Mount:
    """One bind mount of a host path into the container.

    `nonrecursive` leaves out the host mounts below `source`. It matters only for a
    read-only directory that may contain host mounts (WORKSPACE_DIR).
    """

    __slots__ = ("nonrecursive", "readonly", "source", "target")

    def __init__(
        self, source: str, target: str, readonly: bool, nonrecursive: bool = False
    ) -> None:
        self.source = source
        self.target = target
        self.readonly = readonly
        self.nonrecursive = nonrecursive

    def spec(self) -> str:
        """Return the `--mount` value, each field CSV-quoted when it needs it."""
        fields = ["type=bind", csv_field("src", self.source), csv_field("dst", self.target)]
        if self.readonly:
            fields.append("readonly")
        if self.nonrecursive:
            # Engine 20.10 to 24 make a read-only bind read-only only at its top, so host
            # mounts below it would stay writable. A non-recursive bind hides them instead.
            # NOTE: Docker 25+ spells this bind-recursive=disabled, and its CLI warns that
            # bind-nonrecursive is deprecated. CLIs before 25 reject the new spelling, so
            # bind-nonrecursive stays (one warning, on WORKSPACE_DIR launches only).
            fields.append("bind-nonrecursive=true")
        return ",".join(fields)

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"Mount({self.source!r} -> {self.target!r}, {mode})"


def csv_field(key: str, value: str) -> str:
    """Return `key=value` as one CSV field, quoted (with `"` doubled) when needed."""
    field = f"{key}={value}"
    if any(char in field for char in ',"\r\n') or field != field.strip():
        return '"' + field.replace('"', '""') + '"'
    return field


class Project:
    """The project a launch works on: host root, identity and container paths."""

    def __init__(
        self,
        launch_dir: str,
        root: str,
        name: str,
        project_id: str,
        container_path: str,
        mounts: list[Mount],
    ) -> None:
        self.launch_dir = launch_dir
        self.root = root
        self.name = name
        self.project_id = project_id
        self.container_path = container_path
        self.mounts = mounts

    @property
    def container_launch_dir(self) -> str:
        relative = os.path.relpath(self.launch_dir, self.root)
        return self.container_path if relative == "." else f"{self.container_path}/{relative}"


def find_project_root(launch_dir: str, home: str) -> str:
    """Return the git top level above `launch_dir`, or `launch_dir` when there is none.

    The search stops below the home directory and below `/`, so a dotfiles repository in
    the home directory never turns the whole home into the project.
    """
    directory = launch_dir
    while directory != "/" and not is_within(home, directory):
        if os.path.exists(os.path.join(directory, ".git")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return launch_dir


def resolve_directory(path: str, what: str) -> str:
    """Return the real path of an existing directory, or raise GuardError."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        reason = "does not exist" if not os.path.exists(real) else "is not a directory"
        raise GuardError(
            f"{what} {quote_for_message(path)} {reason}",
            "pass an existing directory, or start in one",
        )
    return real


def resolve_project(
    launch_dir: str,
    settings: Settings,
    home: str,
    state: StatePaths,
    code_dir: str,
    program: str = "cld",
) -> Project:
    """Resolve real paths, apply the guards and compute the mounts of the project."""
    launch_real = resolve_directory(launch_dir, "project directory")
    root = find_project_root(launch_real, home)
    try:
        guard_host_directory(
            root, "project root", home, state.root, code_dir,
            f"start {program} inside a project directory (for example ~/Projects/app) or "
            f"pass one: {program} ~/Projects/app",
        )  # fmt: skip
    except GuardError as error:
        if root == launch_real:
            raise
        raise GuardError(
            f"{error.message} (it is the git top level of {quote_for_message(launch_real)}, "
            "and the whole repository is mounted)",
            f"use a project outside that repository; {error.hint}",
        ) from None
    docker_dir = guard_docker_dir(settings.text("DOCKER_DIR"), settings.sources["DOCKER_DIR"])

    name = os.path.basename(root)
    project_id = sha256_hex(os.fsencode(root))[:8]
    mounts: list[Mount] = []
    container_path = f"{docker_dir}/{name}-{project_id}"

    workspace_setting = settings.text("WORKSPACE_DIR")
    if workspace_setting:
        workspace = resolve_directory(workspace_setting, "WORKSPACE_DIR")
        guard_host_directory(
            workspace, "WORKSPACE_DIR", home, state.root, code_dir,
            "set WORKSPACE_DIR in llm-docker.conf to the directory that holds your projects "
            "(for example ~/Projects), or leave it empty",
        )  # fmt: skip
        workspace_target = f"{docker_dir}/{os.path.basename(workspace)}"
        mounts.append(Mount(workspace, workspace_target, readonly=True, nonrecursive=True))
        if is_within(root, workspace):
            relative = os.path.relpath(root, workspace)
            if relative != ".":
                container_path = f"{workspace_target}/{relative}"
            else:
                container_path = workspace_target
        elif container_path == workspace_target:
            container_path += "-project"

    mounts.append(Mount(root, container_path, readonly=False))
    return Project(launch_real, root, name, project_id, container_path, mounts)


def persistence_mounts(tool: str, state: StatePaths, ssh: bool, home: str) -> list[Mount]:
    """Return the state directories of `tool`, plus SSH keys, certificates and dotfiles."""
    mounts = [
        Mount(os.path.join(state.root, host), target, readonly=False)
        for host, target in PERSISTENCE_DIRS[tool]
    ]
    if ssh:
        mounts.append(Mount(state.ssh, CONTAINER_SSH_DIR, readonly=False))
    if os.path.isdir(state.certs):
        mounts.append(Mount(state.certs, CONTAINER_CERTS_DIR, readonly=True))
    for name in HOST_DOTFILES:
        path = os.path.join(home, name)
        if os.path.isfile(path):
            mounts.append(Mount(os.path.realpath(path), f"{AGENT_HOME}/{name}", readonly=True))
    return mounts


# ====================================================================================
# Sessions and slots
# ====================================================================================


# Host paths of the session stores, relative to the state directory (docker/CONTRACT.md).
CLAUDE_CONFIG_HOST_DIR = "claude/config"
OPENCODE_DB_HOST_PATH = "opencode/data/opencode.db"

# Claude Code (2.1.x) cuts a project folder name to this many UTF-16 code units and appends a
# hash of the full path when the name is longer.
CLAUDE_FOLDER_MAX_UNITS = 200
CLAUDE_SESSION_SUFFIX = ".jsonl"
UUID_LENGTH = 36
LOWER_HEX = frozenset("0123456789abcdef")
ASCII_ALPHANUMERIC = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

# Bytes read from the start of a Claude session file for its `cwd` and first prompt. Session
# files grow to megabytes and are never read whole.
SESSION_HEAD_BYTES = 64 * 1024
FIRST_PROMPT_MAX_CHARS = 80  # of the first prompt line shown by --sessions
MAX_LISTED_SESSIONS = 200  # --sessions reads one file or row per shown session
RECENT_SESSIONS_IN_ERROR = 5  # sessions listed for an unknown `-c ID`

OPENCODE_BUSY_TIMEOUT_SECONDS = 2.0  # wait for a writer's lock on opencode.db, then give up
# Columns of OpenCode's `session` table (1.x) that session detection needs.
OPENCODE_REQUIRED_COLUMNS = frozenset({"id", "directory", "time_created", "time_updated"})
OPENCODE_FIRST_MESSAGES = 20  # messages of a session searched for the first user prompt
SQLITE_HEADER_BYTES = 100
SQLITE_WAL_FORMAT = 2  # header byte 18: 1 for a rollback journal, 2 for WAL

SLOT_RECORD_VERSION = 1
SLOT_RECORD_MAX_BYTES = 16 * 1024  # a record is about 250 bytes; a bigger file is not one
CONTAINER_STOP_GRACE_SECONDS = 2  # `docker stop -t` when the launcher dies or is signalled


class SessionError(LauncherError):
    """A session or slot problem: an unknown session id, an unreadable slot record."""


def _timestamp(epoch_seconds: float, utc: bool = False) -> str:
    import time

    if utc:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch_seconds))


# ---- Claude Code project folder ------------------------------------------------------


def java_string_hash(text: str) -> int:
    """Return Java's `String.hashCode` of text: a signed 32-bit hash of its UTF-16 code units."""
    value = 0
    for char in text:
        code = ord(char)
        if code < 0x10000:
            value = (value * 31 + code) & 0xFFFFFFFF
            continue
        code -= 0x10000  # a surrogate pair, as JavaScript strings hold it
        value = (value * 31 + 0xD800 + (code >> 10)) & 0xFFFFFFFF
        value = (value * 31 + 0xDC00 + (code & 0x3FF)) & 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


def to_base36(number: int) -> str:
    """Return a non-negative integer in base 36 with lowercase digits, as JavaScript does."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while True:
        number, remainder = divmod(number, 36)
        out.append(digits[remainder])
        if number == 0:
            return "".join(reversed(out))


def claude_folder_name(workdir: str) -> str:
    """Return Claude Code's project folder name for a working directory (2.1.x).

    Every UTF-16 code unit that is not an ASCII letter or digit becomes `-`, so `é` gives one
    `-` and an emoji two. A name longer than 200 units is cut to 200 and gets `-` plus the
    base-36 absolute value of the Java string hash of the full path.
    """
    # NOTE: a folder name that is not valid UTF-8 reaches Python as lone surrogates but
    # Node.js as U+FFFD, so for such a path over 200 units the hash may differ.
    pieces = []
    for char in workdir:
        if char in ASCII_ALPHANUMERIC:
            pieces.append(char)
        elif ord(char) > 0xFFFF:
            pieces.append("--")  # two UTF-16 code units
        else:
            pieces.append("-")
    name = "".join(pieces)
    if len(name) <= CLAUDE_FOLDER_MAX_UNITS:
        return name
    return name[:CLAUDE_FOLDER_MAX_UNITS] + "-" + to_base36(abs(java_string_hash(workdir)))


def is_claude_session_id(text: str) -> bool:
    """Return whether text is a lowercase UUID, the form of Claude Code session ids."""
    return (
        len(text) == UUID_LENGTH
        and text[8] == text[13] == text[18] == text[23] == "-"
        and LOWER_HEX.issuperset(text.replace("-", ""))
    )


def is_stored_session_id(text: str) -> bool:
    """Return whether text may be stored in a slot record as a session id."""
    return (
        0 < len(text) <= MAX_SESSION_ID_LENGTH
        and all(char in SESSION_ID_CHARS for char in text)
        and not text.startswith(".")
    )


# ---- Session stores ------------------------------------------------------------------


class SessionInfo:
    """One session of the project, as found on the host."""

    __slots__ = ("id", "last_activity")

    def __init__(self, session_id: str, last_activity: float) -> None:
        self.id = session_id
        self.last_activity = last_activity  # epoch seconds

    def __repr__(self) -> str:
        return f"SessionInfo({self.id!r}, {self.last_activity!r})"


class SessionSnapshot:
    """Store contents recorded before the container started, to find what it changed.

    Claude Code: the session file names, and the mtimes of the watched sessions (of all of
    them when `watched_all`). OpenCode: the newest time_created/time_updated of the directory.
    """

    def __init__(
        self, names: frozenset[str], mtimes_ns: dict[str, int], watched_all: bool, baseline_ms: int
    ) -> None:
        self.names = names
        self.mtimes_ns = mtimes_ns
        self.watched_all = watched_all
        self.baseline_ms = baseline_ms


class SessionStore:
    """The sessions of one tool in one container working directory."""

    tool = ""

    def sessions(self, limit: int | None = None) -> list[SessionInfo]:
        """Return this project's sessions, newest activity first (at most `limit`)."""
        raise NotImplementedError

    def count(self) -> int:
        """Return how many sessions the store holds for this directory (an upper bound)."""
        raise NotImplementedError

    def find(self, session_id: str) -> SessionInfo | None:
        """Return the session with this id when it belongs to this project."""
        raise NotImplementedError

    def newest(self) -> SessionInfo | None:
        found = self.sessions(limit=1)
        return found[0] if found else None

    def snapshot(self, watch: Sequence[str] | None = None) -> SessionSnapshot:
        """Record the store before the container starts.

        `watch` names the sessions the launch may append to. None means any of them, which
        costs one stat per session file for Claude Code.
        """
        raise NotImplementedError

    def changed_since(self, snapshot: SessionSnapshot) -> list[SessionInfo]:
        """Return the sessions created or appended to after the snapshot, newest first."""
        raise NotImplementedError

    def first_prompt(self, session_id: str) -> str:
        """Return the first line of the session's first user prompt, or ''."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Return why the last read found no sessions because of an error, or None."""
        return None


def session_store(tool: str, state_root: str, workdir: str) -> SessionStore:
    """Return the session store of `tool` for the container working directory `workdir`."""
    if tool == "claude":
        return ClaudeSessions(os.path.join(state_root, CLAUDE_CONFIG_HOST_DIR), workdir)
    return OpencodeSessions(os.path.join(state_root, OPENCODE_DB_HOST_PATH), workdir)


# ---- Claude Code sessions --------------------------------------------------------------


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _user_text(content: object) -> str:
    """Return the typed text of a Claude user message (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):
                return text
    return ""


def _is_command_echo(text: str) -> bool:
    # Claude Code records slash commands and their output as user lines wrapped in tags such
    # as `<command-name>` and `<local-command-stdout>`, after a caveat line. None is a prompt.
    stripped = text.lstrip()
    return stripped.startswith(("<command-", "<local-command-", "Caveat: The messages below"))


def _partial_json_string(fragment: str) -> str:
    """Decode the start of a JSON string whose end was cut off by the head limit."""
    import json

    pieces = []
    index = 0
    while index < len(fragment) and fragment[index] != '"':
        length = 1
        if fragment[index] == "\\":
            length = 6 if fragment[index + 1 : index + 2] == "u" else 2
            if index + length > len(fragment):
                break
        pieces.append(fragment[index : index + length])
        index += length
    try:
        return str(json.loads('"' + "".join(pieces) + '"'))
    except ValueError:
        return ""


def _prompt_of_cut_line(line: str) -> str:
    """Return the first prompt line of a user line that the head limit cut off."""
    if '"type":"user"' not in line:
        return ""
    marker = line.find('"content":"')
    if marker < 0:
        return ""
    return _first_line(_partial_json_string(line[marker + len('"content":"') :]))


class ClaudeSessionHead:
    """The directory and the first prompt found at the start of a Claude session file."""

    __slots__ = ("cwd", "first_prompt")

    def __init__(self, cwd: str | None, first_prompt: str) -> None:
        self.cwd = cwd
        self.first_prompt = first_prompt


def read_claude_session_head(path: str) -> ClaudeSessionHead:
    """Read the first SESSION_HEAD_BYTES of a session file for its `cwd` and first prompt.

    Each line is a JSON object. Claude Code writes compact JSON, so the last line, when the
    limit cut it, still yields the start of a long first prompt.
    """
    import json

    try:
        with open(path, "rb") as stream:
            head = stream.read(SESSION_HEAD_BYTES)
    except OSError as error:
        log.debug("cannot read session file %s: %s", path, error)
        return ClaudeSessionHead(None, "")

    lines = head.decode("utf-8", errors="replace").split("\n")
    cut_line = lines.pop() if len(head) == SESSION_HEAD_BYTES else ""
    cwd: str | None = None
    prompt = ""
    for line in lines:
        try:
            entry = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if cwd is None and isinstance(entry.get("cwd"), str):
            cwd = entry["cwd"]
        if not prompt and entry.get("type") == "user" and not entry.get("isMeta"):
            message = entry.get("message")
            text = _user_text(message.get("content")) if isinstance(message, dict) else ""
            if text and not _is_command_echo(text) and not entry.get("isSidechain"):
                prompt = _first_line(text)
        if cwd is not None and prompt:
            break
    if not prompt and cut_line:
        prompt = _prompt_of_cut_line(cut_line)
    return ClaudeSessionHead(cwd, prompt)


class ClaudeSessions(SessionStore):
    """Claude Code sessions of one container working directory, in the host config dir.

    Only top-level `<uuid>.jsonl` files are sessions: subagent transcripts and other files in
    the folder are ignored. Folder names are lossy (`/x/a.b` and `/x/a-b` share one), so a
    file whose `cwd` names another directory belongs to another project.
    """

    tool = "claude"

    def __init__(self, config_dir: str, workdir: str) -> None:
        self.workdir = workdir
        self.folder = os.path.join(config_dir, "projects", claude_folder_name(workdir))

    def path_of(self, session_id: str) -> str:
        return os.path.join(self.folder, session_id + CLAUDE_SESSION_SUFFIX)

    def _list(self, with_mtimes: bool) -> dict[str, int]:
        """List the top-level session files: {session id: mtime in ns, or 0 when not asked}.

        Without mtimes no file is stat'ed: the entry type comes from the directory listing.
        With them, each stat is relative to the open folder, which saves a path lookup.
        """
        found: dict[str, int] = {}
        try:
            folder_fd = os.open(self.folder, os.O_RDONLY)
        except FileNotFoundError:
            return found
        except OSError as error:
            log.warning("cannot list Claude Code sessions in %s: %s", self.folder, error)
            return found
        try:
            self._scan(
                folder_fd if os.scandir in os.supports_fd else self.folder, with_mtimes, found
            )
        except OSError as error:
            log.warning("cannot list Claude Code sessions in %s: %s", self.folder, error)
        finally:
            os.close(folder_fd)
        return found

    @staticmethod
    def _scan(folder: int | str, with_mtimes: bool, found: dict[str, int]) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                session_id = name[:UUID_LENGTH]
                if not (
                    len(name) == UUID_LENGTH + len(CLAUDE_SESSION_SUFFIX)
                    and name.endswith(CLAUDE_SESSION_SUFFIX)
                    and is_claude_session_id(session_id)
                ):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        stat = entry.stat(follow_symlinks=False) if with_mtimes else None
                        found[session_id] = stat.st_mtime_ns if stat else 0
                except OSError:
                    continue  # removed while listing

    def names(self) -> frozenset[str]:
        """Return the ids of the top-level session files, without a stat per file."""
        return frozenset(self._list(with_mtimes=False))

    def mtimes(self, session_ids: Iterable[str]) -> dict[str, int]:
        """Return {session id: mtime in ns} for those ids whose file exists."""
        found: dict[str, int] = {}
        for session_id in session_ids:
            try:
                found[session_id] = os.stat(self.path_of(session_id)).st_mtime_ns
            except OSError:
                continue  # removed since it was listed
        return found

    def belongs_here(self, session_id: str) -> bool:
        cwd = read_claude_session_head(self.path_of(session_id)).cwd
        return cwd is None or cwd == self.workdir

    def _newest_first(self, mtimes: dict[str, int], limit: int | None) -> list[SessionInfo]:
        found: list[SessionInfo] = []
        for session_id in sorted(mtimes, key=lambda key: -mtimes[key]):
            if limit is not None and len(found) >= limit:
                break
            if self.belongs_here(session_id):
                found.append(SessionInfo(session_id, mtimes[session_id] / 1e9))
        return found

    def sessions(self, limit: int | None = None) -> list[SessionInfo]:
        return self._newest_first(self._list(with_mtimes=True), limit)

    def count(self) -> int:
        return len(self.names())

    def find(self, session_id: str) -> SessionInfo | None:
        if not is_claude_session_id(session_id):
            return None
        found = self.mtimes([session_id])
        if not found or not os.path.isfile(self.path_of(session_id)):
            return None
        if not self.belongs_here(session_id):
            return None
        return SessionInfo(session_id, found[session_id] / 1e9)

    def newest_in_folder(self) -> str | None:
        """Return the id Claude Code's own `--continue` picks: the newest file of the folder."""
        mtimes = self._list(with_mtimes=True)
        return max(mtimes, key=lambda key: mtimes[key]) if mtimes else None

    def snapshot(self, watch: Sequence[str] | None = None) -> SessionSnapshot:
        if watch is None:
            everything = self._list(with_mtimes=True)
            return SessionSnapshot(frozenset(everything), everything, True, 0)
        names = self.names()
        watched = self.mtimes(session_id for session_id in watch if session_id in names)
        return SessionSnapshot(names, watched, False, 0)

    def changed_since(self, snapshot: SessionSnapshot) -> list[SessionInfo]:
        """Return the new session files (by name) and the watched ones whose mtime grew."""
        before = snapshot.mtimes_ns
        if snapshot.watched_all:
            now = self._list(with_mtimes=True)
        else:
            names = self.names()
            now = self.mtimes((names - snapshot.names) | (names & before.keys()))
        changed = {
            session_id: mtime_ns
            for session_id, mtime_ns in now.items()
            if before.get(session_id, -1) < mtime_ns
        }
        return self._newest_first(changed, None)

    def first_prompt(self, session_id: str) -> str:
        return read_claude_session_head(self.path_of(session_id)).first_prompt


# ---- OpenCode sessions -----------------------------------------------------------------


def open_opencode_db(path: str) -> object | None:
    """Open opencode.db read-only, creating no file, or return None when it does not exist.

    A read-only connection to a WAL database creates the missing `-wal` and `-shm` files,
    owned by the launcher's user, which can lock the container's user out of its own
    database. A WAL database without both files has no writer, so it is opened with
    `immutable=1`, which creates nothing. Raises sqlite3.Error when it cannot be opened.
    """
    import sqlite3
    from urllib.parse import quote

    try:
        with open(path, "rb") as stream:
            header = stream.read(SQLITE_HEADER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise sqlite3.OperationalError(f"cannot read {path}: {error.strerror}") from None
    is_wal = len(header) == SQLITE_HEADER_BYTES and header[18] == SQLITE_WAL_FORMAT
    has_sidecars = os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
    mode = "mode=ro&immutable=1" if is_wal and not has_sidecars else "mode=ro"
    return sqlite3.connect(
        f"file:{quote(path)}?{mode}", uri=True, timeout=OPENCODE_BUSY_TIMEOUT_SECONDS
    )


def _table_columns(connection: object, table: str) -> set[str]:
    rows = connection.execute(f"PRAGMA table_info({table})")  # type: ignore[attr-defined]
    return {row[1] for row in rows}


class OpencodeSessions(SessionStore):
    """OpenCode sessions of one container working directory, read from opencode.db.

    The database is opened read-only and never created. A missing, locked or unreadable
    database, or a layout without the needed columns (an older or newer OpenCode), reads as
    no sessions, and `problem()` returns the reason.
    """

    tool = "opencode"

    def __init__(self, db_path: str, workdir: str) -> None:
        self.db_path = db_path
        self.workdir = workdir
        self._problem: str | None = None

    def problem(self) -> str | None:
        return self._problem

    def _query(self, sql: str, parameters: Sequence[object]) -> list[tuple[object, ...]]:
        import sqlite3

        self._problem = None
        try:
            connection = open_opencode_db(self.db_path)
        except sqlite3.Error as error:
            return self._failed(f"cannot open {self.db_path}: {error}")
        if connection is None:
            log.debug("no OpenCode database at %s yet", self.db_path)
            return []
        try:
            columns = _table_columns(connection, "session")
            missing = OPENCODE_REQUIRED_COLUMNS - columns
            if missing:
                return self._failed(
                    f"{self.db_path} has no session table with the columns "
                    f"{', '.join(sorted(missing))} (an OpenCode version this launcher does not "
                    "know)"
                )
            title = "title" if "title" in columns else "''"
            cursor = connection.execute(sql.replace("{title}", title), parameters)  # type: ignore[attr-defined]
            return list(cursor)
        except sqlite3.Error as error:
            return self._failed(f"cannot read {self.db_path}: {error}")
        finally:
            connection.close()  # type: ignore[attr-defined]

    def _failed(self, reason: str) -> list[tuple[object, ...]]:
        log.debug("reading OpenCode sessions as none: %s", reason)
        self._problem = reason
        return []

    @staticmethod
    def _info(row: tuple[object, ...]) -> SessionInfo:
        updated_ms = row[2] if isinstance(row[2], (int, float)) else row[1]
        return SessionInfo(
            str(row[0]), updated_ms / 1000 if isinstance(updated_ms, (int, float)) else 0.0
        )

    def sessions(self, limit: int | None = None) -> list[SessionInfo]:
        rows = self._query(
            "SELECT id, time_created, time_updated FROM session WHERE directory = ? "
            "ORDER BY time_updated DESC, time_created DESC LIMIT ?",
            (self.workdir, -1 if limit is None else limit),
        )
        return [self._info(row) for row in rows]

    def count(self) -> int:
        rows = self._query("SELECT count(*) FROM session WHERE directory = ?", (self.workdir,))
        return int(rows[0][0]) if rows and isinstance(rows[0][0], int) else 0

    def find(self, session_id: str) -> SessionInfo | None:
        rows = self._query(
            "SELECT id, time_created, time_updated FROM session WHERE id = ? AND directory = ?",
            (session_id, self.workdir),
        )
        return self._info(rows[0]) if rows else None

    def snapshot(self, watch: Sequence[str] | None = None) -> SessionSnapshot:
        rows = self._query(
            "SELECT max(max(time_created), max(time_updated)) FROM session WHERE directory = ?",
            (self.workdir,),
        )
        baseline = rows[0][0] if rows and isinstance(rows[0][0], int) else 0
        return SessionSnapshot(frozenset(), {}, False, baseline)

    def changed_since(self, snapshot: SessionSnapshot) -> list[SessionInfo]:
        rows = self._query(
            "SELECT id, time_created, time_updated FROM session WHERE directory = ? "
            "AND (time_created > ? OR time_updated > ?) "
            "ORDER BY time_updated DESC, time_created DESC",
            (self.workdir, snapshot.baseline_ms, snapshot.baseline_ms),
        )
        return [self._info(row) for row in rows]

    def title(self, session_id: str) -> str:
        rows = self._query("SELECT {title} FROM session WHERE id = ?", (session_id,))
        return str(rows[0][0] or "") if rows else ""

    def first_prompt(self, session_id: str) -> str:
        """Return the first line of the session's first user message, else of its title.

        OpenCode 1.x keeps messages in `message` (`data` is JSON with a `role`) and their
        text in `part` (`data` is JSON with `type` and `text`). With another layout the
        title is returned, which OpenCode derives from the first prompt.
        """
        import sqlite3

        try:
            connection = open_opencode_db(self.db_path)
        except sqlite3.Error:
            return ""
        if connection is None:
            return ""
        try:
            text = _opencode_first_user_text(connection, session_id)
        except (sqlite3.Error, ValueError, AttributeError, TypeError) as error:
            log.debug("no first prompt for OpenCode session %s: %s", session_id, error)
            text = ""
        finally:
            connection.close()  # type: ignore[attr-defined]
        return text or _first_line(self.title(session_id))


def _opencode_first_user_text(connection: object, session_id: str) -> str:
    import json

    if "time_created" in _table_columns(connection, "message"):
        query = (
            "SELECT id, data FROM message WHERE session_id = ? ORDER BY time_created, id LIMIT ?"
        )
    else:
        query = "SELECT id, data FROM message WHERE session_id = ? ORDER BY id LIMIT ?"
    messages = connection.execute(  # type: ignore[attr-defined]
        query, (session_id, OPENCODE_FIRST_MESSAGES)
    ).fetchall()
    for message_id, data in messages:
        if json.loads(data).get("role") != "user":
            continue
        parts = connection.execute(  # type: ignore[attr-defined]
            "SELECT data FROM part WHERE message_id = ? ORDER BY id", (message_id,)
        ).fetchall()
        for (part_data,) in parts:
            part = json.loads(part_data)
            if part.get("type") == "text" and not part.get("synthetic"):
                text = _first_line(str(part.get("text") or ""))
                if text:
                    return text
    return ""


# ---- Slot records ------------------------------------------------------------------------


class SlotRecord:
    """The last session of one slot of one project (`slot-N.json`, format version 1)."""

    __slots__ = ("project", "session_id", "slot", "tool", "updated")

    def __init__(self, tool: str, project: str, slot: int, session_id: str, updated: str) -> None:
        self.tool = tool
        self.project = project  # host real path of the project root
        self.slot = slot
        self.session_id = session_id
        self.updated = updated  # ISO 8601 UTC

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotRecord) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def to_json(self) -> str:
        import json

        body = {
            "version": SLOT_RECORD_VERSION,
            "tool": self.tool,
            "project": self.project,
            "slot": self.slot,
            "session_id": self.session_id,
            "updated": self.updated,
        }
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


class FutureSlotRecord(ValueError):
    """A slot record written by a newer launcher, in a format this one cannot read."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"it was written by a newer llm-docker (format version {version}, this launcher "
            f"reads version {SLOT_RECORD_VERSION})"
        )


def parse_slot_record(text: str, tool: str, project: str, slot: int) -> SlotRecord:
    """Parse a slot record, or raise ValueError (FutureSlotRecord for a newer format)."""
    import json

    try:
        data = json.loads(text)
    except ValueError as error:
        raise ValueError(f"it is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError("it is not a JSON object")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"its version is {version!r}, not a positive whole number")
    if version > SLOT_RECORD_VERSION:
        raise FutureSlotRecord(version)

    for key, expected in (("tool", tool), ("project", project), ("slot", slot)):
        if data.get(key) != expected or isinstance(data.get(key), bool):
            raise ValueError(f"its {key} is {data.get(key)!r}, expected {expected!r}")
    session_id = data.get("session_id")
    if not isinstance(session_id, str) or not is_stored_session_id(session_id):
        raise ValueError(f"its session_id {session_id!r} is not a session id")
    updated = data.get("updated")
    if not isinstance(updated, str):
        raise ValueError(f"its updated time {updated!r} is not a string")
    return SlotRecord(tool, project, slot, session_id, updated)


def write_file_atomically(path: str, text: str) -> None:
    """Replace `path` with `text`: write a temp file in the same directory, fsync, rename."""
    import tempfile

    directory, name = os.path.split(path)
    descriptor, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        import contextlib

        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is done either way
    finally:
        os.close(directory_fd)


class SlotLock:
    """An exclusive flock on the project's `.lock` file, held for a read-modify-write."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, ".lock")
        self.descriptor: int | None = None

    def __enter__(self) -> SlotLock:
        import fcntl

        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.descriptor, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing releases the lock
            self.descriptor = None


class SlotStore:
    """Slot records of one tool and one project: `STATE/slots/<tool>/<project id>/slot-N.json`.

    The project id keeps same-named folders apart, and each record also stores the
    project's real path, which must match when it is read.
    """

    def __init__(self, slots_root: str, tool: str, project_id: str, project_path: str) -> None:
        if project_id in ("", ".", "..") or "/" in project_id or "\0" in project_id:
            raise ValueError(f"project id {project_id!r} is not one path component")
        self.tool = tool
        self.project = project_path
        self.directory = os.path.join(slots_root, tool, project_id)

    def path(self, slot: int) -> str:
        return os.path.join(self.directory, f"slot-{slot}.json")

    def locked(self) -> SlotLock:
        return SlotLock(self.directory)

    def _check_slot(self, slot: int) -> None:
        if not 1 <= slot <= MAX_SLOT:
            raise SessionError(f"invalid slot {slot}", f"use a number from 1 to {MAX_SLOT}")

    def _load(self, slot: int) -> SlotRecord | None:
        """Return the record, None when there is none, or raise ValueError with the reason."""
        try:
            with open(self.path(slot), "rb") as stream:
                raw = stream.read(SLOT_RECORD_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ValueError(f"it cannot be read ({error.strerror})") from None
        if len(raw) > SLOT_RECORD_MAX_BYTES:
            raise ValueError(f"it is larger than {SLOT_RECORD_MAX_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("it is not UTF-8 text") from None
        return parse_slot_record(text, self.tool, self.project, slot)

    def _fix(self, slot: int, error: ValueError) -> str:
        remove = f"delete {quote_for_message(self.path(slot))} to start slot {slot} afresh"
        return f"upgrade llm-docker, or {remove}" if isinstance(error, FutureSlotRecord) else remove

    def read(self, slot: int) -> SlotRecord | None:
        """Return slot N's record or None; raise SessionError naming the file when invalid."""
        self._check_slot(slot)
        try:
            return self._load(slot)
        except ValueError as error:
            raise SessionError(
                f"invalid slot record {quote_for_message(self.path(slot))}: {error}",
                self._fix(slot, error),
            ) from None

    def read_all(self) -> tuple[dict[int, SlotRecord], list[str]]:
        """Return every valid record by slot, and one warning per invalid record file."""
        records: dict[int, SlotRecord] = {}
        warnings: list[str] = []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return records, warnings
        for name in names:
            number = name[len("slot-") : -len(".json")]
            if not (name.startswith("slot-") and name.endswith(".json") and number.isdigit()):
                continue
            slot = int(number)
            if not 1 <= slot <= MAX_SLOT or str(slot) != number:
                continue
            try:
                record = self._load(slot)
            except ValueError as error:
                warnings.append(f"skipped invalid slot record {quote_for_message(name)}: {error}")
                continue
            if record is not None:
                records[slot] = record
        return records, warnings

    def write(self, slot: int, session_id: str) -> list[str]:
        """Point slot N at the session; return notices for the user.

        A record this launcher cannot read is never replaced silently. A corrupt one is
        renamed to `slot-N.json.invalid-<time>` and reported. A newer-format one is kept, so
        the session is not saved, and a notice reports that.
        """
        import time

        self._check_slot(slot)
        if not is_stored_session_id(session_id):
            raise ValueError(f"session id {session_id!r} cannot be stored")
        updated = _timestamp(time.time(), utc=True)
        record = SlotRecord(self.tool, self.project, slot, session_id, updated)
        notices = []
        with self.locked():
            path = self.path(slot)
            try:
                self._load(slot)
            except FutureSlotRecord as error:
                return [
                    f"slot {slot} not saved (session {session_id}): "
                    f"{quote_for_message(path)}: {error}; {self._fix(slot, error)}"
                ]
            except ValueError as error:
                invalid_copy = f"{path}.invalid-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
                os.replace(path, invalid_copy)
                notices.append(
                    f"invalid slot record {quote_for_message(path)} ({error}) was renamed to "
                    f"{quote_for_message(os.path.basename(invalid_copy))} and replaced"
                )
            write_file_atomically(path, record.to_json())
        return notices


# ---- Session decision --------------------------------------------------------------------


class SessionDecision:
    """The session a launch starts with: a new one, the newest one, or a given one.

    `mode` is `new`, `continue` or `resume` (the LLM_DOCKER_SESSION contract value).
    `session_id` is the session the launch uses when it is known before the start.
    `tool_arguments` are the tool's session flags; None leaves them to `tool_command`.
    `first_message` is sent on a new session only. `slot` tags the session for the slot
    system, which saves it after exit through `tracker`.
    """

    def __init__(
        self,
        mode: str,
        session_id: str | None,
        slot: int | None,
        first_message: str | None,
        tool_arguments: list[str] | None = None,
        notices: Sequence[str] = (),
        allows_first_message: bool = False,
    ) -> None:
        self.mode = mode
        self.session_id = session_id
        self.slot = slot
        self.first_message = first_message
        self.tool_arguments = tool_arguments
        self.notices = list(notices)
        self.allows_first_message = allows_first_message
        self.tracker: SessionTracker | None = None

    def describe(self) -> str:
        parts = [self.mode]
        if self.session_id:
            parts.append(f"id {self.session_id}")
        if self.slot is not None:
            parts.append(f"slot {self.slot}")
        if self.first_message is not None:
            parts.append(f"first message of {len(self.first_message)} characters")
        return ", ".join(parts)


# Passthrough options that already choose a session (or a one-shot run), so no first
# message is added and the session mode follows them.
PASSTHROUGH_SESSION_OPTIONS = {
    "claude": {"-c": "continue", "--continue": "continue", "-r": "resume",
               "--resume": "resume", "--session-id": "resume", "-p": "new-print",
               "--print": "new-print"},
    "opencode": {"-c": "continue", "--continue": "continue", "-s": "resume",
                 "--session": "resume", "--prompt": "new-print"},
}  # fmt: skip


class SessionRequest:
    """The session flags of one launch: `-c`, `-c ID`, `--slot N` and the tool's own args."""

    def __init__(
        self,
        continue_session: bool = False,
        session_id: str | None = None,
        slot: int | None = None,
        passthrough: Sequence[str] = (),
    ) -> None:
        self.continue_session = continue_session
        self.session_id = session_id
        self.slot = slot
        self.passthrough = list(passthrough)


def passthrough_session(tool: str, passthrough: Sequence[str]) -> tuple[str | None, str | None]:
    """Return the mode that the tool's own session option after `--` picks, and its id.

    The mode is `continue`, `resume`, `new-print` or None; the id is the option's value
    when it has the shape of a session id.
    """
    options = PASSTHROUGH_SESSION_OPTIONS[tool]
    for index, argument in enumerate(passthrough):
        name, equals, value = (
            argument.partition("=") if argument.startswith("--") else (argument, "", "")
        )
        mode = options.get(name)
        if mode is None:
            continue
        if not equals and mode == "resume":
            value = passthrough[index + 1] if index + 1 < len(passthrough) else ""
        return mode, value if mode == "resume" and _is_tool_session_id(tool, value) else None
    return None, None


def _is_tool_session_id(tool: str, text: str) -> bool:
    if tool == "claude":
        return is_claude_session_id(text)
    return text.startswith("ses_") and is_stored_session_id(text)


def new_session_id() -> str:
    """Return a random (version 4) UUID string without importing `uuid`."""
    value = bytearray(os.urandom(16))
    value[6] = (value[6] & 0x0F) | 0x40
    value[8] = (value[8] & 0x3F) | 0x80
    text = value.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _describe_session(store: SessionStore, session: SessionInfo) -> str:
    prompt = quote_for_message(_shorten(store.first_prompt(session.id)))[1:-1] or "(no prompt)"
    return f"  {session.id}  {_timestamp(session.last_activity)}  {prompt}"


def _shorten(text: str) -> str:
    if len(text) <= FIRST_PROMPT_MAX_CHARS:
        return text
    return text[: FIRST_PROMPT_MAX_CHARS - 1] + "…"


def unknown_session_error(store: SessionStore, session_id: str, project: str) -> SessionError:
    """Return the error for `-c ID` naming no session of this project, with recent ones."""
    program = TOOL_PROGRAMS[store.tool]
    lines = [f"no session {quote_for_message(session_id)} in this project ({project})"]
    recent = store.sessions(limit=RECENT_SESSIONS_IN_ERROR)
    problem = store.problem()
    if problem:
        lines.append(f"the sessions could not be read: {problem}")
    if recent:
        lines.append("recent sessions of this project, newest first:")
        lines.extend(_describe_session(store, session) for session in recent)
        hint = (
            f"resume one with {program} -c ID, continue the newest with {program} -c, "
            f"or list them all with {program} --sessions"
        )
    else:
        hint = f"this project has no sessions yet: start one with {program}"
    return SessionError("\n".join(lines), hint)


def _fresh(store: SessionStore, request: SessionRequest, notices: list[str]) -> SessionDecision:
    if store.tool != "claude" or request.slot is None:
        return SessionDecision("new", None, request.slot, None, [], notices, True)
    # Claude Code accepts the id of a new session up front, so the slot saved at exit is this
    # launch's session even when other windows of the project start sessions at the same time.
    session_id = new_session_id()
    arguments = ["--session-id", session_id]
    return SessionDecision("new", session_id, request.slot, None, arguments, notices, True)


def _resume(store: SessionStore, session_id: str, mode: str, slot: int | None) -> SessionDecision:
    flag = "--resume" if store.tool == "claude" else "--session"
    return SessionDecision(mode, session_id, slot, None, [flag, session_id])


def plan_session(store: SessionStore, slots: SlotStore, request: SessionRequest) -> SessionDecision:
    """Decide the tool's session flags; raise SessionError for an unknown id.

    - The tool's own continue or resume option after `--` wins, and no flag is added.
    - `-c ID` resumes that session of this project.
    - `-c --slot N` resumes slot N's last session. A slot without one starts fresh, with
      a one-line notice.
    - `-c` continues the newest session of this directory. Without one, a new session
      starts, with a one-line notice.
    - Otherwise the session is new. Only a new session without arguments after `--` gets
      the first message.
    """
    program = TOOL_PROGRAMS[store.tool]
    own_mode, own_id = passthrough_session(store.tool, request.passthrough)
    if own_mode in ("continue", "resume"):
        if request.continue_session:
            raise SessionError(
                f"{program} -c and the tool's own session option after -- cannot be combined",
                f"use {program} -c [ID], or the tool's option after --, not both",
            )
        return SessionDecision(own_mode, own_id, request.slot, None, [])

    decision = _plan_launcher_session(store, slots, request)
    if request.passthrough:
        # Arguments after `--` (a print-mode prompt, --version) would be mixed up with an
        # injected first message, so BOOT.md is sent only when there are none.
        decision.allows_first_message = False
    return decision


def _plan_launcher_session(
    store: SessionStore, slots: SlotStore, request: SessionRequest
) -> SessionDecision:
    if request.session_id is not None:
        if store.find(request.session_id) is None:
            raise unknown_session_error(store, request.session_id, slots.project)
        return _resume(store, request.session_id, "resume", request.slot)

    if not request.continue_session:
        return _fresh(store, request, [])

    if request.slot is not None:
        record = slots.read(request.slot)
        if record is None:
            notice = f"slot {request.slot} has no saved session yet: starting a new session"
            return _fresh(store, request, [notice])
        if store.find(record.session_id) is None:
            notice = (
                f"slot {request.slot}'s session {record.session_id} no longer exists: "
                "starting a new session"
            )
            return _fresh(store, request, [notice])
        return _resume(store, record.session_id, "resume", request.slot)

    newest = store.newest()
    if newest is None:
        # Interactive Claude Code exits with "No conversation found to continue" when there is
        # none, and a folder may hold only sessions of another directory with the same (lossy)
        # folder name, which the tool's own --continue would pick up: start fresh instead.
        notice = "no earlier session in this directory: starting a new session"
        decision = _fresh(store, request, [notice])
        # The user asked to continue, so no first message is injected even in the new session.
        decision.allows_first_message = False
        return decision
    if isinstance(store, ClaudeSessions) and store.newest_in_folder() != newest.id:
        # Claude Code's own --continue would pick the session of another directory whose
        # folder name is the same (the name is lossy), so this directory's newest is named.
        return _resume(store, newest.id, "continue", request.slot)
    return SessionDecision("continue", newest.id, request.slot, None, ["--continue"])


# ---- Detection at exit --------------------------------------------------------------------


def pick_session(
    changed: Sequence[SessionInfo], expected_id: str | None, claimed: set[str]
) -> str | None:
    """Choose the session a container used among those changed while it ran (newest first).

    The id known before the start wins. Otherwise the sessions that other slots of the
    project hold belong to concurrent launches and are passed over.
    """
    # NOTE: two new OpenCode sessions of one directory, from launches that both exit before
    # either saves its slot, cannot be distinguished, because OpenCode assigns the id itself.
    ids = [session.id for session in changed]
    if not ids:
        return None
    if expected_id in ids:
        return expected_id
    for session_id in ids:
        if session_id not in claimed:
            return session_id
    return ids[0]


def snapshot_for(store: SessionStore, decision: SessionDecision) -> SessionSnapshot:
    """Take the snapshot before `docker run`, watching only the session the decision names."""
    return store.snapshot(None if decision.session_id is None else [decision.session_id])


def save_slot_after_exit(
    store: SessionStore, snapshot: SessionSnapshot, decision: SessionDecision, slots: SlotStore
) -> tuple[str | None, list[str]]:
    """Find the session the container used and point the decision's slot at it.

    A resumed or continued session is saved even when the user sent nothing, because the
    slot tags the session a launch resumes. Return the session id (None when no session was
    used, which leaves the slot as it was) and notices for the user.
    """
    if decision.slot is None:
        return None, []
    changed = store.changed_since(snapshot)
    with slots.locked():
        records, _ = slots.read_all()
        claimed = {record.session_id for slot, record in records.items() if slot != decision.slot}
        chosen = pick_session(changed, decision.session_id, claimed)
    resumed = decision.session_id if decision.mode != "new" else None
    if chosen is None and resumed is not None and store.find(resumed) is not None:
        chosen = resumed
    if chosen is None:
        log.debug("no %s session changed; slot %s kept as it was", store.tool, decision.slot)
        return None, []
    notices = slots.write(decision.slot, chosen)
    log.info("saved session %s to slot %s of %s", chosen, decision.slot, slots.project)
    return chosen, notices


# ---- Listing -----------------------------------------------------------------------------


class SessionRow:
    """One line of `--sessions`."""

    __slots__ = ("first_prompt", "id", "last_activity", "slots")

    def __init__(
        self, session_id: str, slots: list[int], last_activity: float, prompt: str
    ) -> None:
        self.id = session_id
        self.slots = slots
        self.last_activity = last_activity  # epoch seconds
        self.first_prompt = prompt


def list_sessions(
    store: SessionStore, slots: SlotStore, limit: int = MAX_LISTED_SESSIONS
) -> tuple[list[SessionRow], int, list[str]]:
    """Return this project's newest sessions with their slots, the total count, and warnings."""
    records, warnings = slots.read_all()
    slots_by_id: dict[str, list[int]] = {}
    for slot in sorted(records):
        slots_by_id.setdefault(records[slot].session_id, []).append(slot)
    sessions = store.sessions(limit=limit)
    if store.problem():
        warnings.append(str(store.problem()))
    rows = [
        SessionRow(
            session.id,
            slots_by_id.get(session.id, []),
            session.last_activity,
            _shorten(store.first_prompt(session.id)),
        )
        for session in sessions
    ]
    return rows, max(store.count(), len(rows)), warnings


def format_sessions_text(rows: Sequence[SessionRow], total: int, tool: str, project: str) -> str:
    """Return the `--sessions` table: newest first, local time, escaped prompts."""
    if not rows:
        return f"no {tool} sessions in {quote_for_message(project)} yet\n"
    id_width = max(len(row.id) for row in rows)
    lines = [
        f"{tool} sessions in {quote_for_message(project)}, newest first:",
        f"{'ID':<{id_width}}  {'SLOT':<5} {'LAST ACTIVITY':<16}  FIRST PROMPT",
    ]
    for row in rows:
        slot_text = ",".join(str(slot) for slot in row.slots) or "-"
        prompt = quote_for_message(row.first_prompt)[1:-1] or "(no prompt)"
        lines.append(
            f"{row.id:<{id_width}}  {slot_text:<5} {_timestamp(row.last_activity):<16}  {prompt}"
        )
    if total > len(rows):
        lines.append(f"... and {total - len(rows)} older sessions, not shown")
    return "\n".join(lines) + "\n"


def format_sessions_json(rows: Sequence[SessionRow], total: int, tool: str, project: str) -> str:
    """Return `--sessions --json`: times in ISO 8601 UTC, slots as a list of numbers."""
    import json

    body = {
        "version": 1,
        "tool": tool,
        "project": project,
        "total": total,
        "sessions": [
            {
                "id": row.id,
                "slots": row.slots,
                "last_activity": _timestamp(row.last_activity, utc=True),
                "first_prompt": row.first_prompt,
            }
            for row in rows
        ],
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


# ---- Crash resilience --------------------------------------------------------------------

# Messages on the watchdog pipe, one a line.
WATCHDOG_STOP = b"stop\n"  # the launcher was signalled: stop the container now
WATCHDOG_DONE = b"done\n"  # the launcher finished its exit work: leave quietly


def stop_container(engine_call: Callable[[Sequence[str]], object], name: str) -> None:
    """Run `docker stop -t 2 NAME`; a container that is already gone is fine."""
    try:
        engine_call(["stop", "-t", str(CONTAINER_STOP_GRACE_SECONDS), name])
    except Exception as error:  # the launcher is going away: log the failure and go on
        log.warning("stopping container %s failed: %s", name, error)


class Watchdog:
    """The launcher's end of the pipe to the detached watchdog process.

    The watchdog reads the pipe. `request_stop()` makes it stop the container now, and
    `finish()` sends that the launcher is done, so it exits. When the launcher dies first,
    the kernel closes this end, and the watchdog reads end-of-file without `done`: it stops
    the container and runs the exit action (saving the slot).
    """

    def __init__(self, write_fd: int, pid: int) -> None:
        self.write_fd: int | None = write_fd
        self.pid = pid  # the watchdog's process id, for logs and tests

    def _send(self, message: bytes) -> None:
        if self.write_fd is not None:
            try:
                os.write(self.write_fd, message)
            except OSError as error:
                log.debug("cannot reach the watchdog: %s", error)

    def request_stop(self) -> None:
        self._send(WATCHDOG_STOP)

    def finish(self) -> None:
        self._send(WATCHDOG_DONE)
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None


def watch_pipe(
    read_fd: int,
    container: str,
    engine_call: Callable[[Sequence[str]], object],
    on_launcher_death: Callable[[], object],
) -> bool:
    """Serve the pipe until `done` or end-of-file; return True when the launcher died."""
    buffer = b""
    stopped = False
    while True:
        try:
            chunk = os.read(read_fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line + b"\n" == WATCHDOG_DONE:
                return False
            if line + b"\n" == WATCHDOG_STOP and not stopped:
                log.info("launcher was signalled: stopping container %s", container)
                stop_container(engine_call, container)
                stopped = True

    log.warning("launcher died: stopping container %s and saving its session", container)
    if not stopped:
        stop_container(engine_call, container)
    try:
        on_launcher_death()
    except Exception as error:  # a bug here must not keep the watchdog alive
        log.error("saving the session after the launcher died failed: %r", error)
    return True


def _detach_watchdog(keep_fd: int, log_path: str | None) -> None:
    """Prepare the watchdog process: no terminal, no inherited descriptors, quiet signals."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for standard in (0, 1, 2):
        os.dup2(devnull, standard)
    try:
        highest = max(int(name) for name in os.listdir("/dev/fd"))
    except (OSError, ValueError):
        highest = 1023
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, highest + 1)
    signals.signal(signals.SIGHUP, signals.SIG_IGN)
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    signals.signal(signals.SIGTERM, signals.SIG_DFL)

    log.console_level = 100  # stderr is /dev/null now
    log.pending = []  # the launcher has written these already
    log.logger = None
    if log_path is not None:
        try:
            import logging

            os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
            handler = logging.FileHandler(log_path, encoding="utf-8", delay=True)
            formatter = logging.Formatter(
                "%(asctime)s %(process)d %(levelname)s watchdog: %(message)s"
            )
            handler.setFormatter(formatter)
            logger = logging.getLogger("llm-docker.watchdog")
            logger.propagate = False
            logger.handlers = [handler]
            logger.setLevel(logging.INFO)
            log.logger = logger
        except OSError:
            pass


def start_watchdog(
    container: str,
    engine_call: Callable[[Sequence[str]], object],
    on_launcher_death: Callable[[], object],
    log_path: str | None = None,
) -> Watchdog:
    """Fork a watchdog that outlives the launcher (double fork into a new session).

    The watchdog reads from a pipe whose only write end is in the launcher. The pipe is
    close-on-exec, so the `docker run` child does not keep it open.
    """
    read_fd, write_fd = os.pipe()
    pid_read, pid_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked processes
        try:
            os.close(write_fd)
            os.close(pid_read)
            os.setsid()
            grandchild = os.fork()
            if grandchild != 0:
                os.write(pid_write, str(grandchild).encode("ascii"))
                os._exit(0)
            os.close(pid_write)
            _detach_watchdog(read_fd, log_path)
            watch_pipe(read_fd, container, engine_call, on_launcher_death)
        finally:
            os._exit(0)

    os.close(read_fd)
    os.close(pid_write)
    os.waitpid(child, 0)
    with os.fdopen(pid_read, "rb") as stream:
        watchdog_pid = int(stream.read() or b"0")
    return Watchdog(write_fd, watchdog_pid)


def chain_stop_signals(watchdog: Watchdog) -> None:
    """Make SIGHUP and SIGTERM also ask the watchdog to stop the container.

    The handlers in place (which forward the signal to `docker run`) still run first. The
    caller restores the previous handlers when the container has exited.
    """
    for number in (signals.SIGHUP, signals.SIGTERM):
        previous = signals.getsignal(number)

        def handler(signal_number: int, frame: object, previous: object = previous) -> None:
            if callable(previous):
                previous(signal_number, frame)
            watchdog.request_stop()

        signals.signal(number, handler)


class SessionTracker:
    """Follows one launch: snapshot before the run, watchdog during it, slot save after it."""

    def __init__(self, store: SessionStore, slots: SlotStore, decision: SessionDecision) -> None:
        self.store = store
        self.slots = slots
        self.decision = decision
        self.snapshot: SessionSnapshot | None = None
        self.watchdog: Watchdog | None = None
        self.finished = False

    def start(
        self,
        engine_call: Callable[[Sequence[str]], object],
        container: str,
        log_path: str | None,
    ) -> None:
        """Take the snapshot and start the watchdog, right before the container runs."""
        if self.decision.slot is not None:
            self.snapshot = snapshot_for(self.store, self.decision)
        self.watchdog = start_watchdog(container, engine_call, self.save, log_path)

    def guard_signals(self) -> None:
        if self.watchdog is not None:
            chain_stop_signals(self.watchdog)

    def save(self) -> list[str]:
        """Save the slot from the session the container used; return notices."""
        if self.snapshot is None:
            return []
        _, notices = save_slot_after_exit(self.store, self.snapshot, self.decision, self.slots)
        return notices

    def finish(self) -> None:
        """Save the slot, report notices and release the watchdog (after the container exits)."""
        if self.finished:
            return
        self.finished = True
        try:
            for notice in self.save():
                log.warning("%s", notice)
        except (OSError, ValueError, SessionError) as error:
            log.warning("slot %s not saved: %s", self.decision.slot, error)
        finally:
            if self.watchdog is not None:
                self.watchdog.finish()


def project_stores(
    tool: str, project: Project, state: StatePaths
) -> tuple[SessionStore, SlotStore]:
    """Return the tool's session store for the project's container path, and its slots."""
    store = session_store(tool, state.root, project.container_path)
    slots = SlotStore(state.slots, tool, project.project_id, project.root)
    return store, slots


def show_sessions(tool: str, project: Project, state: StatePaths, as_json: bool) -> int:
    """Print this project's sessions (`--sessions`, `--json`) and return exit status 0."""
    store, slots = project_stores(tool, project, state)
    rows, total, warnings = list_sessions(store, slots)
    for warning in warnings:
        log.warning("%s", warning)
    formatter = format_sessions_json if as_json else format_sessions_text
    sys.stdout.write(formatter(rows, total, tool, project.root))
    return 0


def resolve_session(options: Options, project: Project, state: StatePaths) -> SessionDecision:
    """Decide the session from -c, -c ID, --slot and the tool's own options after `--`.

    Only a new session gets the first message (BOOT.md or the CLAUDE.md instruction). The
    decision carries the tracker that saves the slot after the run.
    """
    request = SessionRequest(
        options.continue_session, options.session_id, options.slot, options.passthrough
    )
    store, slots = project_stores(options.tool, project, state)
    decision = plan_session(store, slots, request)
    decision.tracker = SessionTracker(store, slots, decision)
    for notice in decision.notices:
        log.warning("%s", notice)
    if decision.allows_first_message:
        decision.first_message = read_first_message(project)
    return decision


def read_first_message(project: Project) -> str | None:
    """Return BOOT.md of the launch directory, or an instruction to read CLAUDE.md, or None."""
    boot_path = os.path.join(project.launch_dir, BOOT_FILE)
    try:
        with open(boot_path, "rb") as stream:
            data = stream.read(MAX_FIRST_MESSAGE_BYTES + 1)
    except FileNotFoundError:
        data = None
    except OSError as error:
        raise LauncherError(f"cannot read {boot_path}: {error.strerror}") from None

    if data is not None:
        if len(data) > MAX_FIRST_MESSAGE_BYTES:
            raise LauncherError(
                f"{BOOT_FILE} is larger than {MAX_FIRST_MESSAGE_BYTES // 1024} KiB: "
                f"{quote_for_message(boot_path)}",
                f"shorten it, or move the details to a file that {BOOT_FILE} asks to read",
            )
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise LauncherError(
                f"{quote_for_message(boot_path)} is not valid UTF-8", "save it as UTF-8"
            ) from None
        if "\0" in message:
            raise LauncherError(f"{quote_for_message(boot_path)} contains a NUL character")
        return message if message.strip() else None

    if os.path.isfile(os.path.join(project.launch_dir, CLAUDE_FILE)):
        relative = os.path.relpath(project.launch_dir, project.root)
        path = f"./{CLAUDE_FILE}" if relative == "." else f"./{relative}/{CLAUDE_FILE}"
        return CLAUDE_FILE_INSTRUCTION.format(path=path)
    return None


def finish_session(decision: SessionDecision, project: Project, exit_code: int) -> None:
    """Post-exit step: save the slot from the session the container used, end the watchdog."""
    log.debug("session finished: %s, exit code %d", decision.describe(), exit_code)
    if decision.tracker is not None:
        decision.tracker.finish()


# ====================================================================================
# Windows and tmux
# ====================================================================================

TMUX_FLAGS = {
    "tmux": "-t/--tmux",
    "recon": "-tr/--tmux-recon",
    "codeman": "-tc/--tmux-codeman",
    "claude-tmux": "-tcl/--tmux-claude",
}
# The build-time pack each tmux mode needs in the image.
TMUX_INSTALL_SETTINGS = {
    "tmux": "INSTALL_TMUX_VANILLA",
    "team": "INSTALL_TMUX_TEAM",
    "recon": "INSTALL_TMUX_RECON",
    "codeman": "INSTALL_TMUX_CODEMAN",
    "claude-tmux": "INSTALL_TMUX_CLAUDE",
}


def check_tmux_mode(options: Options, settings: Settings) -> None:
    """Refuse a tmux mode whose pack is not in the image."""
    if options.tmux == "none":
        return
    mode = options.tmux.partition(":")[0]
    needed = [TMUX_INSTALL_SETTINGS[mode]]
    if mode != "tmux":
        needed.insert(0, "INSTALL_TMUX_VANILLA")
    for name in needed:
        if not settings.flag(name):
            flag = TMUX_FLAGS.get(mode, "-tt/--tmux-team")
            raise LauncherError(
                f"{flag} needs {name}=true, but it is false ({settings.sources[name]})",
                f"set {name}=true in llm-docker.conf, then run {TOOL_PROGRAMS[options.tool]} "
                "--build to add it to the image",
            )


def reject_unavailable(options: Options) -> None:
    """Refuse flags whose host-side work is not part of this launcher yet.

    TODO: lift each refusal when its work lands (window fan-out, slots, tmux in the image).
    A window count of 1 is an ordinary single launch.
    """
    program = TOOL_PROGRAMS[options.tool]
    if options.windows is not None and options.windows > 1:
        raise NotAvailableError(
            f"the window count {options.windows} (N windows with slots 1..N) is not available yet",
            f"run {program} without a window count, once per terminal",
        )
    if options.tmux != "none":
        raise NotAvailableError(
            f"{options.tmux_flag} is not available yet: the image does not run the tool in "
            "tmux so far",
            f"run {program} without {options.tmux_flag}; to use tmux, start it in your own "
            f"terminal and run {program} inside it",
        )


# ====================================================================================
# Builder API launch
# ====================================================================================


BUILDER_API_READY_SECONDS = 10.0  # a started daemon whose port stays closed longer has failed
BUILDER_API_POLL_SECONDS = 0.1  # interval of the readiness check
BUILDER_API_CONNECT_SECONDS = 0.5  # timeout of one TCP connect to the daemon's port
BUILDER_API_LOG_TAIL_LINES = 10  # lines of the daemon log shown when it fails to start
BUILDER_API_RECORD_VERSION = 1  # format of STATE/builder-api/<project-id>.pid
BUILDER_API_RECORD_MAX_BYTES = 4096
BUILDER_API_SALT_BYTES = 16  # random salt of the password fingerprint in the record
CONTAINER_BUILDER_CLIENT = "/opt/llm-docker/builder_api/client.py"
# The bridge network's IPv4 gateway and subnet, one `GATEWAY|SUBNET` entry per IPAM config.
BRIDGE_IPAM_FORMAT = "{{range .IPAM.Config}}{{.Gateway}}|{{.Subnet}} {{end}}"


def builder_api_url(settings: Settings) -> str:
    """Return the URL the container uses to reach the builder API.

    With NETWORK_MODE=host the container shares the host's loopback, where -a binds the
    daemon, so the default BUILDER_API_HOST is replaced by 127.0.0.1.
    """
    host = settings.text("BUILDER_API_HOST")
    default_host = SETTINGS_BY_NAME["BUILDER_API_HOST"].default
    if settings.text("NETWORK_MODE") == "host" and host == default_host:
        host = LOOPBACK
    return f"http://{host}:{settings.number('BUILDER_API_PORT')}"


class BuilderApiLaunch:
    """The builder API daemon that -a starts or reuses for one project.

    `environment` is the daemon's whole environment and carries the password, which is never
    in `argv`. `in_terminal` is true on macOS, where the daemon runs in a new Terminal window
    and writes no log file. A mode-0600 file, deleted once read, then hands the password to
    that window's shell.
    """

    def __init__(
        self,
        argv: list[str],
        environment: dict[str, str],
        bind: str,
        port: int,
        project_root: str,
        record_file: str,
        log_file: str,
        in_terminal: bool,
    ) -> None:
        self.argv = argv
        self.environment = environment
        self.bind = bind
        self.port = port
        self.project_root = project_root
        self.record_file = record_file
        self.log_file = log_file
        self.in_terminal = in_terminal

    @property
    def password(self) -> str:
        return self.environment.get("BUILDER_API_PASSWORD", "")

    @property
    def has_password(self) -> bool:
        return bool(self.password)

    def address(self) -> str:
        return f"http://{self.bind}:{self.port}"


def builder_api_command(code_dir: str, project_root: str) -> list[str]:
    """Return the daemon argv from `builder_api.launch_args` of the package beside llmdocker.py.

    The package is loaded from its file path, so another `builder_api` on sys.path is never
    used. A copy of llmdocker.py alone has no package and gets a LauncherError.
    """
    package_dir = os.path.join(code_dir, "builder_api")
    init_file = os.path.join(package_dir, "__init__.py")
    if not os.path.isfile(init_file):
        raise LauncherError(
            f"-a/--api needs the builder API package {quote_for_message(package_dir)}, "
            "which does not exist",
            "-a needs the full llm-docker checkout (llmdocker.py together with builder_api/); "
            "a copy of llmdocker.py alone cannot start the builder API",
        )

    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "builder_api", init_file, submodule_search_locations=[package_dir]
    )
    if spec is None or spec.loader is None:
        raise LauncherError(f"cannot load the builder API package {quote_for_message(init_file)}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.launch_args(project_root))


def parse_bridge_gateway(text: str) -> str | None:
    """Return the first IPv4 gateway in BRIDGE_IPAM_FORMAT output, or None.

    Docker 20.10 reports only the subnet of the default bridge, without a gateway. The gateway
    is then the subnet's first address (.1), which dockerd assigns to docker0.
    """
    import ipaddress

    for entry in text.split():
        gateway, _, subnet = entry.partition("|")
        try:
            if gateway:
                return str(ipaddress.IPv4Address(gateway))
            if subnet:
                return str(ipaddress.IPv4Network(subnet, strict=False).network_address + 1)
        except ValueError:
            continue
    return None


def builder_api_bind(settings: Settings, engine: Engine, platform: str) -> str:
    """Return the address the daemon listens on so the container can reach it.

    Docker Desktop (macOS) forwards host.docker.internal to the host's loopback, and a
    host-network container shares it, so both get 127.0.0.1. A bridge container on Linux
    reaches the host at the bridge gateway (`--add-host host.docker.internal:host-gateway`).
    """
    if platform == "darwin" or settings.text("NETWORK_MODE") == "host":
        return LOOPBACK
    if engine.name != "docker":
        # NOTE: Podman names its network `podman` and reports gateways in another format.
        raise NotAvailableError(
            f"-a with LLM_DOCKER_ENGINE={engine.name} and NETWORK_MODE=bridge is not available "
            "yet (finding the bridge gateway is Docker-only)",
            "start the builder API yourself (python3 builder_api --project DIR --bind ADDRESS), "
            "or use NETWORK_MODE=host",
        )

    result = engine.query("network", "inspect", "bridge", "--format", BRIDGE_IPAM_FORMAT)
    if result.returncode != 0:
        raise engine.failure("docker network inspect bridge", result)
    gateway = parse_bridge_gateway(result.stdout)
    if gateway is None:
        raise EngineError(
            "the docker bridge network has no IPv4 gateway or subnet "
            f"(docker network inspect bridge: {quote_for_message(result.stdout.strip())})",
            "set NETWORK_MODE=host in llm-docker.conf, or start the builder API yourself",
        )
    return gateway


def is_loopback_address(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def plan_builder_api(
    settings: Settings,
    project: Project,
    state: StatePaths,
    engine: Engine,
    code_dir: str,
    environ: Mapping[str, str],
    platform: str,
) -> BuilderApiLaunch:
    """Decide how -a runs the project's daemon; raise before anything starts when it cannot.

    Any bind beyond loopback needs BUILDER_API_PASSWORD, because the daemon refuses to start
    without one there and every container on the bridge could reach it.
    """
    base_argv = builder_api_command(code_dir, project.root)
    bind = builder_api_bind(settings, engine, platform)
    password = settings.text("BUILDER_API_PASSWORD")
    if not password and not is_loopback_address(bind):
        raise SettingsError(
            f"-a binds the builder API to {bind}, the docker bridge gateway, so that the "
            "container can reach it. An address beyond loopback requires a password, but "
            "BUILDER_API_PASSWORD is not set",
            f"add BUILDER_API_PASSWORD=<a long random value> to {state.env_file}; the launcher "
            "passes it to the daemon and the container by name, never on a command line",
        )

    port = settings.number("BUILDER_API_PORT")
    argv = [*base_argv, "--bind", bind, "--port", str(port)]
    # NOTE: a project config that sets server.password_env to another name gets no password.
    environment = {name: value for name, value in environ.items() if name != "BUILDER_API_PASSWORD"}
    if password:
        environment["BUILDER_API_PASSWORD"] = password
    record_file = os.path.join(state.root, "builder-api", f"{project.project_id}.pid")
    log_file = os.path.join(state.logs, f"builder-api-{project.project_id}.log")
    return BuilderApiLaunch(
        argv, environment, bind, port, project.root, record_file, log_file, platform == "darwin"
    )


def builder_api_client_mount(code_dir: str) -> Mount:
    """Return the read-only mount of the in-container client (the image does not ship it)."""
    return Mount(
        os.path.join(code_dir, "builder_api", "client.py"), CONTAINER_BUILDER_CLIENT, readonly=True
    )


def process_alive(pid: int) -> bool:
    """Return whether a process with this pid exists (possibly owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_is_open(host: str, port: int) -> bool:
    """Return whether a TCP connect to host:port succeeds within BUILDER_API_CONNECT_SECONDS."""
    import socket

    try:
        socket.create_connection((host, port), timeout=BUILDER_API_CONNECT_SECONDS).close()
    except OSError:
        return False
    return True


def child_exited(pid: int) -> bool:
    """Return whether our child `pid` has exited (and reap it); other pids: not alive."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not process_alive(pid)
    return reaped == pid


def spawn_detached(argv: Sequence[str], environment: Mapping[str, str], log_file: str) -> int:
    """Start argv in a new session with stdin from /dev/null and output appended to log_file.

    Returns the pid. The new session has no controlling terminal, so Ctrl-C in the launcher's
    terminal and the end of the container leave the daemon running.
    """
    path = find_executable(argv[0], environment.get("PATH"))
    if path is None:
        raise LauncherError(f"{quote_for_message(argv[0])} not found to start the builder API")
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        actions: list[tuple[object, ...]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        return os.posix_spawn(
            path, list(argv), dict(environment), file_actions=actions, setsid=True
        )
    finally:
        os.close(log_fd)


def read_builder_api_record(path: str) -> tuple[int, str, int] | None:
    """Return (pid, bind, port) from a daemon record, or None when missing or unreadable."""
    import json

    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(BUILDER_API_RECORD_MAX_BYTES))
    except (OSError, ValueError) as error:
        if not isinstance(error, FileNotFoundError):
            log.debug("ignoring the builder API record %s: %s", path, error)
        return None
    if not isinstance(data, dict) or data.get("version") != BUILDER_API_RECORD_VERSION:
        log.debug("ignoring the builder API record %s: unknown format", path)
        return None
    pid, bind, port = data.get("pid"), data.get("bind"), data.get("port")
    if not (isinstance(pid, int) and pid > 0 and isinstance(bind, str) and isinstance(port, int)):
        log.debug("ignoring the builder API record %s: invalid fields", path)
        return None
    return pid, bind, port


def builder_api_record_json(
    pid: int, bind: str, port: int, fingerprint: dict[str, str] | None = None
) -> str:
    import json

    record: dict[str, object] = {
        "version": BUILDER_API_RECORD_VERSION,
        "pid": pid,
        "bind": bind,
        "port": port,
    }
    if fingerprint is not None:
        record.update(fingerprint)
    return json.dumps(record) + "\n"


def password_fingerprint(password: str, salt_hex: str | None = None) -> dict[str, str]:
    """Return the record fields that identify `password` without storing it.

    HMAC-SHA256 keyed with a random salt (new for each daemon) over the password, so the
    record shows whether a later launch has the same password but not the password itself.
    """
    import hmac
    import secrets

    salt_hex = salt_hex if salt_hex is not None else secrets.token_hex(BUILDER_API_SALT_BYTES)
    digest = hmac.new(bytes.fromhex(salt_hex), password.encode("utf-8"), "sha256").hexdigest()
    return {"password_salt": salt_hex, "password_hmac": digest}


def recorded_password_matches(path: str, password: str) -> bool:
    """Return whether the daemon record's fingerprint is that of `password`.

    A record without a valid fingerprint (written by an older launcher) does not match.
    """
    import hmac
    import json

    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(BUILDER_API_RECORD_MAX_BYTES))
        salt_hex, digest = data["password_salt"], data["password_hmac"]
        expected = password_fingerprint(password, salt_hex)["password_hmac"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return isinstance(digest, str) and hmac.compare_digest(digest, expected)


def write_builder_api_record(
    path: str, pid: int, bind: str, port: int, fingerprint: dict[str, str]
) -> None:
    """Write the daemon record atomically (a temporary file, then os.replace)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(builder_api_record_json(pid, bind, port, fingerprint))
    os.replace(temporary, path)


def find_running_builder_api(launch: BuilderApiLaunch) -> int | None:
    """Return the pid of this project's daemon when it runs and accepts connections, else None.

    A daemon that runs on another address or port than this launch needs is an error, because
    the container would receive the wrong URL.
    """
    record = read_builder_api_record(launch.record_file)
    if record is None:
        return None
    pid, bind, port = record
    if not process_alive(pid) or not port_is_open(bind, port):
        log.debug("the builder API record %s is stale (pid %d)", launch.record_file, pid)
        return None
    if (bind, port) != (launch.bind, launch.port):
        raise LauncherError(
            f"the builder API of this project already runs on {bind}:{port} (pid {pid}), "
            f"but this launch needs it on {launch.bind}:{launch.port}",
            f"stop it (kill {pid}) and run again, or set BUILDER_API_PORT={port}",
        )
    if not recorded_password_matches(launch.record_file, launch.password):
        # It may be running builds, so the launcher never stops it itself.
        raise LauncherError(
            f"the builder API of this project (pid {pid}) was started with another "
            "BUILDER_API_PASSWORD (or by an older launcher that recorded none), so the "
            "container's password would be rejected",
            f"stop it (kill {pid}) once its builds are done, then run again",
        )
    return pid


def ensure_builder_api(launch: BuilderApiLaunch, quiet: bool) -> int:
    """Reuse the project's running daemon or start one, and return its pid once it is ready.

    A lock file serializes launchers of the same project, so two `cld -a` started together
    start one daemon and the second reuses it.
    """
    import fcntl

    os.makedirs(os.path.dirname(launch.record_file), mode=0o700, exist_ok=True)
    lock_file = os.path.splitext(launch.record_file)[0] + ".lock"
    lock_fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        return _reuse_or_start_builder_api(launch, quiet)
    finally:
        os.close(lock_fd)


def _reuse_or_start_builder_api(launch: BuilderApiLaunch, quiet: bool) -> int:
    running = find_running_builder_api(launch)
    if running is not None:
        _announce(quiet, f"builder API already runs for this project on {launch.address()} "
                  f"(pid {running}); reusing it")  # fmt: skip
        return running
    if port_is_open(launch.bind, launch.port):
        raise LauncherError(
            f"port {launch.port} on {launch.bind} is already in use by another program "
            "(another project's builder API?)",
            "set BUILDER_API_PORT to a free port in llm-docker.conf, or stop that program",
        )

    remove_if_present(launch.record_file)  # stale: its pid no longer runs the daemon
    if launch.in_terminal:
        secret_file = start_builder_api_terminal(launch)
        try:
            pid = wait_for_builder_api(launch, None)
        finally:
            if secret_file is not None:  # the window's shell deletes it once read
                remove_if_present(secret_file)
        _announce(quiet, f"builder API started in a new Terminal window on {launch.address()} "
                  f"(pid {pid}); stop it with Ctrl-C there")  # fmt: skip
        return pid

    os.makedirs(os.path.dirname(launch.log_file), mode=0o700, exist_ok=True)
    pid = spawn_detached(launch.argv, launch.environment, launch.log_file)
    fingerprint = password_fingerprint(launch.password)
    write_builder_api_record(launch.record_file, pid, launch.bind, launch.port, fingerprint)
    wait_for_builder_api(launch, pid)
    _announce(quiet, f"builder API started on {launch.address()} (pid {pid}); log: "
              f"{launch.log_file}; stop it with: kill {pid}")  # fmt: skip
    return pid


def wait_for_builder_api(launch: BuilderApiLaunch, pid: int | None) -> int:
    """Wait until the daemon accepts connections, then return its pid.

    `pid` is our child's pid, or None when the Terminal window's shell writes the record.
    """
    import time

    deadline = time.monotonic() + BUILDER_API_READY_SECONDS
    while True:
        if pid is None:
            record = read_builder_api_record(launch.record_file)
            found = record[0] if record is not None else None
        else:
            found = pid
            if child_exited(pid):
                raise LauncherError(
                    f"the builder API exited at start (pid {pid}):\n"
                    + log_tail(launch.log_file, BUILDER_API_LOG_TAIL_LINES),
                    f"fix the cause above (full log: {launch.log_file}), then run again",
                )
        if found is not None and port_is_open(launch.bind, launch.port):
            return found
        if time.monotonic() >= deadline:
            where = "its Terminal window" if pid is None else launch.log_file
            raise LauncherError(
                f"timed out: the builder API accepted no connection on {launch.address()} "
                f"within {BUILDER_API_READY_SECONDS:g} s",
                f"see {where} for the reason",
            )
        time.sleep(BUILDER_API_POLL_SECONDS)


def log_tail(path: str, lines: int) -> str:
    """Return the last `lines` lines of a small log file, indented, or a note that it is empty."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError as error:
        return f"  (cannot read {path}: {error.strerror})"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("  " + line for line in tail) if tail else "  (the log is empty)"


def terminal_script(launch: BuilderApiLaunch, secret_file: str | None) -> str:
    """Return the sh command a new Terminal window runs to start the daemon.

    The shell records its own pid ($$, kept by `exec`) and reads the password from
    `secret_file` (mode 0600, deleted at once), so the password is never in an argv.
    """
    import shlex

    record = shlex.quote(launch.record_file)
    fingerprint = password_fingerprint(launch.password)
    record_json = builder_api_record_json(0, launch.bind, launch.port, fingerprint).strip()
    record_format = record_json.replace('"pid": 0', '"pid": %s')
    steps = [
        f"cd {shlex.quote(launch.project_root)}",
        # The subshell's umask 077 makes the record mode 0600 and leaves the daemon's alone.
        f"(umask 077 && printf {shlex.quote(record_format + chr(10))} $$ > {record}.tmp)",
        f"mv {record}.tmp {record}",
    ]
    if secret_file is not None:
        secret = shlex.quote(secret_file)
        steps += [
            f"IFS= read -r BUILDER_API_PASSWORD < {secret}",
            f"rm -f {secret}",
            "export BUILDER_API_PASSWORD",
        ]
    steps.append("exec " + " ".join(shlex.quote(argument) for argument in launch.argv))
    return " && ".join(steps)


def remove_if_present(path: str) -> None:
    import contextlib

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_builder_api_terminal(launch: BuilderApiLaunch) -> str | None:
    """Open a new Terminal window (macOS) that runs the daemon, through osascript.

    Returns the file that hands the password to the window's shell, or None without one.
    """
    secret_file = None
    password = launch.environment.get("BUILDER_API_PASSWORD", "")
    if password:
        secret_file = launch.record_file[: -len(".pid")] + ".secret"
        remove_if_present(secret_file)
        descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "w") as handle:
            handle.write(password + "\n")
    script = terminal_script(launch, secret_file)
    argv = [
        "osascript",
        "-e", f'tell application "Terminal" to do script {applescript_string(script)}',
        "-e", 'tell application "Terminal" to activate',
    ]  # fmt: skip
    result = run_command(Command(argv, launch.environment))
    if result.returncode != 0:
        if secret_file is not None:
            remove_if_present(secret_file)
        raise LauncherError(
            f"osascript could not open a Terminal window for the builder API: "
            f"{last_line(result.stderr) or f'exit status {result.returncode}'}",
            "allow the launcher to control Terminal (System Settings > Privacy & Security > "
            "Automation), or start the builder API yourself",
        )
    return secret_file


def _announce(quiet: bool, message: str) -> None:
    """Write a notice to stderr (unless -q) and record it for the log file."""
    if not quiet:
        sys.stderr.write(f"{log.program}: {message}\n")
    log.file_only(LaunchLog.INFO, "%s", message)


def format_builder_api_dry_run(launch: BuilderApiLaunch) -> str:
    """Return the --dry-run lines for -a: what would start, where it listens, where it logs."""
    running = None
    record = read_builder_api_record(launch.record_file)
    if record is not None and process_alive(record[0]) and port_is_open(record[1], record[2]):
        running = record
    lines = ["builder API (-a):"]
    if running is not None:
        lines.append(f"  already running: pid {running[0]} on {running[1]}:{running[2]} (reused)")
    else:
        lines.append("  not running: it would be started")
    lines += [
        f"  command: {shell_join(launch.argv)}",
        f"  bind: {launch.bind}",
        f"  port: {launch.port}",
        "  password: " + ("set (passed in the environment)" if launch.has_password else "unset"),
        f"  pid record: {launch.record_file}",
        "  log: " + ("its Terminal window" if launch.in_terminal else launch.log_file),
    ]
    return "\n".join(lines) + "\n"


# ====================================================================================
# Docker run argv
# ====================================================================================


class Identity:
    """uid and gid of the agent user in the container."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid = uid
        self.gid = gid


ROOT_FALLBACK_AGENT_ID = 1000  # agent uid and gid when root launches in a root-owned project


def agent_identity(
    settings: Settings,
    host_uid: int,
    host_gid: int,
    project_owner: tuple[int, int] | None = None,
) -> Identity:
    """Return the agent's uid:gid, unless the settings AGENT_UID and AGENT_GID override it.

    A non-root user's ids are kept. The agent must never be root, so for root it takes the
    owner (uid, gid) of the project root, which can then write the project, or 1000:1000
    when root owns it (or no owner is given). A gid of 0 also becomes 1000.
    """
    uid = gid = ROOT_FALLBACK_AGENT_ID
    if host_uid != 0:
        uid, gid = host_uid, host_gid
    elif project_owner is not None and project_owner[0] != 0:
        uid = project_owner[0]
        gid = project_owner[1] or ROOT_FALLBACK_AGENT_ID
    uid = settings.optional_number("AGENT_UID") or uid
    gid = settings.optional_number("AGENT_GID") or gid
    return Identity(uid, gid)


def path_owner(path: str) -> tuple[int, int] | None:
    """Return (uid, gid) of the owner of `path`, or None when it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_uid, status.st_gid


def can_write_directory(identity: Identity, owner: tuple[int, int], mode: int) -> bool:
    """Return whether `identity` may create files in a directory, judged by its mode bits.

    Only the owner, group and other classes are checked (no ACLs, no supplementary groups).
    """
    if identity.uid == owner[0]:
        needed = 0o300
    elif identity.gid == owner[1]:
        needed = 0o030
    else:
        needed = 0o003
    return mode & needed == needed


def project_write_warning(identity: Identity, root: str, conf_path: str) -> str | None:
    """Return a warning with the fix when the agent cannot write the project root, else None."""
    try:
        status = os.stat(root)
    except OSError:
        return None
    owner = (status.st_uid, status.st_gid)
    if can_write_directory(identity, owner, status.st_mode):
        return None

    fix = "run: " + shell_join(["chown", "-R", f"{identity.uid}:{identity.gid}", root])
    if owner[0] != 0:
        fix += f", or set AGENT_UID={owner[0]} and AGENT_GID={owner[1]} in {conf_path}"
    return (
        f"the agent (uid {identity.uid}, gid {identity.gid}) cannot write the project root "
        f"{quote_for_message(root)} (owner {owner[0]}:{owner[1]}, mode "
        f"{status.st_mode & 0o777:o}); {fix}"
    )


def check_network_settings(options: Options, settings: Settings) -> None:
    """Refuse host networking together with settings that need the bridge network."""
    if settings.text("NETWORK_MODE") != "host":
        return
    conflicts = []
    if not settings.flag("INTERNET_ACCESS"):
        conflicts.append("INTERNET_ACCESS=false (the block would hit the host's own network)")
    if settings.flag("LLM_DOCKER_SSH_ENABLED"):
        conflicts.append("LLM_DOCKER_SSH_ENABLED=true (ports are published on the bridge)")
    if options.tmux == "codeman":
        conflicts.append("-tc (port 3000 is published on 127.0.0.1 on the bridge)")
    if conflicts:
        raise SettingsError(
            f"NETWORK_MODE=host ({settings.sources['NETWORK_MODE']}) cannot be combined with "
            + " and ".join(conflicts),
            "set NETWORK_MODE=bridge in llm-docker.conf",
        )


def security_arguments(settings: Settings, engine_name: str) -> list[str]:
    """Return capability and security options.

    SANDBOX_ENABLED=false adds only SYS_PTRACE, which the entrypoint leaves to the agent for
    gdb and strace. no-new-privileges stays on either way, because the entrypoint starts
    the agent with it in both modes.
    """
    arguments: list[str] = []
    extra = []
    if not settings.flag("INTERNET_ACCESS"):
        extra.append("NET_ADMIN")
    if settings.flag("LLM_DOCKER_SSH_ENABLED"):
        extra.append("SYS_CHROOT")
    if not settings.flag("SANDBOX_ENABLED"):
        extra.append("SYS_PTRACE")

    arguments += ["--cap-drop", "ALL"]
    for capability in [*SETUP_CAPABILITIES, *extra]:
        arguments += ["--cap-add", capability]
    no_new_privileges = "no-new-privileges" if engine_name == "podman" else "no-new-privileges=true"
    arguments += ["--security-opt", no_new_privileges]
    return arguments


def resource_arguments(settings: Settings) -> list[str]:
    arguments = ["--pids-limit", str(settings.number("PIDS_LIMIT"))]
    if settings.text("CPU_LIMIT"):
        arguments += ["--cpus", settings.text("CPU_LIMIT")]
    if settings.text("MEMORY_LIMIT"):
        arguments += ["--memory", settings.text("MEMORY_LIMIT")]
    return arguments


def port_arguments(options: Options, settings: Settings, slot: int | None) -> list[str]:
    """Return `-p` options, every one bound to 127.0.0.1."""
    arguments = []
    if settings.flag("LLM_DOCKER_SSH_ENABLED"):
        host_port = settings.number("LLM_DOCKER_SSH_HOST_PORT") + (slot - 1 if slot else 0)
        if host_port > 65535:
            raise SettingsError(
                f"the SSH host port {host_port} (LLM_DOCKER_SSH_HOST_PORT plus slot {slot} - 1) "
                "is above 65535",
                "lower LLM_DOCKER_SSH_HOST_PORT in llm-docker.conf",
            )
        container_port = settings.number("LLM_DOCKER_SSH_PORT")
        arguments += ["-p", f"{LOOPBACK}:{host_port}:{container_port}"]
    if options.tmux == "codeman":
        arguments += ["-p", f"{LOOPBACK}:{CODEMAN_PORT}:{CODEMAN_PORT}"]
    return arguments


def label_arguments(
    tool: str, project: Project, decision: SessionDecision, host_uid: int, state_root: str
) -> list[str]:
    """Return the labels --clean and other tools use to find llm-docker containers."""
    labels = {
        "tool": tool,
        "project": project.name,
        "project-path": project.root,
        "project-id": project.project_id,
        "slot": str(decision.slot) if decision.slot is not None else "none",
        "host-uid": str(host_uid),
        "state-dir": state_root,
    }
    arguments = ["--label", COMPOSE_PROJECT_LABEL]
    for key, value in labels.items():
        arguments += ["--label", f"{LABEL_PREFIX}{key}={value}"]
    return arguments


def container_name(tool: str, project: Project, unique: str) -> str:
    """Return a unique, valid container name that shows the tool and project."""
    slug = "".join(char if char in CONTAINER_NAME_CHARS else "-" for char in project.name)
    slug = slug.strip(".-_")[:30] or "project"
    return f"llm-docker-{tool}-{slug}-{project.project_id}-{unique}"


def container_environment(
    options: Options,
    settings: Settings,
    project: Project,
    decision: SessionDecision,
    identity: Identity,
    environ: Mapping[str, str],
    terminal_size: tuple[int, int] | None,
) -> tuple[dict[str, str], set[str]]:
    """Return (name -> value) for the container and the names whose values are secret.

    Every name is passed as `-e NAME` with its value in the engine's environment, so no
    value appears in the `docker run` argv.
    """
    tool = options.tool
    values: dict[str, str] = {
        "LLM_DOCKER_TOOL": tool,
        "LLM_DOCKER_UID": str(identity.uid),
        "LLM_DOCKER_GID": str(identity.gid),
        "LLM_DOCKER_WORKDIR": project.container_path,
        "LLM_DOCKER_PROJECT": project.name,
        "LLM_DOCKER_VERSION": __version__,
        "LLM_DOCKER_SESSION": decision.mode,
        "LLM_DOCKER_SANDBOX": bool_word(settings.flag("SANDBOX_ENABLED")),
        "LLM_DOCKER_BYPASS": bool_word(
            tool == "claude" and settings.flag("CLAUDE_BYPASS_PERMISSIONS")
        ),
        "LLM_DOCKER_TMUX": options.tmux,
        "INTERNET_ACCESS": bool_word(settings.flag("INTERNET_ACCESS")),
        "EXIT_TO_DOCKER": bool_word(settings.flag("EXIT_TO_DOCKER")),
        "NODE_ENV": settings.text("NODE_ENV"),
        "BUILDER_API_URL": builder_api_url(settings),
    }  # fmt: skip
    secrets: set[str] = set()

    if options.verbosity < 0:
        values["LLM_DOCKER_QUIET"] = "true"  # -q: the entrypoint prints no banner
    if settings.flag("LLM_DOCKER_SSH_ENABLED"):
        values["LLM_DOCKER_SSH_ENABLED"] = "true"
        values["LLM_DOCKER_SSH_PORT"] = str(settings.number("LLM_DOCKER_SSH_PORT"))
    if tool == "claude":
        values["CLAUDE_CONFIG_DIR"] = CLAUDE_CONFIG_DIR
        values["IS_SANDBOX"] = settings.text("IS_SANDBOX")
        values["CLAUDE_CODE_BUBBLEWRAP"] = settings.text("CLAUDE_CODE_BUBBLEWRAP")
        values["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(
            settings.number("CLAUDE_CODE_MAX_OUTPUT_TOKENS")
        )

    for name in ("TERM", "COLORTERM", "LANG"):
        if environ.get(name):
            values[name] = environ[name]
    values.setdefault("LANG", "C.UTF-8")
    if terminal_size is not None:
        values["COLUMNS"], values["LINES"] = str(terminal_size[0]), str(terminal_size[1])

    secret_names = [name for name in TOOL_ENV_KEYS[tool]]
    secret_names.append("BUILDER_API_PASSWORD")
    if settings.flag("LLM_DOCKER_SSH_ENABLED"):
        secret_names.append("LLM_DOCKER_SSH_AUTHORIZED_KEYS")
    if options.tmux == "codeman":
        secret_names.append("CODEMAN_PASSWORD")
    for name in secret_names:
        value = str(settings.values[name])
        if value:
            values[name] = value
            secrets.add(name)

    for name, value in settings.env_file_values.items():
        if SETTINGS_BY_NAME.get(name) is None or SETTINGS_BY_NAME[name].secret:
            values.setdefault(name, value)
            secrets.add(name)

    for name in settings.names("PASS_ENV"):
        if name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIX) or name in values:
            raise SettingsError(
                f"PASS_ENV ({settings.sources['PASS_ENV']}) lists {name}, which the launcher "
                "sets itself or must never pass",
                "remove it from PASS_ENV",
            )
        if name in environ:
            values[name] = environ[name]
            secrets.add(name)
        else:
            log.info("PASS_ENV lists %s, which is not set in the environment: skipped", name)

    return values, secrets


def bool_word(value: bool) -> str:
    return "true" if value else "false"


def tool_command(
    tool: str, decision: SessionDecision, settings: Settings, passthrough: Sequence[str]
) -> list[str]:
    """Return the tool's argv as the tool receives it (the container command)."""
    command = [tool]
    if tool == "claude" and settings.flag("CLAUDE_BYPASS_PERMISSIONS"):
        command.append("--dangerously-skip-permissions")

    if decision.tool_arguments is not None:
        command += decision.tool_arguments
    elif (
        decision.mode == "continue"
        and decision.session_id is None
        and not _passthrough_mode(tool, passthrough)
    ):
        command.append("--continue")
    elif decision.mode == "resume" and decision.session_id:
        command += ["--resume" if tool == "claude" else "--session", decision.session_id]

    command += list(passthrough)
    if decision.first_message is not None:
        if tool == "opencode":
            command += ["--prompt", decision.first_message]
        else:
            command.append(decision.first_message)
    return command


def _passthrough_mode(tool: str, passthrough: Sequence[str]) -> bool:
    return any(
        argument.partition("=")[0] in PASSTHROUGH_SESSION_OPTIONS[tool] for argument in passthrough
    )


class RunPlan:
    """Everything needed to start the container: argv, environment values and display data."""

    def __init__(
        self,
        argv: list[str],
        environment: dict[str, str],
        secret_names: set[str],
        mounts: list[Mount],
        name: str,
        image: str,
    ) -> None:
        self.argv = argv
        self.environment = environment
        self.secret_names = secret_names
        self.mounts = mounts
        self.name = name
        self.image = image


def build_run_plan(
    options: Options,
    settings: Settings,
    project: Project,
    decision: SessionDecision,
    state: StatePaths,
    image: str,
    context: LaunchContext,
) -> RunPlan:
    """Build the `docker run` argv (a list, no shell) and the environment it passes."""
    owner = path_owner(project.root)
    identity = agent_identity(settings, context.host_uid, context.host_gid, owner)
    ssh = settings.flag("LLM_DOCKER_SSH_ENABLED")
    mounts = project.mounts + persistence_mounts(options.tool, state, ssh, context.home)
    if options.api:
        mounts.append(builder_api_client_mount(code_directory()))
    environment, secret_names = container_environment(
        options, settings, project, decision, identity, context.environ, context.terminal_size
    )
    name = container_name(options.tool, project, context.unique)

    argv = [context.engine_name, "run", "--rm", "-i"]
    if context.terminal_size is not None:
        argv.append("-t")
    argv += ["--name", name, "--hostname", CONTAINER_HOSTNAME]
    argv += label_arguments(options.tool, project, decision, context.host_uid, state.root)
    argv += ["--init"]
    argv += security_arguments(settings, context.engine_name)
    argv += resource_arguments(settings)
    argv += ["--network", settings.text("NETWORK_MODE")]
    argv += ["--add-host", "host.docker.internal:host-gateway"]
    argv += port_arguments(options, settings, decision.slot)
    for mount in mounts:
        argv += ["--mount", mount.spec()]
    argv += ["--workdir", project.container_path]
    for variable in environment:
        argv += ["-e", variable]
    argv.append(image)
    argv += tool_command(options.tool, decision, settings, options.passthrough)
    return RunPlan(argv, environment, secret_names, mounts, name, image)


# ====================================================================================
# Processes
# ====================================================================================

try:  # The C module behind `signal`; it is loaded at start, while `signal` imports enum.
    import _signal as signals  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - other interpreters
    import signal as signals  # type: ignore[no-redef,unused-ignore]


def find_executable(name: str, search_path: str | None) -> str | None:
    """Return the full path of the executable `name` on `search_path`, or None."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for directory in (search_path or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def _spawn(
    path: str, argv: Sequence[str], env: Mapping[str, str], actions: list[tuple[object, ...]]
) -> int:
    default_signals = (signals.SIGINT, signals.SIGQUIT, signals.SIGTERM, signals.SIGHUP)
    return os.posix_spawn(
        path, list(argv), dict(env), file_actions=actions, setsigdef=default_signals
    )


def _wait_exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def spawn_captured(path: str, argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    """Run a command with stdin from /dev/null; return (exit code, stdout, stderr)."""
    import select

    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    actions: list[tuple[object, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_write, 1),
        (os.POSIX_SPAWN_DUP2, err_write, 2),
    ]
    try:
        pid = _spawn(path, argv, env, actions)
    finally:
        os.close(out_write)
        os.close(err_write)

    chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
    open_fds = [out_read, err_read]
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [])
        for descriptor in ready:
            data = os.read(descriptor, 65536)
            if data:
                chunks[descriptor].append(data)
            else:
                open_fds.remove(descriptor)
                os.close(descriptor)
    code = _wait_exit_code(pid)
    stdout = b"".join(chunks[out_read]).decode("utf-8", "replace")
    stderr = b"".join(chunks[err_read]).decode("utf-8", "replace")
    return code, stdout, stderr


def spawn_streamed(
    path: str, argv: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None]
) -> int:
    """Run a command with stdout and stderr merged, calling `on_line` for each line."""
    read_end, write_end = os.pipe()
    actions: list[tuple[object, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, write_end, 1),
        (os.POSIX_SPAWN_DUP2, write_end, 2),
    ]
    try:
        pid = _spawn(path, argv, env, actions)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        for raw_line in stream:
            on_line(raw_line.decode("utf-8", "replace").rstrip("\r\n"))
    return _wait_exit_code(pid)


def spawn_attached(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    on_started: Callable[[], None] | None = None,
) -> int:
    """Run a command on the launcher's terminal and return its exit code.

    While it runs, the launcher ignores SIGINT and SIGQUIT (the terminal sends them to the
    child too) and forwards SIGTERM and SIGHUP to it. The child starts with default
    handlers for all four.
    """
    pid_box: list[int] = []

    def forward(signal_number: int, frame: object) -> None:
        if pid_box:
            os.kill(pid_box[0], signal_number)

    watched = {
        signals.SIGINT: signals.SIG_IGN,
        signals.SIGQUIT: signals.SIG_IGN,
        signals.SIGTERM: forward,
        signals.SIGHUP: forward,
    }
    previous = {number: signals.signal(number, handler) for number, handler in watched.items()}
    try:
        pid_box.append(_spawn(path, argv, env, []))
        if on_started is not None:
            on_started()
        return _wait_exit_code(pid_box[0])
    finally:
        for number, handler in previous.items():
            signals.signal(number, handler)


# ====================================================================================
# Engine seam
# ====================================================================================


class Command:
    """An external command: argv, full environment, and how to run it.

    `mode` is `capture` (collect output), `stream` (call `on_line` per output line) or
    `attach` (run on the terminal; `on_started` is called once the child runs).
    """

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        mode: str = "capture",
        on_line: Callable[[str], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.argv = argv
        self.env = env
        self.mode = mode
        self.on_line = on_line
        self.on_started = on_started


class CommandResult:
    def __init__(self, returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def run_command(command: Command) -> CommandResult:
    """Run one external command. Every engine call goes through here; tests replace it."""
    path = find_executable(command.argv[0], command.env.get("PATH"))
    if path is None:
        raise EngineError(f"{command.argv[0]} not found on PATH", missing_program_hint(command))
    if command.mode == "attach":
        return CommandResult(spawn_attached(path, command.argv, command.env, command.on_started))
    if command.mode == "stream" and command.on_line is not None:
        return CommandResult(spawn_streamed(path, command.argv, command.env, command.on_line))
    return CommandResult(*spawn_captured(path, command.argv, command.env))


def missing_program_hint(command: Command) -> str:
    """Return the fix for a program that is not on PATH, by which program it is."""
    name = os.path.basename(command.argv[0])
    if name == "podman":
        return (
            "install Podman or add it to PATH, or remove LLM_DOCKER_ENGINE=podman (from "
            "llm-docker.conf or the environment) to use Docker"
        )
    if name == "docker":
        return "install Docker (or Podman and set LLM_DOCKER_ENGINE=podman), or add it to PATH"
    return f"install {name} or add it to PATH"


def shell_join(argv: Sequence[str]) -> str:
    """Return argv shell-quoted for reading (never executed)."""
    import shlex

    return " ".join(shlex.quote(argument) for argument in argv)


ENGINE_DOWN_MARKERS = (
    "cannot connect to the docker daemon", "error during connect", "is the docker daemon running",
    "connection refused", "cannot connect to podman", "unable to connect to podman",
    "no such host", "context deadline exceeded",
)  # fmt: skip
ENGINE_DENIED_MARKERS = ("permission denied while trying to connect",)
IMAGE_MISSING_MARKERS = (
    "no such image",
    "image not known",
    "failed to find image",
    "no such object",
)
# Errors of `stop`/`rm` on a container that is gone, or that its --rm is removing already.
CONTAINER_GONE_MARKERS = ("no such container", "is already in progress")


class Engine:
    """The container engine CLI (docker or podman), with dry-run support.

    Queries run even in a dry run (they change nothing); actions are printed instead.
    DOCKER_HOST, DOCKER_CONTEXT and the CLI's configuration are left as the user set them.
    """

    def __init__(self, name: str, environ: Mapping[str, str], dry_run: bool) -> None:
        self.name = name
        self.environ = environ
        self.dry_run = dry_run
        self.printed: list[str] = []

    def query(self, *arguments: str) -> CommandResult:
        argv = [self.name, *arguments]
        log.debug("engine query: %s", argv)
        if self.dry_run:
            self.printed.append("(query) " + shell_join(argv))
        return run_command(Command(argv, self.environ))

    def act(self, *arguments: str, on_line: Callable[[str], None] | None = None) -> CommandResult:
        argv = [self.name, *arguments]
        log.debug("engine action: %s", argv)
        if self.dry_run:
            self.printed.append(shell_join(argv))
            return CommandResult(0)
        mode = "stream" if on_line is not None else "capture"
        return run_command(Command(argv, self.environ, mode, on_line))

    def attach(
        self,
        argv: list[str],
        extra_environment: Mapping[str, str],
        on_started: Callable[[], None] | None = None,
    ) -> int:
        if self.dry_run:
            self.printed.append(shell_join(argv))
            return 0
        environment = dict(self.environ)
        environment.update(extra_environment)
        command = Command(argv, environment, "attach", on_started=on_started)
        return run_command(command).returncode

    def failure(self, action: str, result: CommandResult) -> EngineError:
        """Return an EngineError for a failed command, with the engine's own words."""
        detail = (
            last_line(result.stderr)
            or last_line(result.stdout)
            or f"exit status {result.returncode}"
        )
        return EngineError(
            f"{action} failed: {detail}", engine_hint(self.name, result.stderr, self.environ)
        )


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def engine_hint(engine_name: str, stderr: str, environ: Mapping[str, str]) -> str:
    lowered = stderr.lower()
    if any(marker in lowered for marker in ENGINE_DENIED_MARKERS):
        return "add your user to the docker group (then log in again), or use rootless Docker"
    if not any(marker in lowered for marker in ENGINE_DOWN_MARKERS):
        return ""
    if engine_name == "podman":
        return "start Podman: systemctl --user start podman.socket (or podman machine start)"
    where = environ.get("DOCKER_HOST") or environ.get("DOCKER_CONTEXT") or "the default socket"
    return (
        f"start the Docker engine (for example: sudo systemctl start docker), or check "
        f"DOCKER_HOST and `docker context ls` (now using {where})"
    )


def is_engine_down(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(marker in lowered for marker in ENGINE_DOWN_MARKERS)


# ====================================================================================
# Image
# ====================================================================================


def image_tag(settings: Settings, tool: str) -> str:
    """Return the image to run: LLM_DOCKER_IMAGE, the combined image, or the tool's own."""
    if settings.text("LLM_DOCKER_IMAGE"):
        return settings.text("LLM_DOCKER_IMAGE")
    return COMBINED_IMAGE_TAG if settings.flag("COMBINED_IMAGE") else IMAGE_TAGS[tool]


def image_exists(engine: Engine, tag: str, platform: str, state: StatePaths) -> bool:
    """Return whether `tag` exists, starting Docker Desktop on macOS when the engine is down.

    This is the one engine call of the warm path.
    """
    result = engine.query("image", "inspect", "--format", "{{.Id}}", tag)
    if result.returncode == 0:
        return True
    if any(marker in result.stderr.lower() for marker in IMAGE_MISSING_MARKERS):
        return False
    if is_engine_down(result.stderr) and platform == "darwin" and engine.name == "docker":
        start_docker_desktop(engine, state)
        return image_exists(engine, tag, "started", state)
    if engine.dry_run and is_engine_down(result.stderr):
        engine.printed.append("(the engine did not answer; a real run would stop here)")
        return True
    raise engine.failure(f"{engine.name} image inspect {tag}", result)


DOCKER_DESKTOP_LOCATIONS = ("/Applications/Docker.app", "~/Applications/Docker.app")


def find_docker_desktop(home: str) -> str | None:
    """Return the Docker Desktop application path, also outside /Applications (Spotlight)."""
    for location in DOCKER_DESKTOP_LOCATIONS:
        path = expand_home(location, home)
        if os.path.isdir(path):
            return path
    environment = dict(os.environ)
    result = run_command(
        Command(["mdfind", "kMDItemCFBundleIdentifier == 'com.docker.docker'"], environment)
    )
    for line in result.stdout.splitlines():
        if line.endswith(".app") and os.path.isdir(line):
            return line
    return None


def start_docker_desktop(engine: Engine, state: StatePaths) -> None:
    """Start Docker Desktop and wait until the engine responds.

    A lock file serializes parallel launchers, so only the first one starts the app and the
    others wait for the same engine.
    """
    import fcntl
    import time

    if engine.dry_run:
        engine.printed.append("open -a Docker.app  (Docker Desktop is not running)")
        return
    os.makedirs(state.root, mode=0o700, exist_ok=True)
    with open(state.docker_desktop_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if engine.query("info", "--format", "{{.ServerVersion}}").returncode == 0:
            return

        app = find_docker_desktop(home_directory(os.environ))
        if app is None:
            raise EngineError(
                "Docker is not running and Docker Desktop was not found",
                "install Docker Desktop, or start your engine and check DOCKER_HOST",
            )
        log.warning("starting Docker Desktop (%s)", app)
        run_command(Command(["open", "-a", app], dict(os.environ)))

        deadline = time.monotonic() + DOCKER_DESKTOP_WAIT_SECONDS
        progress = ProgressLine("waiting for Docker Desktop")
        while time.monotonic() < deadline:
            if engine.query("info", "--format", "{{.ServerVersion}}").returncode == 0:
                progress.finish("Docker Desktop is running")
                return
            elapsed = DOCKER_DESKTOP_WAIT_SECONDS - int(deadline - time.monotonic())
            progress.update(f"{elapsed} s of at most {DOCKER_DESKTOP_WAIT_SECONDS} s")
            time.sleep(DOCKER_DESKTOP_POLL_SECONDS)
        progress.finish("")
    raise EngineError(
        f"Docker Desktop did not respond within {DOCKER_DESKTOP_WAIT_SECONDS} s",
        "open Docker Desktop yourself and wait until it says it is running, then try again",
    )


class ProgressLine:
    """A one-line progress indicator on stderr: rewritten in place on a terminal."""

    def __init__(self, title: str, quiet: bool = False) -> None:
        self.title = title
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self.shown = False
        if not quiet and not self.terminal:
            sys.stderr.write(f"{title} ...\n")

    def update(self, detail: str) -> None:
        if self.quiet or not self.terminal:
            return
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            width = 80
        text = f"{self.title}: {detail}".replace("\t", " ")
        text = "".join(char if char.isprintable() else " " for char in text)[: max(width - 1, 10)]
        sys.stderr.write("\r" + text + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def finish(self, message: str) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
        if message and not self.quiet:
            sys.stderr.write(message + "\n")
        sys.stderr.flush()


def build_step(line: str) -> str | None:
    """Return a short progress text for a build output line, or None when it is not a step.

    Understands the classic builder (`Step 3/9 : RUN ...`) and BuildKit (`#7 [3/9] RUN ...`).
    """
    if line.startswith("Step ") and " : " in line:
        return line[len("Step ") :]
    if line.startswith("#") and " [" in line and "]" in line:
        step = line.partition(" [")[2]
        return "[" + step if step else None
    return None


def docker_directory(code_dir: str) -> str:
    return os.path.join(code_dir, "docker")


def build_arguments(settings: Settings, tool: str) -> list[str]:
    build_tool = "both" if settings.flag("COMBINED_IMAGE") else tool
    arguments = ["--build-arg", f"TOOL={build_tool}"]
    if settings.text("BASE_IMAGE"):
        arguments += ["--build-arg", f"BASE_IMAGE={settings.text('BASE_IMAGE')}"]
    for name in INSTALL_SETTINGS:
        arguments += ["--build-arg", f"{name}={bool_word(settings.flag(name))}"]
    return arguments


def build_image(
    engine: Engine, settings: Settings, tool: str, tag: str, code_dir: str, state: StatePaths,
    quiet: bool, no_cache: bool = False,
) -> None:  # fmt: skip
    """Build `tag` from docker/ next to llmdocker.py, with extra CA certificates.

    The build runs on a temporary copy of docker/ with STATE/certs/*.crt under certs/ (the
    directory always exists). The terminal shows one progress line; the log gets every line.
    """
    source = docker_directory(code_dir)
    if not os.path.isfile(os.path.join(source, "Dockerfile")):
        raise EngineError(
            f"cannot build {tag}: {os.path.join(source, 'Dockerfile')} not found (this "
            "llmdocker.py was installed without its docker/ directory)",
            f"load a saved image instead (docker load -i llm-docker.tar, then docker tag it "
            f"{tag}), or run the launcher from a full clone of llm-docker",
        )
    certificates = sorted(
        name
        for name in (os.listdir(state.certs) if os.path.isdir(state.certs) else [])
        if name.endswith(".crt")
    )
    options = ["build", "--tag", tag, *build_arguments(settings, tool)]
    if no_cache:
        options.append("--no-cache")

    if engine.dry_run:
        engine.act(*options, f"<temporary copy of {source} with {len(certificates)} certificates>")
        return
    _start_logging_quietly(settings, state, options_verbose=False)

    import shutil
    import tempfile

    workspace = tempfile.mkdtemp(prefix="llm-docker-build-")
    try:
        context = os.path.join(workspace, "context")
        shutil.copytree(source, context, symlinks=True)
        os.makedirs(os.path.join(context, "certs"), exist_ok=True)
        for name in certificates:
            shutil.copyfile(os.path.join(state.certs, name), os.path.join(context, "certs", name))
        run_logged_action(engine, f"building {tag}", [*options, context], quiet)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    log.info("built image %s", tag)


def run_logged_action(engine: Engine, title: str, arguments: list[str], quiet: bool) -> None:
    """Run an engine action with a progress line; its whole output goes to the log."""
    progress = ProgressLine(title, quiet)
    tail: list[str] = []

    def on_line(line: str) -> None:
        log.info("%s: %s", title, line)
        tail.append(line)
        del tail[:-BUILD_FAILURE_TAIL_LINES]
        step = build_step(line)
        if step is not None:
            progress.update(step)

    result = engine.act(*arguments, on_line=on_line)
    progress.finish("" if result.returncode else f"{title}: done")
    if result.returncode != 0:
        sys.stderr.write("\n".join(tail) + "\n")
        raise EngineError(
            f"{title} failed with exit status {result.returncode} (last lines above)",
            "the full output is in the log: logs/llm-docker.log in the state directory",
        )


def smart_build(
    engine: Engine, settings: Settings, tool: str, tag: str, code_dir: str, state: StatePaths,
    quiet: bool,
) -> None:  # fmt: skip
    """--build: run the install script in a container of the image and commit the result.

    The INSTALL_* values are arguments of `env`, not `-e` options, so they do not end up in
    the committed image; the image's entrypoint, command and user are restored on commit.
    """
    import json

    inspect = engine.query("image", "inspect", "--format", "{{json .Config}}", tag)
    if inspect.returncode != 0:
        log.info("%s not found: --build makes a full build", tag)
        build_image(engine, settings, tool, tag, code_dir, state, quiet)
        return
    config = json.loads(inspect.stdout or "{}") or {}

    name = f"llm-docker-build-{os.getpid()}-{os.urandom(3).hex()}"
    assignments = [f"{name_}={bool_word(settings.flag(name_))}" for name_ in INSTALL_SETTINGS]
    run_options = ["run", "--name", name, "--user", "0:0", "--entrypoint", "env", tag]
    run_logged_action(
        engine, f"updating {tag}", [*run_options, *assignments, INSTALL_PACKS_SCRIPT], quiet
    )

    changes = [
        "--change", "ENTRYPOINT " + json.dumps(config.get("Entrypoint") or []),
        "--change", "CMD " + json.dumps(config.get("Cmd") or []),
        "--change", "USER " + (config.get("User") or "0"),
    ]  # fmt: skip
    try:
        committed = engine.act("commit", *changes, name, tag)
        if committed.returncode != 0:
            raise engine.failure(f"{engine.name} commit {name} {tag}", committed)
    finally:
        engine.act("rm", "--force", name)
    log.info("updated image %s with the install packs", tag)


def force_rebuild(
    engine: Engine, settings: Settings, tool: str, tag: str, code_dir: str, state: StatePaths,
    quiet: bool,
) -> None:  # fmt: skip
    """--rebuild-force: remove the image tag, then build from the Dockerfile without cache."""
    removed = engine.act("image", "rm", tag)
    if removed.returncode != 0 and not any(
        marker in removed.stderr.lower() for marker in IMAGE_MISSING_MARKERS
    ):
        log.warning("could not remove %s (%s); building over it", tag, last_line(removed.stderr))
    build_image(engine, settings, tool, tag, code_dir, state, quiet, no_cache=True)


def clean_containers(
    engine: Engine, host_uid: int, state_root: str, confirmed: bool, interactive: bool
) -> None:
    """--clean: remove the stopped llm-docker containers of this user and state directory.

    Running ones are stopped only after confirmation: a question on a terminal, or --yes.
    """
    listing = engine.query(
        "ps", "--all",
        "--filter", f"label={COMPOSE_PROJECT_LABEL}",
        "--filter", f"label={LABEL_PREFIX}host-uid={host_uid}",
        "--filter", f"label={LABEL_PREFIX}state-dir={state_root}",
        "--format", "{{.ID}}\t{{.State}}\t{{.Names}}",
    )  # fmt: skip
    if listing.returncode != 0:
        raise engine.failure(f"{engine.name} ps", listing)

    running: list[tuple[str, str]] = []
    stopped: list[tuple[str, str]] = []
    for line in listing.stdout.splitlines():
        container_id, _, rest = line.partition("\t")
        state, _, name = rest.partition("\t")
        if container_id:
            (running if state == "running" else stopped).append((container_id, name))

    if running and not confirmed:
        names = ", ".join(name for _, name in running)
        if not interactive:
            raise LauncherError(
                f"--clean found {len(running)} running llm-docker container(s): {names}; "
                "stopping them needs confirmation",
                "run it in a terminal to be asked, or add --yes",
            )
        sys.stderr.write(f"Stop {len(running)} running llm-docker container(s): {names}? [y/N] ")
        sys.stderr.flush()
        confirmed = sys.stdin.readline().strip().lower() in ("y", "yes")
        if not confirmed:
            log.warning("kept %d running container(s)", len(running))
            running = []

    if running:
        stop = engine.act("stop", *[container_id for container_id, _ in running])
        if stop.returncode != 0 and not only_gone_containers(stop.stderr):
            raise engine.failure(f"{engine.name} stop", stop)
    targets = [container_id for container_id, _ in stopped + running]
    if targets:
        removed = engine.act("rm", "--force", *targets)
        if removed.returncode != 0 and not only_gone_containers(removed.stderr):
            raise engine.failure(f"{engine.name} rm", removed)
    log.info("--clean removed %d container(s), %d of them running", len(targets), len(running))
    if not engine.dry_run:
        sys.stderr.write(f"removed {len(targets)} llm-docker container(s)\n")


def only_gone_containers(stderr: str) -> bool:
    """Return whether every error line is about a container that is gone or being removed."""
    lines = [line.lower() for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all(
        any(marker in line for marker in CONTAINER_GONE_MARKERS) for line in lines
    )


def run_maintenance(
    options: Options, engine: Engine, settings: Settings, tag: str, code_dir: str,
    state: StatePaths, interactive: bool, quiet: bool, host_uid: int,
) -> None:  # fmt: skip
    """Run --clean, then --build or --rebuild-force (or a build when the image is missing)."""
    if options.clean:
        clean_containers(engine, host_uid, state.root, options.yes, interactive)

    rebuilding = options.build or options.rebuild_force
    if rebuilding and settings.text("LLM_DOCKER_IMAGE"):
        raise LauncherError(
            f"--build and --rebuild-force work on the llm-docker image, but LLM_DOCKER_IMAGE "
            f"selects {tag}",
            "unset LLM_DOCKER_IMAGE to rebuild the llm-docker image",
        )
    if options.rebuild_force:
        force_rebuild(engine, settings, options.tool, tag, code_dir, state, quiet)
    elif options.build:
        smart_build(engine, settings, options.tool, tag, code_dir, state, quiet)
    else:
        ensure_image(engine, settings, options.tool, tag, code_dir, state, quiet)


def ensure_image(
    engine: Engine, settings: Settings, tool: str, tag: str, code_dir: str, state: StatePaths,
    quiet: bool,
) -> None:  # fmt: skip
    """Build the image when it is missing; LLM_DOCKER_IMAGE images are never built."""
    if image_exists(engine, tag, sys.platform, state):
        return
    if settings.text("LLM_DOCKER_IMAGE"):
        raise EngineError(
            f"image {tag} (LLM_DOCKER_IMAGE) not found",
            "build or load that image, or unset LLM_DOCKER_IMAGE to use the llm-docker image",
        )
    build_image(engine, settings, tool, tag, code_dir, state, quiet)


# ====================================================================================
# Command line
# ====================================================================================


class Options:
    """Parsed command line: the tool, the flags and the arguments after `--`."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.project_dir: str | None = None
        self.windows: int | None = None
        self.continue_session = False
        self.session_id: str | None = None
        self.slot: int | None = None
        self.delay = 0.5
        self.api = False
        self.tmux = "none"  # LLM_DOCKER_TMUX: none, tmux, team:N, recon, codeman, claude-tmux
        self.tmux_flag = ""  # the tmux option as given on the command line, for messages
        self.clean = False
        self.build = False
        self.rebuild_force = False
        self.yes = False
        self.dry_run = False
        self.verbosity = 0
        self.help = False
        self.version = False
        self.passthrough: list[str] = []
        self.list_sessions = False
        self.json_output = False


# (spellings, argument, help) in the order --help and the README show them.
FLAG_DOCS = (
    ("DIR", "", "Project directory: the first non-numeric argument. Default: the current "
                "directory."),
    ("N", "", "Open N terminal windows, each with its own slot 1..N (not available yet; 1 is an "
              "ordinary launch)."),
    ("-c, --continue", "", "Continue the newest session of this project."),
    ("-c, --continue", "ID", "Resume session ID (a token after -c that is not a number, not an "
                             "option and not an existing directory)."),
    ("--slot", "N", "Save the session of this launch to slot N of the project; -c --slot N "
                    "resumes slot N's last session."),
    ("-c N, N -c", "", "N windows, each restoring its own slot (not available yet)."),
    ("--delay", "SEC", "Seconds between opening windows (0-60). Default: 0.5."),
    ("-a, --api", "[true|false]", "Start (or reuse) this project's builder API daemon and pass "
                                  "its URL to the container. Default: false."),
    ("-t, --tmux", "", "Run the tool in tmux inside the container (not available yet)."),
    ("-tt, --tmux-team", "[2|3|4]", "tmux team layout: 2 side by side, 3 or 4 panes. Default: 4 "
                                    "(not available yet)."),
    ("-tr, --tmux-recon", "", "The recon session dashboard (cld only; not available yet)."),
    ("-tc, --tmux-codeman", "", "The Codeman web UI on http://127.0.0.1:3000 (not available "
                                "yet)."),
    ("-tcl, --tmux-claude", "", "The claude-tmux popup session manager (cld only; not available "
                                "yet)."),
    ("--clean", "", "Remove your stopped llm-docker containers (ask before stopping running "
                    "ones), then launch the tool."),
    ("--yes", "", "Answer yes to the --clean question (needed without a terminal)."),
    ("--build", "", "Re-run the install packs (INSTALL_*) in the image and commit it (a full "
                    "build when there is no image), then launch the tool."),
    ("--rebuild-force", "", "Remove the image and build it again from the Dockerfile, then "
                            "launch the tool."),
    ("--dry-run", "", "Print the settings, project, mounts, session and engine commands; change "
                      "nothing."),
    ("--sessions", "", "List the sessions of this project: id, slot, last activity, first "
                       "prompt line."),
    ("--json", "", "With --sessions: print JSON for scripts."),
    ("-v, --verbose", "", "More messages on stderr; -vv adds debug messages."),
    ("-q, --quiet", "", "Only errors on stderr."),
    ("--version", "", "Print the version."),
    ("-h, --help", "", "Print this help."),
    ("--", "", "Pass every later argument to the tool unchanged."),
)  # fmt: skip

KNOWN_OPTIONS = (
    "-c", "--continue", "--slot", "--delay", "-a", "--api", "-t", "--tmux", "-tt",
    "--tmux-team", "-tr", "--tmux-recon", "-tc", "--tmux-codeman", "-tcl", "--tmux-claude",
    "--clean", "--yes", "--build", "--rebuild-force", "--dry-run", "--sessions", "--json",
    "-v", "--verbose", "-q", "--quiet", "--version", "-h", "--help",
)  # fmt: skip
TMUX_OPTIONS = {
    "-t": "tmux", "--tmux": "tmux", "-tr": "recon", "--tmux-recon": "recon",
    "-tc": "codeman", "--tmux-codeman": "codeman", "-tcl": "claude-tmux",
    "--tmux-claude": "claude-tmux",
}  # fmt: skip
CLAUDE_ONLY_TMUX = ("recon", "claude-tmux")
TEAM_LAYOUTS = ("2", "3", "4")
DEFAULT_TEAM_LAYOUT = "4"


def is_number(token: str) -> bool:
    return bool(token) and all(char in DIGITS for char in token)


def parse_command_line(
    tool: str, arguments: Sequence[str], is_directory: Callable[[str], bool] = os.path.isdir
) -> Options:
    """Parse the flag grammar of cld/ocd; raise UsageError for invalid input.

    The rule for ambiguous tokens: a number is a window count unless it follows -tt. A token
    after -c is a session id only if it is not a number, not an option and not an existing
    directory. `is_directory` is that last check (replaced in tests).
    """
    options = Options(tool)
    program = TOOL_PROGRAMS[tool]
    arguments = list(arguments)
    index = 0

    def next_argument() -> str | None:
        return arguments[index + 1] if index + 1 < len(arguments) else None

    while index < len(arguments):
        argument = arguments[index]
        name, has_value, inline_value = (
            argument.partition("=") if argument.startswith("--") else (argument, "", "")
        )

        if argument == "--":
            options.passthrough = arguments[index + 1 :]
            break

        if not argument.startswith("-") or argument == "-":
            _parse_positional(options, argument, program)
        elif has_value and name in ("--slot", "--delay", "--api", "--tmux-team", "--continue"):
            _parse_option_value(options, name, inline_value, program)
        elif has_value:
            raise UsageError(f"option {name} does not take a value", f"run {program} --help")
        elif name in ("-c", "--continue"):
            _set_continue(options, name, program)
            candidate = next_argument()
            if candidate is not None and _is_session_id_candidate(candidate, is_directory):
                _set_session_id(options, candidate)
                index += 1
        elif name in ("--slot", "--delay"):
            value = next_argument()
            if value is None:
                raise UsageError(f"{name} needs a value", f"for example: {program} {name} 2")
            _parse_option_value(options, name, value, program)
            index += 1
        elif name in ("-a", "--api"):
            value = next_argument()
            if value is not None and value.lower() in BOOLEAN_WORDS and not is_number(value):
                options.api = BOOLEAN_WORDS[value.lower()]
                index += 1
            elif value is not None and _is_session_id_candidate(value, is_directory):
                # Neither a value, an option, a number nor an existing directory: a typo
                # of the value is more likely than a project directory that does not exist.
                _parse_option_value(options, "--api", value, program)
            else:
                options.api = True
        elif name in ("-tt", "--tmux-team"):
            value = next_argument()
            layout = DEFAULT_TEAM_LAYOUT
            if value is not None and is_number(value):
                layout = value
                index += 1
            _set_tmux(options, f"team:{_check_team_layout(layout, program)}", name, program)
        elif name in TMUX_OPTIONS:
            _set_tmux(options, TMUX_OPTIONS[name], name, program)
        elif name in ("-h", "--help"):
            options.help = True
        elif name == "--version":
            options.version = True
        elif name == "--verbose":
            options.verbosity += 1
        elif name == "--quiet":
            options.verbosity -= 1
        elif _is_repeated_letter(name, "v"):
            options.verbosity += len(name) - 1
        elif _is_repeated_letter(name, "q"):
            options.verbosity -= len(name) - 1
        elif name in ("--clean", "--yes", "--build", "--dry-run"):
            setattr(options, name[2:].replace("-", "_"), True)
        elif name == "--rebuild-force":
            options.rebuild_force = True
        elif name == "--sessions":
            options.list_sessions = True
        elif name == "--json":
            options.json_output = True
        else:
            raise UsageError(
                f"unknown option {quote_for_message(argument)}" + suggest_name(name, KNOWN_OPTIONS),
                f"to pass it to {tool}, put it after --: {program} -- {argument}",
            )
        index += 1

    _check_combinations(options, program)
    return options


def _is_repeated_letter(argument: str, letter: str) -> bool:
    """Return whether `argument` is `-` followed by `letter` one or more times (-v, -vv)."""
    return len(argument) > 1 and argument[1:] == letter * (len(argument) - 1)


def _is_session_id_candidate(token: str, is_directory: Callable[[str], bool]) -> bool:
    return not token.startswith("-") and not is_number(token) and not is_directory(token)


def _set_session_id(options: Options, token: str) -> None:
    if (
        len(token) > MAX_SESSION_ID_LENGTH
        or not token
        or not all(char in SESSION_ID_CHARS for char in token)
    ):
        raise UsageError(
            f"invalid session id {quote_for_message(token)}: expected letters, digits and . _ : - "
            f"(at most {MAX_SESSION_ID_LENGTH} characters)",
            "pass the id the tool printed, for example -c 0f8c2d1e-...; a directory must exist",
        )
    if options.session_id is not None and options.session_id != token:
        raise UsageError(
            f"two session ids given: {options.session_id} and {quote_for_message(token)}",
            "resume one session per launch",
        )
    options.session_id = token


def _parse_positional(options: Options, token: str, program: str) -> None:
    if is_number(token):
        count = int(token)
        if options.windows is not None:
            raise UsageError(
                f"two window counts given: {options.windows} and {token}",
                f"pass one number, for example: {program} 4",
            )
        if not 1 <= count <= MAX_WINDOWS:
            raise UsageError(
                f"window count {token} is out of range: expected 1 to {MAX_WINDOWS}",
                "a directory named like a number can be passed as ./" + token,
            )
        options.windows = count
        return
    if options.project_dir is not None:
        raise UsageError(
            f"unexpected argument {quote_for_message(token)}: the project directory is already "
            f"{quote_for_message(options.project_dir)}",
            f"to pass arguments to the tool, put them after --: {program} -- {token}",
        )
    options.project_dir = token


def _parse_option_value(options: Options, name: str, value: str, program: str) -> None:
    if name == "--slot":
        if not is_number(value) or not 1 <= int(value) <= MAX_SLOT:
            raise UsageError(
                f"--slot needs a whole number from 1 to {MAX_SLOT}, got {quote_for_message(value)}",
                f"for example: {program} --slot 2",
            )
        options.slot = int(value)
    elif name == "--delay":
        options.delay = _parse_delay(value, program)
    elif name == "--api":
        if value.lower() not in BOOLEAN_WORDS or is_number(value):
            raise UsageError(
                f"--api takes true or false, got {quote_for_message(value)}",
                f"for example: {program} --api=false (a project directory after -a must exist)",
            )
        options.api = BOOLEAN_WORDS[value.lower()]
    elif name == "--tmux-team":
        _set_tmux(options, f"team:{_check_team_layout(value, program)}", name, program)
    elif name == "--continue":
        _set_continue(options, name, program)
        _set_session_id(options, value)


def _set_continue(options: Options, flag: str, program: str) -> None:
    if options.continue_session:
        raise UsageError(
            f"{flag} given twice (-c and --continue are one option)",
            f"pass it once: {program} -c continues the newest session, {program} -c ID "
            "resumes that session",
        )
    options.continue_session = True


def _parse_delay(value: str, program: str) -> float:
    whole, dot, fraction = value.partition(".")
    valid = bool(whole or fraction) and all(char in DIGITS for char in whole + fraction)
    if not valid or (dot and not fraction) or float(value) > MAX_WINDOW_DELAY_SECONDS:
        raise UsageError(
            f"--delay needs seconds from 0 to {MAX_WINDOW_DELAY_SECONDS:g}, got "
            f"{quote_for_message(value)}",
            f"for example: {program} 4 --delay 0.3",
        )
    return float(value)


def _check_team_layout(layout: str, program: str) -> str:
    if layout not in TEAM_LAYOUTS:
        raise UsageError(
            f"-tt/--tmux-team takes 2, 3 or 4 panes, got {quote_for_message(layout)}",
            f"for example: {program} -tt 3 (a window count goes before -tt: {program} 2 -tt)",
        )
    return layout


def _set_tmux(options: Options, mode: str, flag: str, program: str) -> None:
    if mode in CLAUDE_ONLY_TMUX and options.tool != "claude":
        raise UsageError(
            f"{flag} is for Claude Code only (cld); ocd cannot use it",
            "run it with cld, or use -t/-tt/-tc with ocd",
        )
    if options.tmux != "none" and options.tmux != mode:
        raise UsageError(
            f"{flag} cannot be combined with another tmux mode ({options.tmux}): "
            "-t, -tt, -tr, -tc and -tcl are mutually exclusive",
            "pick one tmux mode",
        )
    options.tmux = mode
    options.tmux_flag = flag


def _check_combinations(options: Options, program: str) -> None:
    if options.json_output and not options.list_sessions:
        raise UsageError(
            "--json only applies to --sessions", f"for example: {program} --sessions --json"
        )
    if options.build and options.rebuild_force:
        raise UsageError(
            "--build and --rebuild-force cannot be combined",
            "--rebuild-force already rebuilds everything; pass one of them",
        )
    if options.windows is not None and options.windows > 1 and options.slot is not None:
        raise UsageError(
            f"--slot {options.slot} cannot be combined with a window count of {options.windows}",
            f"N windows use slots 1..N; for one slot run {program} --slot {options.slot}",
        )
    if options.windows is not None and options.windows > 1 and options.session_id:
        raise UsageError(
            f"session id {options.session_id} cannot be resumed in {options.windows} windows",
            f"resume it in one window: {program} -c {options.session_id}",
        )


HELP_WIDTH = 100  # columns of the --help text
HELP_INDENT = 28  # column where flag descriptions start


def format_help(tool: str, program: str) -> str:
    """Return the --help text, built from FLAG_DOCS and SETTINGS."""
    title = TOOL_TITLES[tool]
    lines = [
        f"usage: {program} [DIR] [N] [options] [-- {tool.upper()}_ARGS...]",
        "",
        f"Run {title} in a hardened container that sees only the project directory.",
        "",
        "options:",
    ]
    import textwrap

    for spelling, argument, text in FLAG_DOCS:
        head = f"  {spelling} {argument}".rstrip()
        wrapped = textwrap.wrap(text, HELP_WIDTH - HELP_INDENT)
        if len(head) > HELP_INDENT - 2:
            lines.append(head)
            wrapped[0] = " " * HELP_INDENT + wrapped[0]
        else:
            wrapped[0] = f"{head:<{HELP_INDENT}}{wrapped[0]}"
        lines += [wrapped[0]] + [" " * HELP_INDENT + line for line in wrapped[1:]]
    lines += [
        "",
        "A number is a window count unless it follows -tt. A token after -c is a session id",
        "only if it is not a number, not an option and not an existing directory.",
        "Unknown options are errors; pass tool options after --.",
        "A new session sends BOOT.md (or a request to read CLAUDE.md) as the first message,",
        "unless -c resumes a session or arguments follow --.",
        "",
        "settings (llm-docker.conf, secrets in .env, both in ~/.llm-docker or $LLM_DOCKER_HOME;",
        "the environment overrides both; files are KEY=VALUE data, never run by a shell):",
    ]
    for setting in SETTINGS:
        default = setting.default or "(empty)"
        where = {"env": " [.env]", "environment": " [environment]"}.get(setting.where, "")
        lines.append(f"  {setting.name}={default}{where}")
        lines += textwrap.wrap(
            setting.doc, HELP_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines) + "\n"


def format_settings_markdown() -> str:
    """Return the settings table in Markdown (the README's table is generated from this)."""
    rows = ["| Setting | Default | File | Meaning |", "|---|---|---|---|"]
    files = {"conf": "llm-docker.conf", "env": ".env", "environment": "environment"}
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "empty"
        doc = setting.doc.replace("|", "\\|")
        rows.append(f"| `{setting.name}` | {default} | {files[setting.where]} | {doc} |")
    return "\n".join(rows) + "\n"


def format_flags_markdown() -> str:
    """Return the flags table in Markdown (the README's table is generated from this)."""
    rows = ["| Flag | Meaning |", "|---|---|"]
    for spelling, argument, text in FLAG_DOCS:
        flag = f"{spelling} {argument}".strip().replace("|", "\\|")
        rows.append(f"| `{flag}` | {text} |")
    return "\n".join(rows) + "\n"


# ====================================================================================
# Dry run
# ====================================================================================


def format_dry_run(
    settings: Settings, project: Project, decision: SessionDecision, plan: RunPlan, engine: Engine
) -> str:
    """Return the --dry-run report; secret values are shown as their length only."""
    lines = ["settings:"]
    for setting in SETTINGS:
        value = settings.values[setting.name]
        if setting.secret:
            shown = f"<secret, {len(str(value))} characters>" if value else "(unset)"
        elif isinstance(value, list):
            shown = ",".join(value)
        elif isinstance(value, bool):
            shown = bool_word(value)
        else:
            shown = "" if value is None else str(value)
        lines.append(f"  {setting.name}={shown}  ({settings.sources[setting.name]})")

    lines += [
        "project:",
        f"  launch directory: {project.launch_dir}",
        f"  root: {project.root}",
        f"  id: {project.project_id}",
        f"  container path: {project.container_path}",
        "mounts:",
    ]
    for mount in plan.mounts:
        lines.append(f"  {mount.source} -> {mount.target} ({'ro' if mount.readonly else 'rw'})")
    lines += ["session:", f"  {decision.describe()}", "container environment (passed by name):"]
    for name, value in plan.environment.items():
        shown = f"<secret, {len(value)} characters>" if name in plan.secret_names else value
        lines.append(f"  {name}={shown}")
    lines.append("engine commands:")
    lines += [f"  {command}" for command in engine.printed]
    return "\n".join(lines) + "\n"


# ====================================================================================
# Main
# ====================================================================================


class LaunchContext:
    """Facts about the host that the argv builders need, gathered once in main()."""

    def __init__(
        self,
        environ: Mapping[str, str],
        home: str,
        engine_name: str,
        host_uid: int,
        host_gid: int,
        terminal_size: tuple[int, int] | None,
        unique: str,
    ) -> None:
        self.environ = environ
        self.home = home
        self.engine_name = engine_name
        self.host_uid = host_uid
        self.host_gid = host_gid
        self.terminal_size = terminal_size
        self.unique = unique


def code_directory() -> str:
    """Return the directory of the real llmdocker.py (symlinks such as cld resolved)."""
    return os.path.dirname(os.path.realpath(__file__))


def terminal_size() -> tuple[int, int] | None:
    """Return (columns, lines) when stdin and stdout are a terminal, else None."""
    if not (os.isatty(0) and os.isatty(1)):
        return None
    try:
        size = os.get_terminal_size(1)
    except OSError:
        return None
    return size.columns, size.lines


PROGRAM_USAGE = (
    "usage: llmdocker.py claude|opencode [DIR] [N] [options] [-- TOOL_ARGS...]\n"
    "Installed as cld (Claude Code) or ocd (OpenCode); run cld --help for the options.\n"
)


def select_tool(argv: list[str], program: str) -> tuple[str, str, list[str]]:
    """Return (tool, program name for messages, remaining arguments).

    `cld` and `ocd` pick the tool by name; any other name needs the tool as first argument.
    """
    if program in PROGRAM_TOOLS:
        return PROGRAM_TOOLS[program], program, argv
    if argv and argv[0] in TOOLS:
        return argv[0], TOOL_PROGRAMS[argv[0]], argv[1:]
    found = quote_for_message(argv[0]) if argv else "nothing"
    raise UsageError(
        f"expected the tool name claude or opencode as the first argument, found {found}",
        "run: python3 llmdocker.py claude [ARGS] (or use the cld/ocd symlinks)",
    )


def main(argv: list[str] | None = None, program: str | None = None) -> int:
    """Run the launcher and return its exit status (the tool's, once the container ran)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    program_name = program or os.path.basename(sys.argv[0] if sys.argv else "llmdocker.py")
    global log
    log = LaunchLog(program_name if program_name in PROGRAM_TOOLS else "llm-docker")
    settings: Settings | None = None
    state: StatePaths | None = None

    if program_name not in PROGRAM_TOOLS and arguments[:1] in (["-h"], ["--help"]):
        sys.stdout.write(PROGRAM_USAGE)
        return 0
    if program_name not in PROGRAM_TOOLS and arguments[:1] == ["--version"]:
        sys.stdout.write(f"llm-docker {__version__}\n")
        return 0

    try:
        tool, program_name, arguments = select_tool(arguments, program_name)
        log.program = program_name
        options = parse_command_line(tool, arguments)
        if options.help:
            sys.stdout.write(format_help(tool, program_name))
            return 0
        if options.version:
            sys.stdout.write(f"llm-docker {__version__}\n")
            return 0
        if options.verbosity >= 0:
            log.console_level = max(LaunchLog.DEBUG, LaunchLog.WARNING - 10 * options.verbosity)
        else:
            log.console_level = LaunchLog.ERROR

        environ = os.environ
        home = home_directory(environ)
        state = state_paths(environ, home)
        if not options.dry_run and ensure_env_file(state):
            log.notice("created %s (mode 0600) for your API keys", state.env_file)
        check_env_file_private(state.env_file, os.getuid())
        settings = load_settings(environ, state.conf, state.env_file, home)
        return launch(options, settings, state, environ, home)

    except LauncherError as error:
        _start_logging_quietly(settings, state, options_verbose=False)
        sys.stderr.write(f"{program_name}: error: {error.message}\n")
        if error.hint:
            sys.stderr.write(f"  {error.hint}\n")
        log.file_only(LaunchLog.ERROR, "%s", error.message)
        return error.exit_status
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    finally:
        close_file_logging()


def _start_logging_quietly(
    settings: Settings | None, state: StatePaths | None, options_verbose: bool
) -> None:
    """Write the pending records to the log file when settings allow.

    An OSError (for example a read-only state directory) becomes a warning on stderr.
    """
    if settings is None or state is None or log.logger is not None:
        return
    try:
        verbose = options_verbose or settings.text("NODE_ENV") == "development"
        start_file_logging(
            state.log_file, settings.number("LOG_MAX_KILOBYTES"), verbose, settings.secret_values()
        )
    except OSError as error:
        sys.stderr.write(f"llm-docker: warning: cannot write the log: {error}\n")


def launch(
    options: Options, settings: Settings, state: StatePaths, environ: Mapping[str, str], home: str
) -> int:
    """Resolve the project, image and session, then run the container and wait for it."""
    tool = options.tool
    reject_unavailable(options)
    check_tmux_mode(options, settings)
    check_network_settings(options, settings)

    code_dir = code_directory()
    launch_dir = options.project_dir if options.project_dir is not None else os.getcwd()
    project = resolve_project(launch_dir, settings, home, state, code_dir, TOOL_PROGRAMS[tool])
    if options.list_sessions:
        return show_sessions(tool, project, state, options.json_output)
    decision = resolve_session(options, project, state)

    engine = Engine(settings.text("LLM_DOCKER_ENGINE"), environ, options.dry_run)
    api_launch = None
    if options.api:
        api_launch = plan_builder_api(
            settings, project, state, engine, code_dir, environ, sys.platform
        )
    tag = image_tag(settings, tool)
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    quiet = options.verbosity < 0
    if options.clean or options.build or options.rebuild_force:
        if not options.dry_run:
            _start_logging_quietly(settings, state, options.verbosity > 0)
        run_maintenance(
            options, engine, settings, tag, code_dir, state, interactive, quiet, os.getuid()
        )
    else:
        ensure_image(engine, settings, tool, tag, code_dir, state, quiet)

    context = LaunchContext(
        environ, home, engine.name, os.getuid(), os.getgid(), terminal_size(),
        f"{os.getpid()}-{os.urandom(2).hex()}",
    )  # fmt: skip
    plan = build_run_plan(options, settings, project, decision, state, tag, context)
    identity = agent_identity(
        settings, context.host_uid, context.host_gid, path_owner(project.root)
    )
    write_warning = project_write_warning(identity, project.root, state.conf)
    if write_warning is not None:
        log.warning("%s", write_warning)
    if not settings.flag("SANDBOX_ENABLED"):
        log.warning(
            "the sandbox is off (SANDBOX_ENABLED=false): the agent keeps the SYS_PTRACE "
            "capability (gdb, strace), and it still runs with no-new-privileges and no other "
            "capability"
        )
    log.info(
        "launch %s in %s as %s (image %s, session %s)",
        tool,
        project.root,
        plan.name,
        tag,
        decision.describe(),
    )

    if options.dry_run:
        engine.attach(plan.argv, plan.environment)
        sys.stdout.write(format_dry_run(settings, project, decision, plan, engine))
        if api_launch is not None:
            sys.stdout.write(format_builder_api_dry_run(api_launch))
        return 0

    if api_launch is not None:
        ensure_builder_api(api_launch, quiet)
    prepare_state_directories(
        state, tool, settings.flag("LLM_DOCKER_SSH_ENABLED"), identity.uid, identity.gid,
        context.host_uid,
    )  # fmt: skip
    exit_code = run_container(engine, plan, settings, state, options.verbosity > 0, decision)
    log.info("container %s exited with status %d", plan.name, exit_code)
    finish_session(decision, project, exit_code)
    return exit_code


def run_container(
    engine: Engine,
    plan: RunPlan,
    settings: Settings,
    state: StatePaths,
    verbose: bool,
    decision: SessionDecision | None = None,
) -> int:
    """Start the container as a child process and wait for it.

    The session tracker takes its snapshot and starts the watchdog first, so a launcher
    that dies (SIGKILL included) still has its container stopped and its slot saved. The
    log file is set up once the container has been spawned, so importing `logging` does not
    delay the start.
    """
    tracker = decision.tracker if decision is not None else None
    if tracker is not None:
        log_path = state.log_file if settings.number("LOG_MAX_KILOBYTES") > 0 else None
        tracker.start(lambda arguments: engine.act(*arguments), plan.name, log_path)

    def on_started() -> None:
        if tracker is not None:
            tracker.guard_signals()  # spawn_attached restores its own handlers afterwards
        _start_logging_quietly(settings, state, verbose)

    try:
        exit_code = engine.attach(plan.argv, plan.environment, on_started)
    except BaseException:
        if tracker is not None:
            tracker.finish()
        raise
    _start_logging_quietly(settings, state, verbose)
    return exit_code


def run_as_program() -> None:
    """Run main() for the sh header above: sys.argv is ['-c', program path, arguments...]."""
    sys.exit(main(sys.argv[2:], os.path.basename(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())
