"""Mock of the OpenAI Chat Completions API with scripted tool calls.

OpenCode talks to it as a custom OpenAI-compatible provider. While a
conversation has used fewer scripted steps than the script contains, and the
request offers tools, the mock replies with the next step's tool calls.
Otherwise it replies with a short text. Steps are lists of `{"name": ..., "input": {...}}`
as in mock_anthropic. Every request is recorded, and chat requests also carry
the `tool` role messages that the client sent back.

Run standalone:
    python3 -m tests.mocks.mock_openai --bind 127.0.0.1 [--bind ADDRESS] \
        [--port N] [--script steps.json] [--log requests.jsonl]
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.mocks import recording_server
from tests.mocks.mock_anthropic import text_of
from tests.mocks.recording_server import MockHandler, MockServer, RequestLog, Step

TOOL_CALL_ID_PREFIX = "call_mock_"  # marks the tool calls this mock made
MODELS = ("mock-model", "mock-small-model")


def tool_messages(request: Any) -> list[dict[str, Any]]:
    """Return the `tool` role messages of a request: what the client sent back."""
    results = []
    messages = request.get("messages") if isinstance(request, dict) else None
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "tool":
            results.append(
                {
                    "tool_call_id": message.get("tool_call_id"),
                    "content": text_of(message.get("content")),
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
        calls = message.get("tool_calls")
        if any(
            isinstance(call, dict) and str(call.get("id", "")).startswith(TOOL_CALL_ID_PREFIX)
            for call in (calls if isinstance(calls, list) else [])
        ):
            count += 1
    return count


def plan_reply(request: Any, script: Sequence[Step], text: str) -> tuple[dict, str, int | None]:
    """Return (assistant message, finish reason, script step or None) for a request."""
    tools = request.get("tools") if isinstance(request, dict) else None
    step = completed_steps(request)
    if tools and step < len(script):
        calls = [
            {
                "id": TOOL_CALL_ID_PREFIX + uuid.uuid4().hex[:20],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call.get("input", {}))},
            }
            for call in script[step]
        ]
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls", step
    return {"role": "assistant", "content": text}, "stop", None


class OpenAIHandler(MockHandler):
    """Handler of one mock server; `recording_server.bind_handler` binds its state."""

    def do_GET(self) -> None:
        self.record("GET", b"")
        if self.path.split("?", 1)[0].rstrip("/").endswith("/models"):
            models = [{"id": name, "object": "model", "owned_by": "mock"} for name in MODELS]
            self.send_json(200, {"object": "list", "data": models})
        else:
            self.send_json(200, {})

    def do_POST(self) -> None:
        body = self.read_body()
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = {}
        if not self.path.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
            self.record("POST", body)
            self.send_json(200, {})
            return
        turn = self.next_turn()
        message, finish_reason, step = plan_reply(
            request, self.script, f"{self.reply_text} [turn {turn}]"
        )
        self.record(
            "POST",
            body,
            turn=turn,
            tool_messages=tool_messages(request),
            reply={"step": step, "finish_reason": finish_reason, "message": message},
        )
        completion_id = "chatcmpl-mock-" + uuid.uuid4().hex[:16]
        model = request.get("model") or MODELS[0]
        usage = {"prompt_tokens": max(1, len(body) // 4), "completion_tokens": 1, "total_tokens": 2}
        if not request.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish_reason}
            self.send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
            return
        self.stream_completion(completion_id, model, message, finish_reason, usage)

    def stream_completion(
        self, completion_id: str, model: str, message: dict, finish_reason: str, usage: dict
    ) -> None:
        def chunk(delta: dict, reason: str | None = None, **extra: Any) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                **extra,
            }

        self.start_event_stream()
        self.send_event(chunk({"role": "assistant", "content": ""}))
        if message.get("tool_calls"):
            for index, call in enumerate(message["tool_calls"]):
                self.send_event(chunk({"tool_calls": [{"index": index, **call}]}))
        else:
            self.send_event(chunk({"content": message["content"]}))
        self.send_event(chunk({}, finish_reason, usage=usage))
        self.send_event("[DONE]")


def opencode_config(base_url: str) -> dict[str, Any]:
    """Return an opencode.json whose only provider and model are this mock at `base_url`."""
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "Mock",
        "options": {"baseURL": base_url, "apiKey": "test-key"},
        "models": {"mock-model": {"name": "Mock Model"}},
    }
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"mock": provider},
        "model": "mock/mock-model",
        "small_model": "mock/mock-model",
    }


def serve(
    addresses: Iterable[str],
    script: Sequence[Step] = (),
    port: int = 0,
    log_path: Path | None = None,
) -> tuple[MockServer, RequestLog]:
    """Start this mock on every address (same port); return it and its request log."""
    return recording_server.serve(OpenAIHandler, addresses, script, port, log_path)


def main(argv: list[str] | None = None) -> int:
    return recording_server.run_cli(OpenAIHandler, "OpenAI Chat Completions API", argv)


if __name__ == "__main__":
    sys.exit(main())
