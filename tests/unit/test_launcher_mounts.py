"""Project resolution, identity and bind mounts (CSV quoting of --mount)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import llmdocker
from llmdocker import GuardError, Mount, Settings, StatePaths, resolve_project


def parse_mount(spec: str) -> dict[str, str]:
    """Parse a --mount value the way the docker CLI does (CSV, then key=value)."""
    (fields,) = list(csv.reader([spec]))
    parsed = {}
    for field in fields:
        key, _, value = field.partition("=")
        parsed[key] = value
    return parsed


PATH_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\0"),
    min_size=1,
    max_size=40,
).map(lambda text: "/" + text)


@given(PATH_TEXT, PATH_TEXT, st.booleans())
@example('/a,b/"c"/d:e', "/home/agent/Projects/x y", False)
@example("/p/ leading and trailing ", "/t", True)
@example('/"', '/""', False)
@example("/projets/été ☃", "/dst", True)
def test_mount_spec_round_trips_through_csv(source, target, readonly):
    parsed = parse_mount(Mount(source, target, readonly).spec())
    assert parsed["type"] == "bind"
    assert parsed["src"] == source
    assert parsed["dst"] == target
    assert ("readonly" in parsed) is readonly


def test_mount_plain_path_not_quoted():
    assert Mount("/a/b", "/c", False).spec() == "type=bind,src=/a/b,dst=/c"


def test_mount_readonly_is_recursive_by_default():
    spec = Mount("/a", "/b", True).spec()
    assert spec.endswith(",readonly")
    assert "bind-nonrecursive" not in spec


def test_mount_nonrecursive_when_asked():
    spec = Mount("/a", "/b", True, nonrecursive=True).spec()
    assert spec.endswith(",readonly,bind-nonrecursive=true")


@pytest.fixture
def layout(tmp_path: Path):
    home = tmp_path / "home"
    project = home / "Projects" / "app"
    project.mkdir(parents=True)
    state = StatePaths(str(home / ".llm-docker"))
    return home, project, state


def settings_with(**values: object) -> Settings:
    settings = Settings()
    for setting in llmdocker.SETTINGS:
        settings.values[setting.name] = llmdocker.convert_setting(
            setting, setting.default, "", "/h"
        )
        settings.sources[setting.name] = "default"
    settings.values.update(values)
    return settings


def test_project_is_directory_itself(layout):
    home, project, state = layout
    resolved = resolve_project(str(project), settings_with(), str(home), state, "/opt/code")
    assert resolved.root == str(project)
    assert resolved.name == "app"
    assert resolved.container_path == f"/home/agent/Projects/app-{resolved.project_id}"
    assert [(m.source, m.target, m.readonly) for m in resolved.mounts] == [
        (str(project), resolved.container_path, False)
    ]


def test_project_root_is_git_top_level(layout):
    home, project, state = layout
    (project / ".git").mkdir()
    (project / "src" / "lib").mkdir(parents=True)
    resolved = resolve_project(
        str(project / "src" / "lib"), settings_with(), str(home), state, "/c"
    )
    assert resolved.root == str(project)
    assert resolved.launch_dir == str(project / "src" / "lib")
    assert resolved.container_launch_dir == resolved.container_path + "/src/lib"


def test_project_home_git_repo_ignored(layout):
    home, project, state = layout
    (home / ".git").mkdir()
    resolved = resolve_project(str(project), settings_with(), str(home), state, "/c")
    assert resolved.root == str(project)


def test_project_symlink_resolved(layout, tmp_path):
    home, project, state = layout
    link = tmp_path / "link"
    link.symlink_to(project)
    resolved = resolve_project(str(link), settings_with(), str(home), state, "/c")
    assert resolved.root == str(project)


def test_project_symlink_to_home_refused(layout, tmp_path):
    home, _, state = layout
    link = tmp_path / "sneaky" / "deep" / "link"
    link.parent.mkdir(parents=True)
    link.symlink_to(home)
    with pytest.raises(GuardError, match="home directory"):
        resolve_project(str(link), settings_with(), str(home), state, "/c")


def test_project_id_stable_and_distinct(layout):
    home, project, state = layout
    other = project.parent / "app2"
    other.mkdir()
    first = resolve_project(str(project), settings_with(), str(home), state, "/c")
    again = resolve_project(str(project), settings_with(), str(home), state, "/c")
    second = resolve_project(str(other), settings_with(), str(home), state, "/c")
    assert first.project_id == again.project_id
    assert first.container_path == again.container_path
    assert first.project_id != second.project_id
    assert first.project_id == llmdocker.sha256_hex(str(project).encode())[:8]


def test_project_missing_directory(layout):
    home, project, state = layout
    with pytest.raises(GuardError, match="does not exist"):
        resolve_project(str(project / "nope"), settings_with(), str(home), state, "/c")


def test_project_file_is_not_directory(layout):
    home, project, state = layout
    (project / "f").write_text("x")
    with pytest.raises(GuardError, match="is not a directory"):
        resolve_project(str(project / "f"), settings_with(), str(home), state, "/c")


def test_project_inside_workspace(layout):
    home, project, state = layout
    nested = project / "sub"
    nested.mkdir()
    settings = settings_with(WORKSPACE_DIR=str(home / "Projects"))
    resolved = resolve_project(str(nested), settings, str(home), state, "/c")
    assert resolved.container_path == "/home/agent/Projects/Projects/app/sub"
    mounts = [(m.source, m.target, m.readonly) for m in resolved.mounts]
    assert mounts == [
        (str(home / "Projects"), "/home/agent/Projects/Projects", True),
        (str(nested), "/home/agent/Projects/Projects/app/sub", False),
    ]


def test_workspace_mount_is_nonrecursive(layout):
    home, project, state = layout
    settings = settings_with(WORKSPACE_DIR=str(home / "Projects"))
    resolved = resolve_project(str(project), settings, str(home), state, "/c")
    workspace, project_mount = resolved.mounts
    assert workspace.nonrecursive
    assert "bind-nonrecursive=true" in workspace.spec()
    assert "bind-nonrecursive" not in project_mount.spec()


def test_state_files_and_certs_mounts_are_recursive(layout):
    home, _, state = layout
    os.makedirs(state.certs)
    (home / ".p10k.zsh").write_text("# prompt\n")
    mounts = llmdocker.persistence_mounts("claude", state, ssh=False, home=str(home))
    assert [m.target for m in mounts if m.readonly] == [
        "/usr/local/share/llm-docker/certs",
        "/home/agent/.p10k.zsh",
    ]
    assert not any("bind-nonrecursive" in m.spec() for m in mounts)


def test_project_outside_workspace(layout, tmp_path):
    home, project, state = layout
    workspace = home / "work" / "all"
    workspace.mkdir(parents=True)
    settings = settings_with(WORKSPACE_DIR=str(workspace))
    resolved = resolve_project(str(project), settings, str(home), state, "/c")
    assert resolved.mounts[0].readonly
    assert resolved.mounts[0].target == "/home/agent/Projects/all"
    assert resolved.mounts[1].target == f"/home/agent/Projects/app-{resolved.project_id}"


def test_workspace_guarded(layout):
    home, project, state = layout
    with pytest.raises(GuardError, match="WORKSPACE_DIR"):
        resolve_project(
            str(project), settings_with(WORKSPACE_DIR=str(home)), str(home), state, "/c"
        )


def test_workspace_missing(layout):
    home, project, state = layout
    settings = settings_with(WORKSPACE_DIR=str(home / "missing"))
    with pytest.raises(GuardError, match=r"WORKSPACE_DIR .* does not exist"):
        resolve_project(str(project), settings, str(home), state, "/c")


def test_project_inside_code_refused(layout):
    home, project, state = layout
    with pytest.raises(GuardError, match="installed llm-docker code"):
        resolve_project(str(project), settings_with(), str(home), state, str(project.parent))


def test_project_refused_git_top_level_named(layout):
    home, project, state = layout
    (home / "Projects" / ".git").mkdir()
    with pytest.raises(GuardError) as raised:
        resolve_project(str(project), settings_with(), str(home), state, str(home / "Projects"))
    message = raised.value.message
    assert f"refusing project root '{home / 'Projects'}'" in message
    assert f"it is the git top level of '{project}'" in message
    assert "outside that repository" in raised.value.hint


def test_persistence_mounts_claude(layout):
    home, _, state = layout
    mounts = llmdocker.persistence_mounts("claude", state, ssh=False, home=str(home))
    assert [(m.target, m.readonly) for m in mounts] == [("/home/agent/.claude", False)]


def test_persistence_mounts_opencode_ssh_certs_dotfiles(layout):
    home, _, state = layout
    os.makedirs(state.certs)
    (home / ".tmux.conf").write_text("set -g mouse on\n")
    mounts = llmdocker.persistence_mounts("opencode", state, ssh=True, home=str(home))
    targets = {m.target: m.readonly for m in mounts}
    assert targets == {
        "/home/agent/.config/opencode": False,
        "/home/agent/.local/share/opencode": False,
        "/home/agent/.cache/opencode": False,
        "/etc/ssh/llm-docker": False,
        "/usr/local/share/llm-docker/certs": True,
        "/home/agent/.tmux.conf": True,
    }
