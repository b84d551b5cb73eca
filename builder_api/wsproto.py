"""A sans-I/O WebSocket (RFC 6455) codec: handshake checks, frame encoding and an incremental
parser that turns bytes into messages and control events. No sockets here; `wshub` does the I/O.

Every protocol violation raises `ProtocolError` carrying the close code to send: 1002 for a
malformed or unmasked client frame, 1007 for invalid UTF-8, 1009 for an oversized message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Union

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011

# Control frames carry at most this many payload bytes (RFC 6455 5.5).
MAX_CONTROL_PAYLOAD = 125
# Default cap on one reassembled message from a client, in bytes.
DEFAULT_MAX_MESSAGE = 64 * 1024


class ProtocolError(Exception):
    """The peer broke the protocol; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Message:
    opcode: int  # OP_TEXT or OP_BINARY
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass(frozen=True)
class Ping:
    data: bytes


@dataclass(frozen=True)
class Pong:
    data: bytes


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Event = Union[Message, Ping, Pong, Close]


# -- handshake --------------------------------------------------------------------------------


def accept_key(client_key: str) -> str:
    # RFC 6455 fixes SHA-1 here; it is a handshake check, not a security hash.
    digest = hashlib.sha1((client_key + GUID).encode("ascii")).digest()  # noqa: S324
    return base64.b64encode(digest).decode("ascii")


def check_client_key(client_key: str) -> bool:
    """A valid Sec-WebSocket-Key is base64 of exactly 16 bytes."""
    try:
        return len(base64.b64decode(client_key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


# -- encoding ---------------------------------------------------------------------------------


def encode_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None, rsv: int = 0
) -> bytes:
    """One frame. Servers send unmasked frames; pass a 4-byte `mask` to encode as a client."""
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR `payload` with the 4-byte `mask` (masking and unmasking are the same operation)."""
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def encode_text(text: str, mask: bytes | None = None) -> bytes:
    return encode_frame(OP_TEXT, text.encode("utf-8"), mask=mask)


def encode_close(code: int = CLOSE_NORMAL, reason: str = "", mask: bytes | None = None) -> bytes:
    payload = struct.pack("!H", code) + reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    return encode_frame(OP_CLOSE, payload, mask=mask)


def random_mask() -> bytes:
    return os.urandom(4)


def valid_close_code(code: int) -> bool:
    return (
        code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
        or 3000 <= code <= 4999
    )


# -- parsing ----------------------------------------------------------------------------------


class Parser:
    """Incremental parser for frames from one peer.

    `feed(data)` returns the events completed by `data`. `require_mask` is True on the server
    side (client frames must be masked) and False on the client side.
    """

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE, require_mask: bool = True) -> None:
        self.max_message = max_message
        self.require_mask = require_mask
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._fragment_size = 0
        self.closed = False

    def feed(self, data: bytes) -> list[Event]:
        self._buffer.extend(data)
        events: list[Event] = []
        while not self.closed:
            event = self._next_frame()
            if event is None:
                break
            if isinstance(event, (Message, Ping, Pong, Close)):
                events.append(event)
                if isinstance(event, Close):
                    self.closed = True
        return events

    def _next_frame(self) -> Event | bool | None:
        """Parse one frame from the buffer: an event, True (frame consumed, no event) or None."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin = bool(first & 0x80)
        rsv = first & 0x70
        opcode = first & 0x0F
        masked = bool(second & 0x80)
        length = second & 0x7F
        offset = 2
        if rsv:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if self.require_mask and not masked:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if not self.require_mask and masked:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "server frames must not be masked")
        if opcode in CONTROL_OPCODES:
            if not fin:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes")
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack_from("!H", buf, 2)[0]
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack_from("!Q", buf, 2)[0]
            if length >> 63:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "frame length has the top bit set")
            offset = 10
        if opcode in DATA_OPCODES and self._fragment_size + length > self.max_message:
            raise ProtocolError(CLOSE_TOO_BIG, f"message larger than {self.max_message} bytes")
        mask_len = 4 if masked else 0
        if len(buf) < offset + mask_len + length:
            return None
        mask = bytes(buf[offset : offset + mask_len])
        payload = bytes(buf[offset + mask_len : offset + mask_len + length])
        del buf[: offset + mask_len + length]
        if masked:
            payload = apply_mask(payload, mask)
        return self._frame(fin, opcode, payload)

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> Event | bool:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            return parse_close(payload)
        if opcode == OP_CONT:
            if self._fragment_opcode is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation frame without a start")
        else:
            if self._fragment_opcode is not None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
            self._fragment_opcode = opcode
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            return True
        data = b"".join(self._fragments)
        message_opcode = self._fragment_opcode
        self._fragments = []
        self._fragment_opcode = None
        self._fragment_size = 0
        if message_opcode == OP_TEXT:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
        return Message(message_opcode, data)


def parse_close(payload: bytes) -> Close:
    if not payload:
        return Close(CLOSE_NO_STATUS, "")
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close payload of one byte")
    code = struct.unpack("!H", payload[:2])[0]
    if not valid_close_code(code):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
    return Close(code, reason)
