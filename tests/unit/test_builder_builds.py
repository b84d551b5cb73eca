"""Build queue, long-poll, cancel, logs, events and the runtime process, through `App.handle`."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

from builder_api.app import App
from builder_api.logtail import tail_fd
from tests.unit.test_builder_support import app, body, request

__all__ = ["app"]


def queue_build(app: App, *args: str, agent: str = "tester") -> int:
    response = app.handle(request("POST", "/build", {"args": list(args)}, {"X-Agent-ID": agent}))
    assert response.status == 202, response.body
    return int(body(response)["id"])


def wait_status(app: App, build_id: int, wait: float = 15) -> dict:
    return body(app.handle(request("GET", f"/build_status?id={build_id}&wait={wait}")))


def test_build_success_carries_own_log_tail(app: App) -> None:
    build_id = queue_build(app, "ok")
    status = wait_status(app, build_id)
    assert status["state"] == "success"
    assert status["done"] is True
    assert status["timed_out"] is False
    assert any(f"of build {build_id} args=['ok']" in line for line in status["log_tail"])


def test_build_log_tail_is_only_that_build(app: App) -> None:
    first = queue_build(app, "ok")
    second = queue_build(app, "fail")
    wait_status(app, first)
    status = wait_status(app, second)
    assert all(f"of build {first} " not in line for line in status["log_tail"])


def test_build_failure_state_and_exit_code(app: App) -> None:
    status = wait_status(app, queue_build(app, "fail"))
    assert status["state"] == "failed"
    assert status["exit_code"] == 3


def test_build_shell_metacharacters_are_inert(app: App) -> None:
    status = wait_status(app, queue_build(app, "a;b", "$(x)"))
    assert any("args=['a;b', '$(x)']" in line for line in status["log_tail"])


def test_build_long_poll_times_out_and_says_so(app: App) -> None:
    build_id = queue_build(app, "slow")
    started = time.monotonic()
    status = wait_status(app, build_id, wait=0.1)
    assert status["timed_out"] is True
    assert status["done"] is False
    assert time.monotonic() - started < 0.5


def test_build_long_poll_outlives_build(app: App) -> None:
    build_id = queue_build(app, "slow")
    started = time.monotonic()
    status = wait_status(app, build_id, wait=30)
    elapsed = time.monotonic() - started
    assert status["done"] is True
    assert status["timed_out"] is False
    assert elapsed < 10


def test_build_queue_is_fifo(app: App) -> None:
    ids = [queue_build(app, "ok", agent=f"agent-{i}") for i in range(3)]
    wait_status(app, ids[-1])
    started = [wait_status(app, i)["started_at"] for i in ids]
    assert started == sorted(started)


def test_build_max_pending_429(app: App) -> None:
    queue_build(app, "hang")
    time.sleep(0.2)  # let it start so the next ones are pending
    for _ in range(4):
        queue_build(app, "ok")
    response = app.handle(request("POST", "/build", {"args": ["ok"]}))
    assert response.status == 429


def test_build_cancel_pending(app: App) -> None:
    queue_build(app, "hang")
    pending = queue_build(app, "ok")
    response = app.handle(request("DELETE", f"/queue/{pending}"))
    assert response.status == 200
    assert body(response)["state"] == "cancelled"


def test_build_cancel_running_kills_group(app: App) -> None:
    running = queue_build(app, "hang")
    time.sleep(0.3)
    app.handle(request("DELETE", f"/queue/{running}"))
    assert wait_status(app, running)["state"] == "cancelled"


def test_build_cancel_unknown_404(app: App) -> None:
    assert app.handle(request("DELETE", "/queue/999")).status == 404


def test_build_cancel_finished_409(app: App) -> None:
    build_id = queue_build(app, "ok")
    wait_status(app, build_id)
    assert app.handle(request("DELETE", f"/queue/{build_id}")).status == 409


def test_build_queue_shows_pending_running_history(app: App) -> None:
    done = queue_build(app, "ok")
    wait_status(app, done)
    queue_build(app, "hang")
    queue_build(app, "ok")
    time.sleep(0.2)
    snapshot = body(app.handle(request("GET", "/queue")))
    assert snapshot["running"]["args"] == ["hang"]
    assert len(snapshot["pending"]) == 1
    assert snapshot["history"][0]["id"] == done


def test_build_history_is_bounded(app: App) -> None:
    ids = [queue_build(app, "ok") for _ in range(4)]
    wait_status(app, ids[-1])
    ids += [queue_build(app, "ok") for _ in range(4)]
    wait_status(app, ids[-1])
    assert len(body(app.handle(request("GET", "/queue")))["history"]) == 5


def test_build_timeout(tmp_path: Path) -> None:
    from tests.unit.test_builder_support import make_config

    application = App(make_config(tmp_path, {"build": {"timeout_s": 0.3}}))
    application.start()
    try:
        status = wait_status(application, queue_build(application, "hang"))
    finally:
        application.shutdown()
    assert status["state"] == "timeout"


def test_build_many_agents_at_once(app: App) -> None:
    results: list[int] = []

    def submit(i: int) -> None:
        response = app.handle(request("POST", "/build", {"args": ["ok"]}, {"X-Agent-ID": f"a{i}"}))
        results.append(response.status)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(results)) in ([202], [202, 429])


def test_build_processes_get_events_path(app: App) -> None:
    wait_status(app, queue_build(app, "event"))
    events = body(app.handle(request("GET", "/events?type=custom")))["events"]
    assert len(events) == 1


# -- logs -------------------------------------------------------------------------------------


def test_logs_tail_by_alias(app: App) -> None:
    lines = body(app.handle(request("GET", "/logs?file=app&n=3")))["lines"]
    assert lines == ["app line 497", "app line 498", "app line 499"]


def test_logs_unknown_alias_404(app: App) -> None:
    assert app.handle(request("GET", "/logs?file=nope")).status == 404


def test_logs_path_parameter_is_not_a_path(app: App) -> None:
    assert app.handle(request("GET", "/logs?file=../../etc/passwd")).status == 404


def test_logs_symlink_swapped_in_after_start_is_refused(app: App, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    log.unlink()
    log.symlink_to("/etc/passwd")
    assert app.handle(request("GET", "/logs?file=app")).status == 403


def test_logs_directory_swapped_for_symlink_is_refused(app: App, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "app.log").write_text("secret\n")
    os.rename(tmp_path / "logs", tmp_path / "logs-old")
    (tmp_path / "logs").symlink_to(outside)
    assert app.handle(request("GET", "/logs?file=app")).status == 403


def test_events_feed_symlink_swapped_in_is_not_followed(app: App, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-victim"
    outside.write_text("")
    feed = Path(app.config.events_file)
    feed.unlink()
    feed.symlink_to(outside)
    app.events.emit("probe")
    assert outside.read_text() == ""


def test_logs_missing_file_is_empty(app: App) -> None:
    data = body(app.handle(request("GET", "/logs?file=run")))
    assert data["exists"] is False
    assert data["lines"] == []


def test_logtail_big_file_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    with open(big, "wb") as handle:
        block = b"".join(b"%08d some log text here\n" % i for i in range(40000))
        for _ in range(64):  # ~64 MiB: the cost must not grow with the file
            handle.write(block)
    fd = os.open(big, os.O_RDONLY)
    try:
        tracemalloc.start()
        lines = tail_fd(fd, 200)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        os.close(fd)
    assert len(lines) == 200
    assert lines[-1] == "00039999 some log text here"
    assert peak < 2 * 1024 * 1024


def test_logtail_long_line_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "one.log"
    path.write_bytes(b"x" * 300000)
    fd = os.open(path, os.O_RDONLY)
    try:
        lines = tail_fd(fd, 5)
    finally:
        os.close(fd)
    assert len(lines) == 1
    assert lines[0].endswith("[cut]")


# -- events -----------------------------------------------------------------------------------


def test_events_filter_by_type_and_n(app: App) -> None:
    for i in range(5):
        app.events.emit("tick", i=i)
    events = body(app.handle(request("GET", "/events?type=tick&n=2")))["events"]
    assert [e["i"] for e in events] == [3, 4]


def test_events_filter_since(app: App) -> None:
    first = app.events.emit("tick", i=0)
    time.sleep(0.01)
    app.events.emit("tick", i=1)
    events = body(app.handle(request("GET", f"/events?type=tick&since={first['ts']}")))["events"]
    assert [e["i"] for e in events] == [1]


def test_events_filter_pid(app: App) -> None:
    app.events.emit("tick", pid=4242)
    app.events.emit("tick")
    events = body(app.handle(request("GET", "/events?pid=4242")))["events"]
    assert [e["pid"] for e in events] == [4242]


def test_events_skip_foreign_lines(app: App) -> None:
    with open(app.config.events_file, "a") as feed:
        feed.write("not json\n[1,2]\n")
    app.events.emit("after")
    assert body(app.handle(request("GET", "/events?n=1")))["events"][0]["type"] == "after"


# -- run / stop / status ----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_starts_and_stop_stops(app: App) -> None:
    started = body(app.handle(request("POST", "/run")))
    stopped = body(app.handle(request("POST", "/stop")))
    assert started["running"] is True
    assert stopped["running"] is False
    assert stopped["stopped"] is True


def test_run_always_restarts(app: App) -> None:
    first = body(app.handle(request("POST", "/run")))["pid"]
    second = body(app.handle(request("POST", "/run")))["pid"]
    time.sleep(0.05)
    assert first != second
    assert _alive(first) is False


def test_run_ignores_body_args(app: App) -> None:
    response = app.handle(request("POST", "/run", {"args": ["--evil"]}))
    assert body(response)["running"] is True


def test_stop_kills_stubborn_group_after_grace(tmp_path: Path) -> None:
    import sys

    from tests.unit.test_builder_support import make_config

    application = App(
        make_config(
            tmp_path,
            {
                "run": {
                    "start_command": [sys.executable, "serve.py", "stubborn"],
                    "stop_grace_s": 0.3,
                }
            },
        )
    )
    application.start()
    try:
        pid = body(application.handle(request("POST", "/run")))["pid"]
        time.sleep(0.2)
        started = time.monotonic()
        application.handle(request("POST", "/stop"))
        elapsed = time.monotonic() - started
    finally:
        application.shutdown()
    assert _alive(pid) is False
    assert 0.25 < elapsed < 5


def test_status_reports_run_and_build(app: App) -> None:
    app.handle(request("POST", "/run"))
    status = body(app.handle(request("GET", "/status")))
    assert status["run"]["running"] is True
    assert status["build"]["pending"] == 0


def test_shutdown_stops_build_and_run(tmp_path: Path) -> None:
    from tests.unit.test_builder_support import make_config

    application = App(make_config(tmp_path))
    application.start()
    build_id = queue_build(application, "hang")
    run_pid = body(application.handle(request("POST", "/run")))["pid"]
    time.sleep(0.3)
    build = application.builds.get(build_id)
    assert build is not None and build.pid is not None
    build_pid = build.pid
    application.shutdown()
    time.sleep(0.05)
    assert _alive(run_pid) is False
    assert _alive(build_pid) is False


def test_build_missing_program_is_error_state(tmp_path: Path) -> None:
    from tests.unit.test_builder_support import make_config

    application = App(make_config(tmp_path, {"build": {"command": ["/nonexistent/tool"]}}))
    application.start()
    try:
        status = wait_status(application, queue_build(application, "ok"))
    finally:
        application.shutdown()
    assert status["state"] == "error"
    assert "cannot start" in status["error"]
    assert any("cannot start '/nonexistent/tool'" in line for line in status["log_tail"])


# A start_command whose leader exits at once and leaves a member in its process group.
BACKGROUND_SCRIPT = """#!/bin/sh
sleep 777 &
echo $! > left.pid
exit 0
"""


def _gone(pid: int, within_s: float = 3) -> bool:
    """Return whether `pid` has ended (a zombie counts as ended) within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def _left_member(application: App, root: Path) -> int:
    """Start the background script with /run and return the pid it left in its group."""
    application.handle(request("POST", "/run"))
    pid_file = root / "left.pid"
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the start_command wrote no left.pid"
        time.sleep(0.02)
    time.sleep(0.1)  # let the leader exit
    return int(pid_file.read_text())


def _background_app(tmp_path: Path) -> App:
    from tests.unit.test_builder_support import make_config

    config = make_config(tmp_path, {"run": {"start_command": ["./bg.sh"], "stop_grace_s": 0.3}})
    script = tmp_path / "bg.sh"
    script.write_text(BACKGROUND_SCRIPT)
    script.chmod(0o755)
    application = App(config)
    application.start()
    return application


def test_stop_kills_members_after_leader_exit(tmp_path: Path) -> None:
    application = _background_app(tmp_path)
    try:
        member = _left_member(application, tmp_path)
        stopped = body(application.handle(request("POST", "/stop")))
    finally:
        application.shutdown()
    assert stopped["stopped"] is True
    assert _gone(member)


def test_restart_kills_members_after_leader_exit(tmp_path: Path) -> None:
    application = _background_app(tmp_path)
    try:
        member = _left_member(application, tmp_path)
        (tmp_path / "left.pid").unlink()
        application.handle(request("POST", "/run"))
        assert _gone(member)
        second = _left_member(application, tmp_path)
    finally:
        application.shutdown()
    assert _gone(second)


def test_stop_without_members_reports_false(tmp_path: Path) -> None:
    application = _background_app(tmp_path)
    try:
        member = _left_member(application, tmp_path)
        os.kill(member, 9)
        deadline = time.monotonic() + 3
        while os.path.exists(f"/proc/{member}") and time.monotonic() < deadline:
            time.sleep(0.02)  # until the reaper removes the zombie, the group still exists
        stopped = body(application.handle(request("POST", "/stop")))
    finally:
        application.shutdown()
    assert stopped["stopped"] is False


def test_shutdown_kills_members_after_leader_exit(tmp_path: Path) -> None:
    application = _background_app(tmp_path)
    try:
        member = _left_member(application, tmp_path)
    finally:
        application.shutdown()
    assert _gone(member)


def test_cancel_running_answers_new_state(app: App) -> None:
    build_id = queue_build(app, "hang")
    deadline = time.monotonic() + 5
    while body(app.handle(request("GET", "/queue")))["running"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = app.handle(request("DELETE", f"/queue/{build_id}"))
    assert response.status == 200
    assert body(response)["state"] == "cancelled"


def test_swapped_runtime_dir_403(tmp_path: Path) -> None:
    import shutil

    from tests.unit.test_builder_support import make_config

    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "project"
    root.mkdir()
    application = App(make_config(root))
    application.start()
    try:
        shutil.rmtree(application.config.runtime_dir)
        os.symlink(outside, application.config.runtime_dir)
        build = application.handle(request("POST", "/build", {"args": ["ok"]}))
        run = application.handle(request("POST", "/run"))
    finally:
        application.shutdown()
    assert build.status == 403
    assert run.status == 403
    assert "outside the project root" in body(build)["error"]
    assert list(outside.iterdir()) == []


def test_build_ids_continue_after_restart(tmp_path: Path) -> None:
    from tests.unit.test_builder_support import make_config

    config = make_config(tmp_path)
    first = App(config)
    first.start()
    try:
        ids = [queue_build(first, "ok"), queue_build(first, "ok")]
    finally:
        first.shutdown()
    second = App(config)
    second.start()
    try:
        later = queue_build(second, "ok")
    finally:
        second.shutdown()
    assert ids == [1, 2]
    assert later == 3


def test_build_log_rotates_and_keeps_tails(tmp_path: Path, monkeypatch) -> None:
    from builder_api import procs
    from tests.unit.test_builder_support import make_config

    monkeypatch.setattr(procs, "MAX_LOG_BYTES", 100)
    application = App(make_config(tmp_path))
    application.start()
    try:
        first = queue_build(application, "ok")
        first_status = wait_status(application, first)
        second = queue_build(application, "fail")
        second_status = wait_status(application, second)
        first_again = wait_status(application, first)
    finally:
        application.shutdown()
    log = Path(application.config.logs["build"])
    assert Path(str(log) + ".1").exists()
    assert f"=== build {first} " not in log.read_text()
    assert "it failed" in second_status["log_tail"]
    assert first_again["log_tail"] == first_status["log_tail"]
    assert "build ok" in first_again["log_tail"]


def test_run_log_rotates_at_restart(tmp_path: Path, monkeypatch) -> None:
    from builder_api import procs
    from tests.unit.test_builder_support import make_config

    monkeypatch.setattr(procs, "MAX_LOG_BYTES", 10)
    application = App(make_config(tmp_path))
    application.start()
    try:
        application.handle(request("POST", "/run"))
        time.sleep(0.2)
        application.handle(request("POST", "/run"))
    finally:
        application.shutdown()
    log = Path(application.config.logs["run"])
    assert "=== run by" in Path(str(log) + ".1").read_text()
