"""Declarative configuration: `.builder-api.toml`, `.builder-api.json` or `.builder-api.yml`.

The file is parsed as data, validated against a fixed schema, and turned into a frozen `Config`.
Every refusal is a `ConfigError` naming the file, the key and the reason. Unknown keys are errors,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from .paths import PathEscapeError, resolve_inside

# Config file names looked up in the project root, in this order.
CONFIG_NAMES = (".builder-api.toml", ".builder-api.json", ".builder-api.yml", ".builder-api.yaml")
# Extensions a --config file may have; the extension picks the parser.
CONFIG_EXTENSIONS = (".toml", ".json", ".yml", ".yaml")

# Config.source when no config file was found.
DEFAULTS_SOURCE = "(defaults)"
DEFAULT_PORT = 6666
DEFAULT_PASSWORD_ENV = "BUILDER_API_PASSWORD"  # noqa: S105 - a variable name
# Directory (inside the project) for the daemon's own files: build/run logs and the event feed.
DEFAULT_RUNTIME_DIR = ".builder-api"
# Log aliases the daemon always provides; a config that declares either one is rejected.
BUILD_LOG_ALIAS = "build"
RUN_LOG_ALIAS = "run"

ALIAS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Allowed build args: printable, no NUL, bounded; they go to execvp as separate argv items.
MAX_ARG_LEN = 4096


class ConfigError(Exception):
    """A configuration file or value is invalid: names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


@dataclass(frozen=True)
class ServerConfig:
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    password_env: str = DEFAULT_PASSWORD_ENV
    runtime_dir: str = DEFAULT_RUNTIME_DIR


@dataclass(frozen=True)
class BuildConfig:
    command: tuple[str, ...] = ()
    allowed_args: tuple[str, ...] = ()
    max_pending: int = 32
    timeout_s: float = 1800.0
    history: int = 50
    log_tail_lines: int = 200


@dataclass(frozen=True)
class RunConfig:
    start_command: tuple[str, ...] = ()
    stop_grace_s: float = 5.0


@dataclass(frozen=True)
class SecurityConfig:
    request_timeout_s: float = 30.0
    max_body_bytes: int = 1024 * 1024
    auth_failures_per_minute: int = 10
    lockout_s: float = 300.0
    max_connections: int = 256
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebSocketConfig:
    heartbeat_s: float = 5.0
    queue_frames: int = 1000
    max_message_bytes: int = 64 * 1024
    max_clients: int = 64
    poll_s: float = 0.02


@dataclass(frozen=True)
class Config:
    """The validated configuration. Paths in `logs`, `events_file` and `plugin` are real paths."""

    project_root: str
    source: str = DEFAULTS_SOURCE
    server: ServerConfig = field(default_factory=ServerConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    run: RunConfig = field(default_factory=RunConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    logs: Mapping[str, str] = field(default_factory=dict)
    events_file: str = ""
    runtime_dir: str = ""
    plugin: str | None = None

    def with_overrides(self, bind: str | None = None, port: int | None = None) -> Config:
        """Return a copy with the command-line overrides applied and checked."""
        server = self.server
        if bind is not None:
            _check_bind("command line", "--bind", bind)
            server = ServerConfig(bind, server.port, server.password_env, server.runtime_dir)
        if port is not None:
            if not 0 <= port <= 65535:
                raise ConfigError(
                    "command line", "--port", f"{port} is not a port number (0-65535)"
                )
            server = ServerConfig(server.bind, port, server.password_env, server.runtime_dir)
        return Config(
            self.project_root,
            self.source,
            server,
            self.build,
            self.run,
            self.security,
            self.websocket,
            self.logs,
            self.events_file,
            self.runtime_dir,
            self.plugin,
        )


def is_loopback(bind: str) -> bool:
    """True when `bind` names a loopback address (127.0.0.0/8, ::1 or localhost)."""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Field checkers: each returns the converted value or raises ConfigError(file, key, reason).

Checker = Callable[[str, str, Any], Any]


def _int(lo: int, hi: int) -> Checker:
    def check(file: str, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                file, key, f"expected an integer, got {type(value).__name__} {value!r}"
            )
        if not lo <= value <= hi:
            raise ConfigError(file, key, f"{value} is out of range ({lo}-{hi})")
        return value

    return check


def _float(lo: float, hi: float) -> Checker:
    def check(file: str, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(file, key, f"expected a number, got {type(value).__name__} {value!r}")
        if not lo <= float(value) <= hi:
            raise ConfigError(file, key, f"{value} is out of range ({lo}-{hi})")
        return float(value)

    return check


def _str(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(file, key, f"expected a string, got {type(value).__name__} {value!r}")
    if "\x00" in value:
        raise ConfigError(file, key, "contains a NUL byte")
    return value


def _nonempty_str(file: str, key: str, value: Any) -> str:
    text = _str(file, key, value)
    if not text:
        raise ConfigError(file, key, "must not be empty")
    return text


def _str_list(file: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(file, key, f"expected a list of strings, got {type(value).__name__}")
    items = []
    for index, item in enumerate(value):
        text = _str(file, f"{key}[{index}]", item)
        if len(text) > MAX_ARG_LEN:
            raise ConfigError(file, f"{key}[{index}]", f"longer than {MAX_ARG_LEN} characters")
        items.append(text)
    return tuple(items)


def _command(file: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(
            file,
            key,
            "must be a list (argv for execvp), not a string: "
            'write ["make", "-j4"] rather than "make -j4"; no shell is used',
        )
    items = _str_list(file, key, value)
    if not items or not items[0]:
        raise ConfigError(file, key, "must be a non-empty list whose first item is the program")
    return items


def _check_bind(file: str, key: str, value: Any) -> str:
    text = _nonempty_str(file, key, value)
    if text == "localhost":
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(file, key, f"{text!r} is not an IP address (or 'localhost')") from None
    return text


def _env_name(file: str, key: str, value: Any) -> str:
    text = _nonempty_str(file, key, value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise ConfigError(file, key, f"{text!r} is not an environment variable name")
    return text


def _hosts(file: str, key: str, value: Any) -> tuple[str, ...]:
    items = _str_list(file, key, value)
    return tuple(item.lower() for item in items)


SCHEMA: dict[str, dict[str, Checker]] = {
    "server": {
        "bind": _check_bind,
        "port": _int(0, 65535),
        "password_env": _env_name,
        "runtime_dir": _nonempty_str,
    },
    "build": {
        "command": _command,
        "allowed_args": _str_list,
        "max_pending": _int(1, 100000),
        "timeout_s": _float(0.1, 7 * 86400.0),
        "history": _int(1, 100000),
        "log_tail_lines": _int(1, 100000),
    },
    "run": {"start_command": _command, "stop_grace_s": _float(0.0, 3600.0)},
    "events": {"file": _nonempty_str},
    "security": {
        "request_timeout_s": _float(0.05, 3600.0),
        "max_body_bytes": _int(1, 1 << 30),
        "auth_failures_per_minute": _int(1, 1000000),
        "lockout_s": _float(0.0, 86400.0 * 30),
        "max_connections": _int(1, 100000),
        "allowed_hosts": _hosts,
    },
    "websocket": {
        "heartbeat_s": _float(0.05, 3600.0),
        "queue_frames": _int(1, 1000000),
        "max_message_bytes": _int(125, 1 << 26),
        "max_clients": _int(1, 100000),
        "poll_s": _float(0.001, 10.0),
    },
}
# `logs` is a free-form table of ALIAS = "path"; `plugin` is a top-level string.
TOP_LEVEL = set(SCHEMA) | {"logs", "plugin"}


# ---------------------------------------------------------------------------------------------
# Reading files.


def find_config(project_root: str) -> str | None:
    """The first config file present in the project root, or None."""
    for name in CONFIG_NAMES:
        candidate = os.path.join(project_root, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def parse_text(file: str, text: str) -> dict[str, Any]:
    """Parse config text by the file's extension into a plain dict (not yet validated)."""
    lower = file.lower()
    if lower.endswith(".toml"):
        if sys.version_info < (3, 11):
            raise ConfigError(file, "", "TOML needs Python 3.11+ (tomllib); use .builder-api.json")
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(file, "", f"invalid TOML: {exc}") from None
    elif lower.endswith((".yml", ".yaml")):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                file, "", "YAML needs PyYAML (pip install pyyaml); or use .builder-api.json"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(file, "", f"invalid YAML: {exc}") from None
        if data is None:
            data = {}
    else:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(file, "", f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            file, "", f"the top level must be a table/object, got {type(data).__name__}"
        )
    return data


def load_config(project_dir: str, config_file: str | None = None) -> Config:
    """Find, read, parse and validate the project's config. No file means all defaults."""
    root = os.path.realpath(project_dir)
    if not os.path.exists(root):
        raise ConfigError(project_dir, "", "the project directory does not exist")
    if not os.path.isdir(root):
        raise ConfigError(
            project_dir, "", "is not a directory: --project takes the project's root directory"
        )
    path = config_file or find_config(root)
    if path is not None and not path.lower().endswith(CONFIG_EXTENSIONS):
        raise ConfigError(
            path,
            "",
            "the config file extension is not supported (supported: "
            f"{', '.join(CONFIG_EXTENSIONS)})",
        )
    if path is None:
        return build_config(root, DEFAULTS_SOURCE, {})
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid UTF-8") from None
    return build_config(root, path, parse_text(path, text))


# ---------------------------------------------------------------------------------------------
# Validation.


def _section(file: str, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(file, name, f"expected a table/object, got {type(raw).__name__}")
    schema = SCHEMA[name]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{name}.{key}"
        if not isinstance(key, str) or key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(file, dotted, f"unknown key (known keys: {known})")
        values[key] = schema[key](file, dotted, value)
    return values


def _resolve(file: str, key: str, root: str, path: str) -> str:
    try:
        return resolve_inside(root, path)
    except PathEscapeError as exc:
        raise ConfigError(file, key, str(exc)) from None


def build_config(root: str, file: str, data: Mapping[str, Any]) -> Config:
    """Validate parsed data against the schema and resolve every path inside `root`."""
    for key in data:
        if not isinstance(key, str) or key not in TOP_LEVEL:
            known = ", ".join(sorted(TOP_LEVEL))
            raise ConfigError(file, str(key), f"unknown section or key (known: {known})")

    server = ServerConfig(**_section(file, data, "server"))
    build = BuildConfig(**_section(file, data, "build"))
    run = RunConfig(**_section(file, data, "run"))
    security = SecurityConfig(**_section(file, data, "security"))
    websocket = WebSocketConfig(**_section(file, data, "websocket"))
    events = _section(file, data, "events")

    if build.allowed_args and not build.command:
        raise ConfigError(
            file,
            "build.allowed_args",
            "is set but build.command is not, so no build could use it: add build.command",
        )
    for index, arg in enumerate(build.allowed_args):
        if not arg:
            raise ConfigError(file, f"build.allowed_args[{index}]", "is an empty string")
        if not arg.isprintable():
            raise ConfigError(file, f"build.allowed_args[{index}]", "contains control characters")

    runtime_dir = _resolve(file, "server.runtime_dir", root, server.runtime_dir)
    logs: dict[str, str] = {
        BUILD_LOG_ALIAS: os.path.join(runtime_dir, "build.log"),
        RUN_LOG_ALIAS: os.path.join(runtime_dir, "run.log"),
    }
    raw_logs = data.get("logs", {})
    if not isinstance(raw_logs, dict):
        raise ConfigError(
            file, "logs", f'expected a table of ALIAS = "path", got {type(raw_logs).__name__}'
        )
    for alias, value in raw_logs.items():
        key = f"logs.{alias}"
        if not isinstance(alias, str) or not ALIAS_RE.match(alias):
            raise ConfigError(file, key, "an alias is 1-64 characters of A-Z a-z 0-9 _ . -")
        if alias in (BUILD_LOG_ALIAS, RUN_LOG_ALIAS):
            raise ConfigError(
                file,
                key,
                f"the aliases {BUILD_LOG_ALIAS!r} and {RUN_LOG_ALIAS!r} are built in (the build "
                "and run logs under server.runtime_dir): choose another alias",
            )
        logs[alias] = _resolve(file, key, root, _nonempty_str(file, key, value))

    events_file = _resolve(
        file,
        "events.file",
        root,
        events.get("file", os.path.join(server.runtime_dir, "events.jsonl")),
    )

    plugin = None
    if "plugin" in data:
        plugin = _resolve(file, "plugin", root, _nonempty_str(file, "plugin", data["plugin"]))
        if not plugin.endswith(".py"):
            raise ConfigError(file, "plugin", "must name a .py file in the project")
        if not os.path.isfile(plugin):
            raise ConfigError(file, "plugin", f"the plugin file {plugin} does not exist")

    return Config(
        root, file, server, build, run, security, websocket, logs, events_file, runtime_dir, plugin
    )


def check_startable(config: Config, password: str | None) -> None:
    """Refuse combinations that must not start: a non-loopback bind without a password."""
    if not is_loopback(config.server.bind) and not password:
        raise ConfigError(
            config.source,
            "server.bind",
            f"binding {config.server.bind} (beyond loopback) requires a password: "
            f"set the {config.server.password_env} environment variable",
        )
