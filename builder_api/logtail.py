"""Reading the end of a file backwards in blocks: memory is bounded by the lines asked for.

A 1 GB log costs the same as a small one: only the blocks holding the last `n` lines are read,
and the bytes kept are capped by `max_bytes` whatever the line lengths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

# Bytes read per step when walking backwards.
BLOCK_BYTES = 64 * 1024
# Upper bound on the bytes one tail keeps (a single huge line is cut to this).
MAX_TAIL_BYTES = 4 * 1024 * 1024
# A returned line longer than this is cut (with a marker), so one reply stays readable.
MAX_LINE_CHARS = 16 * 1024


def tail_fd(
    fd: int, n: int, max_bytes: int = MAX_TAIL_BYTES, start: int = 0, end: int | None = None
) -> list[str]:
    """The last `n` lines of `fd` (or of its byte range [start, end)), oldest first."""
    if n <= 0:
        return []
    size = os.fstat(fd).st_size
    end = size if end is None else min(end, size)
    start = max(0, min(start, end))
    pos = end
    chunks: list[bytes] = []
    newlines = 0
    kept = 0
    while pos > start and newlines <= n and kept < max_bytes:
        step = min(BLOCK_BYTES, pos - start, max_bytes - kept)
        pos -= step
        block = os.pread(fd, step, pos)
        if not block:
            break
        chunks.append(block)
        kept += len(block)
        newlines += block.count(b"\n")
    data = b"".join(reversed(chunks))
    if pos > start:
        # We stopped mid-file: the first (partial) line may be cut, so drop it when we can.
        cut = data.find(b"\n")
        if cut >= 0 and data.count(b"\n") > n:
            data = data[cut + 1 :]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [_line(raw) for raw in lines[-n:]]


def _line(raw: bytes) -> str:
    text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
    if len(text) > MAX_LINE_CHARS:
        return text[:MAX_LINE_CHARS] + "…[cut]"
    return text


def iter_lines_backwards(fd: int, max_bytes: int) -> Iterator[bytes]:
    """Yield whole lines from the end of `fd` backwards, reading at most `max_bytes`."""
    pos = os.fstat(fd).st_size
    read_total = 0
    carry = b""
    first = True
    while pos > 0 and read_total < max_bytes:
        step = min(BLOCK_BYTES, pos)
        pos -= step
        read_total += step
        block = os.pread(fd, step, pos) + carry
        parts = block.split(b"\n")
        carry = parts[0]
        tail = parts[1:]
        if first and tail and tail[-1] == b"":
            tail.pop()
        first = False
        yield from reversed(tail)
        if len(carry) > MAX_TAIL_BYTES:
            carry = b""  # an absurdly long line: skip it rather than grow without bound
    if pos == 0 and carry:
        yield carry
