"""docker/policy/check_policy.py: the build-time check of the agent policies."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

POLICY_DIR = Path(__file__).resolve().parents[2] / "docker" / "policy"
_spec = importlib.util.spec_from_file_location("check_policy", POLICY_DIR / "check_policy.py")
assert _spec is not None and _spec.loader is not None
check_policy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_policy)

CLAUDE_POLICY = POLICY_DIR / "claude-managed-settings.json"
OPENCODE_TEMPLATE = POLICY_DIR / "opencode.jsonc"
RULE_FAMILIES = {
    "secrets": ["Read(**/.env)", "Read(**/id_rsa)", "Read(~/.ssh/**)", "Read(**/*.pem)"],
    "downloads into shells": ["Bash(curl * | sh*)", "Bash(wget * | bash*)"],
    "escape hatches": ["Bash(eval *)", "Bash(bash -c *)", "Bash(* && sh -c *)"],
    "path traversal": ["Read(../**)", "Edit(**/../**)"],
    "container escape": ["Bash(*docker.sock*)", "Bash(nsenter *)", "Bash(*--privileged*)"],
    "self-unlock": [
        "Edit(~/.claude/**)",
        "Edit(**/.git/hooks/**)",
        "Edit(**/.github/workflows/**)",
        "Edit(**/.vscode/tasks.json)",
    ],
}


def shipped_policy() -> dict:
    return json.loads(CLAUDE_POLICY.read_text(encoding="utf-8"))


def test_shipped_claude_policy_valid() -> None:
    settings = check_policy.check_claude_policy(CLAUDE_POLICY.read_text(encoding="utf-8"))
    assert settings["allowManagedHooksOnly"] is True
    assert len(settings["permissions"]["deny"]) >= check_policy.MIN_DENY_RULES


@pytest.mark.parametrize("family", sorted(RULE_FAMILIES))
def test_shipped_policy_covers_family(family: str) -> None:
    deny = shipped_policy()["permissions"]["deny"]
    for rule in RULE_FAMILIES[family]:
        assert rule in deny, f"{family}: {rule} is missing"


def test_shipped_policy_bypass_not_default() -> None:
    permissions = shipped_policy()["permissions"]
    assert permissions.get("defaultMode", "default") != "bypassPermissions"
    assert "disableBypassPermissionsMode" not in permissions  # bypass stays opt-in


def test_shipped_opencode_template_valid() -> None:
    config = check_policy.check_opencode_policy(OPENCODE_TEMPLATE.read_text(encoding="utf-8"))
    assert config["permission"]["read"]["*.env"] == "deny"
    assert config["permission"]["edit"]["*.git/hooks/*"] == "deny"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("Raed(x)", "unknown tool 'Raed'"),
        ("Write(**/.env)", "has no effect"),
        ("Bash", "removes the Bash tool entirely"),
        ("Read(", "not of the form"),
        (7, "is not a string"),
    ],
)
def test_bad_rule_rejected(rule: object, message: str) -> None:
    with pytest.raises(check_policy.PolicyError, match=message):
        check_policy.check_claude_rule(rule)


def policy_text(**changes: object) -> str:
    settings = shipped_policy()
    settings.update(changes)
    return json.dumps(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON"),
        ("[]", "top level must be a JSON object"),
        (policy_text(allowManagedHooksOnly=False), "allowManagedHooksOnly"),
        (policy_text(permissions={"deny": ["Read(x)"]}), "only 1 deny rules"),
        (policy_text(permissions={"deny": "Read(x)"}), "must be a list"),
        (
            policy_text(permissions={"deny": [], "defaultMode": "bypassPermissions"}),
            "bypass mode must stay opt-in",
        ),
    ],
)
def test_bad_claude_policy_rejected(text: str, message: str) -> None:
    with pytest.raises(check_policy.PolicyError, match=message):
        check_policy.check_claude_policy(text)


def test_duplicate_rules_rejected() -> None:
    settings = shipped_policy()
    deny = settings["permissions"]["deny"]
    deny.append(deny[0])
    with pytest.raises(check_policy.PolicyError, match="duplicate deny rules"):
        check_policy.check_claude_policy(json.dumps(settings))


def test_opencode_bad_value_rejected() -> None:
    with pytest.raises(check_policy.PolicyError, match="invalid value 'maybe'"):
        check_policy.check_opencode_policy('{"permission": {"bash": {"*": "maybe"}}}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values, st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=20))
@example({"url": "http://example.invalid/*not-a-comment*/"}, "x")
def test_strip_comments_round_trip(value: object, comment: str) -> None:
    text = json.dumps(value, indent=1)
    commented = f"// {comment}\n/* {comment.replace('*/', '')} */\n" + text.replace(
        "\n", f"\n// {comment}\n"
    )
    assert json.loads(check_policy.strip_jsonc_comments(commented)) == value


@given(st.text(max_size=60))
def test_strip_comments_raises_only_policy_error(text: str) -> None:
    with contextlib.suppress(check_policy.PolicyError):
        check_policy.strip_jsonc_comments(text)


def test_main_writes_opencode_json(tmp_path: Path) -> None:
    output = tmp_path / "etc/opencode/opencode.json"
    code = check_policy.main([str(CLAUDE_POLICY), str(OPENCODE_TEMPLATE), str(output)])
    assert code == 0
    assert json.loads(output.read_text())["permission"]["read"]["*.env"] == "deny"
    assert output.stat().st_mode & 0o777 == 0o644


def test_main_reports_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert check_policy.main([str(broken), str(OPENCODE_TEMPLATE)]) == 1
    assert "invalid JSON" in capsys.readouterr().err
