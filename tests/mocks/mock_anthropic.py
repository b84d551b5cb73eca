"""Mock of the Anthropic Messages API with scripted tool calls.

Claude Code sends one streaming `POST /v1/messages` per model turn. While a
conversation has used fewer scripted steps than the script contains, the mock
replies with the next step's `tool_use` blocks. After that it replies with a
short text. A step is a list of tool calls (`{"name": ..., "input": {...}}`)
sent together in one assistant message. Requests that offer no tools (the
client's side queries, such as titles) always get text.

Every request is recorded; `POST /v1/messages` records also carry the
`tool_result` blocks of the request, so a test can read what the client sent
back after a tool call (for example a refusal with `is_error`).

Run standalone:
    python3 -m tests.mocks.mock_anthropic --bind 127.0.0.1 [--bind ADDRESS] \
        [--port N] [--script steps.json] [--log requests.jsonl]
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.mocks import recording_server
from tests.mocks.recording_server import MockHandler, MockServer, RequestLog, Step

TOOL_USE_ID_PREFIX = "toolu_mock_"  # marks the tool calls this mock made
MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-1-20250805")
INPUT_JSON_CHUNK = 16  # characters per input_json_delta, like the real API's fragments


def text_of(content: Any) -> str:
    """Return the text of a tool_result content (a string or a block list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                parts.append(json.dumps(block))
        return "\n".join(parts)
    return json.dumps(content)


def tool_results(request: Any) -> list[dict[str, Any]]:
    """Return every tool_result block in the user messages of a request."""
    results = []
    messages = request.get("messages") if isinstance(request, dict) else None
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                results.append(
                    {
                        "tool_use_id": block.get("tool_use_id"),
                        "is_error": bool(block.get("is_error")),
                        "content": text_of(block.get("content")),
                    }
                )
    return results


def completed_steps(request: Any) -> int:
    """Count the assistant messages of a request that carry this mock's tool calls."""
    count = 0
    messages = request.get("messages") if isinstance(request, dict) else None
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if any(
            isinstance(block, dict)
            and block.get("type") == "tool_use"
            and str(block.get("id", "")).startswith(TOOL_USE_ID_PREFIX)
            for block in (content if isinstance(content, list) else [])
        ):
            count += 1
    return count


def plan_reply(
    request: Any, script: Sequence[Step], text: str
) -> tuple[list[dict], str, int | None]:
    """Return (content blocks, stop reason, script step or None) for a request."""
    tools = request.get("tools") if isinstance(request, dict) else None
    step = completed_steps(request)
    if tools and step < len(script):
        blocks = [
            {
                "type": "tool_use",
                "id": TOOL_USE_ID_PREFIX + uuid.uuid4().hex[:20],
                "name": call["name"],
                "input": call.get("input", {}),
            }
            for call in script[step]
        ]
        return blocks, "tool_use", step
    return [{"type": "text", "text": text}], "end_turn", None


class AnthropicHandler(MockHandler):
    """Handler of one mock server; `recording_server.bind_handler` binds its state."""

    def do_GET(self) -> None:
        self.record("GET", b"")
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/v1/models"):
            self.send_json(200, {"data": [model_entry(name) for name in MODELS], "has_more": False})
        elif "/v1/models/" in path:
            self.send_json(200, model_entry(path.rsplit("/", 1)[1]))
        else:
            self.send_json(200, {})

    def do_HEAD(self) -> None:
        self.record("HEAD", b"")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self.read_body()
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = {}
        if path.endswith("/v1/messages/count_tokens"):
            self.record("POST", body)
            self.send_json(200, {"input_tokens": max(1, len(body) // 4)})
        elif path.endswith("/v1/messages"):
            self.answer_messages(request, body)
        else:
            self.record("POST", body)
            self.send_json(200, {})

    def answer_messages(self, request: dict, body: bytes) -> None:
        turn = self.next_turn()
        content, stop_reason, step = plan_reply(
            request, self.script, f"{self.reply_text} [turn {turn}]"
        )
        self.record(
            "POST",
            body,
            turn=turn,
            tool_results=tool_results(request),
            reply={"step": step, "stop_reason": stop_reason, "content": content},
        )
        model = request.get("model") or MODELS[0]
        message_id = "msg_mock_" + uuid.uuid4().hex[:20]
        usage = {"input_tokens": max(1, len(body) // 4), "output_tokens": 1}
        if not request.get("stream"):
            self.send_json(
                200,
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return
        self.stream_message(message_id, model, content, stop_reason, usage)

    def stream_message(
        self, message_id: str, model: str, content: list[dict], stop_reason: str, usage: dict
    ) -> None:
        self.start_event_stream()
        start = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self.send_event({"type": "message_start", "message": start}, "message_start")
        for index, block in enumerate(content):
            self.stream_block(index, block)
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        self.send_event(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 1}},
            "message_delta",
        )
        self.send_event({"type": "message_stop"}, "message_stop")

    def stream_block(self, index: int, block: dict) -> None:
        if block["type"] == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            serialized = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": serialized[i : i + INPUT_JSON_CHUNK]}
                for i in range(0, len(serialized), INPUT_JSON_CHUNK)
            ]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"]}]
        self.send_event(
            {"type": "content_block_start", "index": index, "content_block": opening},
            "content_block_start",
        )
        for delta in deltas:
            self.send_event(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        self.send_event({"type": "content_block_stop", "index": index}, "content_block_stop")


# Any token works with the mock; 20+ characters because Claude Code approves keys by their tail.
API_TOKEN = "llm-docker-test-token-0123456789abcdef"


def offline_claude_environment(base_url: str) -> dict[str, str]:
    """Return the environment that points Claude Code at the mock and keeps it off the network.

    Measured with Claude Code 2.1: with these variables it contacts nothing but `base_url`, and
    CLAUDE_CODE_MAX_RETRIES=0 makes a dead mock fail at once instead of retrying for minutes.
    """
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": API_TOKEN,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def model_entry(name: str) -> dict[str, str]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


def serve(
    addresses: Iterable[str],
    script: Sequence[Step] = (),
    port: int = 0,
    log_path: Path | None = None,
) -> tuple[MockServer, RequestLog]:
    """Start this mock on every address (same port); return it and its request log."""
    return recording_server.serve(AnthropicHandler, addresses, script, port, log_path)


def main(argv: list[str] | None = None) -> int:
    return recording_server.run_cli(AnthropicHandler, "Anthropic Messages API", argv)


if __name__ == "__main__":
    sys.exit(main())
