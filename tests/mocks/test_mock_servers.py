"""The mock model APIs, driven over loopback HTTP like the real clients drive them."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.mocks import mock_anthropic, mock_openai
from tests.mocks.recording_server import MockServer, RequestLog, bind_handler

READ_STEP = [{"name": "Read", "input": {"file_path": "/project/id_rsa"}}]
TOOLS = [{"name": "Read", "input_schema": {"type": "object"}}]


def post(server: MockServer, path: str, payload: Any, headers: dict | None = None) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = json.dumps(payload)
        connection.request(
            "POST", path, body, {"content-type": "application/json", **(headers or {})}
        )
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def sse_data(stream: str) -> list[Any]:
    """Return the parsed `data:` payloads of a server-sent event stream."""
    payloads = []
    for line in stream.splitlines():
        if line.startswith("data: "):
            text = line[len("data: ") :]
            payloads.append(text if text == "[DONE]" else json.loads(text))
    return payloads


@pytest.fixture
def anthropic() -> Iterator[tuple[MockServer, RequestLog]]:
    server, requests = mock_anthropic.serve(["127.0.0.1"], [READ_STEP])
    yield server, requests
    server.stop()


@pytest.fixture
def openai() -> Iterator[tuple[MockServer, RequestLog]]:
    server, requests = mock_openai.serve(["127.0.0.1"], [READ_STEP])
    yield server, requests
    server.stop()


def test_anthropic_streams_scripted_tool_use(anthropic) -> None:
    server, _ = anthropic
    request = {
        "model": "m",
        "stream": True,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "go"}],
    }
    events = sse_data(post(server, "/v1/messages?beta=true", request))
    start = next(event for event in events if event["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "Read"
    partial = "".join(
        event["delta"]["partial_json"] for event in events if event["type"] == "content_block_delta"
    )
    assert json.loads(partial) == {"file_path": "/project/id_rsa"}
    stop = next(event for event in events if event["type"] == "message_delta")
    assert stop["delta"]["stop_reason"] == "tool_use"


def test_anthropic_records_tool_result(anthropic) -> None:
    server, requests = anthropic
    tool_use = {"type": "tool_use", "id": "toolu_mock_1", "name": "Read", "input": {}}
    refusal = {
        "type": "tool_result",
        "tool_use_id": "toolu_mock_1",
        "is_error": True,
        "content": [{"type": "text", "text": "denied by your permission settings"}],
    }
    request = {
        "model": "m",
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [tool_use]},
            {"role": "user", "content": [refusal]},
        ],
    }
    reply = json.loads(post(server, "/v1/messages", request, {"x-api-key": "secret-value"}))
    assert reply["stop_reason"] == "end_turn"  # the one scripted step is used up
    record = requests.snapshot()[-1]
    assert record["tool_results"] == [
        {
            "tool_use_id": "toolu_mock_1",
            "is_error": True,
            "content": "denied by your permission settings",
        }
    ]
    assert "secret-value" not in json.dumps(record)


def test_anthropic_side_query_gets_text(anthropic) -> None:
    server, _ = anthropic
    reply = json.loads(
        post(server, "/v1/messages", {"messages": [{"role": "user", "content": "title"}]})
    )
    assert reply["content"][0]["type"] == "text"


def test_openai_streams_scripted_tool_call(openai) -> None:
    server, _ = openai
    request = {
        "model": "m",
        "stream": True,
        "tools": [{}],
        "messages": [{"role": "user", "content": "go"}],
    }
    chunks = sse_data(post(server, "/v1/chat/completions", request))
    assert chunks[-1] == "[DONE]"
    calls = [chunk["choices"][0]["delta"].get("tool_calls") for chunk in chunks[:-1]]
    call = next(entry for entry in calls if entry)[0]
    assert call["function"]["name"] == "Read"
    assert json.loads(call["function"]["arguments"]) == {"file_path": "/project/id_rsa"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_records_tool_message(openai) -> None:
    server, requests = openai
    request = {
        "tools": [{}],
        "messages": [
            {"role": "assistant", "tool_calls": [{"id": "call_mock_1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "call_mock_1", "content": "refused"},
        ],
    }
    reply = json.loads(post(server, "/v1/chat/completions", request))
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert requests.snapshot()[-1]["tool_messages"] == [
        {"tool_call_id": "call_mock_1", "content": "refused"}
    ]


def test_mock_binds_several_addresses_one_port() -> None:
    handler = bind_handler(mock_anthropic.AnthropicHandler, [], RequestLog())
    server = MockServer(handler, ["127.0.0.1", "127.0.0.2"])
    with server:
        assert server.addresses == ["127.0.0.1", "127.0.0.2"]
        for address in server.addresses:
            connection = http.client.HTTPConnection(address, server.port, timeout=10)
            connection.request("GET", "/v1/models")
            assert connection.getresponse().status == 200
            connection.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["role", "content", "type", "id", "messages", "tools"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_request_parsers_accept_any_json(request: Any) -> None:
    assert isinstance(mock_anthropic.tool_results(request), list)
    assert mock_anthropic.completed_steps(request) >= 0
    assert isinstance(mock_openai.tool_messages(request), list)
    assert mock_openai.completed_steps(request) >= 0
    content, stop_reason, _ = mock_anthropic.plan_reply(request, [READ_STEP], "text")
    assert stop_reason in ("tool_use", "end_turn")
    assert content
