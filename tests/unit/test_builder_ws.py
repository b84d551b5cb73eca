"""WebSocket: the sans-I/O codec against the `websockets` package's own frame code, and the live
/ws endpoint against the `websockets` client (fragmentation, ping/pong, close codes, oversized and
unmasked frames, Origin checks, drop-oldest back-pressure).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from builder_api import wsproto
from builder_api.wshub import WsClient
from tests.unit.test_builder_support import Live, live, make_config

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.frames import Frame, Opcode  # noqa: E402
from websockets.streams import StreamReader  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

__all__ = ["live"]


def parse_with_websockets(data: bytes, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


# -- codec vs websockets ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=70000), text=st.booleans())
@example(payload=b"", text=True)
@example(payload=b"x" * 126, text=False)
@example(payload=b"x" * 65536, text=False)
def test_ws_codec_encodes_what_websockets_parses(payload: bytes, text: bool) -> None:
    opcode = wsproto.OP_TEXT if text else wsproto.OP_BINARY
    if text:
        payload = payload.decode("utf-8", "replace").encode("utf-8")
    frame = parse_with_websockets(wsproto.encode_frame(opcode, payload), mask=False)
    assert frame.data == payload
    assert frame.fin is True
    assert int(frame.opcode) == opcode


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), min_size=1, max_size=5), split=st.integers(1, 50))
def test_ws_codec_parses_fragmented_masked_frames_from_websockets(
    chunks: list[bytes], split: int
) -> None:
    wire = b""
    for index, chunk in enumerate(chunks):
        opcode = Opcode.BINARY if index == 0 else Opcode.CONT
        wire += Frame(opcode, chunk, fin=index == len(chunks) - 1).serialize(mask=True)
    parser = wsproto.Parser(max_message=1 << 20)
    events: list[Any] = []
    for start in range(0, len(wire), split):  # fed in arbitrary pieces
        events += parser.feed(wire[start : start + split])
    assert events == [wsproto.Message(wsproto.OP_BINARY, b"".join(chunks))]


def test_ws_codec_ping_between_fragments() -> None:
    wire = (
        Frame(Opcode.TEXT, b"he", fin=False).serialize(mask=True)
        + Frame(Opcode.PING, b"p").serialize(mask=True)
        + Frame(Opcode.CONT, b"llo").serialize(mask=True)
    )
    assert wsproto.Parser().feed(wire) == [wsproto.Ping(b"p"), wsproto.Message(1, b"hello")]


def test_ws_codec_unmasked_client_frame_1002() -> None:
    with pytest.raises(wsproto.ProtocolError) as info:
        wsproto.Parser().feed(Frame(Opcode.TEXT, b"hi").serialize(mask=False))
    assert info.value.code == 1002


def test_ws_codec_oversized_frame_1009_before_payload_arrives() -> None:
    head = b"\x82\xff" + struct.pack("!Q", 1 << 40) + b"mask"
    with pytest.raises(wsproto.ProtocolError) as info:
        wsproto.Parser(max_message=1024).feed(head)
    assert info.value.code == 1009


def test_ws_codec_oversized_fragments_1009() -> None:
    parser = wsproto.Parser(max_message=100)
    parser.feed(Frame(Opcode.BINARY, b"x" * 60, fin=False).serialize(mask=True))
    with pytest.raises(wsproto.ProtocolError) as info:
        parser.feed(Frame(Opcode.CONT, b"x" * 60).serialize(mask=True))
    assert info.value.code == 1009


def test_ws_codec_invalid_utf8_1007() -> None:
    with pytest.raises(wsproto.ProtocolError) as info:
        wsproto.Parser().feed(Frame(Opcode.TEXT, b"\xff\xfe").serialize(mask=True))
    assert info.value.code == 1007


def test_ws_codec_continuation_without_start_1002() -> None:
    with pytest.raises(wsproto.ProtocolError) as info:
        wsproto.Parser().feed(Frame(Opcode.CONT, b"x").serialize(mask=True))
    assert info.value.code == 1002


def test_ws_codec_close_code_round_trip() -> None:
    wire = Frame(Opcode.CLOSE, struct.pack("!H", 4000) + b"bye").serialize(mask=True)
    assert wsproto.Parser().feed(wire) == [wsproto.Close(4000, "bye")]


def test_ws_codec_invalid_close_code_1002() -> None:
    wire = wsproto.encode_frame(wsproto.OP_CLOSE, struct.pack("!H", 1005), mask=b"abcd")
    with pytest.raises(wsproto.ProtocolError) as info:
        wsproto.Parser().feed(wire)
    assert info.value.code == 1002


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_ws_codec_any_bytes_parse_or_protocol_error(data: bytes) -> None:
    try:
        wsproto.Parser(max_message=1000).feed(data)
    except wsproto.ProtocolError as exc:
        assert exc.code in (1002, 1007, 1009)


# -- drop-oldest queue ---------------------------------------------------------------------------


class _NullSocket:
    def sendall(self, data: bytes) -> None:
        pass


def test_ws_client_queue_drops_oldest() -> None:
    client = WsClient(_NullSocket(), "slow", max_queue=3)  # type: ignore[arg-type]
    for i in range(10):
        client.push(bytes([i]))
    assert list(client.queue) == [b"\x07", b"\x08", b"\x09"]
    assert client.dropped == 7


# -- live endpoint ------------------------------------------------------------------------------


def ws_connect(live: Live, **kwargs: Any) -> Any:
    return connect(
        f"ws://127.0.0.1:{live.port}/ws", proxy=None, open_timeout=5, ping_interval=None, **kwargs
    )


def recv_until(ws: Any, predicate: Any, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if predicate(message):
            return message
    raise AssertionError("no matching message")


def test_ws_hello_then_heartbeat(live: Live) -> None:
    with ws_connect(live) as ws:
        hello = json.loads(ws.recv(timeout=5))
        beat = recv_until(ws, lambda m: m["type"] == "status")
    assert hello["type"] == "hello"
    assert "run" in beat["status"]


def test_ws_pushes_log_lines(live: Live, tmp_path: Path) -> None:
    with ws_connect(live) as ws:
        ws.recv(timeout=5)
        with open(tmp_path / "logs" / "app.log", "a") as log:
            log.write("fresh line\n")
        message = recv_until(ws, lambda m: m["type"] == "log")
    assert message["file"] == "app"
    assert message["line"] == "fresh line"


def test_ws_pushes_events(live: Live) -> None:
    with ws_connect(live) as ws:
        ws.recv(timeout=5)
        live.app.events.emit("hello_ws", n=1)
        message = recv_until(
            ws, lambda m: m["type"] == "event" and m["event"]["type"] == "hello_ws"
        )
    assert message["event"]["n"] == 1


def test_ws_pushes_build_output(live: Live) -> None:
    with ws_connect(live) as ws:
        ws.recv(timeout=5)
        live.call("POST", "/build", {"args": ["ok"]})
        message = recv_until(ws, lambda m: m["type"] == "log" and m["line"] == "build ok")
    assert message["file"] == "build"


def test_ws_ping_pong(live: Live) -> None:
    with ws_connect(live) as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(5)


def test_ws_fragmented_message_accepted(live: Live) -> None:
    with ws_connect(live) as ws:
        ws.send(["frag", "mented", " text"])
        assert ws.ping().wait(5)


def test_ws_client_close_code_echoed(live: Live) -> None:
    with ws_connect(live) as ws:
        ws.close(4001, "done here")
        assert ws.close_code == 4001


def test_ws_oversized_message_closed_1009(live: Live) -> None:
    with ws_connect(live) as ws:
        ws.send("x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_ws_foreign_origin_refused(live: Live) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(live, origin="http://evil.example")
    assert info.value.response.status_code == 403


def test_ws_same_origin_allowed(live: Live) -> None:
    with ws_connect(live, origin=f"http://localhost:{live.port}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"


def raw_ws(live: Live) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def read_close_code(sock: socket.socket) -> int:
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 2:
            length = data[1] & 0x7F
            offset = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if len(data) < offset:
                break
            if length == 126:
                length = struct.unpack("!H", data[2:4])[0]
            elif length == 127:
                length = struct.unpack("!Q", data[2:10])[0]
            if len(data) < offset + length:
                break
            frame = parse_with_websockets(data[: offset + length], mask=False)
            data = data[offset + length :]
            if frame.opcode == Opcode.CLOSE:
                return int(struct.unpack("!H", frame.data[:2])[0])
    raise AssertionError("no close frame")


def test_ws_unmasked_client_frame_closed_1002(live: Live) -> None:
    with raw_ws(live) as sock:
        sock.sendall(Frame(Opcode.TEXT, b"unmasked").serialize(mask=False))
        assert read_close_code(sock) == 1002


def test_ws_reserved_bits_closed_1002(live: Live) -> None:
    with raw_ws(live) as sock:
        sock.sendall(wsproto.encode_frame(wsproto.OP_TEXT, b"x", mask=b"abcd", rsv=4))
        assert read_close_code(sock) == 1002


@pytest.fixture
def roomy(tmp_path: Path) -> Iterator[Live]:
    server = Live(make_config(tmp_path, {"websocket": {"queue_frames": 1000}}))
    yield server
    server.close()


def test_ws_slow_client_loses_oldest_not_others(roomy: Live, tmp_path: Path) -> None:
    # Each client has a 1000-frame queue; the slow one reads nothing while 3000 lines arrive.
    live = roomy
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(5)
    slow.connect(("127.0.0.1", live.port))
    key = base64.b64encode(os.urandom(16)).decode()
    slow.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    lines = 3000
    filler = "y" * 1000
    with ws_connect(live, max_size=None, max_queue=None) as fast:
        fast.recv(timeout=5)
        with open(tmp_path / "logs" / "app.log", "a") as log:
            for i in range(lines):  # paced: ~1,000 lines a second, a busy build
                log.write(f"flood {i} {filler}\n")
                if i % 10 == 9:
                    log.flush()
                    time.sleep(0.01)
        seen = 0
        deadline = time.monotonic() + 20
        while seen < lines and time.monotonic() < deadline:
            message = json.loads(fast.recv(timeout=5))
            if message["type"] == "log" and message["line"].startswith("flood"):
                seen += 1
    slow.settimeout(1)
    received = b""
    deadline = time.monotonic() + 5  # heartbeats keep coming, so read for a bounded time
    try:
        while b'"type":"dropped"' not in received and time.monotonic() < deadline:
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    except socket.timeout:
        pass
    slow.close()
    assert seen == lines
    assert b'"type":"dropped"' in received
