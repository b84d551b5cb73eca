#!/usr/bin/env python3
"""Validate the agent policies at image build time and install OpenCode's.

Claude Code fails open: invalid JSON, an unreadable file or a rule naming an
unknown tool is skipped with only a warning on stderr (measured with Claude
Code 2.1.197). This check makes such a policy fail the build instead.

Usage:
    check_policy.py CLAUDE_JSON OPENCODE_JSONC [OPENCODE_JSON_OUT]

With OPENCODE_JSON_OUT, the OpenCode template is written there without its
comments, as the system-wide OpenCode configuration.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

# Tools that Claude Code's permission rules may name. `Write(...)` is left
# out on purpose: such rules had no effect in Claude Code 2.1.197, where an
# `Edit(...)` rule covers writes as well.
KNOWN_CLAUDE_TOOLS = frozenset(
    {
        "Bash",
        "Edit",
        "Glob",
        "Grep",
        "LS",
        "MultiEdit",
        "NotebookEdit",
        "NotebookRead",
        "Read",
        "Task",
        "WebFetch",
        "WebSearch",
    }
)
RULE_PATTERN = re.compile(r"^(?P<tool>[A-Za-z]+)(?:\((?P<specifier>.+)\))?$", re.DOTALL)
MIN_DENY_RULES = 150  # the policy is a real deny list, not a token one
OPENCODE_PERMISSION_VALUES = frozenset({"allow", "ask", "deny"})


class PolicyError(Exception):
    """A policy file that Claude Code or OpenCode would not enforce as written."""


def check_claude_rule(rule: object) -> None:
    """Raise PolicyError unless `rule` is a rule naming a known tool."""
    if not isinstance(rule, str):
        raise PolicyError(f"deny rule {rule!r} is not a string")
    match = RULE_PATTERN.match(rule)
    if match is None:
        raise PolicyError(f"deny rule {rule!r} is not of the form Tool or Tool(specifier)")
    tool = match.group("tool")
    if tool == "Write":
        raise PolicyError(f"deny rule {rule!r} has no effect: use Edit(...), which covers writes")
    if tool not in KNOWN_CLAUDE_TOOLS:
        raise PolicyError(f"deny rule {rule!r} names the unknown tool {tool!r}")
    if match.group("specifier") is None:
        raise PolicyError(f"deny rule {rule!r} removes the {tool} tool entirely; give a specifier")


def check_claude_policy(text: str) -> dict:
    """Parse and check Claude Code's managed settings; return them."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise PolicyError(f"invalid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise PolicyError("the top level must be a JSON object")
    if settings.get("allowManagedHooksOnly") is not True:
        raise PolicyError('"allowManagedHooksOnly" must be true, or the agent can add hooks')
    permissions = settings.get("permissions")
    if not isinstance(permissions, dict):
        raise PolicyError('"permissions" must be an object')
    if permissions.get("defaultMode", "default") == "bypassPermissions":
        raise PolicyError("bypass mode must stay opt-in: remove defaultMode bypassPermissions")
    deny = permissions.get("deny")
    if not isinstance(deny, list):
        raise PolicyError('"permissions.deny" must be a list')
    if len(deny) < MIN_DENY_RULES:
        raise PolicyError(f"only {len(deny)} deny rules; expected at least {MIN_DENY_RULES}")
    for rule in deny:
        check_claude_rule(rule)
    duplicates = sorted({rule for rule in deny if deny.count(rule) > 1})
    if duplicates:
        raise PolicyError(f"duplicate deny rules: {', '.join(duplicates)}")
    return settings


def strip_jsonc_comments(text: str) -> str:
    """Remove // and /* */ comments outside JSON strings."""
    output = []
    index = 0
    in_string = False
    while index < len(text):
        char = text[index]
        if in_string:
            output.append(char)
            if char == "\\" and index + 1 < len(text):
                output.append(text[index + 1])
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            output.append(char)
        elif text.startswith("//", index):
            end = text.find("\n", index)
            index = len(text) if end == -1 else end
            continue
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end == -1:
                raise PolicyError("unterminated /* comment")
            index = end + 2
            continue
        else:
            output.append(char)
        index += 1
    return "".join(output)


def check_opencode_policy(text: str) -> dict:
    """Parse and check the OpenCode JSONC template; return it as data."""
    try:
        config = json.loads(strip_jsonc_comments(text))
    except json.JSONDecodeError as error:
        raise PolicyError(f"invalid JSONC: {error}") from None
    permission = config.get("permission") if isinstance(config, dict) else None
    if not isinstance(permission, dict):
        raise PolicyError('"permission" must be an object')
    for key, value in permission.items():
        values = value.values() if isinstance(value, dict) else [value]
        for setting in values:
            if setting not in OPENCODE_PERMISSION_VALUES:
                raise PolicyError(
                    f"permission {key!r} has the invalid value {setting!r}: use allow, ask or deny"
                )
    return config


def write_json_atomically(path: str, data: dict) -> None:
    """Write `data` as JSON to `path` (mode 0644) through a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".opencode-")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    """Check both policies; return the exit code (0 valid, 1 invalid, 2 usage)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(
            "usage: check_policy.py CLAUDE_JSON OPENCODE_JSONC [OPENCODE_JSON_OUT]", file=sys.stderr
        )
        return 2
    checks = ((args[0], check_claude_policy), (args[1], check_opencode_policy))
    checked = []
    for path, check in checks:
        try:
            with open(path, encoding="utf-8") as stream:
                checked.append(check(stream.read()))
        except (OSError, PolicyError) as error:
            print(f"check_policy.py: {path}: {error}", file=sys.stderr)
            return 1
    settings, config = checked
    if len(args) == 3:
        write_json_atomically(args[2], config)
    rule_count = len(settings["permissions"]["deny"])
    print(
        f"check_policy.py: Claude Code policy OK ({rule_count} deny rules); OpenCode policy OK",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
