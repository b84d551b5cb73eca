"""Unit tests of the session and slot layer: folder names, stores, slot records, plans,
detection at exit, listing and the watchdog. Real files and real SQLite databases in tmp."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import llmdocker as ld
from tests.unit.test_launcher_fakes import FakeEngine, Sandbox, make_sandbox

WORKDIR = "/home/agent/Projects/my project-1a2b3c4d"
OTHER_WORKDIR = "/home/agent/Projects/other-99999999"
HOST_PROJECT = "/srv/code/my project"
UUID_A = "0a1b2c3d-0000-4000-8000-00000000000a"
UUID_B = "0a1b2c3d-0000-4000-8000-00000000000b"
UUID_C = "0a1b2c3d-0000-4000-8000-00000000000c"


# ---- helpers ------------------------------------------------------------------------------


def reference_java_hash(text: str) -> int:
    """Java String.hashCode over UTF-16-LE bytes, computed with a power sum (not a loop fold)."""
    data = text.encode("utf-16-le", "surrogatepass")
    units = [data[i] | data[i + 1] << 8 for i in range(0, len(data), 2)]
    total = sum(unit * pow(31, len(units) - 1 - i, 2**32) for i, unit in enumerate(units))
    total %= 2**32
    return total - 2**32 if total >= 2**31 else total


def user_line(text: object, cwd: str = WORKDIR, **extra: object) -> str:
    entry: dict[str, object] = {
        "type": "user",
        "cwd": cwd,
        "message": {"role": "user", "content": text},
    }
    entry.update(extra)
    return json.dumps(entry, separators=(",", ":"))  # compact, as Claude Code writes it


def write_session(
    folder: Path, session_id: str, lines: list[str], mtime: float | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session_id}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def claude(tmp_path: Path) -> ld.ClaudeSessions:
    return ld.ClaudeSessions(str(tmp_path / "config"), WORKDIR)


@pytest.fixture
def slots(tmp_path: Path) -> ld.SlotStore:
    return ld.SlotStore(str(tmp_path / "slots"), "claude", "1a2b3c4d", HOST_PROJECT)


def folder_of(store: ld.ClaudeSessions) -> Path:
    return Path(store.folder)


def slot_file(store: ld.SlotStore, slot: int) -> Path:
    return Path(store.path(slot))


def error_text(error: ld.LauncherError) -> str:
    return f"{error.message}\n{error.hint}"


def opencode_slots(tmp_path: Path) -> ld.SlotStore:
    return ld.SlotStore(str(tmp_path / "slots"), "opencode", "1a2b3c4d", HOST_PROJECT)


SESSION_COLUMNS = (
    "id TEXT PRIMARY KEY, project_id TEXT NOT NULL, directory TEXT NOT NULL, title TEXT NOT NULL,"
    " time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL"
)


def make_opencode_db(path: Path, *, wal: bool = True, columns: str = SESSION_COLUMNS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    if wal:
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"CREATE TABLE session ({columns})")
    connection.execute(
        "CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL,"
        " time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    connection.execute(
        "CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT NOT NULL,"
        " session_id TEXT NOT NULL, data TEXT NOT NULL)"
    )
    connection.commit()
    connection.close()


def add_opencode_session(
    path: Path,
    session_id: str,
    directory: str,
    created_ms: int,
    updated_ms: int | None = None,
    title: str = "a title",
) -> None:
    connection = sqlite3.connect(path)
    connection.execute(
        "INSERT INTO session (id, project_id, directory, title, time_created, time_updated)"
        " VALUES (?, 'global', ?, ?, ?, ?)",
        (session_id, directory, title, created_ms, updated_ms or created_ms),
    )
    connection.commit()
    connection.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def opencode_db(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "opencode.db"
    make_opencode_db(path)
    add_opencode_session(path, "ses_old", WORKDIR, 1_000, 2_000, "old title")
    add_opencode_session(path, "ses_new", WORKDIR, 3_000, 4_000, "new title")
    add_opencode_session(path, "ses_elsewhere", OTHER_WORKDIR, 5_000, 9_000)
    return path


# ---- Claude Code folder name ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("workdir", "folder"),
    [
        ("/a.b", "-a-b"),
        ("/x/café", "-x-caf-"),
        ("/p/emoji😀", "-p-emoji--"),
        ("/p/日本語", "-p----"),
        ("/home/agent/Projects/proj-1a2b3c4d", "-home-agent-Projects-proj-1a2b3c4d"),
        ("/p/MixedCase@+~#%,=!", "-p-MixedCase--------"),
    ],
)
def test_folder_name_pinned(workdir: str, folder: str) -> None:
    assert ld.claude_folder_name(workdir) == folder


def test_folder_name_lossy_siblings_share() -> None:
    names = {ld.claude_folder_name(p) for p in ("/x/a.b", "/x/a-b", "/x/a_b", "/x/a b")}
    assert names == {"-x-a-b"}


def test_folder_name_long_path_hash() -> None:
    long_part = "x" * 120
    workdir = f"/p/{long_part}/{long_part}"
    name = ld.claude_folder_name(workdir)
    cut, suffix = name[:200], name[201:]
    assert cut == workdir.replace("/", "-")[:200]
    assert name[200] == "-"
    assert int(suffix, 36) == abs(reference_java_hash(workdir))
    assert suffix == suffix.lower()


def test_folder_name_exactly_200_units_no_hash() -> None:
    workdir = "/" + "y" * 199
    assert ld.claude_folder_name(workdir) == "-" + "y" * 199


def test_folder_name_emoji_counts_two_units() -> None:
    workdir = "/" + "y" * 198 + "😀"  # 201 UTF-16 units
    name = ld.claude_folder_name(workdir)
    assert name.startswith("-" + "y" * 198 + "-" + "-")
    assert int(name[201:], 36) == abs(reference_java_hash(workdir))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("hello", 99162322), ("polygenelubricants", -(2**31))],
)
def test_java_hash_known_values(text: str, expected: int) -> None:
    assert ld.java_string_hash(text) == expected


def test_base36_of_int_min_magnitude() -> None:
    assert ld.to_base36(2**31) == "zik0zk"


@given(st.text(max_size=400))
@example("/" + "é" * 300)
@example("😀" * 150)
@example("\udcff/bad")
@settings(max_examples=300, deadline=None)
def test_folder_name_alphabet_and_length(workdir: str) -> None:
    name = ld.claude_folder_name(workdir)
    units = len(workdir.encode("utf-16-le", "surrogatepass")) // 2

    assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in name)
    if units <= 200:
        assert len(name) == units
    else:
        assert name[200] == "-"
        assert int(name[201:], 36) == abs(reference_java_hash(workdir))


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_java_hash_matches_reference(text: str) -> None:
    assert ld.java_string_hash(text) == reference_java_hash(text)


# ---- Claude Code sessions ---------------------------------------------------------------------


def test_claude_scan_top_level_uuid_files_only(claude: ld.ClaudeSessions) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("hi")])
    write_session(folder_of(claude) / UUID_A / "subagents", UUID_B, [user_line("sub")])
    write_session(folder_of(claude), "agent-1234", [user_line("not a session")])
    (folder_of(claude) / f"{UUID_C}.jsonl").mkdir()
    (folder_of(claude) / f"{UUID_B.upper()}.jsonl").write_text("{}\n")
    (folder_of(claude) / f"{UUID_B}.json").write_text("{}\n")

    assert set(claude.names()) == {UUID_A}


def test_claude_scan_missing_folder(claude: ld.ClaudeSessions) -> None:
    assert claude.names() == frozenset()
    assert claude.newest() is None


def test_claude_newest_by_mtime(claude: ld.ClaudeSessions) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("b")], mtime=3_000)
    write_session(folder_of(claude), UUID_C, [user_line("c")], mtime=2_000)

    newest = claude.newest()
    assert newest is not None
    assert newest.id == UUID_B
    assert [s.id for s in claude.sessions()] == [UUID_B, UUID_C, UUID_A]


def test_claude_other_cwd_excluded(claude: ld.ClaudeSessions) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("mine")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("theirs", cwd=OTHER_WORKDIR)], mtime=2_000)

    assert [s.id for s in claude.sessions()] == [UUID_A]
    assert claude.find(UUID_B) is None
    assert claude.find(UUID_A) is not None
    assert claude.newest_in_folder() == UUID_B


def test_claude_find_rejects_path_tricks(claude: ld.ClaudeSessions) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")])
    assert claude.find("../" + UUID_A) is None
    assert claude.find(UUID_A.upper()) is None


def test_first_prompt_skips_meta_lines(claude: ld.ClaudeSessions) -> None:
    lines = [
        json.dumps({"type": "summary", "summary": "x"}),
        user_line("Caveat: The messages below were generated by the user", isMeta=True),
        user_line("<command-name>/model</command-name>"),
        user_line([{"type": "tool_result", "content": "x"}]),
        user_line([{"type": "text", "text": "\n  first real line\nsecond line"}]),
        user_line("later prompt"),
    ]
    write_session(folder_of(claude), UUID_A, lines)
    assert claude.first_prompt(UUID_A) == "first real line"


def test_first_prompt_cut_by_head_limit(claude: ld.ClaudeSessions) -> None:
    huge = "start of a pasted prompt é " + "z" * (ld.SESSION_HEAD_BYTES * 2)
    write_session(folder_of(claude), UUID_A, [user_line(huge)])
    prompt = claude.first_prompt(UUID_A)
    assert prompt.startswith("start of a pasted prompt é zzz")


def test_head_reads_only_start_of_file(
    claude: ld.ClaudeSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [user_line("hello there")] + [
        json.dumps({"type": "assistant", "n": i}) for i in range(50_000)
    ]
    path = write_session(folder_of(claude), UUID_A, lines)
    assert path.stat().st_size > 1_000_000
    sizes: list[int] = []
    real_open = open

    class CountingFile:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> CountingFile:
            return self

        def __exit__(self, *args: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            sizes.append(size)
            return self.handle.read(size)

    monkeypatch.setattr(ld, "open", lambda *a, **k: CountingFile(real_open(*a, **k)), raising=False)
    head = ld.read_claude_session_head(str(path))

    assert head.first_prompt == "hello there"
    assert head.cwd == WORKDIR
    assert sizes == [ld.SESSION_HEAD_BYTES]


def test_head_of_unreadable_garbage(claude: ld.ClaudeSessions) -> None:
    folder_of(claude).mkdir(parents=True)
    path = folder_of(claude) / f"{UUID_A}.jsonl"
    path.write_bytes(b'\xff\xfe not json\n[1,2]\n"str"\n')
    head = ld.read_claude_session_head(str(path))
    assert head.cwd is None
    assert head.first_prompt == ""


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_head_parser_never_raises(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("head") / f"{UUID_A}.jsonl"
    path.write_bytes(data)
    head = ld.read_claude_session_head(str(path))
    assert isinstance(head.first_prompt, str)


def test_claude_detects_new_session(claude: ld.ClaudeSessions) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    snapshot = claude.snapshot()
    write_session(folder_of(claude), UUID_B, [user_line("b")])

    assert [s.id for s in claude.changed_since(snapshot)] == [UUID_B]


def test_claude_detects_appended_session(claude: ld.ClaudeSessions) -> None:
    path = write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("b")], mtime=1_000)
    snapshot = claude.snapshot()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(user_line("more") + "\n")
    os.utime(path, (2_000, 2_000))

    assert [s.id for s in claude.changed_since(snapshot)] == [UUID_A]


def test_claude_watch_limits_appended(claude: ld.ClaudeSessions) -> None:
    watched = write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    other = write_session(folder_of(claude), UUID_B, [user_line("b")], mtime=1_000)
    snapshot = claude.snapshot(watch=[UUID_A])
    os.utime(watched, (2_000, 2_000))
    os.utime(other, (3_000, 3_000))
    write_session(folder_of(claude), UUID_C, [user_line("c")], mtime=500)

    assert [s.id for s in claude.changed_since(snapshot)] == [UUID_A, UUID_C]


def test_claude_detection_ignores_other_cwd(claude: ld.ClaudeSessions) -> None:
    snapshot = claude.snapshot()
    write_session(folder_of(claude), UUID_A, [user_line("theirs", cwd=OTHER_WORKDIR)])
    assert claude.changed_since(snapshot) == []


def test_claude_detection_among_10000_files(claude: ld.ClaudeSessions) -> None:
    folder_of(claude).mkdir(parents=True)
    for number in range(10_000):
        path = folder_of(claude) / f"00000000-0000-4000-8000-{number:012d}.jsonl"
        path.write_text(user_line(f"prompt {number}") + "\n")
        os.utime(path, (1_000, 1_000))
    appended_id = "00000000-0000-4000-8000-000000004242"
    full = claude.snapshot()
    watching = claude.snapshot(watch=[appended_id])
    write_session(folder_of(claude), UUID_A, [user_line("new one")])
    os.utime(claude.path_of(appended_id), (5_000, 5_000))

    started = time.perf_counter()
    changed = claude.changed_since(watching)
    elapsed = time.perf_counter() - started

    assert {s.id for s in changed} == {UUID_A, appended_id}
    assert {s.id for s in claude.changed_since(full)} == {UUID_A, appended_id}
    assert elapsed < 2.0  # about 6 ms on a 2-core machine; generous for slow CI


# ---- OpenCode sessions ------------------------------------------------------------------------


def test_opencode_sessions_of_directory(opencode_db: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    assert [s.id for s in store.sessions()] == ["ses_new", "ses_old"]
    assert store.count() == 2
    assert store.problem() is None


def test_opencode_newest_and_find(opencode_db: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    newest = store.newest()
    assert newest is not None
    assert newest.id == "ses_new"
    assert newest.last_activity == 4.0
    assert store.find("ses_old") is not None
    assert store.find("ses_elsewhere") is None


def test_opencode_read_creates_no_files(opencode_db: Path) -> None:
    before = sorted(os.listdir(opencode_db.parent))
    digest = file_digest(opencode_db)
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    store.sessions()
    store.snapshot()
    store.first_prompt("ses_new")

    assert sorted(os.listdir(opencode_db.parent)) == before
    assert file_digest(opencode_db) == digest


def test_opencode_wal_with_open_writer(opencode_db: Path) -> None:
    writer = sqlite3.connect(opencode_db)
    try:
        writer.execute(
            "INSERT INTO session VALUES ('ses_live', 'global', ?, 't', 10000, 10000)", (WORKDIR,)
        )
        writer.commit()
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO session VALUES ('ses_pending', 'global', ?, 't', 20000, 20000)",
            (WORKDIR,),
        )
        store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
        ids = [s.id for s in store.sessions()]
    finally:
        writer.rollback()
        writer.close()

    assert ids == ["ses_live", "ses_new", "ses_old"]
    assert store.problem() is None


def test_opencode_locked_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ld, "OPENCODE_BUSY_TIMEOUT_SECONDS", 0.2)
    path = tmp_path / "opencode.db"
    make_opencode_db(path, wal=False)
    add_opencode_session(path, "ses_a", WORKDIR, 1_000)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("UPDATE session SET title = 'x'")
    try:
        store = ld.OpencodeSessions(str(path), WORKDIR)
        started = time.monotonic()
        found = store.sessions()
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert found == []
    assert "locked" in (store.problem() or "")
    assert 0.15 < elapsed < 5


def test_opencode_missing_database(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "opencode.db"
    store = ld.OpencodeSessions(str(path), WORKDIR)
    assert store.sessions() == []
    assert store.snapshot().baseline_ms == 0
    assert store.problem() is None
    assert not path.parent.exists()


def test_opencode_old_layout(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    make_opencode_db(path, columns="id TEXT PRIMARY KEY, directory TEXT, created INTEGER")
    store = ld.OpencodeSessions(str(path), WORKDIR)
    assert store.sessions() == []
    problem = store.problem() or ""
    assert "time_created" in problem
    assert "time_updated" in problem


def test_opencode_no_session_table(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE other (x)")
    connection.close()
    store = ld.OpencodeSessions(str(path), WORKDIR)
    assert store.sessions() == []
    assert store.problem() is not None


def test_opencode_newer_layout_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    make_opencode_db(
        path, columns=SESSION_COLUMNS + ", parent_id TEXT, share_url TEXT, archived INTEGER"
    )
    add_opencode_session(path, "ses_a", WORKDIR, 1_000)
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE workspace (id TEXT)")
    connection.close()
    assert [s.id for s in ld.OpencodeSessions(str(path), WORKDIR).sessions()] == ["ses_a"]


def test_opencode_without_title_column(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    make_opencode_db(
        path, columns="id TEXT, directory TEXT, time_created INTEGER, time_updated INTEGER"
    )
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO session VALUES ('ses_a', ?, 1, 2)", (WORKDIR,))
    connection.commit()
    connection.close()
    store = ld.OpencodeSessions(str(path), WORKDIR)
    assert [s.id for s in store.sessions()] == ["ses_a"]
    assert store.first_prompt("ses_a") == ""


def test_opencode_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    path.write_bytes(b"this is not sqlite" * 100)
    store = ld.OpencodeSessions(str(path), WORKDIR)
    assert store.sessions() == []
    assert store.problem() is not None
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_opencode_first_prompt_from_parts(opencode_db: Path) -> None:
    connection = sqlite3.connect(opencode_db)
    connection.execute(
        "INSERT INTO message VALUES ('msg_1', 'ses_new', 3001, 3001, ?)",
        (json.dumps({"role": "user"}),),
    )
    connection.execute(
        "INSERT INTO part VALUES ('prt_1', 'msg_1', 'ses_new', ?)",
        (json.dumps({"type": "text", "text": "context", "synthetic": True}),),
    )
    connection.execute(
        "INSERT INTO part VALUES ('prt_2', 'msg_1', 'ses_new', ?)",
        (json.dumps({"type": "text", "text": "fix the build\nplease"}),),
    )
    connection.commit()
    connection.close()
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    assert store.first_prompt("ses_new") == "fix the build"
    assert store.first_prompt("ses_old") == "old title"


def test_opencode_detects_created_and_updated(opencode_db: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    snapshot = store.snapshot()
    assert snapshot.baseline_ms == 4_000
    add_opencode_session(opencode_db, "ses_created", WORKDIR, 5_000, 5_000)
    add_opencode_session(opencode_db, "ses_far", OTHER_WORKDIR, 6_000, 6_000)
    connection = sqlite3.connect(opencode_db)
    connection.execute("UPDATE session SET time_updated = 7000 WHERE id = 'ses_old'")
    connection.commit()
    connection.close()

    assert [s.id for s in store.changed_since(snapshot)] == ["ses_old", "ses_created"]


def test_opencode_detection_among_10000_rows(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    make_opencode_db(path)
    connection = sqlite3.connect(path)
    connection.executemany(
        "INSERT INTO session VALUES (?, 'global', ?, 't', ?, ?)",
        [(f"ses_{n:08d}", WORKDIR if n % 2 else OTHER_WORKDIR, n, n + 1) for n in range(10_000)],
    )
    connection.commit()
    connection.close()
    store = ld.OpencodeSessions(str(path), WORKDIR)
    snapshot = store.snapshot()
    add_opencode_session(path, "ses_fresh", WORKDIR, 50_000)

    assert [s.id for s in store.changed_since(snapshot)] == ["ses_fresh"]


# ---- slot records -----------------------------------------------------------------------------


def test_slot_round_trip(slots: ld.SlotStore) -> None:
    assert slots.write(2, UUID_A) == []
    record = slots.read(2)
    assert record is not None
    assert record.session_id == UUID_A
    assert record.slot == 2
    assert record.project == HOST_PROJECT


def test_slot_file_format(slots: ld.SlotStore) -> None:
    slots.write(1, UUID_A)
    data = json.loads(slot_file(slots, 1).read_text())
    assert data["version"] == 1
    assert data["tool"] == "claude"
    assert data["project"] == HOST_PROJECT
    assert data["slot"] == 1
    assert data["session_id"] == UUID_A
    assert data["updated"].endswith("Z")
    assert slot_file(slots, 1).parent.parent.name == "claude"


def test_slot_missing_reads_none(slots: ld.SlotStore) -> None:
    assert slots.read(3) is None


def test_slot_overwrite_keeps_no_temp_files(slots: ld.SlotStore) -> None:
    slots.write(1, UUID_A)
    slots.write(1, UUID_B)
    record = slots.read(1)
    assert record is not None
    assert record.session_id == UUID_B
    assert sorted(os.listdir(slots.directory)) == [".lock", "slot-1.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"version": "1"}', "version"),
        ('{"version": 1, "tool": "opencode"}', "tool"),
    ],
)
def test_slot_corrupt_file_error(slots: ld.SlotStore, content: str, reason: str) -> None:
    Path(slots.directory).mkdir(parents=True)
    slot_file(slots, 1).write_text(content)
    with pytest.raises(ld.SessionError) as caught:
        slots.read(1)
    text = error_text(caught.value)
    assert str(slot_file(slots, 1)) in caught.value.message
    assert reason in caught.value.message
    assert "delete" in caught.value.hint
    assert str(slot_file(slots, 1)) in text


def test_slot_future_version_error(slots: ld.SlotStore) -> None:
    Path(slots.directory).mkdir(parents=True)
    slot_file(slots, 1).write_text(json.dumps({"version": 2, "whatever": True}))
    with pytest.raises(ld.SessionError) as caught:
        slots.read(1)
    assert "newer llm-docker" in caught.value.message
    assert "upgrade" in caught.value.hint


def test_slot_other_project_error(tmp_path: Path, slots: ld.SlotStore) -> None:
    slots.write(1, UUID_A)
    same_id_other_path = ld.SlotStore(
        str(tmp_path / "slots"), "claude", os.path.basename(slots.directory), "/elsewhere"
    )
    with pytest.raises(ld.SessionError) as caught:
        same_id_other_path.read(1)
    assert "project" in str(caught.value)


def test_slot_write_moves_corrupt_aside(slots: ld.SlotStore) -> None:
    Path(slots.directory).mkdir(parents=True)
    slot_file(slots, 1).write_text("{broken")
    notices = slots.write(1, UUID_A)

    kept = [name for name in os.listdir(slots.directory) if ".invalid-" in name]
    assert len(notices) == 1
    assert "renamed" in notices[0]
    assert len(kept) == 1
    assert (Path(slots.directory) / kept[0]).read_text() == "{broken"
    record = slots.read(1)
    assert record is not None
    assert record.session_id == UUID_A


def test_slot_write_keeps_future_record(slots: ld.SlotStore) -> None:
    Path(slots.directory).mkdir(parents=True)
    future = json.dumps({"version": 7, "data": "new"})
    slot_file(slots, 1).write_text(future)
    notices = slots.write(1, UUID_A)

    assert len(notices) == 1
    assert "not saved" in notices[0]
    assert UUID_A in notices[0]
    assert slot_file(slots, 1).read_text() == future


def test_slots_scoped_to_project(tmp_path: Path) -> None:
    one = ld.SlotStore(str(tmp_path), "claude", "app-11111111", "/a/app")
    two = ld.SlotStore(str(tmp_path), "claude", "app-22222222", "/b/app")
    one.write(1, UUID_A)
    assert two.read(1) is None
    two.write(1, UUID_B)
    first = one.read(1)
    assert first is not None
    assert first.session_id == UUID_A


def test_slots_scoped_to_tool(tmp_path: Path) -> None:
    claude_slots = ld.SlotStore(str(tmp_path), "claude", "app-1", "/a/app")
    opencode_slots = ld.SlotStore(str(tmp_path), "opencode", "app-1", "/a/app")
    claude_slots.write(1, UUID_A)
    assert opencode_slots.read(1) is None


@pytest.mark.parametrize("slot", [0, -1, ld.MAX_SLOT + 1])
def test_slot_number_out_of_range(slots: ld.SlotStore, slot: int) -> None:
    with pytest.raises(ld.SessionError, match="invalid slot"):
        slots.read(slot)


@pytest.mark.parametrize("project_id", ["", ".", "..", "a/b", "a\0b"])
def test_slot_store_rejects_bad_project_id(tmp_path: Path, project_id: str) -> None:
    with pytest.raises(ValueError, match="project id"):
        ld.SlotStore(str(tmp_path), "claude", project_id, "/a")


def test_slot_write_rejects_bad_session_id(slots: ld.SlotStore) -> None:
    with pytest.raises(ValueError, match="cannot be stored"):
        slots.write(1, "../../etc/passwd")


def test_slot_read_all_skips_invalid(slots: ld.SlotStore) -> None:
    slots.write(1, UUID_A)
    slots.write(3, UUID_B)
    slot_file(slots, 2).write_text("{bad")
    records, warnings = slots.read_all()
    assert sorted(records) == [1, 3]
    assert len(warnings) == 1
    assert "slot-2.json" in warnings[0]


@given(st.text(max_size=300))
@example('{"version": 1}')
@example('{"version": true}')
@example('{"version": 99999999999999999999}')
@settings(max_examples=300, deadline=None)
def test_slot_parser_raises_only_value_error(text: str) -> None:
    try:
        record = ld.parse_slot_record(text, tool="claude", project="/p", slot=1)
    except ValueError:
        return
    assert record.slot == 1


@given(
    project=st.text(min_size=1, max_size=80),
    session_id=st.text(alphabet=sorted(ld.SESSION_ID_CHARS), min_size=1, max_size=128).filter(
        lambda text: not text.startswith(".")
    ),
    slot=st.integers(min_value=1, max_value=ld.MAX_SLOT),
)
@settings(max_examples=200, deadline=None)
def test_slot_record_json_round_trip(project: str, session_id: str, slot: int) -> None:
    record = ld.SlotRecord("opencode", project, slot, session_id, "2026-01-01T00:00:00Z")
    parsed = ld.parse_slot_record(record.to_json(), tool="opencode", project=project, slot=slot)
    assert parsed == record


def _hammer_slot(state_dir: str, worker: int, writes: int) -> None:
    store = ld.SlotStore(state_dir, "claude", "proj-1", "/p")
    for number in range(writes):
        store.write(1 + number % 3, f"{worker:08x}-0000-4000-8000-{number:012d}")


def _read_slots_until(state_dir: str, stop_at: float, result: multiprocessing.Queue) -> None:
    store = ld.SlotStore(state_dir, "claude", "proj-1", "/p")
    reads = failures = 0
    while time.monotonic() < stop_at:
        for slot in (1, 2, 3):
            try:
                store.read(slot)
                reads += 1
            except ld.SessionError:
                failures += 1
    result.put((reads, failures))


def test_slot_concurrent_writers_never_tear(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    result: multiprocessing.Queue = context.Queue()
    reader = context.Process(
        target=_read_slots_until, args=(str(tmp_path), time.monotonic() + 3, result)
    )
    writers = [
        context.Process(target=_hammer_slot, args=(str(tmp_path), worker, 150))
        for worker in range(6)
    ]
    reader.start()
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
    reader.join(60)

    assert all(process.exitcode == 0 for process in writers)
    reads, failures = result.get(timeout=5)
    assert reads > 0
    assert failures == 0
    store = ld.SlotStore(str(tmp_path), "claude", "proj-1", "/p")
    assert sorted(os.listdir(store.directory)) == [
        ".lock",
        "slot-1.json",
        "slot-2.json",
        "slot-3.json",
    ]
    for slot in (1, 2, 3):
        assert store.read(slot) is not None


def test_slot_unreadable_record(slots: ld.SlotStore) -> None:
    slot_file(slots, 1).mkdir(parents=True)
    with pytest.raises(ld.SessionError, match="cannot be read"):
        slots.read(1)


def test_slot_oversized_record(slots: ld.SlotStore) -> None:
    Path(slots.directory).mkdir(parents=True)
    slot_file(slots, 1).write_text(" " * (ld.SLOT_RECORD_MAX_BYTES + 1))
    with pytest.raises(ld.SessionError, match="larger than"):
        slots.read(1)


def test_slot_record_not_utf8(slots: ld.SlotStore) -> None:
    Path(slots.directory).mkdir(parents=True)
    slot_file(slots, 1).write_bytes(b"\xff\xfe{}")
    with pytest.raises(ld.SessionError, match="not UTF-8"):
        slots.read(1)


def test_slot_read_all_ignores_other_names(slots: ld.SlotStore) -> None:
    slots.write(2, UUID_A)
    for name in ("slot-02.json", "slot-0.json", "slot-1000.json", "slot-x.json", "notes.txt"):
        (Path(slots.directory) / name).write_text("{bad")
    records, warnings = slots.read_all()
    assert sorted(records) == [2]
    assert warnings == []


def test_atomic_write_failure_leaves_no_temp(
    slots: ld.SlotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots.write(1, UUID_A)
    before = slot_file(slots, 1).read_text()

    def failing_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ld.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        slots.write(1, UUID_B)
    monkeypatch.undo()

    assert slot_file(slots, 1).read_text() == before
    assert sorted(os.listdir(slots.directory)) == [".lock", "slot-1.json"]


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("plain text", "plain text"),
        ("caf\\u00e9 ok", "café ok"),
        ("cut in an escape \\u00", "cut in an escape "),
        ('ends here" and more', "ends here"),
        ("line one\\nline two", "line one\nline two"),
    ],
)
def test_partial_json_string(fragment: str, expected: str) -> None:
    assert ld._partial_json_string(fragment) == expected


def test_watchdog_finish_twice() -> None:
    read_fd, write_fd = os.pipe()
    watchdog = ld.Watchdog(write_fd, 0)
    watchdog.finish()
    watchdog.finish()
    assert os.read(read_fd, 64) == ld.WATCHDOG_DONE
    os.close(read_fd)


def test_opencode_first_prompt_without_db(tmp_path: Path) -> None:
    store = ld.OpencodeSessions(str(tmp_path / "none.db"), WORKDIR)
    assert store.first_prompt("ses_x") == ""
    assert not (tmp_path / "none.db").exists()


# ---- session plan -----------------------------------------------------------------------------


@pytest.fixture
def fixed_new_id(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(ld, "new_session_id", lambda: UUID_C)
    return UUID_C


def test_new_session_id_is_uuid4() -> None:
    first, second = ld.new_session_id(), ld.new_session_id()
    assert ld.is_claude_session_id(first)
    assert first[14] == "4"
    assert first[19] in "89ab"
    assert first != second


def test_plan_fresh_claude(
    claude: ld.ClaudeSessions, slots: ld.SlotStore, fixed_new_id: str
) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest(slot=2))
    assert plan.tool_arguments == ["--session-id", UUID_C]
    assert plan.mode == "new"
    assert plan.allows_first_message is True
    assert plan.slot == 2
    assert plan.session_id == UUID_C


def test_plan_fresh_claude_without_slot(
    claude: ld.ClaudeSessions, slots: ld.SlotStore, fixed_new_id: str
) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest())
    assert plan.tool_arguments == []
    assert plan.mode == "new"
    assert plan.session_id is None
    assert plan.allows_first_message is True


def test_plan_fresh_opencode(opencode_db: Path, tmp_path: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    plan = ld.plan_session(store, opencode_slots(tmp_path), ld.SessionRequest())
    assert plan.tool_arguments == []
    assert plan.mode == "new"
    assert plan.allows_first_message is True


def test_plan_continue_claude(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("b")], mtime=2_000)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True))
    assert plan.tool_arguments == ["--continue"]
    assert plan.mode == "continue"
    assert plan.allows_first_message is False
    assert plan.session_id == UUID_B


def test_plan_continue_skips_lossy_sibling(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("mine")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("x", cwd=OTHER_WORKDIR)], mtime=2_000)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True))
    assert plan.tool_arguments == ["--resume", UUID_A]
    assert plan.mode == "continue"


def test_plan_continue_opencode(opencode_db: Path, tmp_path: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    plan = ld.plan_session(
        store, opencode_slots(tmp_path), ld.SessionRequest(continue_session=True)
    )
    assert plan.tool_arguments == ["--continue"]
    assert plan.session_id == "ses_new"


def test_plan_continue_without_sessions(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True))
    assert plan.mode == "new"
    assert plan.allows_first_message is False
    assert "--continue" not in plan.tool_arguments
    assert plan.session_id is None
    assert plan.notices == ["no earlier session in this directory: starting a new session"]


def test_plan_continue_only_lossy_siblings(
    claude: ld.ClaudeSessions, slots: ld.SlotStore, fixed_new_id: str
) -> None:
    write_session(folder_of(claude), UUID_B, [user_line("x", cwd=OTHER_WORKDIR)], mtime=2_000)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True, slot=1))
    assert plan.mode == "new"
    assert plan.tool_arguments == ["--session-id", UUID_C]
    assert len(plan.notices) == 1


def test_plan_resume_known_id(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")])
    request = ld.SessionRequest(continue_session=True, session_id=UUID_A, slot=3)
    plan = ld.plan_session(claude, slots, request)
    assert plan.tool_arguments == ["--resume", UUID_A]
    assert plan.mode == "resume"
    assert plan.allows_first_message is False
    assert plan.slot == 3


def test_plan_resume_opencode_uses_session_flag(opencode_db: Path, tmp_path: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    request = ld.SessionRequest(continue_session=True, session_id="ses_old")
    plan = ld.plan_session(store, opencode_slots(tmp_path), request)
    assert plan.tool_arguments == ["--session", "ses_old"]


def test_plan_unknown_id_lists_recent(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("refactor the parser")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("write the docs")], mtime=2_000)
    with pytest.raises(ld.SessionError) as caught:
        ld.plan_session(claude, slots, ld.SessionRequest(session_id=UUID_C))
    message = caught.value.message
    assert UUID_C in message
    assert UUID_A in message
    assert UUID_B in message
    assert "write the docs" in message
    assert message.index(UUID_B) < message.index(UUID_A)
    assert "cld --sessions" in caught.value.hint


def test_plan_unknown_id_in_empty_project(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    with pytest.raises(ld.SessionError) as caught:
        ld.plan_session(claude, slots, ld.SessionRequest(session_id=UUID_C))
    assert "no sessions yet" in caught.value.hint


def test_plan_unknown_id_other_directory(opencode_db: Path, tmp_path: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    with pytest.raises(ld.SessionError, match="ses_elsewhere"):
        ld.plan_session(
            store, opencode_slots(tmp_path), ld.SessionRequest(session_id="ses_elsewhere")
        )


def test_plan_unknown_id_reports_unreadable_db(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    path.write_bytes(b"garbage" * 50)
    store = ld.OpencodeSessions(str(path), WORKDIR)
    with pytest.raises(ld.SessionError) as caught:
        ld.plan_session(store, opencode_slots(tmp_path), ld.SessionRequest(session_id="ses_x"))
    assert "could not be read" in caught.value.message


def test_plan_slot_resumes_its_session(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("b")], mtime=2_000)
    slots.write(1, UUID_A)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True, slot=1))
    assert plan.tool_arguments == ["--resume", UUID_A]
    assert plan.mode == "resume"
    assert plan.session_id == UUID_A


def test_plan_slot_session_gone(
    claude: ld.ClaudeSessions, slots: ld.SlotStore, fixed_new_id: str
) -> None:
    slots.write(1, UUID_A)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True, slot=1))
    assert plan.mode == "new"
    assert plan.tool_arguments == ["--session-id", UUID_C]
    assert len(plan.notices) == 1
    assert "\n" not in plan.notices[0]
    assert UUID_A in plan.notices[0]


def test_plan_slot_without_record(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True, slot=4))
    assert plan.mode == "new"
    assert "slot 4" in plan.notices[0]


def test_plan_slot_without_continue_is_fresh(
    claude: ld.ClaudeSessions, slots: ld.SlotStore, fixed_new_id: str
) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")])
    slots.write(1, UUID_A)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(slot=1))
    assert plan.mode == "new"
    assert plan.session_id == UUID_C


def test_plan_slot_corrupt_record(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    Path(slots.directory).mkdir(parents=True)
    slot_file(slots, 1).write_text("{")
    with pytest.raises(ld.SessionError, match=r"slot-1\.json"):
        ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True, slot=1))


def test_plan_passthrough_session_flag(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    request = ld.SessionRequest(passthrough=("--resume", UUID_A, "--model", "x"))
    plan = ld.plan_session(claude, slots, request)
    assert plan.tool_arguments == []
    assert plan.mode == "resume"
    assert plan.session_id == UUID_A
    assert plan.allows_first_message is False


def test_plan_passthrough_print_mode(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest(passthrough=("-p", "hello")))
    assert plan.mode == "new"
    assert plan.tool_arguments == []
    assert plan.allows_first_message is False


def test_plan_print_mode_with_continue(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")])
    request = ld.SessionRequest(continue_session=True, passthrough=("-p", "hello"))
    plan = ld.plan_session(claude, slots, request)
    assert plan.mode == "continue"
    assert plan.tool_arguments == ["--continue"]
    assert plan.allows_first_message is False


def test_plan_passthrough_args_no_first_message(
    claude: ld.ClaudeSessions, slots: ld.SlotStore
) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest(passthrough=("--version",)))
    assert plan.mode == "new"
    assert plan.allows_first_message is False


def test_plan_passthrough_names_expected_id(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    request = ld.SessionRequest(slot=1, passthrough=(f"--resume={UUID_A}",))
    plan = ld.plan_session(claude, slots, request)
    assert plan.session_id == UUID_A
    assert ld.snapshot_for(claude, plan).mtimes_ns == {}


def test_plan_passthrough_conflicts_with_continue(
    claude: ld.ClaudeSessions, slots: ld.SlotStore
) -> None:
    request = ld.SessionRequest(continue_session=True, passthrough=("--continue",))
    with pytest.raises(ld.SessionError, match="cannot be combined"):
        ld.plan_session(claude, slots, request)


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("claude", [f"--resume={UUID_A}"], ("resume", UUID_A)),
        ("claude", ["-r", UUID_B], ("resume", UUID_B)),
        ("claude", ["-r", "not-an-id"], ("resume", None)),
        ("claude", ["-c"], ("continue", None)),
        ("claude", ["--print", "hi"], ("new-print", None)),
        ("claude", ["--model", "opus"], (None, None)),
        ("opencode", ["-s", "ses_x1"], ("resume", "ses_x1")),
        ("opencode", ["--session=ses_x1"], ("resume", "ses_x1")),
        ("opencode", ["--fork"], (None, None)),
    ],
)
def test_passthrough_session(
    tool: str, args: list[str], expected: tuple[str | None, str | None]
) -> None:
    assert ld.passthrough_session(tool, args) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (UUID_A, True),
        (UUID_A.upper(), False),
        (UUID_A[:-1], False),
        (UUID_A.replace("-", "x"), False),
        ("my-project", False),
    ],
)
def test_is_claude_session_id(text: str, expected: bool) -> None:
    assert ld.is_claude_session_id(text) is expected


# ---- detection at exit ------------------------------------------------------------------------


def info(session_id: str) -> ld.SessionInfo:
    return ld.SessionInfo(session_id, 0.0)


def test_pick_expected_wins() -> None:
    assert ld.pick_session([info("b"), info("a")], "a", set()) == "a"


def test_pick_skips_claimed() -> None:
    assert ld.pick_session([info("b"), info("a")], None, {"b"}) == "a"


def test_pick_all_claimed_takes_newest() -> None:
    assert ld.pick_session([info("b"), info("a")], None, {"a", "b"}) == "b"


def test_pick_nothing_changed() -> None:
    assert ld.pick_session([], "a", set()) is None


def test_save_fresh_claude_slot(
    claude: ld.ClaudeSessions, slots: ld.SlotStore, fixed_new_id: str
) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("old")], mtime=1_000)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(slot=2))
    snapshot = ld.snapshot_for(claude, plan)
    write_session(folder_of(claude), UUID_C, [user_line("new")])

    saved, notices = ld.save_slot_after_exit(claude, snapshot, plan, slots)

    assert saved == UUID_C
    assert notices == []
    record = slots.read(2)
    assert record is not None
    assert record.session_id == UUID_C


def test_save_continued_slot_after_rebuild(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    path = write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    slots.write(1, UUID_A)
    plan = ld.plan_session(claude, slots, ld.SessionRequest(continue_session=True, slot=1))
    snapshot = ld.snapshot_for(claude, plan)
    assert snapshot.mtimes_ns.keys() == {UUID_A}
    os.utime(path, (5_000, 5_000))

    saved, _ = ld.save_slot_after_exit(claude, snapshot, plan, slots)

    assert saved == UUID_A
    assert len(claude.names()) == 1


def test_save_fresh_without_session_keeps_slot(
    claude: ld.ClaudeSessions, slots: ld.SlotStore
) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    slots.write(1, UUID_A)
    before = slot_file(slots, 1).read_text()
    plan = ld.plan_session(claude, slots, ld.SessionRequest(slot=1))
    snapshot = ld.snapshot_for(claude, plan)

    saved, _ = ld.save_slot_after_exit(claude, snapshot, plan, slots)

    assert saved is None
    assert slot_file(slots, 1).read_text() == before


def test_save_resumed_without_change_tags_slot(
    claude: ld.ClaudeSessions, slots: ld.SlotStore
) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    request = ld.SessionRequest(continue_session=True, session_id=UUID_A, slot=3)
    plan = ld.plan_session(claude, slots, request)
    snapshot = ld.snapshot_for(claude, plan)

    saved, _ = ld.save_slot_after_exit(claude, snapshot, plan, slots)

    assert saved == UUID_A
    record = slots.read(3)
    assert record is not None
    assert record.session_id == UUID_A


def test_save_resumed_session_deleted_keeps_slot(
    claude: ld.ClaudeSessions, slots: ld.SlotStore
) -> None:
    path = write_session(folder_of(claude), UUID_A, [user_line("a")], mtime=1_000)
    request = ld.SessionRequest(continue_session=True, session_id=UUID_A, slot=3)
    plan = ld.plan_session(claude, slots, request)
    snapshot = ld.snapshot_for(claude, plan)
    path.unlink()

    saved, _ = ld.save_slot_after_exit(claude, snapshot, plan, slots)

    assert saved is None
    assert slots.read(3) is None


def test_save_concurrent_opencode_slots(opencode_db: Path, tmp_path: Path) -> None:
    store = ld.OpencodeSessions(str(opencode_db), WORKDIR)
    slots = opencode_slots(tmp_path)
    plan_one = ld.plan_session(store, slots, ld.SessionRequest(slot=1))
    plan_two = ld.plan_session(store, slots, ld.SessionRequest(slot=2))
    snapshot = store.snapshot()
    add_opencode_session(opencode_db, "ses_two", WORKDIR, 10_000)
    saved_two, _ = ld.save_slot_after_exit(store, snapshot, plan_two, slots)
    add_opencode_session(opencode_db, "ses_one", WORKDIR, 5_000, 6_000)
    saved_one, _ = ld.save_slot_after_exit(store, snapshot, plan_one, slots)

    assert saved_two == "ses_two"
    assert saved_one == "ses_one"


def test_save_without_slot_writes_nothing(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    plan = ld.plan_session(claude, slots, ld.SessionRequest())
    snapshot = claude.snapshot()
    write_session(folder_of(claude), UUID_C, [user_line("new")])
    saved, _ = ld.save_slot_after_exit(claude, snapshot, plan, slots)
    assert saved is None
    assert not Path(slots.directory).exists()


# ---- listing ------------------------------------------------------------------------------------


def test_list_sessions_text(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("first task")], mtime=1_000)
    write_session(folder_of(claude), UUID_B, [user_line("second \x1b[31mtask")], mtime=2_000)
    slots.write(3, UUID_A)
    rows, total, warnings = ld.list_sessions(claude, slots)
    text = ld.format_sessions_text(rows, total, "claude", HOST_PROJECT)

    lines = text.splitlines()
    assert total == 2
    assert warnings == []
    assert UUID_B in lines[2]
    assert UUID_A in lines[3]
    assert " 3 " in lines[3]
    assert "first task" in lines[3]
    assert "\x1b" not in text


def test_list_sessions_json(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    write_session(folder_of(claude), UUID_A, [user_line("first task")], mtime=1_000)
    slots.write(1, UUID_A)
    slots.write(2, UUID_A)
    rows, total, _ = ld.list_sessions(claude, slots)
    data = json.loads(ld.format_sessions_json(rows, total, "claude", HOST_PROJECT))

    assert data["total"] == 1
    assert data["sessions"][0]["id"] == UUID_A
    assert data["sessions"][0]["slots"] == [1, 2]
    assert data["sessions"][0]["last_activity"] == "1970-01-01T00:16:40Z"
    assert data["sessions"][0]["first_prompt"] == "first task"


def test_list_sessions_limit(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    for number in range(5):
        write_session(folder_of(claude), f"00000000-0000-4000-8000-{number:012d}", [user_line("p")])
    rows, total, _ = ld.list_sessions(claude, slots, limit=2)
    text = ld.format_sessions_text(rows, total, "claude", HOST_PROJECT)
    assert len(rows) == 2
    assert "3 older sessions" in text


def test_list_sessions_empty(claude: ld.ClaudeSessions, slots: ld.SlotStore) -> None:
    rows, total, _ = ld.list_sessions(claude, slots)
    assert ld.format_sessions_text(rows, total, "claude", HOST_PROJECT).startswith("no claude")


def test_list_opencode_reports_problem(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    path.write_bytes(b"garbage" * 50)
    store = ld.OpencodeSessions(str(path), WORKDIR)
    slots = opencode_slots(tmp_path)
    rows, _, warnings = ld.list_sessions(store, slots)
    assert rows == []
    assert len(warnings) == 1


# ---- watchdog and signals -----------------------------------------------------------------------


def test_watch_pipe_done_does_nothing() -> None:
    calls: list[list[str]] = []
    read_fd, write_fd = os.pipe()
    os.write(write_fd, ld.WATCHDOG_DONE)
    os.close(write_fd)
    handled = ld.watch_pipe(
        read_fd, "box", lambda args: calls.append(list(args)), lambda: calls.append(["saved"])
    )
    os.close(read_fd)
    assert handled is False
    assert calls == []


def test_watch_pipe_eof_stops_and_saves() -> None:
    calls: list[list[str]] = []
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    handled = ld.watch_pipe(
        read_fd, "box", lambda args: calls.append(list(args)), lambda: calls.append(["saved"])
    )
    os.close(read_fd)
    assert handled is True
    assert calls == [["stop", "-t", "2", "box"], ["saved"]]


def test_watch_pipe_stop_then_done() -> None:
    calls: list[list[str]] = []
    read_fd, write_fd = os.pipe()
    os.write(write_fd, ld.WATCHDOG_STOP + ld.WATCHDOG_STOP + ld.WATCHDOG_DONE)
    os.close(write_fd)
    handled = ld.watch_pipe(
        read_fd, "box", lambda args: calls.append(list(args)), lambda: calls.append(["saved"])
    )
    os.close(read_fd)
    assert handled is False
    assert calls == [["stop", "-t", "2", "box"]]


def test_watch_pipe_survives_engine_failure() -> None:
    saved: list[bool] = []

    def failing_engine(args: object) -> None:
        raise OSError("engine gone")

    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    assert ld.watch_pipe(read_fd, "box", failing_engine, lambda: saved.append(True)) is True
    os.close(read_fd)
    assert saved == [True]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_chain_stop_signals(signum: int) -> None:
    forwarded: list[int] = []
    read_fd, write_fd = os.pipe()
    original = signal.getsignal(signum)
    signal.signal(signum, lambda number, frame: forwarded.append(number))
    try:
        ld.chain_stop_signals(ld.Watchdog(write_fd, 0))
        os.kill(os.getpid(), signum)
        received = os.read(read_fd, 64)
    finally:
        signal.signal(signum, original)
        os.close(read_fd)
        os.close(write_fd)
    assert forwarded == [signum]
    assert received == ld.WATCHDOG_STOP


LAUNCHER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import llmdocker as ld

    work, mode, session_id = sys.argv[2], sys.argv[3], sys.argv[4]
    workdir = "/home/agent/Projects/app-12345678"

    def engine(args):
        with open(os.path.join(work, "engine.log"), "a") as log:
            log.write(" ".join(args) + "\\n")

    project = ld.Project("/p/app", "/p/app", "app", "12345678", workdir, [])
    store, slots = ld.project_stores("claude", project, ld.StatePaths(work))
    decision = ld.plan_session(store, slots, ld.SessionRequest(slot=1))
    decision.tracker = ld.SessionTracker(store, slots, decision)
    decision.tracker.start(engine, "llm-docker-test", os.path.join(work, "watchdog.log"))
    # What the container does while it runs: Claude Code writes the new session's file.
    folder = decision.tracker.store.folder
    os.makedirs(folder)
    with open(os.path.join(folder, decision.session_id + ".jsonl"), "w") as session:
        session.write('{"type":"user","cwd":"%s","message":{"content":"hi"}}\\n' % workdir)
    with open(os.path.join(work, "watchdog.pid"), "w") as pid_file:
        pid_file.write(str(decision.tracker.watchdog.pid))
    print(decision.session_id, flush=True)
    if mode == "finish":
        decision.tracker.finish()
        sys.exit(0)
    time.sleep(60)
    """
)


def _start_launcher(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    repo = str(Path(ld.__file__).resolve().parent)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER_SCRIPT, repo, str(tmp_path), mode, UUID_A],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    session_id = launcher.stdout.readline().strip()
    assert ld.is_claude_session_id(session_id)
    return launcher, session_id


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _launcher_slot(tmp_path: Path) -> Path:
    return tmp_path / "slots" / "claude" / "12345678" / "slot-1.json"


def test_watchdog_after_sigkill(tmp_path: Path) -> None:
    launcher, session_id = _start_launcher(tmp_path, "sleep")
    watchdog_pid = int((tmp_path / "watchdog.pid").read_text())
    assert not _process_gone(watchdog_pid)
    started = time.monotonic()
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(10)

    assert _wait_for(_launcher_slot(tmp_path).exists, 10)
    elapsed = time.monotonic() - started
    assert (tmp_path / "engine.log").read_text() == "stop -t 2 llm-docker-test\n"
    assert json.loads(_launcher_slot(tmp_path).read_text())["session_id"] == session_id
    assert elapsed < 10
    assert _wait_for(lambda: _process_gone(watchdog_pid), 10)
    assert "launcher died" in (tmp_path / "watchdog.log").read_text()


def test_watchdog_after_normal_finish(tmp_path: Path) -> None:
    launcher, session_id = _start_launcher(tmp_path, "finish")
    watchdog_pid = int((tmp_path / "watchdog.pid").read_text())
    assert launcher.wait(10) == 0
    assert _wait_for(lambda: _process_gone(watchdog_pid), 10)
    assert not (tmp_path / "engine.log").exists()
    assert json.loads(_launcher_slot(tmp_path).read_text())["session_id"] == session_id


def test_watchdog_is_in_own_session(tmp_path: Path) -> None:
    launcher, _ = _start_launcher(tmp_path, "sleep")
    watchdog_pid = int((tmp_path / "watchdog.pid").read_text())
    try:
        # A new session, led by the exited middle child, so no terminal can be acquired.
        assert os.getsid(watchdog_pid) != os.getsid(launcher.pid)
        assert os.getsid(watchdog_pid) != watchdog_pid
    finally:
        launcher.kill()
        launcher.wait(10)
        _wait_for(lambda: _process_gone(watchdog_pid), 10)


# ---- resolution and listing entry points --------------------------------------------------------


def make_project(state_root: Path) -> tuple[ld.Project, ld.StatePaths]:
    project = ld.Project(HOST_PROJECT, HOST_PROJECT, "my project", "1a2b3c4d", WORKDIR, [])
    return project, ld.StatePaths(str(state_root))


def test_project_stores_paths(tmp_path: Path) -> None:
    project, state = make_project(tmp_path)
    store, slots = ld.project_stores("opencode", project, state)
    assert isinstance(store, ld.OpencodeSessions)
    assert store.workdir == WORKDIR
    assert slots.directory == str(tmp_path / "slots" / "opencode" / "1a2b3c4d")
    assert slots.project == HOST_PROJECT


def test_show_sessions_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project, state = make_project(tmp_path)
    store, _ = ld.project_stores("claude", project, state)
    assert isinstance(store, ld.ClaudeSessions)
    write_session(folder_of(store), UUID_A, [user_line("hello")])
    assert ld.show_sessions("claude", project, state, True) == 0
    assert json.loads(capsys.readouterr().out)["sessions"][0]["id"] == UUID_A


def test_session_store_paths(tmp_path: Path) -> None:
    claude = ld.session_store("claude", "/state", WORKDIR)
    opencode = ld.session_store("opencode", "/state", WORKDIR)
    assert isinstance(claude, ld.ClaudeSessions)
    assert claude.folder.startswith("/state/claude/config/projects/-home-agent-Projects-")
    assert isinstance(opencode, ld.OpencodeSessions)
    assert opencode.db_path == "/state/opencode/data/opencode.db"


# ---- through main() with a fake engine ----------------------------------------------------------


class ContainerFake(FakeEngine):
    """A fake engine whose attached container writes a Claude Code session file."""

    def __init__(self, state: Path, write_session: bool = True) -> None:
        super().__init__()
        self.state = state
        self.write_session = write_session

    def __call__(self, command: ld.Command) -> ld.CommandResult:
        if command.mode == "attach" and self.write_session:
            argv = command.argv
            session_id = argv[argv.index("--session-id") + 1] if "--session-id" in argv else None
            if session_id is None and "--resume" in argv:
                session_id = argv[argv.index("--resume") + 1]
            workdir = argv[argv.index("--workdir") + 1]
            folder = self.state / "claude/config/projects" / ld.claude_folder_name(workdir)
            write_session(folder, session_id or UUID_C, [user_line("from main", cwd=workdir)])
        return super().__call__(command)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    return make_sandbox(tmp_path, monkeypatch)


@pytest.fixture
def container(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> ContainerFake:
    fake = ContainerFake(sandbox.state)
    fake.images.update(ld.IMAGE_TAGS.values())
    monkeypatch.setattr(ld, "run_command", fake)
    return fake


def project_slots(sandbox: Sandbox, tool: str = "claude") -> ld.SlotStore:
    root = os.path.realpath(sandbox.project)
    project_id = hashlib.sha256(os.fsencode(root)).hexdigest()[:8]
    return ld.SlotStore(str(sandbox.state / "slots"), tool, project_id, root)


def test_main_slot_saved_after_exit(sandbox: Sandbox, container: ContainerFake) -> None:
    assert ld.main(["claude", "--slot", "2"]) == 0
    argv = container.run_command().argv
    session_id = argv[argv.index("--session-id") + 1]
    record = project_slots(sandbox).read(2)
    assert record is not None
    assert record.session_id == session_id
    assert container.run_command().env["LLM_DOCKER_SESSION"] == "new"


def test_main_continue_slot_resumes(sandbox: Sandbox, container: ContainerFake) -> None:
    assert ld.main(["claude", "--slot", "1"]) == 0
    first = project_slots(sandbox).read(1)
    assert first is not None
    container.commands.clear()

    assert ld.main(["claude", "-c", "--slot", "1"]) == 0

    command = container.run_command()
    assert command.argv[-2:] == ["--resume", first.session_id]
    assert command.env["LLM_DOCKER_SESSION"] == "resume"
    again = project_slots(sandbox).read(1)
    assert again is not None
    assert again.session_id == first.session_id


def test_main_slot_session_gone_notice(
    sandbox: Sandbox, container: ContainerFake, capsys: pytest.CaptureFixture[str]
) -> None:
    project_slots(sandbox).write(1, UUID_A)
    assert ld.main(["claude", "-c", "--slot", "1"]) == 0
    assert f"slot 1's session {UUID_A} no longer exists" in capsys.readouterr().err
    assert "--session-id" in container.run_command().argv


def test_main_unknown_session_lists_recent(
    sandbox: Sandbox, container: ContainerFake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ld.main(["claude", "--slot", "1"]) == 0
    known = project_slots(sandbox).read(1)
    assert known is not None
    capsys.readouterr()

    assert ld.main(["claude", "-c", UUID_B]) == 1

    err = capsys.readouterr().err
    assert f"no session '{UUID_B}'" in err
    assert known.session_id in err
    assert "from main" in err


def test_main_sessions_json(
    sandbox: Sandbox, container: ContainerFake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ld.main(["claude", "--slot", "3"]) == 0
    capsys.readouterr()
    container.commands.clear()

    assert ld.main(["claude", "--sessions", "--json"]) == 0

    listed = json.loads(capsys.readouterr().out)
    assert listed["sessions"][0]["slots"] == [3]
    assert listed["sessions"][0]["first_prompt"] == "from main"
    assert container.commands == []


def test_main_json_needs_sessions(
    sandbox: Sandbox, container: ContainerFake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ld.main(["claude", "--json"]) == 2
    assert "--json only applies to --sessions" in capsys.readouterr().err


def test_main_dry_run_saves_nothing(sandbox: Sandbox, container: ContainerFake) -> None:
    assert ld.main(["claude", "--dry-run", "--slot", "1"]) == 0
    assert not (sandbox.state / "slots").exists()
