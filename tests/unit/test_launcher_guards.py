"""Path guards: project roots, WORKSPACE_DIR and DOCKER_DIR that must be refused."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import llmdocker
from llmdocker import GuardError, guard_docker_dir, guard_host_directory

HOME = "/home/user"
STATE = "/home/user/.llm-docker"
CODE = "/opt/tools/llm-docker"


def guard(path: str) -> None:
    guard_host_directory(path, "project root", HOME, STATE, CODE, "fix it")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/", "root directory"),
        ("/home/user", "home directory"),
        ("/home", "contains your home directory"),
        ("/etc/nginx/sites", "system directory /etc"),
        ("/usr/local/src/app", "system directory /usr"),
        ("/var/lib/docker/volumes", "system directory /var/lib"),
        ("/proc/1/root", "system directory /proc"),
        ("/srv", "system directory"),
        ("/tmp", "system directory"),
        ("/data/x", "shallower than 3"),
        ("/home/user/.llm-docker", "state directory"),
        ("/home/user/.llm-docker/claude/config", "state directory"),
        ("/opt/tools/llm-docker", "installed llm-docker code"),
        ("/opt/tools/llm-docker/docker", "installed llm-docker code"),
        ("/opt/tools", "shallower than 3"),
        ("/home/user/.ssh", "credentials"),
        ("/home/user/.aws/sso", "credentials"),
        ("/home/user/.config/gcloud", "credentials"),
        ("/home/user/.kube", "credentials"),
        ("/home/user/.docker", "credentials"),
        ("/home/user/.gnupg", "credentials"),
        ("/home/user/pro\nject", "control character"),
    ],
)
def test_guard_refuses(path, reason):
    with pytest.raises(GuardError, match=reason) as caught:
        guard(path)
    assert caught.value.hint == "fix it"


def test_guard_refuses_directory_containing_state():
    with pytest.raises(GuardError, match="state directory"):
        guard_host_directory(
            "/data/all/work", "WORKSPACE_DIR", HOME, "/data/all/work/state", CODE, ""
        )


@pytest.mark.parametrize(
    "path",
    ["/home/user/Projects/app", "/home/user/app", "/data/projects/app", "/tmp/work/app",
     "/home/user/.config/app-dev", "/home/user/Projects/é ,\"'"],
)  # fmt: skip
def test_guard_allows(path):
    guard(path)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Projects", "not an absolute path"),
        ("/", "container system directory"),
        ("/etc/projects", "/etc"),
        ("/usr/src", "/usr"),
        ("/root/Projects", "non-root user"),
        ("/home", "container system directory"),
        ("/home/agent", "persistence mount"),
        ("/home/agent/.claude", "persistence mount"),
        ("/home/agent/.claude/projects", "persistence mount"),
        ("/home/agent/.local", "persistence mount"),
        ("/etc/ssh/llm-docker", "/etc"),
        ("/home/agent/../root", "'.' or '..'"),
        ("/work/a\tb", "control character"),
    ],
)
def test_docker_dir_refused(value, reason):
    with pytest.raises(GuardError, match=reason):
        guard_docker_dir(value, "llm-docker.conf:3")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/home/agent/Projects", "/home/agent/Projects"), ("/workspace/", "/workspace"),
     ("/home/agent/Projects//x", "/home/agent/Projects/x"), ("/work", "/work")],
)  # fmt: skip
def test_docker_dir_allowed(value, expected):
    assert guard_docker_dir(value, "default") == expected


SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1,
    max_size=8,
)
PATHS = st.lists(SEGMENT, max_size=5).map(lambda parts: os.path.normpath("/" + "/".join(parts)))


@given(PATHS)
@example("/home/user")
@example("/home/user/..")
@example("/home/user/.ssh/x")
def test_guard_allows_or_raises_guard_error(path):
    try:
        guard(path)
    except GuardError as error:
        assert "refusing project root" in error.message
        return
    assert llmdocker.path_depth(path) >= llmdocker.MIN_PROJECT_DEPTH
    assert not llmdocker.is_within(HOME, path)
    assert not llmdocker.is_within(path, STATE)
    assert not llmdocker.has_control_character(path)


@given(st.text(max_size=30))
@example("/home/agent/Projects/../../etc")
@example("//etc")
@example("/.")
def test_docker_dir_guard_returns_safe_path_or_raises(value):
    try:
        result = guard_docker_dir(value, "where")
    except GuardError:
        return
    assert result.startswith("/")
    assert not result.startswith("//")
    assert ".." not in result.split("/")
    assert not llmdocker.is_within(result, "/etc")
    for target in llmdocker.persistence_targets():
        assert not llmdocker.is_within(result, target)
        assert not llmdocker.is_within(target, result)
