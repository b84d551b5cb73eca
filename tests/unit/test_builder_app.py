"""The request→response core, driven without sockets: routing, Host/Origin checks, CORS,
password and lockout (with an injected clock), and Hypothesis over queries and bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder_api.app import App
from builder_api.httpcore import HttpError, parse_head, parse_target
from tests.unit.test_builder_support import FakeClock, app, body, make_config, request

__all__ = ["app"]

PASSWORD = "s3cret-pass"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def locked_app(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    application = App(make_config(tmp_path), PASSWORD, clock=clock)
    application.start()
    yield application
    application.shutdown()


@pytest.fixture
def remote_app(tmp_path: Path) -> Iterator[App]:
    config = make_config(tmp_path).with_overrides(bind="0.0.0.0")
    application = App(config, PASSWORD)
    application.start()
    yield application
    application.shutdown()


def test_app_status_ok(app: App) -> None:
    response = app.handle(request("GET", "/status"))
    assert response.status == 200
    assert body(response)["run"]["running"] is False


def test_app_unknown_path_404(app: App) -> None:
    assert app.handle(request("GET", "/nope")).status == 404


def test_app_wrong_method_405(app: App) -> None:
    assert app.handle(request("GET", "/build")).status == 405


def test_app_build_off_list_arg_400(app: App) -> None:
    response = app.handle(request("POST", "/build", {"args": ["rm -rf /"]}))
    assert response.status == 400


def test_app_build_queues_202(app: App) -> None:
    response = app.handle(request("POST", "/build", {"args": ["ok"]}, {"X-Agent-ID": "agent-7"}))
    assert response.status == 202
    assert body(response)["agent"] == "agent-7"


def test_app_build_body_not_json_400(app: App) -> None:
    assert app.handle(request("POST", "/build", b"{nope")).status == 400


def test_app_build_args_not_list_400(app: App) -> None:
    assert app.handle(request("POST", "/build", {"args": "ok"})).status == 400


def test_app_build_unconfigured_409(tmp_path: Path) -> None:
    application = App(make_config(tmp_path, {"build": {"command": ["true"]}}))
    config = application.config
    object.__setattr__(config.build, "command", ())
    assert application.handle(request("POST", "/build", {"args": []})).status == 409


def test_app_bad_agent_id_400(app: App) -> None:
    assert app.handle(request("GET", "/status", headers={"X-Agent-ID": "a\x01b"})).status == 400


def test_app_foreign_host_403(app: App) -> None:
    assert (
        app.handle(request("GET", "/status", headers={"Host": "evil.example:6666"})).status == 403
    )


def test_app_docker_host_allowed(app: App) -> None:
    response = app.handle(request("GET", "/status", headers={"Host": "host.docker.internal:6666"}))
    assert response.status == 200


def test_app_missing_host_400(app: App) -> None:
    req = request("GET", "/status")
    del req.headers["host"]
    assert app.handle(req).status == 400


def test_app_cross_origin_post_403(app: App) -> None:
    response = app.handle(
        request("POST", "/build", {"args": ["ok"]}, {"Origin": "http://evil.example"})
    )
    assert response.status == 403


def test_app_other_local_port_origin_403(app: App) -> None:
    response = app.handle(request("POST", "/run", headers={"Origin": "http://localhost:3000"}))
    assert response.status == 403


def test_app_same_origin_allowed(app: App) -> None:
    origin = f"http://127.0.0.1:{app.port}"
    assert app.handle(request("GET", "/status", headers={"Origin": origin})).status == 200


def test_app_ws_foreign_origin_403(app: App) -> None:
    response = app.handle(
        request(
            "GET",
            "/ws",
            headers={
                "Origin": "http://evil.example",
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
    )
    assert response.status == 403


def test_app_ws_handshake_101(app: App) -> None:
    response = app.handle(
        request(
            "GET",
            "/ws",
            headers={
                "Upgrade": "websocket",
                "Connection": "keep-alive, Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
    )
    assert response.status == 101
    assert response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_app_ws_bad_version_426(app: App) -> None:
    response = app.handle(
        request(
            "GET",
            "/ws",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "8",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
    )
    assert response.status == 426


def test_app_log_preflight_answers_cors(app: App) -> None:
    response = app.handle(request("OPTIONS", "/log", headers={"Origin": "http://localhost:3000"}))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_app_preflight_elsewhere_refused(app: App) -> None:
    response = app.handle(request("OPTIONS", "/build", headers={"Origin": "http://x.example"}))
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_app_browser_log_becomes_event(app: App) -> None:
    response = app.handle(
        request(
            "POST",
            "/log",
            {
                "entries": [
                    {
                        "level": "error",
                        "message": "boom",
                        "url": "http://localhost:3000/",
                        "line": 3,
                    }
                ]
            },
            {"Origin": "http://localhost:3000"},
        )
    )
    events = body(app.handle(request("GET", "/events?type=browser")))["events"]
    assert response.status == 200
    assert events[-1]["message"] == "boom"
    assert events[-1]["level"] == "error"


def test_app_browser_log_bad_level_400(app: App) -> None:
    assert app.handle(request("POST", "/log", {"level": "evil"})).status == 400


def test_app_serves_browser_js(app: App) -> None:
    response = app.handle(request("GET", "/browser.js"))
    assert response.status == 200
    assert b"console" in response.body


# -- password ---------------------------------------------------------------------------------


def test_auth_post_without_password_401(locked_app: App) -> None:
    assert locked_app.handle(request("POST", "/stop")).status == 401


def test_auth_post_with_header_200(locked_app: App) -> None:
    response = locked_app.handle(
        request("POST", "/stop", headers={"X-Builder-API-Password": PASSWORD})
    )
    assert response.status == 200


def test_auth_post_with_query_key_200(locked_app: App) -> None:
    assert locked_app.handle(request("POST", f"/stop?key={PASSWORD}")).status == 200


def test_auth_get_on_loopback_open(locked_app: App) -> None:
    assert locked_app.handle(request("GET", "/status")).status == 200


def test_auth_get_beyond_loopback_needs_password(remote_app: App) -> None:
    assert remote_app.handle(request("GET", "/status")).status == 401


def test_auth_get_beyond_loopback_with_password(remote_app: App) -> None:
    response = remote_app.handle(
        request("GET", "/status", headers={"X-Builder-API-Password": PASSWORD})
    )
    assert response.status == 200


def test_auth_key_never_in_event_feed(locked_app: App, tmp_path: Path) -> None:
    for _ in range(3):
        locked_app.handle(request("POST", "/stop?key=wrong-guess"))
    locked_app.handle(request("POST", f"/stop?key={PASSWORD}"))
    feed = Path(locked_app.config.events_file).read_text()
    assert "wrong-guess" not in feed
    assert PASSWORD not in feed


def test_auth_lockout_after_limit(locked_app: App) -> None:
    for _ in range(3):
        locked_app.handle(request("POST", "/stop", headers={"X-Builder-API-Password": "no"}))
    good = request("POST", "/stop", headers={"X-Builder-API-Password": PASSWORD})
    assert locked_app.handle(good).status == 429


def test_auth_lockout_is_per_client(locked_app: App) -> None:
    for _ in range(3):
        locked_app.handle(request("POST", "/stop", client="10.0.0.9"))
    good = request("POST", "/stop", headers={"X-Builder-API-Password": PASSWORD})
    assert locked_app.handle(good).status == 200


def test_auth_lockout_ends_after_lockout_s(locked_app: App, clock: FakeClock) -> None:
    for _ in range(3):
        locked_app.handle(request("POST", "/stop"))
    clock.now += 61
    good = request("POST", "/stop", headers={"X-Builder-API-Password": PASSWORD})
    assert locked_app.handle(good).status == 200


def test_auth_failures_outside_window_do_not_add_up(locked_app: App, clock: FakeClock) -> None:
    for _ in range(2):
        locked_app.handle(request("POST", "/stop"))
    clock.now += 61
    locked_app.handle(request("POST", "/stop"))
    good = request("POST", "/stop", headers={"X-Builder-API-Password": PASSWORD})
    assert locked_app.handle(good).status == 200


def test_auth_lockout_warns_once_and_emits_event(
    locked_app: App, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="builder_api"):
        for _ in range(5):
            locked_app.handle(request("POST", "/stop"))
    events = body(locked_app.handle(request("GET", "/events?type=auth_lockout")))["events"]
    warnings = [record for record in caplog.records if "locked out" in record.getMessage()]
    assert len(events) == 1
    assert len(warnings) == 1
    assert "locked out" not in capsys.readouterr().err  # the log line only, not a second copy


def test_auth_lockout_429_says_seconds(locked_app: App) -> None:
    for _ in range(3):
        locked_app.handle(request("POST", "/stop"))
    response = locked_app.handle(request("POST", "/stop"))
    assert response.status == 429
    assert "locked out for 61 more seconds" in body(response)["error"]


# -- Hypothesis: any query or body yields a 4xx or a success, never a 5xx ---------------------

paths = st.sampled_from(
    [
        "/status",
        "/build",
        "/build_status",
        "/queue",
        "/logs",
        "/events",
        "/run",
        "/stop",
        "/log",
        "/queue/1",
        "/queue/x",
        "/",
        "/ws",
    ]
)
query_keys = st.sampled_from(["id", "wait", "n", "file", "type", "since", "pid", "key", "x"])
query_values = (
    st.text(max_size=12)
    | st.integers(-5, 10**13).map(str)
    | st.sampled_from(
        ["app", "build", "run", "0.01", "-1", "1e9", "nan", "inf", "%00", "..", "../../etc/passwd"]
    )
)
json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(["args", "entries", "level", "message", "line", "x"]), c, max_size=3
        )
    ),
    max_leaves=8,
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "PUT"]),
    path=paths,
    params=st.dictionaries(query_keys, query_values, max_size=4),
    payload=json_bodies | st.binary(max_size=40),
)
@example(method="GET", path="/build_status", params={"id": "99999999999999"}, payload=None)
@example(method="GET", path="/logs", params={"file": "app", "n": "-5"}, payload=None)
@example(method="POST", path="/build", params={}, payload={"args": [None]})
def test_app_any_request_never_5xx(
    app: App, method: str, path: str, params: dict[str, str], payload: Any
) -> None:
    from urllib.parse import urlencode

    target = path + ("?" + urlencode(params) if params else "")
    try:
        req = request(
            method, target, payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        )
    except HttpError as exc:
        assert exc.status < 500
        return
    if path == "/build_status":
        req.query["wait"] = "0"
    if path == "/run" or path == "/stop":
        return  # starting real processes hundreds of times is slow; covered elsewhere
    if path == "/build":
        req.query.clear()
    assert app.handle(req).status < 500


@settings(max_examples=500, deadline=None)
@given(head=st.binary(max_size=300))
@example(head=b"GET / HTTP/1.1\r\nHost: a\x00b")
@example(head=b"GET / HTTP/1.1\r\n folded")
def test_http_parse_head_raises_only_http_error(head: bytes) -> None:
    try:
        parse_head(head)
    except HttpError as exc:
        assert 400 <= exc.status < 500


@settings(max_examples=500, deadline=None)
@given(target=st.text(max_size=100))
@example(target="/a%00b")
@example(target="/x?y=%ff")
@example(target="/x?" + "&".join(f"k{i}=1" for i in range(100)))
def test_http_parse_target_raises_only_http_error(target: str) -> None:
    try:
        parse_target(target)
    except HttpError as exc:
        assert 400 <= exc.status < 500


# -- plugin ---------------------------------------------------------------------------------------


def test_plugin_adds_an_endpoint(tmp_path: Path) -> None:
    (tmp_path / "builder_plugin.py").write_text(
        "def register(api):\n"
        "    api.add_route('GET', '/hello', lambda request: {'agent': request.agent})\n"
    )
    application = App(make_config(tmp_path, {"plugin": "builder_plugin.py"}))
    application.start()
    try:
        response = application.handle(request("GET", "/hello", headers={"X-Agent-ID": "p1"}))
    finally:
        application.shutdown()
    assert response.status == 200
    assert body(response) == {"agent": "p1"}


def test_plugin_cannot_replace_builtin(tmp_path: Path) -> None:
    from builder_api.plugin import PluginError

    (tmp_path / "builder_plugin.py").write_text(
        "def register(api):\n    api.add_route('POST', '/build', lambda request: {})\n"
    )
    application = App(make_config(tmp_path, {"plugin": "builder_plugin.py"}))
    try:
        with pytest.raises(PluginError, match="already taken"):
            application.start()
    finally:
        application.shutdown()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/logs?file=app&n=-1", "'n' must be an integer from 1 to 10000, got '-1'"),
        ("/logs?file=app&n=0", "'n' must be an integer from 1 to 10000, got '0'"),
        ("/logs?file=app&n=99999999999999999999", "'n' must be an integer from 1 to 10000"),
        ("/build_status?id=-1", "'id' must be an integer from 1 to"),
        ("/build_status?id=-1", "got '-1'"),
        ("/build_status?id=1&wait=-1", "'wait' must be a number from 0 to 300, got '-1'"),
        ("/build_status?id=1&wait=1e9", "'wait' must be a number from 0 to 300, got '1e9'"),
        ("/events?n=0", "'n' must be an integer from 1 to 5000"),
        ("/logs?file=app&lines=5", "unknown query parameter 'lines' for /logs"),
        ("/status?verbose=1", "unknown query parameter 'verbose' for /status"),
    ],
)
def test_query_value_rejected_with_range(app: App, target: str, expected: str) -> None:
    response = app.handle(request("GET", target))
    assert response.status == 400
    assert expected in body(response)["error"]


def test_host_with_invalid_port_400(app: App) -> None:
    response = app.handle(request("GET", "/status", headers={"Host": "127.0.0.1:abc"}))
    assert response.status == 400
    assert "invalid Host header" in body(response)["error"]


def test_query_key_given_twice_400() -> None:
    with pytest.raises(HttpError) as caught:
        parse_target("/logs?file=app&file=run")
    assert caught.value.status == 400
    assert "query parameter 'file' is given twice" in caught.value.message


@pytest.mark.parametrize("path", ["/build", "/run", "/stop"])
def test_json_body_needs_content_type(app: App, path: str) -> None:
    response = app.handle(request("POST", path, {"args": ["ok"]}, {"Content-Type": "text/plain"}))
    assert response.status == 415
    assert "Content-Type: application/json" in body(response)["error"]


def test_empty_body_means_no_arguments(app: App) -> None:
    response = app.handle(request("POST", "/build", b"", {"Content-Type": "text/plain"}))
    assert response.status == 202


def test_json_body_duplicate_key_400(app: App) -> None:
    raw = b'{"args": ["ok"], "args": ["fail"]}'
    response = app.handle(request("POST", "/build", raw))
    assert response.status == 400
    assert "repeats the JSON key 'args'" in body(response)["error"]


@pytest.mark.parametrize("entry", [{}, {"level": "info"}, {"message": 5}])
def test_browser_log_needs_message(app: App, entry: dict[str, Any]) -> None:
    response = app.handle(request("POST", "/log", entry))
    assert response.status == 400
    assert '"message"' in body(response)["error"]


def test_browser_log_accepts_text_plain(app: App) -> None:
    entry = {"level": "info", "message": "hello"}
    response = app.handle(request("POST", "/log", entry, {"Content-Type": "text/plain"}))
    assert response.status == 200
